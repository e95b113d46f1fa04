package stripepay_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// stripe-mock (github.com/stripe/stripe-mock, pinned in go.mod as a tool) is
// started once for the package when SPIKE_TEST_STRIPE_MOCK is "1" (built with
// `go tool -n stripe-mock`, from the module cache) or the path of a
// stripe-mock binary. Unset: the tests that need it skip, or fail under
// SPIKE_TEST_REQUIRE.

var mock struct {
	once sync.Once
	url  string
	err  error
	cmd  *exec.Cmd
}

func TestMain(m *testing.M) {
	code := m.Run()
	if mock.cmd != nil && mock.cmd.Process != nil {
		_ = mock.cmd.Process.Kill()
		_ = mock.cmd.Wait()
	}
	os.Exit(code)
}

// stripeMock returns the base URL of the package's stripe-mock.
func stripeMock(t *testing.T) string {
	t.Helper()
	v := os.Getenv("SPIKE_TEST_STRIPE_MOCK")
	if v == "" {
		msg := "SPIKE_TEST_STRIPE_MOCK not set (1, or the path of a stripe-mock binary): skipping the stripe-mock tests"
		if os.Getenv("SPIKE_TEST_REQUIRE") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	mock.once.Do(func() { mock.url, mock.err = startMock(v) })
	if mock.err != nil {
		t.Fatalf("stripe-mock: %v", mock.err)
	}
	return mock.url
}

func startMock(v string) (string, error) {
	bin := v
	if v == "1" {
		// The tool dependency of go.mod: built (or taken from the build
		// cache) offline from the module cache.
		out, err := exec.Command("go", "tool", "-n", "stripe-mock").Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			return "", fmt.Errorf("go tool -n stripe-mock: %v: %s", err, stderr)
		}
		bin = strings.TrimSpace(string(out))
	}
	cmd := exec.Command(bin, "-http-addr", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return "", err
	}
	mock.cmd = cmd
	found := make(chan string, 1)
	go func() {
		// "Listening for HTTP at address: 127.0.0.1:41234"
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if _, addr, ok := strings.Cut(line, "Listening for HTTP at address: "); ok {
				found <- strings.TrimSpace(addr)
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case addr := <-found:
		return "http://" + addr, nil
	case <-time.After(60 * time.Second):
		return "", fmt.Errorf("no listening address after 60s; stderr: %s", stderr.String())
	}
}

// recorded is one request seen by the recorder.
type recorded struct {
	Method, Path   string
	IdempotencyKey string
	Form           url.Values
}

// recorder is an http.RoundTripper that notes every request before sending it.
type recorder struct {
	mu   sync.Mutex
	reqs []recorded
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := recorded{Method: req.Method, Path: req.URL.Path, IdempotencyKey: req.Header.Get("Idempotency-Key")}
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(b))
		rec.Form, _ = url.ParseQuery(string(b))
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, rec)
	r.mu.Unlock()
	return http.DefaultTransport.RoundTrip(req)
}

func (r *recorder) last(t *testing.T) recorded {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.reqs) == 0 {
		t.Fatal("no request sent")
	}
	return r.reqs[len(r.reqs)-1]
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
