// Package redistest starts and reaches Redis servers for Spike's tests:
// the shared one named by SPIKE_TEST_REDIS_ADDR, and private redis-server
// processes on loopback ports that a test may flush, kill and restart.
package redistest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// MustAddr returns SPIKE_TEST_REDIS_ADDR, skipping the test when it is
// unset (failing under SPIKE_TEST_REQUIRE).
func MustAddr(t testing.TB) string {
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

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Server is a redis-server started by a test on a loopback port, keeping
// nothing on disk.
type Server struct {
	T    testing.TB
	Port int
	Dir  string
	Args []string // extra redis-server arguments
	cmd  *exec.Cmd
}

// Addr returns the server's host:port.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// Start starts a private redis-server with the extra arguments; it is
// killed at cleanup. Like every Redis test it needs SPIKE_TEST_REDIS_ADDR.
func Start(t testing.TB, extra ...string) *Server {
	t.Helper()
	MustAddr(t)
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("SPIKE_TEST_REQUIRE") != "" {
			t.Fatal("redis-server not found")
		}
		t.Skip("redis-server not found")
	}
	s := &Server{T: t, Port: FreePort(t), Dir: t.TempDir(), Args: extra}
	s.Start()
	t.Cleanup(s.Kill)
	return s
}

// Start starts the server and waits (bounded) for PING.
func (s *Server) Start() {
	s.T.Helper()
	args := append([]string{"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.Dir, "--logfile", filepath.Join(s.Dir, "redis.log")}, s.Args...)
	s.cmd = exec.Command("redis-server", args...)
	if err := s.cmd.Start(); err != nil {
		s.T.Fatalf("start redis-server: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.Command("redis-cli", "-p", strconv.Itoa(s.Port), "ping").CombinedOutput()
		if err == nil && strings.TrimSpace(string(out)) == "PONG" {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
			s.T.Fatalf("redis-server on port %d did not start: %s", s.Port, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill stops the server at once (SIGKILL) and waits for it.
func (s *Server) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Eventually polls cond until it holds, or fails the test after 5s.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// NewClient connects to addrs (one server, or nodes of a cluster), retrying
// for up to 10 s while a just-started server comes up, and closes the client
// at cleanup.
func NewClient(t testing.TB, addrs ...string) rueidis.Client {
	t.Helper()
	var client rueidis.Client
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		client, err = rueidis.NewClient(rueidis.ClientOption{InitAddress: addrs, DisableCache: true})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("connect to redis %v: %v", addrs, err)
	}
	t.Cleanup(client.Close)
	return client
}
