package redislimit_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// mustRedisAddr returns SPIKE_TEST_REDIS_ADDR, skipping the test when it is
// unset (failing under SPIKE_TEST_REQUIRE).
func mustRedisAddr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("SPIKE_TEST_REDIS_ADDR")
	if addr == "" {
		if os.Getenv("SPIKE_TEST_REQUIRE") != "" {
			t.Fatal("SPIKE_TEST_REDIS_ADDR unset")
		}
		t.Skip("set SPIKE_TEST_REDIS_ADDR (e.g. 127.0.0.1:6379) to run Redis tests")
	}
	return addr
}

// newClient connects to addr and closes the client at cleanup.
func newClient(t testing.TB, addr string) rueidis.Client {
	t.Helper()
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true})
	if err != nil {
		t.Fatalf("connect to redis %s: %v", addr, err)
	}
	t.Cleanup(client.Close)
	return client
}

// mustShared returns a client of the shared Redis at SPIKE_TEST_REDIS_ADDR.
// Tests on it use random limiter names and never flush it.
func mustShared(t testing.TB) rueidis.Client {
	t.Helper()
	return newClient(t, mustRedisAddr(t))
}

// randomName returns a limiter name unique to this test run.
func randomName(t testing.TB) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "t-" + hex.EncodeToString(b[:])
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// server is a redis-server started by a test on a loopback port, keeping
// nothing on disk.
type server struct {
	t    testing.TB
	port int
	dir  string
	args []string
	cmd  *exec.Cmd
}

func (s *server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// startRedis starts a private redis-server; it is killed at cleanup.
func startRedis(t testing.TB, extra ...string) *server {
	t.Helper()
	mustRedisAddr(t)
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("SPIKE_TEST_REQUIRE") != "" {
			t.Fatal("redis-server not found")
		}
		t.Skip("redis-server not found")
	}
	s := &server{t: t, port: freePort(t), dir: t.TempDir(), args: extra}
	s.Start()
	t.Cleanup(s.Kill)
	return s
}

// Start starts the server and waits (bounded) for PING.
func (s *server) Start() {
	s.t.Helper()
	args := append([]string{"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--logfile", filepath.Join(s.dir, "redis.log")}, s.args...)
	s.cmd = exec.Command("redis-server", args...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start redis-server: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.Command("redis-cli", "-p", strconv.Itoa(s.port), "ping").CombinedOutput()
		if err == nil && strings.TrimSpace(string(out)) == "PONG" {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			s.t.Fatalf("redis-server on port %d did not start: %s", s.port, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill stops the server at once (SIGKILL) and waits for it.
func (s *server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// eventually polls cond until it holds or 5s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// countingClient counts the requests sent to Redis: the round trips.
type countingClient struct {
	rueidis.Client
	n atomic.Int64
}

func (c *countingClient) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	c.n.Add(1)
	return c.Client.Do(ctx, cmd)
}
