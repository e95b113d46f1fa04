package ledger_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/sale"
	"github.com/spikehq/spike/internal/ledger"
)

// rebuilder records the rebuilds asked of it; each blocks until release.
type rebuilder struct {
	mu      sync.Mutex
	calls   []string
	loaded  [][]inventory.Holding
	release chan struct{}
}

func (r *rebuilder) Rebuild(ctx context.Context, s sale.Sale, load func(context.Context) ([]inventory.Holding, error)) (bool, error) {
	hs, err := load(ctx)
	r.mu.Lock()
	r.calls = append(r.calls, s.ID)
	r.loaded = append(r.loaded, hs)
	r.mu.Unlock()
	select {
	case <-r.release:
	case <-ctx.Done():
	}
	return true, err
}

func (r *rebuilder) n() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.calls) }

// TestRecovery: a fenced sale is rebuilt once at a time from the record
// (cancelled orders marked Returned), and Run waits for the rebuild under
// way when it stops.
func TestRecovery(t *testing.T) {
	st, _ := setup(t, 10)
	persist(t, st, placed(1, 1))
	persistAs(t, st, order.Cancelled, placed(2, 2))
	rb := &rebuilder{release: make(chan struct{})}
	rec := ledger.NewRecovery(st, st, &events{queued: []order.Placed{placed(3, 3)}}, ledger.RecoveryConfig{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	rec.SetStock(rb)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = rec.Run(ctx) }()

	rec.Fenced("s")
	deadline := time.Now().Add(5 * time.Second)
	for rb.n() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	rec.Fenced("s") // under way: not queued again
	time.Sleep(50 * time.Millisecond)
	if rb.n() != 1 {
		t.Fatalf("%d rebuilds, want 1", rb.n())
	}
	hs := rb.loaded[0]
	if len(hs) != 3 || hs[0].Returned || !hs[1].Returned || hs[2].Returned || hs[2].OrderID != "O0003" {
		t.Errorf("holdings %+v: want O0001 live, O0002 returned, O0003 (queued) live", hs)
	}
	close(rb.release)
	// Done: a later fence is rebuilt again.
	deadline = time.Now().Add(5 * time.Second)
	for rb.n() < 2 && time.Now().Before(deadline) {
		rec.Fenced("s")
		time.Sleep(10 * time.Millisecond)
	}
	if rb.n() < 2 {
		t.Errorf("a later fence was not rebuilt")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
}

// TestRecoveryReportsFencedSales: a fenced sale is listed by Fencing until
// its rebuild ends, and Rebuilds counts the rebuilds by outcome (a sale
// that cannot be read fails).
func TestRecoveryReportsFencedSales(t *testing.T) {
	st, _ := setup(t, 10)
	rb := &rebuilder{release: make(chan struct{})}
	close(rb.release)
	rec := ledger.NewRecovery(st, st, &events{}, ledger.RecoveryConfig{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	rec.SetStock(rb)
	rec.Fenced("s")
	rec.Fenced("no-such-sale")
	if got := rec.Fencing(); len(got) != 2 {
		t.Fatalf("Fencing before Run = %v, want both sales", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = rec.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rebuilt, failed := rec.Rebuilds()
		if rebuilt == 1 && failed == 1 && len(rec.Fencing()) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Rebuilds = %d rebuilt, %d failed; Fencing = %v: want 1, 1, none", rebuilt, failed, rec.Fencing())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
}
