package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/spikehq/spike/internal/domain/catalog"
	"github.com/spikehq/spike/internal/domain/sale"
)

func needStock(t *testing.T, s Stores) StockLedger {
	t.Helper()
	if s.Stock == nil {
		t.Skip("no StockLedger")
	}
	return s.Stock
}

func needEnder(t *testing.T, s Stores) sale.Ender {
	t.Helper()
	if s.Ender == nil {
		t.Skip("no sale.Ender")
	}
	return s.Ender
}

func mustMoves(t *testing.T, l StockLedger, sku string) []catalog.StockMove {
	t.Helper()
	moves, err := l.StockMoves(context.Background(), sku)
	if err != nil {
		t.Fatalf("StockMoves(%s) = %v", sku, err)
	}
	return moves
}

// moveKeys returns the moves' keys and deltas, "key=delta", in order.
func moveKeys(moves []catalog.StockMove) []string {
	var out []string
	for _, m := range moves {
		out = append(out, fmt.Sprintf("%s=%d", m.Key, m.Delta))
	}
	return out
}

// checkConserved fails the test unless the product's stock is the sum of
// its recorded moves.
func checkConserved(t *testing.T, s Stores, l StockLedger, sku string) {
	t.Helper()
	var sum int64
	moves := mustMoves(t, l, sku)
	for _, m := range moves {
		if m.SKU != sku {
			t.Errorf("StockMoves(%s) returned a move of %q", sku, m.SKU)
		}
		sum += m.Delta
	}
	if got := stockOf(t, s, sku); got != sum {
		t.Errorf("product %s: stock %d, but its moves %v sum to %d", sku, got, moveKeys(moves), sum)
	}
}

// moveTime is a stock move's time: microsecond precision matters.
var moveTime = time.Date(2026, 11, 30, 9, 15, 0, 654_321_000, time.UTC)

func testAdjustStock(t *testing.T, s Stores) {
	l := needStock(t, s)
	ctx := context.Background()
	mustCreateProduct(t, s, "p", 10)

	restock := catalog.StockMove{SKU: "p", Key: catalog.MoveAdmin + "r1", Delta: 5, Reason: "restock ☕", At: moveTime}
	p, applied, err := l.AdjustStock(ctx, restock)
	if err != nil || !applied || p.Stock != 15 || p.SKU != "p" || p.Name != "p" || p.PriceCents != 1000 {
		t.Fatalf("AdjustStock(+5) = %+v, %v, %v; want the product with stock 15, applied", p, applied, err)
	}
	again := restock
	again.Delta = 100 // the key decides, not the content
	p, applied, err = l.AdjustStock(ctx, again)
	if err != nil || applied || p.Stock != 15 {
		t.Errorf("AdjustStock(same key) = %+v, %v, %v; want the product unchanged (stock 15), not applied", p, applied, err)
	}
	if got := stockOf(t, s, "p"); got != 15 {
		t.Errorf("stock after a repeated move = %d, want 15", got)
	}

	// A write-off larger than the stock is refused and not recorded: the
	// same key may then be used for one that fits.
	writeOff := catalog.StockMove{SKU: "p", Key: catalog.MoveAdmin + "w1", Delta: -16, Reason: "broken", At: moveTime.Add(time.Second)}
	if _, applied, err := l.AdjustStock(ctx, writeOff); !errors.Is(err, catalog.ErrInsufficientStock) || applied {
		t.Errorf("AdjustStock(-16 of 15) = %v, %v; want ErrInsufficientStock", applied, err)
	}
	if got := stockOf(t, s, "p"); got != 15 {
		t.Errorf("stock after a refused write-off = %d, want 15", got)
	}
	got := mustMoves(t, l, "p")
	if len(got) != 2 {
		t.Fatalf("StockMoves() after a refused write-off = %v, want the create and the restock", moveKeys(got))
	}
	if got[0].SKU != "p" || got[0].Key != catalog.MoveCreate+"p" || got[0].Delta != 10 || got[0].At.IsZero() {
		t.Errorf("first move = %+v, want %sp of 10 with a time", got[0], catalog.MoveCreate)
	}
	if diff := cmp.Diff(restock, got[1]); diff != "" {
		t.Errorf("restock move as stored (-want +got):\n%s", diff)
	}
	writeOff.Delta = -15
	if p, applied, err := l.AdjustStock(ctx, writeOff); err != nil || !applied || p.Stock != 0 {
		t.Errorf("AdjustStock(-15 of 15, key of the refused one) = %+v, %v, %v; want stock 0, applied", p, applied, err)
	}

	// Unknown product.
	if _, applied, err := l.AdjustStock(ctx, catalog.StockMove{SKU: "nope", Key: catalog.MoveAdmin + "x", Delta: 1}); !errors.Is(err, catalog.ErrProductNotFound) || applied {
		t.Errorf("AdjustStock(unknown sku) = %v, %v; want ErrProductNotFound", applied, err)
	}
	if got := mustMoves(t, l, "nope"); len(got) != 0 {
		t.Errorf("StockMoves(unknown sku) = %v, want none", moveKeys(got))
	}

	// Keys are per product; a zero time is stored as the time of the move.
	mustCreateProduct(t, s, "q", 0)
	before := time.Now().Add(-time.Minute)
	if p, applied, err := l.AdjustStock(ctx, catalog.StockMove{SKU: "q", Key: restock.Key, Delta: 3}); err != nil || !applied || p.Stock != 3 {
		t.Errorf("AdjustStock(q, a key used on p) = %+v, %v, %v; want stock 3, applied", p, applied, err)
	}
	qm := mustMoves(t, l, "q")
	if len(qm) != 2 || qm[0].Key != catalog.MoveCreate+"q" || qm[0].Delta != 0 {
		t.Fatalf("StockMoves(q) = %v, want the create move (of 0 units) and the restock", moveKeys(qm))
	}
	if at := qm[1].At; at.Before(before) || at.After(time.Now().Add(time.Minute)) || at.Location() != time.UTC {
		t.Errorf("a move given no time was stored at %v, want about now, in UTC", at)
	}
	checkConserved(t, s, l, "p")
	checkConserved(t, s, l, "q")
}

func testAdjustStockConcurrentKey(t *testing.T, s Stores) {
	l := needStock(t, s)
	ctx := context.Background()
	mustCreateProduct(t, s, "p", 10)
	const workers = 10
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		applied int
	)
	for range workers {
		wg.Go(func() {
			p, ok, err := l.AdjustStock(ctx, catalog.StockMove{SKU: "p", Key: catalog.MoveOrder + "o1", Delta: 3, Reason: "order o1 cancelled"})
			if err != nil {
				t.Errorf("AdjustStock() = %v", err)
				return
			}
			if p.Stock != 13 {
				t.Errorf("AdjustStock() returned stock %d (applied=%v), want 13 whoever applied it", p.Stock, ok)
			}
			if ok {
				mu.Lock()
				applied++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if applied != 1 {
		t.Errorf("%d of %d concurrent moves with one key applied, want exactly 1", applied, workers)
	}
	if got := stockOf(t, s, "p"); got != 13 {
		t.Errorf("stock = %d, want 13", got)
	}
	if got := moveKeys(mustMoves(t, l, "p")); !cmp.Equal(got, []string{"create:p=10", "order:o1=3"}) {
		t.Errorf("StockMoves() = %v, want the create and one order move", got)
	}
	checkConserved(t, s, l, "p")
}

func testAdjustStockConcurrentWriteOffs(t *testing.T, s Stores) {
	l := needStock(t, s)
	ctx := context.Background()
	const (
		stock   = 5
		workers = 10
	)
	mustCreateProduct(t, s, "p", stock)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		ok, fail int
	)
	for i := range workers {
		wg.Go(func() {
			_, applied, err := l.AdjustStock(ctx, catalog.StockMove{SKU: "p", Key: fmt.Sprintf("%sw%d", catalog.MoveAdmin, i), Delta: -1})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && applied:
				ok++
			case errors.Is(err, catalog.ErrInsufficientStock):
				fail++
			default:
				t.Errorf("AdjustStock(-1) = %v, %v; want applied or ErrInsufficientStock", applied, err)
			}
		})
	}
	wg.Wait()
	if ok != stock || fail != workers-stock {
		t.Errorf("%d write-offs applied and %d refused, want %d and %d", ok, fail, stock, workers-stock)
	}
	if got := stockOf(t, s, "p"); got != 0 {
		t.Errorf("stock = %d, want 0", got)
	}
	if got := mustMoves(t, l, "p"); len(got) != 1+stock {
		t.Errorf("StockMoves() = %v, want the create and %d write-offs", moveKeys(got), stock)
	}
	checkConserved(t, s, l, "p")
}

func testStockMovesSum(t *testing.T, s Stores) {
	l := needStock(t, s)
	ctx := context.Background()
	mustCreateProduct(t, s, "p", 20)
	checkConserved(t, s, l, "p")
	if err := s.Sales.CreateSale(ctx, newSale("s1", "p", 8)); err != nil {
		t.Fatalf("CreateSale() = %v", err)
	}
	checkConserved(t, s, l, "p")
	// A refused sale records nothing.
	if err := s.Sales.CreateSale(ctx, newSale("s2", "p", 13)); !errors.Is(err, sale.ErrInsufficientStock) {
		t.Fatalf("CreateSale(more than the stock) = %v, want ErrInsufficientStock", err)
	}
	if err := s.Sales.CreateSale(ctx, newSale("s1", "p", 1)); !errors.Is(err, sale.ErrSaleExists) {
		t.Fatalf("CreateSale(duplicate) = %v, want ErrSaleExists", err)
	}
	for _, m := range []catalog.StockMove{
		{SKU: "p", Key: catalog.MoveAdmin + "restock", Delta: 5, Reason: "restock"},
		{SKU: "p", Key: catalog.MoveAdmin + "write-off", Delta: -3, Reason: "damaged"},
		{SKU: "p", Key: catalog.MoveOrder + "o7", Delta: 2, Reason: "order o7 cancelled after its sale ended"},
	} {
		if _, applied, err := l.AdjustStock(ctx, m); err != nil || !applied {
			t.Fatalf("AdjustStock(%s) = %v, %v", m.Key, applied, err)
		}
		checkConserved(t, s, l, "p")
	}
	want := []string{"create:p=20", "sale:s1=-8", "admin:restock=5", "admin:write-off=-3", "order:o7=2"}
	if got := moveKeys(mustMoves(t, l, "p")); !cmp.Equal(got, want) {
		t.Errorf("StockMoves() = %v, want %v (oldest first)", got, want)
	}
	if got := stockOf(t, s, "p"); got != 16 {
		t.Errorf("stock = %d, want 20 - 8 + 5 - 3 + 2 = 16", got)
	}
	if e := s.Ender; e != nil {
		if _, applied, err := e.SettleSale(ctx, "s1", 6, moveTime); err != nil || !applied {
			t.Fatalf("SettleSale(s1, 6) = %v, %v", applied, err)
		}
		want = append(want, "sale-end:s1=6")
		if got := moveKeys(mustMoves(t, l, "p")); !cmp.Equal(got, want) {
			t.Errorf("StockMoves() after settling = %v, want %v", got, want)
		}
		checkConserved(t, s, l, "p")
	}
}

func testProductsListing(t *testing.T, s Stores) {
	l := needStock(t, s)
	ctx := context.Background()
	got, err := l.Products(ctx)
	if err != nil || len(got) != 0 {
		t.Fatalf("Products() on an empty store = %v, %v; want none", got, err)
	}
	var want []catalog.Product
	for i, sku := range []string{"b", "a", "C", "c-2", "a.1", "B"} {
		p := catalog.Product{SKU: sku, Name: "Product " + sku + " ☕", PriceCents: int64(100 * i), Stock: int64(i)}
		if err := s.Catalog.CreateProduct(ctx, p); err != nil {
			t.Fatalf("CreateProduct(%s) = %v", sku, err)
		}
		want = append(want, p)
	}
	if err := s.Sales.CreateSale(ctx, newSale("s", "c-2", 2)); err != nil {
		t.Fatalf("CreateSale() = %v", err)
	}
	want[3].Stock -= 2
	// By SKU, byte by byte: upper case first.
	order := map[string]int{"B": 0, "C": 1, "a": 2, "a.1": 3, "b": 4, "c-2": 5}
	sorted := make([]catalog.Product, len(want))
	for _, p := range want {
		sorted[order[p.SKU]] = p
	}
	got, err = l.Products(ctx)
	if err != nil {
		t.Fatalf("Products() = %v", err)
	}
	if diff := cmp.Diff(sorted, got); diff != "" {
		t.Errorf("Products() mismatch, want every product by sku (-want +got):\n%s", diff)
	}
}

func testEndSale(t *testing.T, s Stores) {
	e := needEnder(t, s)
	ctx := context.Background()
	mustCreateProduct(t, s, "p", 10)
	sl := newSale("s1", "p", 4)
	sl.EndsAt = sl.StartsAt.Add(90 * time.Minute)
	if err := s.Sales.CreateSale(ctx, sl); err != nil {
		t.Fatalf("CreateSale() = %v", err)
	}
	end := func(id string, at, want time.Time) {
		t.Helper()
		got, err := e.EndSale(ctx, id, at)
		if err != nil {
			t.Fatalf("EndSale(%s, %v) = %v", id, at, err)
		}
		if !got.EndsAt.Equal(want) || got.ID != id {
			t.Errorf("EndSale(%s, %v) returned ends_at %v, want %v", id, at, got.EndsAt, want)
		}
		stored, err := s.Sales.Sale(ctx, id)
		if err != nil {
			t.Fatalf("Sale(%s) = %v", id, err)
		}
		if diff := cmp.Diff(got, stored); diff != "" {
			t.Errorf("EndSale(%s) returned a sale other than the one stored (-returned +stored):\n%s", id, diff)
		}
	}
	early := sl.StartsAt.Add(30 * time.Minute)
	end("s1", early, early)                           // earlier: moved
	end("s1", sl.StartsAt.Add(60*time.Minute), early) // later: kept
	end("s1", sl.EndsAt.Add(time.Hour), early)        // after the original end: kept
	end("s1", early, early)                           // the same: unchanged

	open := newSale("s2", "p", 2) // no end
	if err := s.Sales.CreateSale(ctx, open); err != nil {
		t.Fatalf("CreateSale() = %v", err)
	}
	at := open.StartsAt.Add(5*time.Hour + 123*time.Millisecond)
	end("s2", at, at)
	end("s2", at.Add(time.Millisecond), at)
	got, _ := s.Sales.Sale(ctx, "s2")
	want := open
	want.EndsAt = at
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Sale(s2) after EndSale: only ends_at changes (-want +got):\n%s", diff)
	}
	if got := stockOf(t, s, "p"); got != 4 {
		t.Errorf("product stock after ending sales = %d, want 4 (ending gives nothing back)", got)
	}
	if _, err := e.EndSale(ctx, "missing", at); !errors.Is(err, sale.ErrSaleNotFound) {
		t.Errorf("EndSale(missing) = %v, want ErrSaleNotFound", err)
	}
}

func testSettleSale(t *testing.T, s Stores) {
	e := needEnder(t, s)
	ctx := context.Background()
	mustCreateProduct(t, s, "p", 10)
	sl := newSale("s1", "p", 6)
	if err := s.Sales.CreateSale(ctx, sl); err != nil {
		t.Fatalf("CreateSale() = %v", err)
	}
	at := moveTime
	got, applied, err := e.SettleSale(ctx, "s1", 4, at)
	if err != nil || !applied {
		t.Fatalf("SettleSale(s1, 4) = %v, %v; want applied", applied, err)
	}
	want := sl
	want.SettledAt = at
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("SettleSale() returned (-want +got):\n%s", diff)
	}
	if got := stockOf(t, s, "p"); got != 8 {
		t.Errorf("product stock after settling 4 unsold = %d, want 4 + 4", got)
	}
	// Again, even with other units and a later time: nothing changes.
	got, applied, err = e.SettleSale(ctx, "s1", 5, at.Add(time.Hour))
	if err != nil || applied {
		t.Errorf("SettleSale(s1) again = %v, %v; want not applied", applied, err)
	}
	if !got.SettledAt.Equal(at) {
		t.Errorf("SettleSale(s1) again returned settled_at %v, want the first %v", got.SettledAt, at)
	}
	if got := stockOf(t, s, "p"); got != 8 {
		t.Errorf("product stock after a repeated settle = %d, want 8", got)
	}
	if stored, _ := s.Sales.Sale(ctx, "s1"); !stored.SettledAt.Equal(at) {
		t.Errorf("Sale(s1).SettledAt = %v, want %v", stored.SettledAt, at)
	}

	// Nothing unsold: settled, the stock unchanged.
	if err := s.Sales.CreateSale(ctx, newSale("s2", "p", 3)); err != nil {
		t.Fatalf("CreateSale() = %v", err)
	}
	if got, applied, err := e.SettleSale(ctx, "s2", 0, at); err != nil || !applied || !got.SettledAt.Equal(at) {
		t.Errorf("SettleSale(s2, 0) = %+v, %v, %v; want settled at %v", got, applied, err, at)
	}
	if got := stockOf(t, s, "p"); got != 5 {
		t.Errorf("product stock after settling nothing unsold = %d, want 5", got)
	}
	if l := s.Stock; l != nil {
		want := []string{"create:p=10", "sale:s1=-6", "sale-end:s1=4", "sale:s2=-3"}
		if got := moveKeys(mustMoves(t, l, "p")); !cmp.Equal(got, want) {
			t.Errorf("StockMoves() = %v, want %v", got, want)
		}
		checkConserved(t, s, l, "p")
	}
	if _, applied, err := e.SettleSale(ctx, "missing", 1, at); !errors.Is(err, sale.ErrSaleNotFound) || applied {
		t.Errorf("SettleSale(missing) = %v, %v; want ErrSaleNotFound", applied, err)
	}
}

func testSettleSaleConcurrent(t *testing.T, s Stores) {
	e := needEnder(t, s)
	ctx := context.Background()
	mustCreateProduct(t, s, "p", 10)
	if err := s.Sales.CreateSale(ctx, newSale("s1", "p", 10)); err != nil {
		t.Fatalf("CreateSale() = %v", err)
	}
	const workers = 10
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		applied int
	)
	for i := range workers {
		wg.Go(func() {
			sl, ok, err := e.SettleSale(ctx, "s1", 7, moveTime.Add(time.Duration(i)*time.Second))
			if err != nil {
				t.Errorf("SettleSale() = %v", err)
				return
			}
			if sl.SettledAt.IsZero() {
				t.Errorf("SettleSale() returned a sale not settled (applied=%v)", ok)
			}
			if ok {
				mu.Lock()
				applied++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if applied != 1 {
		t.Errorf("%d of %d concurrent settles applied, want exactly 1", applied, workers)
	}
	if got := stockOf(t, s, "p"); got != 7 {
		t.Errorf("product stock = %d, want the 7 unsold units once", got)
	}
	if l := s.Stock; l != nil {
		checkConserved(t, s, l, "p")
	}
}

func testSaleLifecycleFields(t *testing.T, s Stores) {
	e := needEnder(t, s)
	ctx := context.Background()
	mustCreateProduct(t, s, "p", 100)
	var want []sale.Sale
	for i, w := range []time.Duration{0, time.Second, sale.DefaultPaymentWindow, sale.MaxPaymentWindow} {
		sl := newSale(fmt.Sprintf("s%d", i), "p", 1)
		sl.PaymentWindow = w
		if err := s.Sales.CreateSale(ctx, sl); err != nil {
			t.Fatalf("CreateSale(payment window %v) = %v", w, err)
		}
		got, err := s.Sales.Sale(ctx, sl.ID)
		if err != nil {
			t.Fatalf("Sale(%s) = %v", sl.ID, err)
		}
		if got.PaymentWindow != w || !got.SettledAt.IsZero() {
			t.Errorf("Sale(%s) = payment window %v, settled at %v; want %v and not settled", sl.ID, got.PaymentWindow, got.SettledAt, w)
		}
		want = append(want, sl)
	}
	settled := time.Date(2026, 12, 1, 8, 0, 0, 999_999_000, time.UTC)
	if _, applied, err := e.SettleSale(ctx, "s2", 1, settled.In(time.FixedZone("X", 3600))); err != nil || !applied {
		t.Fatalf("SettleSale(s2) = %v, %v", applied, err)
	}
	want[2].SettledAt = settled
	got, err := s.Sales.Sales(ctx)
	if err != nil {
		t.Fatalf("Sales() = %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Sales() mismatch (-want +got):\n%s", diff)
	}
	one, err := s.Sales.Sale(ctx, "s2")
	if err != nil {
		t.Fatalf("Sale(s2) = %v", err)
	}
	if diff := cmp.Diff(want[2], one); diff != "" {
		t.Errorf("Sale(s2) mismatch (-want +got):\n%s", diff)
	}
}
