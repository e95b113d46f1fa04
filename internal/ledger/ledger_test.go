package ledger_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/adapter/sqlitestore"
	"github.com/spikehq/spike/internal/domain/catalog"
	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/payment"
	"github.com/spikehq/spike/internal/domain/sale"
	"github.com/spikehq/spike/internal/ledger"
)

// events is an EventSource holding what is "on the stream".
type events struct{ queued []order.Placed }

func (e *events) Unpersisted(context.Context) ([]order.Placed, error) { return e.queued, nil }
func (e *events) Backlog(context.Context) (uint64, error)             { return uint64(len(e.queued)), nil }

type noPending struct{}

func (noPending) PendingIDs() []string { return nil }

func setup(t *testing.T, stock int64) (*sqlitestore.Store, sale.Sale) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.CreateProduct(ctx, catalog.Product{SKU: "p", Name: "P", PriceCents: 10, Stock: stock}); err != nil {
		t.Fatal(err)
	}
	s := sale.Sale{ID: "s", SKU: "p", Stock: stock, PriceCents: 5, PerUserLimit: 2, StartsAt: time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)}
	if err := st.CreateSale(ctx, s); err != nil {
		t.Fatal(err)
	}
	return st, s
}

func placed(i int, user int64) order.Placed {
	return order.Placed{V: 1, OrderID: fmt.Sprintf("O%04d", i), SaleID: "s", SKU: "p", UserID: user, Quantity: 1,
		PriceCents: 5, Key: fmt.Sprintf("k%d", i), PlacedAt: time.UnixMicro(1_700_000_000_000_000 + int64(i)).UTC()}
}

func persist(t *testing.T, st *sqlitestore.Store, evs ...order.Placed) {
	t.Helper()
	persistAs(t, st, order.Created, evs...)
}

func persistAs(t *testing.T, st *sqlitestore.Store, status order.Status, evs ...order.Placed) {
	t.Helper()
	var os []order.Order
	for _, e := range evs {
		o := e.Order()
		o.Status = status
		os = append(os, o)
	}
	if err := st.InsertOrders(context.Background(), os); err != nil {
		t.Fatal(err)
	}
}

func TestRebuildCountsEachOrderOnce(t *testing.T) {
	st, _ := setup(t, 10)
	persist(t, st, placed(1, 1), placed(2, 2), placed(3, 3))
	// 3 is persisted but not yet acknowledged: on the stream too; 4 is on
	// the stream twice (redelivered); 8 is of a sale the store does not know.
	other := placed(8, 8)
	other.SaleID = "gone"
	ev := &events{queued: []order.Placed{placed(3, 3), placed(4, 4), other, placed(4, 4)}}
	c := inventory.New(spike.NewIDGenerator())
	queued, err := ledger.Rebuild(context.Background(), st, st, ev, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(queued) != 2 || queued[0].OrderID != "O0004" || queued[1].OrderID != "O0008" {
		t.Errorf("queued %v, want O0004 then O0008", queued)
	}
	if rem, _, _ := c.Remaining(context.Background(), "s"); rem != 6 {
		t.Errorf("remaining %d, want 10 - 4 = 6", rem)
	}
	// A replay of a restored key gets its order.
	res, replay, err := c.Reserve(context.Background(), inventory.Request{SaleID: "s", UserID: 4, Key: "k4", Quantity: 1})
	if err != nil || !replay || res.OrderID != "O0004" {
		t.Errorf("replay after rebuild: %+v %v %v", res, replay, err)
	}
	h, err := ledger.SaleHoldings(context.Background(), st, ev, "s")
	if err != nil || len(h) != 4 {
		t.Errorf("SaleHoldings: %d holdings, %v; want 4", len(h), err)
	}
}

func audit(t *testing.T, st *sqlitestore.Store, ev *events, c *inventory.Counters) map[string]ledger.Check {
	t.Helper()
	return auditWith(t, &ledger.Auditor{Sales: st, Orders: st, Events: ev, Counters: c, Pending: noPending{}})
}

// auditWith runs a's audit once and returns its checks by the first word
// of their names.
func auditWith(t *testing.T, a *ledger.Auditor) map[string]ledger.Check {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond) // no retries needed
	defer cancel()
	rep, err := a.Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]ledger.Check{}
	for _, ch := range rep.Checks {
		out[strings.Fields(ch.Name)[0]] = ch
	}
	return out
}

func TestAuditPassesAndCatchesViolations(t *testing.T) {
	st, s := setup(t, 2)
	ev := &events{}
	c := inventory.New(spike.NewIDGenerator())
	persist(t, st, placed(1, 1))
	c.Restore(context.Background(), s, []inventory.Holding{{OrderID: "O0001", UserID: 1, Key: "k1", Quantity: 1}})
	for name, ch := range audit(t, st, ev, c) {
		if !ch.OK {
			t.Errorf("%s failed on a healthy record: %s", name, ch.Detail)
		}
	}

	// A stuck event: I5 fails while it is on the stream; I4 sees its units.
	ev.queued = []order.Placed{placed(2, 2)}
	got := audit(t, st, ev, c)
	if got["I5"].OK || got["I4"].OK {
		t.Errorf("I5/I4 should fail with an event the counters do not know: %+v", got)
	}

	// Oversell and a user over the limit, written behind the counters' back.
	ev.queued = nil
	persist(t, st, placed(3, 1), placed(4, 1), placed(5, 5))
	got = audit(t, st, ev, c)
	if got["I1"].OK {
		t.Error("I1 passed with 4 units sold of 2")
	}
	if got["I3"].OK || !strings.Contains(got["I3"].Detail, "user 1 holds 3") {
		t.Errorf("I3 should name user 1: %+v", got["I3"])
	}
}

type pendingIDs []string

func (p pendingIDs) PendingIDs() []string { return p }

// TestAuditMatchesOrdersAcrossSources: the checks that match orders across
// the stream, the store, the pending index and the payments (I2, I3, I7)
// pass a healthy record with the cases they must tell apart, and name what
// they find when it is not.
func TestAuditMatchesOrdersAcrossSources(t *testing.T) {
	ctx := context.Background()
	// A healthy record: O1 created (user 1, k1), O2 paid with one payment,
	// O6 (user 1 again, another key) and O7 (user 7, k1 like user 1) on the
	// stream, O2 on the stream too (persisted since), and O6 twice.
	newRecord := func(t *testing.T) (*sqlitestore.Store, *events, func(pending ...string) map[string]ledger.Check) {
		st, s := setup(t, 10)
		persist(t, st, placed(1, 1))
		persistAs(t, st, order.Paid, placed(2, 2))
		o7 := placed(7, 7)
		o7.Key = "k1"
		ev := &events{queued: []order.Placed{placed(2, 2), placed(6, 1), o7, placed(6, 1)}}
		c := inventory.New(spike.NewIDGenerator())
		var held []inventory.Holding
		for _, e := range []order.Placed{placed(1, 1), placed(2, 2), placed(6, 1), o7} {
			held = append(held, inventory.Holding{OrderID: e.OrderID, UserID: e.UserID, Key: e.Key, Quantity: 1})
		}
		c.Restore(ctx, s, held)
		pay(t, st, "P1", "O0002", 0)
		return st, ev, func(pending ...string) map[string]ledger.Check {
			t.Helper()
			return auditWith(t, &ledger.Auditor{Sales: st, Orders: st, Events: ev, Counters: c, Pending: pendingIDs(pending),
				Lifecycle: &ledger.LifecycleAudit{Products: st, Payments: st}})
		}
	}

	t.Run("healthy", func(t *testing.T) {
		_, _, run := newRecord(t)
		got := run("O0001", "O0006", "O0007")
		for _, name := range []string{"I1", "I2", "I3", "I4", "I7", "product"} {
			if !got[name].OK {
				t.Errorf("%s failed on a healthy record: %s", name, got[name].Detail)
			}
		}
	})
	t.Run("I2 lost", func(t *testing.T) {
		_, _, run := newRecord(t)
		if got := run("O0001", "O0009", "O0006"); got["I2"].OK || !strings.Contains(got["I2"].Detail, "O0009") ||
			strings.Contains(got["I2"].Detail, "O0001") || strings.Contains(got["I2"].Detail, "O0006") {
			t.Errorf("I2 should name O0009 alone: %+v", got["I2"])
		}
	})
	t.Run("I3 duplicate", func(t *testing.T) {
		_, ev, run := newRecord(t)
		dup := placed(4, 1) // user 1's key k1 again, under another order id
		dup.Key = "k1"
		ev.queued = append(ev.queued, dup)
		if got := run(); got["I3"].OK || !strings.Contains(got["I3"].Detail, "O0001 and O0004") {
			t.Errorf("I3 should name O0001 and O0004: %+v", got["I3"])
		}
	})
	t.Run("I7 money", func(t *testing.T) {
		st, _, run := newRecord(t)
		persistAs(t, st, order.Shipped, placed(5, 5))
		persistAs(t, st, order.Refunded, placed(8, 8), placed(9, 9))
		pay(t, st, "P2", "O0001", 0) // for a created order
		pay(t, st, "P3", "O0002", 0) // O2's second capture
		pay(t, st, "P4", "O0002", 9) // refunded 9 of 5 cents
		pay(t, st, "P5", "O0008", 0) // for a refunded order, not refunded
		pay(t, st, "P6", "O0099", 0) // for no order at all
		pay(t, st, "P7", "O0006", 0) // for an order still on the stream
		detail := run()["I7"].Detail
		want := []string{
			"payment P2 succeeded for order O0001 (created) and is not refunded",
			"payment P4 refunded 9 of 5 cents",
			"payment P5 succeeded for order O0008 (refunded) and is not refunded",
			"payment P6 succeeded for order O0099 () and is not refunded",
			"payment P7 succeeded for order O0006 (pending) and is not refunded",
			"order O0002 captured 2 times",
			"order O0005 is shipped without a succeeded payment",
			"order O0009 is refunded without a succeeded payment",
		}
		at := -1
		for i, w := range want {
			j := strings.Index(detail, w)
			if j < 0 {
				t.Errorf("I7 detail %q lacks %q", detail, w)
			} else if i < 5 && j < at { // the payments' messages in payment order
				t.Errorf("I7 detail %q: %q out of payment order", detail, w)
			}
			at = max(at, j)
		}
		if strings.Contains(detail, "O0008 is refunded without") {
			t.Errorf("I7 detail %q: O0008 has a succeeded payment", detail)
		}
	})
}

// pay records a succeeded payment of 5 cents for orderID, refunded by
// refunded cents (0: not refunded).
func pay(t *testing.T, st *sqlitestore.Store, id, orderID string, refunded int64) {
	t.Helper()
	now := time.Now()
	p := payment.Payment{ID: id, OrderID: orderID, UserID: 1, Provider: "sandbox", AmountCents: 5, Status: payment.Succeeded,
		IdempotencyKey: id, CreatedAt: now, UpdatedAt: now}
	if refunded > 0 {
		p.RefundedCents, p.RefundRef, p.RefundedAt = refunded, "r-"+id, now
	}
	if _, _, err := st.CreatePayment(context.Background(), p); err != nil {
		t.Fatal(err)
	}
}

// TestRebuildCountsReturnedOrders: orders that are no longer live hold no
// units after a rebuild, their keys still replay them, and a late Return of
// one gives nothing back twice.
func TestRebuildCountsReturnedOrders(t *testing.T) {
	ctx := context.Background()
	st, _ := setup(t, 10)
	persist(t, st, placed(1, 1))
	persistAs(t, st, order.Cancelled, placed(2, 2))
	ev := &events{queued: []order.Placed{placed(2, 2)}} // persisted cancelled, still on the stream: the record wins
	c := inventory.New(spike.NewIDGenerator())
	if _, err := ledger.Rebuild(ctx, st, st, ev, c); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := c.Stats(ctx, "s"); got.Remaining != 9 || got.Held != 1 {
		t.Errorf("Stats() after rebuild = %+v; want 9 remaining, 1 held", got)
	}
	res, replay, err := c.Reserve(ctx, inventory.Request{SaleID: "s", UserID: 2, Key: "k2", Quantity: 1})
	if err != nil || !replay || res.OrderID != "O0002" {
		t.Errorf("replay of a cancelled order's key = %+v, %v, %v; want O0002", res, replay, err)
	}
	if ok, err := c.Return(ctx, inventory.Return{SaleID: "s", OrderID: "O0002", UserID: 2, Key: "k2", Quantity: 1}); ok || err != nil {
		t.Errorf("late Return() = %v, %v; want false, nil", ok, err)
	}
	h, err := ledger.SaleHoldings(ctx, st, ev, "s")
	if err != nil || len(h) != 2 || h[0].Returned || !h[1].Returned {
		t.Errorf("SaleHoldings() = %+v, %v; want O0001 live, O0002 returned", h, err)
	}
}
