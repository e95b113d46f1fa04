package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/testkit/apitest"
)

// TestMain lets the test binary act as the spike binary: the crash and
// shutdown tests start it again as a child process running `spike serve`.
func TestMain(m *testing.M) {
	if os.Getenv("SPIKE_E2E_CHILD") == "serve" {
		main2([]string{"serve"})
		return
	}
	os.Exit(m.Run())
}

func main2(args []string) {
	os.Args = append([]string{"spike"}, args...)
	main()
	os.Exit(0)
}

// child is `spike serve` running as a separate process.
type child struct {
	cmd  *exec.Cmd
	out  *lockedWriter
	addr string
	done chan error
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startChild(t *testing.T, dir, addr string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "SPIKE_E2E_CHILD=serve", "SPIKE_ADDR="+addr, "SPIKE_DATA="+dir)
	cmd.Env = append(cmd.Env, env...)
	out := &lockedWriter{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ch := &child{cmd: cmd, out: out, addr: addr, done: make(chan error, 1)}
	go func() { ch.done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	deadline := time.Now().Add(60 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			return ch
		}
		select {
		case err := <-ch.done:
			t.Fatalf("spike serve exited: %v\n%s", err, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("spike serve did not start:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// lockedWriter collects a child's output from its two pipes.
type lockedWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (ch *child) kill(t *testing.T) {
	t.Helper()
	ch.cmd.Process.Signal(syscall.SIGKILL)
	<-ch.done
}

// request is one placement a buyer made, kept so it can be retried.
type request struct {
	user int64
	key  string
	qty  int64
}

// buyerLoad runs buyers until stop is closed. Requests that got no
// definite answer (transport error, 503) are returned for retrying.
func buyerLoad(t *testing.T, c *client, saleID string, firstUser int64, buyers int, perUser int64, stop <-chan struct{}, l *apitest.Ledger, round int) (unanswered []request, acks int64) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	var accepted atomic.Int64
	for b := range buyers {
		user := firstUser + int64(b)
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := c.Token(user, false)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				req := request{user, fmt.Sprintf("r%d-u%d-%d", round, user, i), 1}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				resp, p, err := c.Place(ctx, user, tok, saleID, req.key, req.qty)
				cancel()
				switch {
				case err != nil || resp.Status == 503:
					mu.Lock()
					unanswered = append(unanswered, req)
					mu.Unlock()
					if err != nil {
						time.Sleep(50 * time.Millisecond) // the server is down
					}
				case resp.Status == 202:
					accepted.Add(1)
					l.Record(user, req.key, req.qty, p)
				case resp.Status == 409, resp.Status == 429: // clean rejections
				default:
					t.Errorf("unexpected %d: %s", resp.Status, resp.Body)
				}
			}
		}()
	}
	wg.Wait()
	return unanswered, accepted.Load()
}

// retryUntilAnswered sends every unanswered request again with the same
// idempotency key until it gets a definite answer.
func retryUntilAnswered(t *testing.T, c *client, saleID string, reqs []request, l *apitest.Ledger) (recovered int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for _, r := range reqs {
		for {
			resp, p, err := c.Place(context.Background(), r.user, c.Token(r.user, false), saleID, r.key, r.qty)
			if err == nil && resp.Status == 202 {
				l.Record(r.user, r.key, r.qty, p)
				recovered++
				break
			}
			if err == nil && resp.Status != 503 {
				break // a clean rejection (sold out, over the limit)
			}
			if time.Now().After(deadline) {
				t.Fatalf("request %+v still unanswered: %v %d %s", r, err, resp.Status, resp.Body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return recovered
}

// TestCrashRecovery kills `spike serve` with SIGKILL twice while buyers
// place orders, restarts it on the same data folder, retries every
// unanswered request with its key, and checks I1–I5.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	const (
		stock   = 6000
		perUser = 20
		buyers  = 100
		saleID  = "crash-sale"
	)
	dir := t.TempDir()
	addr := freeAddr(t)
	ch := startChild(t, dir, addr)
	cfg := Config{Data: dir}
	secret, err := cfg.secret()
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, addr, secret)
	c.SetupSale("sku-crash", saleID, stock, perUser)
	l := apitest.NewLedger()

	for round := range 3 {
		stop := make(chan struct{})
		var unanswered []request
		var acks int64
		done := make(chan struct{})
		go func() {
			unanswered, acks = buyerLoad(t, c, saleID, int64(10_000*(round+1)), buyers, perUser, stop, l, round)
			close(done)
		}()
		// Let placements flow, then kill mid-flight (except in the last round).
		time.Sleep(time.Duration(700+300*round) * time.Millisecond)
		if round < 2 {
			ch.kill(t)
			time.Sleep(200 * time.Millisecond) // buyers hit a dead server
			close(stop)
			<-done
			ch = startChild(t, dir, addr)
		} else {
			close(stop)
			<-done
		}
		recovered := retryUntilAnswered(t, c, saleID, unanswered, l)
		t.Logf("round %d: %d acknowledged, %d unanswered requests retried, %d of them placed", round, acks, len(unanswered), recovered)
	}
	apitest.VerifyInvariants(t, c, saleID, stock, perUser, l, false)

	// A last restart must change nothing: the counters rebuild to the same state.
	var before apitest.SaleView
	c.Must("GET", "/v1/sales/"+saleID, "", nil, 200).Decode(t, &before)
	ch.kill(t)
	ch = startChild(t, dir, addr)
	var after apitest.SaleView
	c.Must("GET", "/v1/sales/"+saleID, "", nil, 200).Decode(t, &after)
	if before != after {
		t.Errorf("sale changed across a restart: %+v, then %+v", before, after)
	}
	if t.Failed() {
		t.Logf("server output:\n%s", ch.out)
	}
}

// TestGracefulShutdown sends SIGTERM while buyers place orders: the server
// must exit 0 after answering what it took in, and every acknowledged
// order must be persisted when it comes back.
func TestGracefulShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test")
	}
	const (
		stock   = 100_000
		perUser = 1000
		saleID  = "term-sale"
	)
	dir := t.TempDir()
	addr := freeAddr(t)
	ch := startChild(t, dir, addr)
	secret, err := (&Config{Data: dir}).secret()
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, addr, secret)
	c.SetupSale("sku-term", saleID, stock, perUser)
	l := apitest.NewLedger()

	stop := make(chan struct{})
	var unanswered []request
	var acks int64
	done := make(chan struct{})
	go func() {
		unanswered, acks = buyerLoad(t, c, saleID, 500, 50, perUser, stop, l, 0)
		close(done)
	}()
	time.Sleep(800 * time.Millisecond)
	ch.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-ch.done:
		var ee *exec.ExitError
		if errors.As(err, &ee) || err != nil {
			t.Errorf("spike serve exited with %v after SIGTERM, want status 0\n%s", err, ch.out)
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("spike serve did not exit after SIGTERM\n%s", ch.out)
	}
	if !strings.Contains(ch.out.String(), "stopped cleanly") {
		t.Errorf("no clean stop in the log:\n%s", ch.out)
	}
	close(stop)
	<-done
	t.Logf("%d acknowledged before SIGTERM, %d unanswered", acks, len(unanswered))

	ch = startChild(t, dir, addr)
	// Nothing was left on the stream: the workers drained it before exiting.
	if !strings.Contains(ch.out.String(), "queued_events=0") {
		t.Errorf("events were left on the stream at shutdown:\n%s", ch.out)
	}
	retryUntilAnswered(t, c, saleID, unanswered, l)
	apitest.VerifyInvariants(t, c, saleID, stock, perUser, l, false)
}
