package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/payment"
)

func needLifecycle(t *testing.T, s Stores) order.LifecycleStore {
	t.Helper()
	if s.Lifecycle == nil {
		t.Skip("no LifecycleStore")
	}
	return s.Lifecycle
}

func mustOrder(t *testing.T, s Stores, id string) order.Order {
	t.Helper()
	o, err := s.Orders.Order(context.Background(), id)
	if err != nil {
		t.Fatalf("Order(%s) = %v", id, err)
	}
	return o
}

func mustHistory(t *testing.T, l order.LifecycleStore, id string) []order.HistoryEntry {
	t.Helper()
	h, err := l.History(context.Background(), id)
	if err != nil {
		t.Fatalf("History(%s) = %v", id, err)
	}
	return h
}

// userOf spreads test orders over users, so that every shard holds some.
func userOf(i int) int64 { return int64(1 + i*7919) }

func testInsertOrdersLifecycleFields(t *testing.T, s Stores) {
	needLifecycle(t, s)
	a := newOrder("dl-a", "s", 1, base)
	a.PaymentDeadline = base.Add(15 * time.Minute)
	b := newOrder("dl-b", "s", 2, base) // no deadline
	c := newOrder("dl-c", "s", 3, base)
	c.UpdatedAt = time.Time{} // unset: the store uses CreatedAt
	mustInsert(t, s, []order.Order{a, b, c})
	c.UpdatedAt = c.CreatedAt
	for _, want := range []order.Order{a, b, c} {
		if diff := cmp.Diff(want, mustOrder(t, s, want.ID)); diff != "" {
			t.Errorf("Order(%s) mismatch (-want +got):\n%s", want.ID, diff)
		}
	}
	if got := mustOrder(t, s, "dl-a").PaymentDeadline; got.Location() != time.UTC {
		t.Errorf("PaymentDeadline in %v, want UTC", got.Location())
	}
}

// change returns the Change that applies t, as the order service makes it.
func change(t order.Transition, to order.Status, at time.Time) order.Change {
	c := order.Change{Transition: t, To: to, At: at, Cause: "admin:1"}
	switch t {
	case order.Cancel:
		c.CancelReason = order.ReasonBuyer
	case order.Expire:
		c.CancelReason, c.Cause = order.ReasonPaymentTimeout, order.CauseDeadline
	case order.Ship:
		c.Carrier, c.Tracking = "dhl", "JD0001"
	}
	return c
}

// testTransitions applies every transition to an order in every stored
// status: it applies iff the state machine allows it.
func testTransitions(t *testing.T, s Stores) {
	l := needLifecycle(t, s)
	ctx := context.Background()
	type cas struct {
		id string
		st order.Status
		tr order.Transition
	}
	var cases []cas
	var orders []order.Order
	for i, st := range order.Statuses() {
		if st == order.Pending {
			continue // never stored
		}
		for j, tr := range order.Transitions() {
			o := newOrder(fmt.Sprintf("t-%s-%s", st, tr), "s", userOf(i*10+j), base)
			o.Status = st
			orders = append(orders, o)
			cases = append(cases, cas{o.ID, st, tr})
		}
	}
	mustInsert(t, s, orders)
	at := base.Add(time.Hour + 789*time.Nanosecond) // stored to the microsecond
	for k, c := range cases {
		want := orders[k]
		to, err := order.Next(c.st, c.tr)
		ch := change(c.tr, to, at)
		if err != nil {
			// Refused transitions still name a target, as a buggy caller would.
			ch.To = order.Cancelled
		}
		got, applied, terr := l.Transition(ctx, c.id, order.From(c.tr), ch)
		if terr != nil {
			t.Fatalf("Transition(%s, %s) = %v", c.id, c.tr, terr)
		}
		if applied != (err == nil) {
			t.Errorf("Transition(%s from %s) applied = %v, want %v", c.tr, c.st, applied, err == nil)
		}
		if err == nil {
			ch.At = at.Truncate(time.Microsecond)
			want.Apply(ch)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Transition(%s from %s) returned (-want +got):\n%s", c.tr, c.st, diff)
		}
		if diff := cmp.Diff(want, mustOrder(t, s, c.id)); diff != "" {
			t.Errorf("after Transition(%s from %s), Order() (-want +got):\n%s", c.tr, c.st, diff)
		}
		h := mustHistory(t, l, c.id)
		if err != nil {
			if len(h) != 0 {
				t.Errorf("after a refused %s from %s, History() = %+v, want none", c.tr, c.st, h)
			}
			continue
		}
		wantH := []order.HistoryEntry{{OrderID: c.id, From: c.st, To: to, Transition: c.tr, Cause: ch.Cause, At: at.Truncate(time.Microsecond)}}
		if diff := cmp.Diff(wantH, h); diff != "" {
			t.Errorf("History() after %s from %s (-want +got):\n%s", c.tr, c.st, diff)
		}
	}
	if _, _, err := l.Transition(ctx, "missing", order.From(order.Pay), change(order.Pay, order.Paid, at)); !errors.Is(err, order.ErrOrderNotFound) {
		t.Errorf("Transition(missing) = %v, want ErrOrderNotFound", err)
	}
	if h, err := l.History(ctx, "missing"); err != nil || len(h) != 0 {
		t.Errorf("History(missing) = %v, %v; want none", h, err)
	}
}

// testTransitionChain walks an order through its whole life.
func testTransitionChain(t *testing.T, s Stores) {
	l := needLifecycle(t, s)
	ctx := context.Background()
	o := newOrder("chain", "s", 77, base)
	o.PaymentDeadline = base.Add(10 * time.Minute)
	mustInsert(t, s, []order.Order{o})
	steps := []order.Transition{order.Pay, order.Ship, order.Deliver, order.Refund}
	var wantH []order.HistoryEntry
	st := order.Created
	for i, tr := range steps {
		to, err := order.Next(st, tr)
		if err != nil {
			t.Fatal(err)
		}
		at := base.Add(time.Duration(i+1) * time.Minute)
		c := change(tr, to, at)
		c.Cause = fmt.Sprintf("step:%d", i)
		got, applied, err := l.Transition(ctx, o.ID, order.From(tr), c)
		if err != nil || !applied {
			t.Fatalf("Transition(%s) = %v, %v", tr, applied, err)
		}
		o.Apply(c)
		if diff := cmp.Diff(o, got); diff != "" {
			t.Errorf("after %s (-want +got):\n%s", tr, diff)
		}
		wantH = append(wantH, order.HistoryEntry{OrderID: o.ID, From: st, To: to, Transition: tr, Cause: c.Cause, At: at})
		st = to
	}
	if diff := cmp.Diff(o, mustOrder(t, s, o.ID)); diff != "" {
		t.Errorf("Order() at the end (-want +got):\n%s", diff)
	}
	if o.PaidAt.IsZero() || o.ShippedAt.IsZero() || o.DeliveredAt.IsZero() || o.RefundedAt.IsZero() || o.Carrier != "dhl" {
		t.Errorf("the order lost a timestamp: %+v", o)
	}
	if diff := cmp.Diff(wantH, mustHistory(t, l, o.ID)); diff != "" {
		t.Errorf("History() (-want +got):\n%s", diff)
	}
	// Refunded after delivery: nothing to return.
	if got, err := l.StockToReturn(ctx, 10); err != nil || len(got) != 0 {
		t.Errorf("StockToReturn() = %v, %v; want none for an order refunded after shipping", got, err)
	}
}

// testTransitionRace: on each order, goroutines race to pay, cancel and
// expire it; exactly one wins.
func testTransitionRace(t *testing.T, s Stores) {
	l := needLifecycle(t, s)
	ctx := context.Background()
	const orders, racers = 4, 20
	var os []order.Order
	for i := range orders {
		os = append(os, newOrder(fmt.Sprintf("race-%d", i), "s", userOf(i), base))
	}
	mustInsert(t, s, os)
	for _, o := range os {
		var wins atomic.Int32
		var winner atomic.Value
		var wg sync.WaitGroup
		for g := range racers {
			tr := []order.Transition{order.Pay, order.Cancel, order.Expire}[g%3]
			to, _ := order.Next(order.Created, tr)
			wg.Go(func() {
				got, applied, err := l.Transition(ctx, o.ID, order.From(tr), change(tr, to, base.Add(time.Duration(g)*time.Second)))
				if err != nil {
					t.Errorf("Transition(%s, %s) = %v", o.ID, tr, err)
					return
				}
				if applied {
					wins.Add(1)
					winner.Store(got)
				} else if got.Status == order.Created {
					t.Errorf("Transition(%s, %s) not applied, but the order is still created", o.ID, tr)
				}
			})
		}
		wg.Wait()
		if n := wins.Load(); n != 1 {
			t.Fatalf("order %s: %d transitions applied, want exactly 1", o.ID, n)
		}
		w := winner.Load().(order.Order)
		if got := mustOrder(t, s, o.ID); got.Status != w.Status || !got.UpdatedAt.Equal(w.UpdatedAt) {
			t.Errorf("order %s is %s (updated %v), the winner made it %s (%v)", o.ID, got.Status, got.UpdatedAt, w.Status, w.UpdatedAt)
		}
		if h := mustHistory(t, l, o.ID); len(h) != 1 || h[0].To != w.Status {
			t.Errorf("History(%s) = %+v, want the winner's entry only", o.ID, h)
		}
	}
}

// testExpireDue: several sweepers at once expire every due created order
// exactly once, never a paid one, one without a deadline or one not yet due.
func testExpireDue(t *testing.T, s Stores) {
	l := needLifecycle(t, s)
	ctx := context.Background()
	now := base.Add(time.Hour)
	var all []order.Order
	due := map[string]bool{}
	add := func(prefix string, n int, st order.Status, deadline time.Time, isDue bool) {
		for i := range n {
			o := newOrder(fmt.Sprintf("%s-%02d", prefix, i), "s", userOf(len(all)), base)
			o.Status = st
			if !deadline.IsZero() {
				o.PaymentDeadline = deadline.Add(-time.Duration(i) * time.Second)
			}
			all = append(all, o)
			if isDue {
				due[o.ID] = true
			}
		}
	}
	add("due", 40, order.Created, now, true) // the first exactly at now
	add("future", 10, order.Created, now.Add(time.Hour+10*time.Second), false)
	add("nodeadline", 5, order.Created, time.Time{}, false)
	add("paid", 5, order.Paid, now.Add(-time.Minute), false)
	add("cancelled", 3, order.Cancelled, now.Add(-time.Minute), false)
	mustInsert(t, s, all)

	if got, err := l.ExpireDue(ctx, base, 10); err != nil || len(got) != 0 {
		t.Fatalf("ExpireDue(before any deadline) = %v, %v; want none", got, err)
	}

	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				got, err := l.ExpireDue(ctx, now, 3)
				if err != nil {
					t.Errorf("ExpireDue() = %v", err)
					return
				}
				if len(got) > 3 {
					t.Errorf("ExpireDue(limit 3) returned %d", len(got))
				}
				mu.Lock()
				for _, o := range got {
					seen[o.ID]++
					if o.Status != order.Cancelled || o.CancelReason != order.ReasonPaymentTimeout || !o.CancelledAt.Equal(now) || !o.UpdatedAt.Equal(now) {
						t.Errorf("ExpireDue() returned %+v, want it cancelled for payment_timeout at %v", o, now)
					}
				}
				mu.Unlock()
				if len(got) == 0 {
					return
				}
			}
		})
	}
	wg.Wait()
	for id, n := range seen {
		if !due[id] {
			t.Errorf("ExpireDue expired %s, which is not due", id)
		} else if n != 1 {
			t.Errorf("ExpireDue returned %s %d times", id, n)
		}
	}
	for _, o := range all {
		got := mustOrder(t, s, o.ID)
		h := mustHistory(t, l, o.ID)
		if !due[o.ID] {
			if got.Status != o.Status || len(h) != 0 {
				t.Errorf("%s: %s with history %v, want untouched %s", o.ID, got.Status, h, o.Status)
			}
			continue
		}
		if seen[o.ID] != 1 {
			t.Errorf("due order %s was returned %d times", o.ID, seen[o.ID])
		}
		want := o
		want.Apply(order.Change{Transition: order.Expire, To: order.Cancelled, At: now, CancelReason: order.ReasonPaymentTimeout})
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("expired order %s (-want +got):\n%s", o.ID, diff)
		}
		wantH := []order.HistoryEntry{{OrderID: o.ID, From: order.Created, To: order.Cancelled, Transition: order.Expire, Cause: order.CauseDeadline, At: now}}
		if diff := cmp.Diff(wantH, h); diff != "" {
			t.Errorf("History(%s) (-want +got):\n%s", o.ID, diff)
		}
	}
	if got, err := l.ExpireDue(ctx, now, 100); err != nil || len(got) != 0 {
		t.Errorf("ExpireDue() again = %d orders, %v; want none", len(got), err)
	}
	// Two hours later the future ones are due too. (Oldest deadline first
	// holds within a shard, not across MySQL's shards, which are swept one
	// after the other.)
	later := now.Add(2 * time.Hour)
	got, err := l.ExpireDue(ctx, later, 4)
	if err != nil || len(got) != 4 {
		t.Fatalf("ExpireDue(later, 4) = %d orders, %v; want 4", len(got), err)
	}
	for _, o := range got {
		if !strings.HasPrefix(o.ID, "future-") {
			t.Errorf("ExpireDue(later, 4) returned %s; want only the future ones", o.ID)
		}
	}
	if rest, err := l.ExpireDue(ctx, later, 100); err != nil || len(rest) != 6 {
		t.Errorf("ExpireDue(later, 100) = %d orders, %v; want the other 6", len(rest), err)
	}
	if got, _ := l.ExpireDue(ctx, later, 0); len(got) != 0 {
		t.Errorf("ExpireDue(limit 0) = %d orders", len(got))
	}
}

// testExpireDueRacingPay: payments and sweepers race on due orders; each
// ends paid or expired, with one history entry.
func testExpireDueRacingPay(t *testing.T, s Stores) {
	l := needLifecycle(t, s)
	ctx := context.Background()
	now := base.Add(time.Hour)
	var os []order.Order
	for i := range 30 {
		o := newOrder(fmt.Sprintf("rp-%02d", i), "s", userOf(i), base)
		o.PaymentDeadline = now.Add(-time.Duration(i) * time.Millisecond)
		os = append(os, o)
	}
	mustInsert(t, s, os)
	var mu sync.Mutex
	results := map[string][]string{}
	var wg sync.WaitGroup
	for g := range 20 {
		wg.Go(func() {
			if g%4 == 0 {
				for {
					got, err := l.ExpireDue(ctx, now, 2)
					if err != nil {
						t.Errorf("ExpireDue() = %v", err)
						return
					}
					mu.Lock()
					for _, o := range got {
						results[o.ID] = append(results[o.ID], "expired")
					}
					mu.Unlock()
					if len(got) == 0 {
						return
					}
				}
			}
			for i := range os {
				o := os[(i+g)%len(os)]
				_, applied, err := l.Transition(ctx, o.ID, order.From(order.Pay), change(order.Pay, order.Paid, now))
				if err != nil {
					t.Errorf("Transition(pay) = %v", err)
					return
				}
				if applied {
					mu.Lock()
					results[o.ID] = append(results[o.ID], "paid")
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	for _, o := range os {
		r := results[o.ID]
		if len(r) != 1 {
			t.Errorf("order %s: %v, want exactly one of paid or expired", o.ID, r)
			continue
		}
		got := mustOrder(t, s, o.ID)
		if (r[0] == "paid") != (got.Status == order.Paid) {
			t.Errorf("order %s: %v but stored %s", o.ID, r, got.Status)
		}
		if h := mustHistory(t, l, o.ID); len(h) != 1 {
			t.Errorf("History(%s) = %+v, want one entry", o.ID, h)
		}
	}
}

func testStockToReturn(t *testing.T, s Stores) {
	l := needLifecycle(t, s)
	ctx := context.Background()
	var os []order.Order
	for i, id := range []string{"cancel-late", "cancel-early", "refund-paid", "refund-shipped", "paid", "created", "expired"} {
		o := newOrder(id, "s", userOf(i), base)
		if id == "expired" {
			o.PaymentDeadline = base.Add(time.Minute)
		}
		os = append(os, o)
	}
	mustInsert(t, s, os)
	apply := func(id string, tr order.Transition, at time.Time) {
		t.Helper()
		o := mustOrder(t, s, id)
		to, err := order.Next(o.Status, tr)
		if err != nil {
			t.Fatal(err)
		}
		if _, applied, err := l.Transition(ctx, id, order.From(tr), change(tr, to, at)); err != nil || !applied {
			t.Fatalf("Transition(%s, %s) = %v, %v", id, tr, applied, err)
		}
	}
	m := func(n int) time.Time { return base.Add(time.Duration(n) * time.Minute) }
	apply("cancel-late", order.Cancel, m(50))
	apply("cancel-early", order.Cancel, m(10))
	apply("refund-paid", order.Pay, m(1))
	apply("refund-paid", order.Refund, m(30))
	apply("refund-shipped", order.Pay, m(1))
	apply("refund-shipped", order.Ship, m(2))
	apply("refund-shipped", order.Refund, m(3))
	apply("paid", order.Pay, m(4))
	if got, err := l.ExpireDue(ctx, m(40), 10); err != nil || len(got) != 1 || got[0].ID != "expired" {
		t.Fatalf("ExpireDue() = %v, %v; want the one created order", got, err)
	}
	ids := func(os []order.Order) []string {
		var out []string
		for _, o := range os {
			out = append(out, o.ID)
		}
		return out
	}
	got, err := l.StockToReturn(ctx, 10)
	if err != nil {
		t.Fatalf("StockToReturn() = %v", err)
	}
	if diff := cmp.Diff([]string{"cancel-early", "refund-paid", "expired", "cancel-late"}, ids(got)); diff != "" {
		t.Errorf("StockToReturn() (-want +got):\n%s", diff)
	}
	if got, _ := l.StockToReturn(ctx, 2); len(got) != 2 || got[0].ID != "cancel-early" {
		t.Errorf("StockToReturn(2) = %v, want the 2 oldest", ids(got))
	}
	for range 2 { // idempotent
		if err := l.MarkStockReturned(ctx, "refund-paid", "sale"); err != nil {
			t.Fatalf("MarkStockReturned() = %v", err)
		}
	}
	if got := mustOrder(t, s, "refund-paid").StockReturnedTo; got != "sale" {
		t.Errorf("after MarkStockReturned(sale), StockReturnedTo = %q", got)
	}
	if got := mustOrder(t, s, "cancel-early").StockReturnedTo; got != "" {
		t.Errorf("StockReturnedTo of an order not marked = %q", got)
	}
	got, _ = l.StockToReturn(ctx, 10)
	if diff := cmp.Diff([]string{"cancel-early", "expired", "cancel-late"}, ids(got)); diff != "" {
		t.Errorf("StockToReturn() after a mark (-want +got):\n%s", diff)
	}
	if err := l.MarkStockReturned(ctx, "missing", "sale"); !errors.Is(err, order.ErrOrderNotFound) {
		t.Errorf("MarkStockReturned(missing) = %v, want ErrOrderNotFound", err)
	}
}

func needPayments(t *testing.T, s Stores) payment.Store {
	t.Helper()
	if s.Payments == nil {
		t.Skip("no payment.Store")
	}
	return s.Payments
}

func newPayment(id, orderID string, user int64, key string) payment.Payment {
	return payment.Payment{
		ID: id, OrderID: orderID, UserID: user, Provider: "sandbox", AmountCents: 1999, Status: payment.RequiresAction,
		IdempotencyKey: key, CreatedAt: base.Add(time.Duration(len(id)) * time.Second), UpdatedAt: base.Add(time.Duration(len(id)) * time.Second),
	}
}

func testPayments(t *testing.T, s Stores) {
	ps := needPayments(t, s)
	ctx := context.Background()
	p1 := newPayment("pay-01", "order-1", 11, "k1")
	p1.CreatedAt = p1.CreatedAt.Add(123 * time.Nanosecond) // stored to the microsecond
	got, created, err := ps.CreatePayment(ctx, p1)
	p1.CreatedAt = p1.CreatedAt.Truncate(time.Microsecond)
	if err != nil || !created {
		t.Fatalf("CreatePayment() = %v, %v", created, err)
	}
	if diff := cmp.Diff(p1, got); diff != "" {
		t.Errorf("CreatePayment() returned (-want +got):\n%s", diff)
	}
	// The same (order, key) again: the first is kept and returned.
	again := newPayment("pay-02", "order-1", 11, "k1")
	again.AmountCents = 5
	if got, created, err := ps.CreatePayment(ctx, again); err != nil || created || got != p1 {
		t.Errorf("CreatePayment(same key) = %+v, %v, %v; want the first, not created", got, created, err)
	}
	if _, err := ps.Payment(ctx, "pay-02"); !errors.Is(err, payment.ErrPaymentNotFound) {
		t.Errorf("Payment(the duplicate's id) = %v, want ErrPaymentNotFound", err)
	}
	// Another key of the same order, and another order's payment.
	p3 := newPayment("pay-03", "order-1", 11, "k2")
	p4 := newPayment("pay-04", "order-2", 12345, "k1")
	for _, p := range []payment.Payment{p3, p4} {
		if _, created, err := ps.CreatePayment(ctx, p); err != nil || !created {
			t.Fatalf("CreatePayment(%s) = %v, %v", p.ID, created, err)
		}
	}
	// The same id for another order is a conflict.
	if _, _, err := ps.CreatePayment(ctx, newPayment("pay-03", "order-9", 11, "k9")); !errors.Is(err, spike.ErrConflict) {
		t.Errorf("CreatePayment(an id in use) = %v, want a conflict", err)
	}
	for _, want := range []payment.Payment{p1, p3, p4} {
		got, err := ps.Payment(ctx, want.ID)
		if err != nil {
			t.Fatalf("Payment(%s) = %v", want.ID, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Payment(%s) (-want +got):\n%s", want.ID, diff)
		}
	}
	if _, err := ps.Payment(ctx, "missing"); !errors.Is(err, payment.ErrPaymentNotFound) {
		t.Errorf("Payment(missing) = %v, want ErrPaymentNotFound", err)
	}
	op, err := ps.OrderPayments(ctx, "order-1")
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(op, func(a, b payment.Payment) int { return strings.Compare(a.ID, b.ID) })
	if diff := cmp.Diff([]payment.Payment{p1, p3}, op); diff != "" {
		t.Errorf("OrderPayments(order-1) (-want +got):\n%s", diff)
	}
	if op, err := ps.OrderPayments(ctx, "order-none"); err != nil || len(op) != 0 {
		t.Errorf("OrderPayments(none) = %v, %v", op, err)
	}

	// Compare-and-set updates.
	upd := p1
	upd.Status, upd.ProviderRef, upd.CheckoutURL, upd.UpdatedAt = payment.Processing, "pi_123", "https://pay.example/x", base.Add(time.Hour)
	upd.AmountCents = 1 // immutable: not updated
	got, applied, err := ps.UpdatePayment(ctx, upd, []payment.Status{payment.RequiresAction})
	if err != nil || !applied {
		t.Fatalf("UpdatePayment() = %v, %v", applied, err)
	}
	wantP := upd
	wantP.AmountCents = p1.AmountCents
	if diff := cmp.Diff(wantP, got); diff != "" {
		t.Errorf("UpdatePayment() returned (-want +got):\n%s", diff)
	}
	stale := p1
	stale.Status = payment.Failed
	if got, applied, err := ps.UpdatePayment(ctx, stale, []payment.Status{payment.RequiresAction}); err != nil || applied || got != wantP {
		t.Errorf("UpdatePayment(stale from) = %+v, %v, %v; want not applied and the stored record", got, applied, err)
	}
	if _, _, err := ps.UpdatePayment(ctx, newPayment("missing", "o", 1, "k"), []payment.Status{payment.RequiresAction}); !errors.Is(err, payment.ErrPaymentNotFound) {
		t.Errorf("UpdatePayment(missing) = %v, want ErrPaymentNotFound", err)
	}
	refund := wantP
	refund.Status, refund.RefundedCents, refund.RefundRef, refund.RefundedAt, refund.UpdatedAt = payment.Succeeded, 1999, "re_1", base.Add(2*time.Hour), base.Add(2*time.Hour)
	if got, applied, err := ps.UpdatePayment(ctx, refund, []payment.Status{payment.RequiresAction, payment.Processing}); err != nil || !applied || got != refund {
		t.Errorf("UpdatePayment(refund) = %+v, %v, %v; want %+v", got, applied, err, refund)
	}

	// By the provider's reference.
	if got, err := ps.PaymentByRef(ctx, "sandbox", "pi_123"); err != nil || got != refund {
		t.Errorf("PaymentByRef() = %+v, %v; want %+v", got, err, refund)
	}
	for _, pr := range [][2]string{{"stripe", "pi_123"}, {"sandbox", "PI_123"}, {"sandbox", ""}} {
		if _, err := ps.PaymentByRef(ctx, pr[0], pr[1]); !errors.Is(err, payment.ErrPaymentNotFound) {
			t.Errorf("PaymentByRef(%q, %q) = %v, want ErrPaymentNotFound", pr[0], pr[1], err)
		}
	}
	// A reference is unique per provider (in MySQL per shard: the test
	// keeps to one user; providers' references are unique anyway).
	dup := p3
	dup.ProviderRef = "pi_123"
	if _, _, err := ps.UpdatePayment(ctx, dup, []payment.Status{payment.RequiresAction}); !errors.Is(err, spike.ErrConflict) {
		t.Errorf("UpdatePayment(a reference in use) = %v, want a conflict", err)
	}

	// The audit listing pages by id.
	for i := range 7 {
		p := newPayment(fmt.Sprintf("pay-1%d", i), fmt.Sprintf("order-x%d", i), userOf(i), "k")
		if _, _, err := ps.CreatePayment(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	after := ""
	for pages := 0; pages < 20; pages++ {
		page, err := ps.Payments(ctx, after, 3)
		if err != nil {
			t.Fatalf("Payments() = %v", err)
		}
		if len(page) > 3 {
			t.Fatalf("Payments(limit 3) = %d", len(page))
		}
		for _, p := range page {
			ids = append(ids, p.ID)
		}
		if len(page) < 3 {
			break
		}
		after = page[len(page)-1].ID
	}
	want := []string{"pay-01", "pay-03", "pay-04", "pay-10", "pay-11", "pay-12", "pay-13", "pay-14", "pay-15", "pay-16"}
	if diff := cmp.Diff(want, ids); diff != "" {
		t.Errorf("pages of Payments() (-want +got):\n%s", diff)
	}
}

// testPaymentsConcurrentCreate: buyers retrying with one key create one payment.
func testPaymentsConcurrentCreate(t *testing.T, s Stores) {
	ps := needPayments(t, s)
	var wg sync.WaitGroup
	var created atomic.Int32
	ids := make([]string, 10)
	for g := range 10 {
		wg.Go(func() {
			got, c, err := ps.CreatePayment(context.Background(), newPayment(fmt.Sprintf("cc-%d", g), "order-c", 99, "same"))
			if err != nil {
				t.Errorf("CreatePayment() = %v", err)
				return
			}
			if c {
				created.Add(1)
			}
			ids[g] = got.ID
		})
	}
	wg.Wait()
	if created.Load() != 1 {
		t.Errorf("%d payments created with one key, want 1", created.Load())
	}
	for _, id := range ids {
		if id != ids[0] {
			t.Errorf("CreatePayment() returned %v, want the same payment for all", ids)
			break
		}
	}
}
