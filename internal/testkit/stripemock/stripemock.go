// Package stripemock starts stripe-mock (github.com/stripe/stripe-mock,
// pinned in go.mod as a tool) for tests that need a Stripe API.
//
// The environment decides: SPIKE_TEST_STRIPE_MOCK=1 builds it with
// `go tool -n stripe-mock` (offline, from the module cache, or taken from
// the build cache); any other non-empty value is the path of a stripe-mock
// binary. Unset, the test skips with a message, or fails when
// SPIKE_TEST_REQUIRE is set.
//
//	url := stripemock.Start(t) // "http://127.0.0.1:41234", stopped when t ends
//
// A package whose tests share one instance uses Shared and calls Stop from
// its TestMain:
//
//	func TestMain(m *testing.M) { code := m.Run(); stripemock.Stop(); os.Exit(code) }
package stripemock

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Env is the variable that enables the stripe-mock tests: "1", or the path
// of a stripe-mock binary.
const Env = "SPIKE_TEST_STRIPE_MOCK"

// startTimeout bounds stripe-mock's start (building it included).
const startTimeout = 60 * time.Second

// Start starts a stripe-mock for t and returns its base URL; it is stopped
// when t and its subtests end. It skips t when Env is unset (fails it under
// SPIKE_TEST_REQUIRE), and fails t when stripe-mock cannot be started.
func Start(t testing.TB) string {
	t.Helper()
	bin := binary(t)
	m, err := start(bin)
	if err != nil {
		t.Fatalf("stripe-mock: %v", err)
	}
	t.Cleanup(m.stop)
	return m.url
}

var shared struct {
	mu   sync.Mutex
	mock *mock
	err  error
}

// Shared is Start with one stripe-mock for every test of the process that
// calls it, started by the first; the package's TestMain calls Stop after
// its tests. After Stop, the next Shared starts a new one.
func Shared(t testing.TB) string {
	t.Helper()
	bin := binary(t)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.mock == nil && shared.err == nil {
		shared.mock, shared.err = start(bin)
	}
	if shared.err != nil {
		t.Fatalf("stripe-mock: %v", shared.err)
	}
	return shared.mock.url
}

// Stop stops the stripe-mock of Shared, if one is running.
func Stop() {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.mock != nil {
		shared.mock.stop()
	}
	shared.mock, shared.err = nil, nil
}

// binary returns the path of the stripe-mock binary the environment names,
// or skips (fails) t.
func binary(t testing.TB) string {
	t.Helper()
	v := os.Getenv(Env)
	if v == "" {
		msg := Env + " not set (1, or the path of a stripe-mock binary): skipping the stripe-mock tests"
		if os.Getenv("SPIKE_TEST_REQUIRE") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if v != "1" {
		return v
	}
	bin, err := toolBinary()
	if err != nil {
		t.Fatalf("stripe-mock: %v", err)
	}
	return bin
}

var tool struct {
	once sync.Once
	bin  string
	err  error
}

// toolBinary builds (or finds in the build cache) the go.mod tool.
func toolBinary() (string, error) {
	tool.once.Do(func() {
		out, err := exec.Command("go", "tool", "-n", "stripe-mock").Output()
		if err != nil {
			var stderr []byte
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				stderr = ee.Stderr
			}
			tool.err = fmt.Errorf("go tool -n stripe-mock: %v: %s", err, stderr)
			return
		}
		tool.bin = strings.TrimSpace(string(out))
	})
	return tool.bin, tool.err
}

// mock is one running stripe-mock process.
type mock struct {
	url    string
	cmd    *exec.Cmd
	read   chan struct{} // closed when its stdout is drained
	stderr *lockedBuffer
	once   sync.Once
}

// start runs bin on a free loopback port and waits for its address.
func start(bin string) (*mock, error) {
	// Both listeners on free loopback ports: given only -http-addr,
	// stripe-mock also listens for HTTPS on :12112, and a second instance
	// (another test package running in parallel) fails to bind it and
	// exits after printing its HTTP address.
	cmd := exec.Command(bin, "-http-addr", "127.0.0.1:0", "-https-addr", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	m := &mock{cmd: cmd, read: make(chan struct{}), stderr: &lockedBuffer{}}
	cmd.Stderr = m.stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	found := make(chan string, 1)
	go func() {
		defer close(m.read)
		// "Listening for HTTP at address: 127.0.0.1:41234", then the same
		// for HTTPS: both listeners are up.
		sc := bufio.NewScanner(stdout)
		var addr string
		var https bool
		for sc.Scan() {
			if _, a, ok := strings.Cut(sc.Text(), "Listening for HTTP at address: "); ok {
				addr = strings.TrimSpace(a)
			}
			https = https || strings.Contains(sc.Text(), "Listening for HTTPS at address: ")
			if addr != "" && https {
				found <- addr
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case addr := <-found:
		m.url = "http://" + addr
		return m, nil
	case <-m.read:
		m.stop()
		return nil, fmt.Errorf("%s exited before listening: %v; stderr: %s", bin, m.cmd.ProcessState, m.stderr)
	case <-time.After(startTimeout):
		m.stop()
		return nil, fmt.Errorf("%s: no listening address after %v; stderr: %s", bin, startTimeout, m.stderr)
	}
}

// stop kills the process and waits for it and its output to end.
func (m *mock) stop() {
	m.once.Do(func() {
		_ = m.cmd.Process.Kill()
		<-m.read
		_ = m.cmd.Wait()
	})
}

// lockedBuffer is stripe-mock's stderr, read while the process writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
