package order_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/domain/order"
)

// overdueStream is a stream of messages of placements for the deadline
// sweep's overdue scan; it counts the reads of each message.
type overdueStream struct {
	mu    sync.Mutex
	msgs  []overdueMsg // in sequence order, from 1
	reads map[uint64]int
}

type overdueMsg struct {
	seq    uint64
	stored time.Time
	events []order.Placed
}

func (s *overdueStream) add(stored time.Time, events ...order.Placed) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, overdueMsg{seq: uint64(len(s.msgs) + 1), stored: stored, events: events})
}

func (s *overdueStream) Overdue(_ context.Context, before time.Time, from uint64, limit int) ([]order.Placed, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []order.Placed
	next := from
	for _, m := range s.msgs {
		if m.seq < from {
			continue
		}
		s.reads[m.seq]++
		if !m.stored.Before(before) || len(out) >= limit {
			break
		}
		out = append(out, m.events...)
		next = m.seq + 1
	}
	return out, next, nil
}

// insertStore records the orders inserted, or fails while failing is set.
type insertStore struct {
	emptyStore
	mu       sync.Mutex
	inserted []string
	failing  bool
}

func (s *insertStore) InsertOrders(ctx context.Context, orders []order.Order) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !order.IsDeadlineWork(ctx) {
		// The sweep's inserts must be marked: the stores serve them first
		// and no breaker sheds them (I6).
		return errors.New("an overdue insert not marked as the deadline sweep's")
	}
	if s.failing {
		return errors.New("database down")
	}
	for _, o := range orders {
		s.inserted = append(s.inserted, o.ID)
	}
	return nil
}

func (s *insertStore) ids() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(slices.Values(s.inserted))
}

// TestOverdueScanReadsEachMessageOnce: the deadline sweep persists overdue
// placements whose deadline is near, continues each scan where the last
// stopped (during a burst the backlog is thousands of messages: reading
// them every sweep cost a third of the stream server's CPU), comes back to
// the placements it passed over once the earliest of their deadlines is
// near, and reads again what it could not persist.
func TestOverdueScanReadsEachMessageOnce(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	now := t0
	store := &insertStore{}
	svc := order.NewService(&fakeReserver{}, &lossyStream{}, store, slog.New(slog.NewTextHandler(io.Discard, nil)))
	svc.PaymentWindow = func(_ context.Context, sale string) (time.Duration, error) {
		if sale == "windowless" {
			return 0, nil // no deadline: never the sweep's to persist
		}
		return time.Minute, nil
	}
	stream := &overdueStream{reads: map[uint64]int{}}
	l := order.NewLifecycle(nil, svc, order.LifecycleConfig{Overdue: stream, Now: func() time.Time { return now },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	placed := func(id string, at time.Time) order.Placed {
		return order.Placed{V: 1, OrderID: id, SaleID: "s", SKU: "p", UserID: 7, Quantity: 1, Key: id, PlacedAt: at}
	}
	// Deadlines t0+55s and t0+57s (the sale's minute), and one of its own
	// within the horizon.
	stream.add(t0.Add(-5*time.Second), placed("far-1", t0.Add(-5*time.Second)))
	urgent := placed("urgent", t0.Add(-4*time.Second))
	urgent.PaymentDeadline = t0.Add(3 * time.Second)
	free := placed("no-deadline", t0.Add(-4*time.Second))
	free.SaleID = "windowless"
	stream.add(t0.Add(-3*time.Second), placed("far-2", t0.Add(-3*time.Second)), urgent, free)

	l.PersistOverdue(ctx)
	if got := store.ids(); !slices.Equal(got, []string{"urgent"}) {
		t.Fatalf("first scan persisted %v, want [urgent]", got)
	}
	// A new message, not yet overdue, then overdue: the old ones are not
	// read again.
	stream.add(t0.Add(-time.Second), placed("far-3", t0.Add(-time.Second)))
	now = t0.Add(500 * time.Millisecond)
	l.PersistOverdue(ctx)
	now = t0.Add(2 * time.Second)
	l.PersistOverdue(ctx)
	if stream.reads[1] != 1 || stream.reads[2] != 1 {
		t.Errorf("reads of the first two messages = %d, %d; want 1 each (the scan continues where it stopped)", stream.reads[1], stream.reads[2])
	}
	if stream.reads[3] != 2 {
		t.Errorf("reads of the third message = %d, want 2 (not yet overdue, then overdue)", stream.reads[3])
	}
	if got := store.ids(); !slices.Equal(got, []string{"urgent"}) {
		t.Fatalf("persisted %v, want only [urgent] while the other deadlines are far", got)
	}

	// far-1's deadline (t0+55s) comes within the horizon (10 s): the scan
	// starts over and persists it, and only it, while the store works.
	now = t0.Add(46 * time.Second)
	store.failing = true
	l.PersistOverdue(ctx)
	store.failing = false
	if got := store.ids(); !slices.Equal(got, []string{"urgent"}) {
		t.Fatalf("persisted %v while the store failed", got)
	}
	l.PersistOverdue(ctx)
	if got := store.ids(); !slices.Equal(got, []string{"far-1", "urgent", "urgent"}) {
		// urgent again: it is still on the stream (its worker has not
		// acknowledged it); inserts are idempotent.
		t.Fatalf("persisted %v, want far-1 (and urgent again) once far-1's deadline is near", got)
	}
	if stream.reads[1] != 3 {
		t.Errorf("reads of the first message = %d, want 3 (the failed scan's and the retry's)", stream.reads[1])
	}
	// Then far-2 (t0+57s) and far-3 (t0+59s) in their turn.
	now = t0.Add(48 * time.Second)
	l.PersistOverdue(ctx)
	now = t0.Add(50 * time.Second)
	l.PersistOverdue(ctx)
	if got := store.ids(); !slices.Contains(got, "far-2") || !slices.Contains(got, "far-3") {
		t.Fatalf("persisted %v, want far-2 and far-3 once their deadlines are near", got)
	}
}

// TestOverdueScanReadsOnlyWhatCouldBeDue: with the shortest payment window
// known, the scan reads no placement that cannot be due within the
// horizon (a burst's backlog, overdue for the Pacer, with deadlines
// minutes away), and reads it once its deadline can be near; with no sale
// having a window, it reads nothing.
func TestOverdueScanReadsOnlyWhatCouldBeDue(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	now := t0
	store := &insertStore{}
	svc := order.NewService(&fakeReserver{}, &lossyStream{}, store, slog.New(slog.NewTextHandler(io.Discard, nil)))
	window, windows := 15*time.Minute, true
	svc.PaymentWindow = func(context.Context, string) (time.Duration, error) { return window, nil }
	stream := &overdueStream{reads: map[uint64]int{}}
	l := order.NewLifecycle(nil, svc, order.LifecycleConfig{Overdue: stream, Now: func() time.Time { return now },
		MinPaymentWindow: func(context.Context) (time.Duration, bool, error) { return window, windows, nil },
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil))})
	for i := range 100 {
		at := t0.Add(-time.Minute + time.Duration(i)*100*time.Millisecond)
		stream.add(at, order.Placed{V: 1, OrderID: fmt.Sprintf("o-%03d", i), SaleID: "s", SKU: "p", UserID: 7, Quantity: 1, Key: "k", PlacedAt: at})
	}
	for range 10 {
		l.PersistOverdue(ctx)
		now = now.Add(500 * time.Millisecond)
	}
	if n := stream.reads[1]; n != 10 {
		t.Errorf("the oldest message was read %d times, want once per scan (to stop there)", n)
	}
	for seq := uint64(2); seq <= 100; seq++ {
		if stream.reads[seq] != 0 {
			t.Fatalf("message %d was read %d times: none of the backlog can be due", seq, stream.reads[seq])
		}
	}
	// The first deadline (t0-1m+15m) comes within the horizon.
	now = t0.Add(14*time.Minute - 5*time.Second)
	l.PersistOverdue(ctx)
	if got := store.ids(); len(got) == 0 || got[0] != "o-000" {
		t.Fatalf("persisted %v once the first deadline was near, want o-000 first", got)
	}
	if got := store.ids(); slices.Contains(got, "o-099") {
		t.Errorf("persisted o-099, whose deadline is still %v away", t0.Add(-time.Minute+9900*time.Millisecond+window).Sub(now))
	}

	// No sale with a deadline: nothing is read.
	windows = false
	clear(stream.reads)
	l.PersistOverdue(ctx)
	if len(stream.reads) != 0 {
		t.Errorf("reads %v with no payment window anywhere, want none", stream.reads)
	}
}
