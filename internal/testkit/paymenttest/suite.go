package paymenttest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/payment"
)

// Run checks s against the payment.Store contract. It only adds payments
// with fresh ids and order ids, so s may be shared and need not be empty.
// Times are given to the microsecond in UTC; the store must return them
// equal (time.Time.Equal), a zero RefundedAt as zero. Payments orders ids
// bytewise, as Go compares strings (MySQL: a binary collation).
func Run(t *testing.T, s payment.Store) {
	t.Helper()
	ids := spike.NewIDGenerator()
	base := time.Now().UTC().Truncate(time.Microsecond)
	n := 0
	newPayment := func(orderID, key string) payment.Payment {
		n++
		return payment.Payment{
			ID: ids.New(), OrderID: orderID, UserID: 42, Provider: "sandbox", AmountCents: 1999,
			Status: payment.RequiresAction, IdempotencyKey: key,
			CreatedAt: base.Add(time.Duration(n) * time.Microsecond), UpdatedAt: base.Add(time.Duration(n) * time.Microsecond),
		}
	}
	orderID := ids.New // order ids shaped like Spike's (26 characters)
	ctx := context.Background()

	t.Run("CreateIsIdempotentByOrderAndKey", func(t *testing.T) {
		o := orderID()
		p := newPayment(o, "k1")
		got, created, err := s.CreatePayment(ctx, p)
		if err != nil || !created {
			t.Fatalf("CreatePayment = created %v, %v; want created", created, err)
		}
		Same(t, got, p)
		got, err = s.Payment(ctx, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		Same(t, got, p)

		again := newPayment(o, "k1")
		again.AmountCents, again.Provider = 5, "other"
		got, created, err = s.CreatePayment(ctx, again)
		if err != nil || created {
			t.Fatalf("CreatePayment with the same (order, key) = created %v, %v; want the stored one", created, err)
		}
		Same(t, got, p)
		if _, err := s.Payment(ctx, again.ID); !errors.Is(err, spike.ErrNotFound) {
			t.Fatalf("Payment of the refused duplicate = %v; want not found", err)
		}

		other := newPayment(orderID(), "k1") // same key, another order
		if _, created, err := s.CreatePayment(ctx, other); err != nil || !created {
			t.Fatalf("same key for another order = created %v, %v; want created", created, err)
		}
		second := newPayment(o, "k2") // same order, another key
		if _, created, err := s.CreatePayment(ctx, second); err != nil || !created {
			t.Fatalf("another key for the order = created %v, %v; want created", created, err)
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		if _, err := s.Payment(ctx, "no-such-payment"); !errors.Is(err, spike.ErrNotFound) {
			t.Errorf("Payment(unknown) = %v; want spike.ErrNotFound", err)
		}
		if _, err := s.PaymentByRef(ctx, "sandbox", "no-such-ref"); !errors.Is(err, spike.ErrNotFound) {
			t.Errorf("PaymentByRef(unknown) = %v; want spike.ErrNotFound", err)
		}
		p := newPayment(orderID(), "k")
		if _, _, err := s.UpdatePayment(ctx, p, []payment.Status{payment.RequiresAction}); !errors.Is(err, spike.ErrNotFound) {
			t.Errorf("UpdatePayment(unknown) = %v; want spike.ErrNotFound", err)
		}
		ps, err := s.OrderPayments(ctx, orderID())
		if err != nil || len(ps) != 0 {
			t.Errorf("OrderPayments(unknown order) = %v, %v; want none", ps, err)
		}
	})

	t.Run("UpdateIsCompareAndSet", func(t *testing.T) {
		p := newPayment(orderID(), "k")
		if _, _, err := s.CreatePayment(ctx, p); err != nil {
			t.Fatal(err)
		}
		ref := "ref-" + p.ID
		next := p
		next.ProviderRef, next.CheckoutURL, next.UpdatedAt = ref, "https://pay.example/"+ref, p.UpdatedAt.Add(time.Second)
		// Immutable fields are not changed by an update.
		next.AmountCents, next.UserID, next.IdempotencyKey, next.CreatedAt = 1, 7, "other", base.Add(-time.Hour)
		got, applied, err := s.UpdatePayment(ctx, next, []payment.Status{payment.RequiresAction})
		if err != nil || !applied {
			t.Fatalf("UpdatePayment = applied %v, %v; want applied", applied, err)
		}
		want := p
		want.ProviderRef, want.CheckoutURL, want.UpdatedAt = next.ProviderRef, next.CheckoutURL, next.UpdatedAt
		Same(t, got, want)
		if got, err = s.PaymentByRef(ctx, "sandbox", ref); err != nil {
			t.Fatalf("PaymentByRef = %v", err)
		}
		Same(t, got, want)
		if _, err := s.PaymentByRef(ctx, "stripe", ref); !errors.Is(err, spike.ErrNotFound) {
			t.Errorf("PaymentByRef under another provider = %v; want spike.ErrNotFound", err)
		}

		succ := want
		succ.Status, succ.UpdatedAt = payment.Succeeded, want.UpdatedAt.Add(time.Second)
		if got, applied, err = s.UpdatePayment(ctx, succ, []payment.Status{payment.RequiresAction, payment.Processing}); err != nil || !applied {
			t.Fatalf("UpdatePayment to succeeded = applied %v, %v", applied, err)
		}
		Same(t, got, succ)

		fail := succ
		fail.Status, fail.UpdatedAt = payment.Failed, succ.UpdatedAt.Add(time.Second)
		got, applied, err = s.UpdatePayment(ctx, fail, []payment.Status{payment.RequiresAction, payment.Processing})
		if err != nil || applied {
			t.Fatalf("UpdatePayment from a status it is not in = applied %v, %v; want not applied", applied, err)
		}
		Same(t, got, succ) // the stored record
		if got, _ = s.Payment(ctx, p.ID); got.Status != payment.Succeeded {
			t.Fatalf("after a refused update the status is %s", got.Status)
		}

		ref2 := succ
		ref2.RefundedCents, ref2.RefundRef, ref2.RefundedAt = succ.AmountCents, "rf-"+p.ID, succ.UpdatedAt.Add(time.Second)
		ref2.UpdatedAt = ref2.RefundedAt
		if got, applied, err = s.UpdatePayment(ctx, ref2, []payment.Status{payment.Succeeded}); err != nil || !applied {
			t.Fatalf("UpdatePayment with the refund = applied %v, %v", applied, err)
		}
		Same(t, got, ref2)
		if got, err = s.Payment(ctx, p.ID); err != nil {
			t.Fatal(err)
		}
		Same(t, got, ref2)
	})

	t.Run("OrderPayments", func(t *testing.T) {
		o := orderID()
		want := map[string]bool{}
		for i := range 3 {
			p := newPayment(o, fmt.Sprint("k", i))
			if _, _, err := s.CreatePayment(ctx, p); err != nil {
				t.Fatal(err)
			}
			want[p.ID] = true
		}
		if _, _, err := s.CreatePayment(ctx, newPayment(orderID(), "k0")); err != nil {
			t.Fatal(err)
		}
		ps, err := s.OrderPayments(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) != len(want) {
			t.Fatalf("OrderPayments = %d payments; want %d", len(ps), len(want))
		}
		for _, p := range ps {
			if !want[p.ID] || p.OrderID != o {
				t.Errorf("OrderPayments returned %s of order %s", p.ID, p.OrderID)
			}
		}
	})

	t.Run("PaymentsPages", func(t *testing.T) {
		o := orderID()
		var mine []string
		for i := range 5 {
			p := newPayment(o, fmt.Sprint("k", i))
			if _, _, err := s.CreatePayment(ctx, p); err != nil {
				t.Fatal(err)
			}
			mine = append(mine, p.ID)
		}
		seen := map[string]bool{}
		after := ""
		for pages := 0; ; pages++ {
			if pages > 100000 {
				t.Fatal("Payments does not end")
			}
			ps, err := s.Payments(ctx, after, 2)
			if err != nil {
				t.Fatal(err)
			}
			if len(ps) > 2 {
				t.Fatalf("Payments(limit 2) returned %d", len(ps))
			}
			if len(ps) == 0 {
				break
			}
			for _, p := range ps {
				if p.ID <= after {
					t.Fatalf("Payments(after %q) returned %q: not in increasing id order", after, p.ID)
				}
				after = p.ID
				seen[p.ID] = true
			}
		}
		for _, id := range mine {
			if !seen[id] {
				t.Errorf("paging through Payments missed %s", id)
			}
		}
		ps, err := s.Payments(ctx, mine[2], 2)
		if err != nil || len(ps) != 2 || ps[0].ID != mine[3] || ps[1].ID != mine[4] {
			t.Errorf("Payments(after %s, 2) = %v, %v; want %s, %s", mine[2], ids2(ps), err, mine[3], mine[4])
		}
	})

	t.Run("ConcurrentCreateStoresOne", func(t *testing.T) {
		o := orderID()
		const n = 8
		var wg sync.WaitGroup
		got := make([]payment.Payment, n)
		created := make([]bool, n)
		errs := make([]error, n)
		for i := range n {
			p := newPayment(o, "same")
			wg.Go(func() { got[i], created[i], errs[i] = s.CreatePayment(ctx, p) })
		}
		wg.Wait()
		count := 0
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("CreatePayment: %v", errs[i])
			}
			if created[i] {
				count++
			}
			if got[i].ID != got[0].ID {
				t.Errorf("concurrent creates returned payments %s and %s", got[0].ID, got[i].ID)
			}
		}
		if count != 1 {
			t.Errorf("%d concurrent creates reported created; want 1", count)
		}
	})

	t.Run("ConcurrentUpdateAppliesOnce", func(t *testing.T) {
		p := newPayment(orderID(), "k")
		if _, _, err := s.CreatePayment(ctx, p); err != nil {
			t.Fatal(err)
		}
		const n = 8
		var wg sync.WaitGroup
		applied := make([]bool, n)
		errs := make([]error, n)
		for i := range n {
			next := p
			next.Status, next.CheckoutURL = payment.Succeeded, fmt.Sprint("writer-", i)
			wg.Go(func() { _, applied[i], errs[i] = s.UpdatePayment(ctx, next, []payment.Status{payment.RequiresAction}) })
		}
		wg.Wait()
		winner := -1
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("UpdatePayment: %v", errs[i])
			}
			if applied[i] {
				if winner >= 0 {
					t.Fatalf("writers %d and %d both applied a compare-and-set from requires_action", winner, i)
				}
				winner = i
			}
		}
		if winner < 0 {
			t.Fatal("no writer applied")
		}
		got, err := s.Payment(ctx, p.ID)
		if err != nil || got.CheckoutURL != fmt.Sprint("writer-", winner) {
			t.Errorf("stored %q, %v; want the winner's write writer-%d", got.CheckoutURL, err, winner)
		}
	})
}

func ids2(ps []payment.Payment) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.ID
	}
	return out
}

// Same fails t unless got and want are the same payment, times compared
// with Equal.
func Same(t testing.TB, got, want payment.Payment) {
	t.Helper()
	eqT := func(a, b time.Time) bool { return a.Equal(b) || (a.IsZero() && b.IsZero()) }
	if got.ID != want.ID || got.OrderID != want.OrderID || got.UserID != want.UserID ||
		got.Provider != want.Provider || got.AmountCents != want.AmountCents || got.Status != want.Status ||
		got.IdempotencyKey != want.IdempotencyKey || got.ProviderRef != want.ProviderRef ||
		got.CheckoutURL != want.CheckoutURL || got.RefundedCents != want.RefundedCents ||
		got.RefundRef != want.RefundRef || !eqT(got.RefundedAt, want.RefundedAt) ||
		!eqT(got.CreatedAt, want.CreatedAt) || !eqT(got.UpdatedAt, want.UpdatedAt) {
		t.Errorf("payment\n got  %+v\n want %+v", got, want)
	}
}
