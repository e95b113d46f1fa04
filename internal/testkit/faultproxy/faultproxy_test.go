package faultproxy_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/testkit/faultproxy"
)

// echoServer echoes every line back until the client closes.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func dialProxy(t *testing.T, p *faultproxy.Proxy) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, line string) (string, error) {
	t.Helper()
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	got, err := r.ReadString('\n')
	if len(got) > 0 {
		got = got[:len(got)-1]
	}
	return got, err
}

func TestProxyFaults(t *testing.T) {
	p, err := faultproxy.Start(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, r := dialProxy(t, p)

	if got, err := roundTrip(t, c, r, "hello"); err != nil || got != "hello" {
		t.Fatalf("plain round trip: %q %v", got, err)
	}

	// Latency: a round trip takes at least the latency of both directions.
	p.SetLatency(40*time.Millisecond, 60*time.Millisecond)
	began := time.Now()
	if got, err := roundTrip(t, c, r, "slow"); err != nil || got != "slow" {
		t.Fatalf("slow round trip: %q %v", got, err)
	}
	if took := time.Since(began); took < 100*time.Millisecond {
		t.Errorf("round trip with 40+60 ms of latency took %v", took)
	}
	p.SetLatency(0, 0)

	// Blackhole: nothing arrives while it is on; everything, in order, after.
	p.Blackhole(true)
	for _, s := range []string{"a", "b", "c"} {
		io.WriteString(c, s+"\n")
	}
	c.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
	if _, err := r.ReadString('\n'); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read through a blackhole: %v, want a timeout", err)
	}
	c.SetReadDeadline(time.Time{})
	p.Blackhole(false)
	for _, want := range []string{"a", "b", "c"} {
		if got, err := r.ReadString('\n'); err != nil || got != want+"\n" {
			t.Fatalf("after the blackhole: %q %v, want %q", got, err, want)
		}
	}

	// CloseAll: open connections are cut; new ones work.
	p.CloseAll()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("a connection survived CloseAll")
	}
	c2, r2 := dialProxy(t, p)
	if got, err := roundTrip(t, c2, r2, "again"); err != nil || got != "again" {
		t.Fatalf("after CloseAll: %q %v", got, err)
	}
	if n := p.Accepted(); n != 2 {
		t.Errorf("accepted %d connections, want 2", n)
	}
}

// TestProxyHalfClose: a client that closes its write side still gets the
// replies in flight, delayed as set.
func TestProxyHalfClose(t *testing.T) {
	p, err := faultproxy.Start(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.SetLatency(0, 30*time.Millisecond)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "bye\n")
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "bye\n" {
		t.Fatalf("after half-close: %q %v", b, err)
	}
}
