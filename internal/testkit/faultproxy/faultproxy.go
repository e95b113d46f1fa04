// Package faultproxy is a TCP proxy for fault-injection tests: put it
// between a client and a dependency (Redis, MySQL, NATS) and make the
// dependency slow, unresponsive or disconnected while the test runs.
//
// It is a small stand-in for Shopify's toxiproxy used as a library: the
// latency toxic (per direction, added to every chunk of bytes without
// limiting throughput), a "blackhole" that holds every byte until it is
// lifted (a partition without resets: the peer just stops answering, and
// nothing is lost or reordered, so request/reply protocols stay in step),
// and CloseAll (every connection reset, as when the dependency restarts).
//
//	p, _ := faultproxy.Start("127.0.0.1:6379")
//	defer p.Close()
//	// point the client at p.Addr()
//	p.SetLatency(0, 300*time.Millisecond) // every reply 300 ms late
package faultproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards the connections accepted on a loopback port to a target
// address, with the faults currently set. It is safe for concurrent use.
type Proxy struct {
	ln     net.Listener
	target string

	up, down atomic.Int64 // added latency in nanoseconds: client→target, target→client
	gate     atomic.Pointer[chan struct{}]

	mu     sync.Mutex
	links  map[*link]struct{}
	closed bool
	wg     sync.WaitGroup

	accepted atomic.Int64
}

// Start listens on 127.0.0.1 on a free port and forwards every connection
// to target. Close it when done.
func Start(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, links: map[*link]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr returns the proxy's listening address (host:port).
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Target returns the address the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Accepted returns how many client connections the proxy has accepted.
func (p *Proxy) Accepted() int64 { return p.accepted.Load() }

// SetLatency delays every chunk of bytes read from the client by up (on
// its way to the target) and every chunk read from the target by down (on
// its way back). Bytes keep their order and throughput is not limited;
// chunks already in flight keep the latency they were read with. Zero
// removes the delay.
func (p *Proxy) SetLatency(up, down time.Duration) {
	p.up.Store(int64(up))
	p.down.Store(int64(down))
}

// Blackhole, when on, holds every byte in both directions (and those of
// connections accepted meanwhile) until it is turned off: the dependency
// seems to stop answering, without a reset. Nothing is dropped, so the
// held bytes are delivered, in order, once it is lifted.
func (p *Proxy) Blackhole(on bool) {
	if on {
		ch := make(chan struct{})
		p.gate.CompareAndSwap(nil, &ch)
		return
	}
	if ch := p.gate.Swap(nil); ch != nil {
		close(*ch)
	}
}

// CloseAll closes every open connection, on both sides, as a restart of
// the dependency would. The proxy keeps accepting new ones.
func (p *Proxy) CloseAll() {
	p.mu.Lock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	for _, l := range links {
		l.close()
	}
}

// Close stops accepting, closes every connection, lifts a blackhole and
// waits for the proxy's goroutines to finish.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	err := p.ln.Close()
	p.Blackhole(false)
	p.CloseAll()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		p.accepted.Add(1)
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve connects one client to the target and runs both directions.
func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		client.Close()
		return
	}
	l := &link{client: client, server: server, done: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		l.close()
		return
	}
	p.links[l] = struct{}{}
	p.mu.Unlock()

	var dirs sync.WaitGroup
	dirs.Add(2)
	go func() { defer dirs.Done(); p.pipe(l, client, server, &p.up) }()
	go func() { defer dirs.Done(); p.pipe(l, server, client, &p.down) }()
	dirs.Wait()
	l.close()
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

// link is one proxied connection: the client's and the target's ends.
type link struct {
	client, server net.Conn
	done           chan struct{} // closed by close
	once           sync.Once
}

func (l *link) close() {
	l.once.Do(func() {
		close(l.done)
		l.client.Close()
		l.server.Close()
	})
}

// chunk is bytes read from one side, due on the other at a time.
type chunk struct {
	b   []byte
	due time.Time
}

// pipe copies src to dst, each chunk delayed by the latency in force when
// it was read and held while the blackhole is on. When src ends, dst's
// write side is closed once the queued chunks are delivered; a write error
// closes the whole link.
func (p *Proxy) pipe(l *link, src, dst net.Conn, latency *atomic.Int64) {
	queue := make(chan chunk, 256)
	go func() {
		defer close(queue)
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				c := chunk{b: append([]byte(nil), buf[:n]...), due: time.Now().Add(time.Duration(latency.Load()))}
				select {
				case queue <- c:
				case <-l.done:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	done := l.done
	for c := range queue {
		if d := time.Until(c.due); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-done:
				t.Stop()
				continue // drain the reader, which stops on the closed link
			}
		}
		for g := p.gate.Load(); g != nil && !isDone(done); g = p.gate.Load() {
			select {
			case <-*g:
			case <-done:
			}
		}
		if isDone(done) {
			continue
		}
		if _, err := dst.Write(c.b); err != nil {
			l.close()
		}
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok && !isDone(done) {
		_ = cw.CloseWrite()
		return
	}
	l.close()
}

func isDone(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

var _ io.Closer = (*Proxy)(nil)
