// Package storetest is the conformance suite every implementation of the
// catalog (and stock ledger), sale (and sale ending), order (and order
// lifecycle) and payment stores must pass, so that SQLite and MySQL (and
// any later backend) behave the same:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) storetest.Stores {
//			s := mustOpen(t) // a fresh, empty, migrated store; closed in t.Cleanup
//			return storetest.Stores{Catalog: s, Sales: s, Orders: s, Lifecycle: s, Payments: s, Stock: s, Ender: s}
//		})
//	}
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/spikehq/spike/internal/domain/catalog"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/payment"
	"github.com/spikehq/spike/internal/domain/sale"
)

// Stores bundles the stores under test; they may be one value. The
// lifecycle, payment, stock-ledger and sale-ending tests run when
// Lifecycle, Payments, Stock and Ender are set. Stock must record the
// moves of the same products as Catalog (and Sales), and Ender end the
// sales of Sales.
type Stores struct {
	Catalog   catalog.Store
	Sales     sale.Store
	Orders    order.Store
	Lifecycle order.LifecycleStore
	Payments  payment.Store
	Stock     StockLedger
	Ender     sale.Ender
}

// StockLedger is a catalog.StockLedger that also lists every product.
type StockLedger interface {
	catalog.StockLedger
	// Products returns every product, ordered by SKU.
	Products(ctx context.Context) ([]catalog.Product, error)
}

// Run runs the suite. open must return stores over a fresh, empty database
// and arrange their cleanup with t.Cleanup; it is called once per subtest.
func Run(t *testing.T, open func(t *testing.T) Stores) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s Stores)
	}{
		{"Products", testProducts},
		{"CreateSale", testCreateSale},
		{"ConcurrentSales", testConcurrentSales},
		{"Sales", testSales},
		{"MinPaymentWindow", testMinPaymentWindow},
		{"InsertOrdersIdempotent", testInsertOrdersIdempotent},
		{"InsertOrdersConcurrent", testInsertOrdersConcurrent},
		{"Order", testOrder},
		{"ListOrders", testListOrders},
		{"ScanSaleOrders", testScanSaleOrders},
		{"InsertOrdersLifecycleFields", testInsertOrdersLifecycleFields},
		{"Transitions", testTransitions},
		{"TransitionChain", testTransitionChain},
		{"TransitionRace", testTransitionRace},
		{"ExpireDue", testExpireDue},
		{"ExpireDueRacingPay", testExpireDueRacingPay},
		{"StockToReturn", testStockToReturn},
		{"Payments", testPayments},
		{"PaymentsConcurrentCreate", testPaymentsConcurrentCreate},
		{"AdjustStock", testAdjustStock},
		{"AdjustStockConcurrentKey", testAdjustStockConcurrentKey},
		{"AdjustStockConcurrentWriteOffs", testAdjustStockConcurrentWriteOffs},
		{"StockMovesSum", testStockMovesSum},
		{"ProductsListing", testProductsListing},
		{"EndSale", testEndSale},
		{"SettleSale", testSettleSale},
		{"SettleSaleConcurrent", testSettleSaleConcurrent},
		{"SaleLifecycleFields", testSaleLifecycleFields},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

func ptr[T any](v T) *T { return &v }

func testProducts(t *testing.T, s Stores) {
	ctx := context.Background()
	p := catalog.Product{SKU: "sku-1", Name: "Tea pot ☕🫖", PriceCents: 1299, Stock: 40}
	if err := s.Catalog.CreateProduct(ctx, p); err != nil {
		t.Fatalf("CreateProduct() = %v", err)
	}
	if err := s.Catalog.CreateProduct(ctx, catalog.Product{SKU: "SKU-1", Name: "other case", Stock: 1}); err != nil {
		t.Fatalf("CreateProduct(SKU-1) = %v; SKUs are case-sensitive", err)
	}
	got, err := s.Catalog.Product(ctx, "sku-1")
	if err != nil {
		t.Fatalf("Product() = %v", err)
	}
	if diff := cmp.Diff(p, got); diff != "" {
		t.Errorf("Product() mismatch (-want +got):\n%s", diff)
	}

	err = s.Catalog.CreateProduct(ctx, catalog.Product{SKU: "sku-1", Name: "dup", PriceCents: 1, Stock: 1})
	if !errors.Is(err, catalog.ErrProductExists) {
		t.Errorf("CreateProduct(duplicate) = %v, want ErrProductExists", err)
	}
	if got, _ := s.Catalog.Product(ctx, "sku-1"); got != p {
		t.Errorf("after a duplicate create, Product() = %+v, want unchanged %+v", got, p)
	}

	if _, err := s.Catalog.Product(ctx, "missing"); !errors.Is(err, catalog.ErrProductNotFound) {
		t.Errorf("Product(missing) = %v, want ErrProductNotFound", err)
	}
	if _, err := s.Catalog.UpdateProduct(ctx, "missing", catalog.ProductUpdate{Name: ptr("x")}); !errors.Is(err, catalog.ErrProductNotFound) {
		t.Errorf("UpdateProduct(missing) = %v, want ErrProductNotFound", err)
	}
	if _, err := s.Catalog.UpdateProduct(ctx, "missing", catalog.ProductUpdate{}); !errors.Is(err, catalog.ErrProductNotFound) {
		t.Errorf("UpdateProduct(missing, no fields) = %v, want ErrProductNotFound", err)
	}

	updates := []struct {
		name string
		u    catalog.ProductUpdate
		want catalog.Product
	}{
		{"nothing", catalog.ProductUpdate{}, p},
		{"name", catalog.ProductUpdate{Name: ptr("Teapot")}, catalog.Product{SKU: "sku-1", Name: "Teapot", PriceCents: 1299, Stock: 40}},
		{"price", catalog.ProductUpdate{PriceCents: ptr(int64(999))}, catalog.Product{SKU: "sku-1", Name: "Teapot", PriceCents: 999, Stock: 40}},
		{"both", catalog.ProductUpdate{Name: ptr("Pot"), PriceCents: ptr(int64(0))}, catalog.Product{SKU: "sku-1", Name: "Pot", PriceCents: 0, Stock: 40}},
		{"same values", catalog.ProductUpdate{Name: ptr("Pot"), PriceCents: ptr(int64(0))}, catalog.Product{SKU: "sku-1", Name: "Pot", PriceCents: 0, Stock: 40}},
	}
	for _, tt := range updates {
		got, err := s.Catalog.UpdateProduct(ctx, "sku-1", tt.u)
		if err != nil {
			t.Fatalf("UpdateProduct(%s) = %v", tt.name, err)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("UpdateProduct(%s) mismatch (-want +got):\n%s", tt.name, diff)
		}
		if got, _ := s.Catalog.Product(ctx, "sku-1"); got != tt.want {
			t.Errorf("after UpdateProduct(%s), Product() = %+v, want %+v", tt.name, got, tt.want)
		}
	}
	if got, _ := s.Catalog.Product(ctx, "SKU-1"); got.Name != "other case" {
		t.Errorf("Product(SKU-1) = %+v, want the other product untouched", got)
	}
}

func newSale(id, sku string, stock int64) sale.Sale {
	return sale.Sale{
		ID: id, SKU: sku, Stock: stock, PriceCents: 500, PerUserLimit: 2,
		StartsAt: time.Date(2026, 11, 29, 12, 0, 0, 123_000_000, time.UTC),
	}
}

func mustCreateProduct(t *testing.T, s Stores, sku string, stock int64) {
	t.Helper()
	if err := s.Catalog.CreateProduct(context.Background(), catalog.Product{SKU: sku, Name: sku, PriceCents: 1000, Stock: stock}); err != nil {
		t.Fatalf("CreateProduct(%s) = %v", sku, err)
	}
}

func stockOf(t *testing.T, s Stores, sku string) int64 {
	t.Helper()
	p, err := s.Catalog.Product(context.Background(), sku)
	if err != nil {
		t.Fatalf("Product(%s) = %v", sku, err)
	}
	return p.Stock
}

func testCreateSale(t *testing.T, s Stores) {
	ctx := context.Background()
	mustCreateProduct(t, s, "p", 10)

	sl := newSale("s1", "p", 4)
	sl.EndsAt = sl.StartsAt.Add(90 * time.Minute)
	if err := s.Sales.CreateSale(ctx, sl); err != nil {
		t.Fatalf("CreateSale() = %v", err)
	}
	if got := stockOf(t, s, "p"); got != 6 {
		t.Errorf("product stock after a sale of 4 = %d, want 6", got)
	}
	got, err := s.Sales.Sale(ctx, "s1")
	if err != nil {
		t.Fatalf("Sale() = %v", err)
	}
	if diff := cmp.Diff(sl, got); diff != "" {
		t.Errorf("Sale() mismatch (-want +got):\n%s", diff)
	}

	open := newSale("s2", "p", 6) // no end, takes the rest
	if err := s.Sales.CreateSale(ctx, open); err != nil {
		t.Fatalf("CreateSale(all remaining) = %v", err)
	}
	if got, err := s.Sales.Sale(ctx, "s2"); err != nil || !got.EndsAt.IsZero() || !got.StartsAt.Equal(open.StartsAt) {
		t.Errorf("Sale(s2) = %+v, %v; want zero EndsAt and StartsAt %v", got, err, open.StartsAt)
	}
	if got := stockOf(t, s, "p"); got != 0 {
		t.Errorf("product stock = %d, want 0", got)
	}

	mustCreateProduct(t, s, "q", 5)
	errs := []struct {
		name string
		sl   sale.Sale
		want error
	}{
		{"insufficient stock", newSale("s3", "q", 6), sale.ErrInsufficientStock},
		{"unknown sku", newSale("s4", "nope", 1), catalog.ErrProductNotFound},
		{"duplicate id", newSale("s1", "q", 1), sale.ErrSaleExists},
	}
	for _, tt := range errs {
		if err := s.Sales.CreateSale(ctx, tt.sl); !errors.Is(err, tt.want) {
			t.Errorf("CreateSale(%s) = %v, want %v", tt.name, err, tt.want)
		}
		if got := stockOf(t, s, "q"); got != 5 {
			t.Errorf("after CreateSale(%s), product stock = %d, want 5 (unchanged)", tt.name, got)
		}
	}
	if _, err := s.Sales.Sale(ctx, "s3"); !errors.Is(err, sale.ErrSaleNotFound) {
		t.Errorf("Sale(s3) after insufficient stock = %v, want ErrSaleNotFound", err)
	}
	if got, _ := s.Sales.Sale(ctx, "s1"); got.SKU != "p" {
		t.Errorf("Sale(s1) after a duplicate create = %+v, want the first sale", got)
	}
	if _, err := s.Sales.Sale(ctx, "missing"); !errors.Is(err, sale.ErrSaleNotFound) {
		t.Errorf("Sale(missing) = %v, want ErrSaleNotFound", err)
	}
}

func testConcurrentSales(t *testing.T, s Stores) {
	ctx := context.Background()
	const (
		stock   = 100
		workers = 20
		each    = 7 // 14 sales fit, 6 must fail
	)
	mustCreateProduct(t, s, "hot", stock)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		ok, fail int
		others   []error
	)
	for i := range workers {
		wg.Go(func() {
			err := s.Sales.CreateSale(ctx, newSale(fmt.Sprintf("c%02d", i), "hot", each))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, sale.ErrInsufficientStock):
				fail++
			default:
				others = append(others, err)
			}
		})
	}
	wg.Wait()
	for _, err := range others {
		t.Errorf("CreateSale() = %v, want nil or ErrInsufficientStock", err)
	}
	if ok != stock/each || fail != workers-stock/each {
		t.Errorf("%d sales created and %d refused, want %d and %d", ok, fail, stock/each, workers-stock/each)
	}
	sales, err := s.Sales.Sales(ctx)
	if err != nil {
		t.Fatalf("Sales() = %v", err)
	}
	var allocated int64
	for _, sl := range sales {
		allocated += sl.Stock
	}
	if allocated != int64(ok*each) || allocated > stock {
		t.Errorf("units allocated to %d stored sales = %d, want %d (≤ %d)", len(sales), allocated, ok*each, stock)
	}
	if got := stockOf(t, s, "hot"); got != stock-allocated {
		t.Errorf("product stock = %d, want %d - %d", got, stock, allocated)
	}
}

func testSales(t *testing.T, s Stores) {
	ctx := context.Background()
	got, err := s.Sales.Sales(ctx)
	if err != nil || len(got) != 0 {
		t.Fatalf("Sales() on an empty store = %v, %v; want none", got, err)
	}
	mustCreateProduct(t, s, "p", 100)
	var want []sale.Sale
	for _, id := range []string{"b", "a", "C", "c-2", "a.1"} {
		sl := newSale(id, "p", 3)
		if err := s.Sales.CreateSale(ctx, sl); err != nil {
			t.Fatalf("CreateSale(%s) = %v", id, err)
		}
		want = append(want, sl)
	}
	slices.SortFunc(want, func(a, b sale.Sale) int { return strings.Compare(a.ID, b.ID) })
	got, err = s.Sales.Sales(ctx)
	if err != nil {
		t.Fatalf("Sales() = %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Sales() mismatch, want every sale by id (-want +got):\n%s", diff)
	}
}

// testMinPaymentWindow: the shortest payment window of any sale, if the
// store reports it (the deadline sweep's overdue scan uses it); a sale
// without a window does not count.
func testMinPaymentWindow(t *testing.T, s Stores) {
	m, ok := s.Sales.(interface {
		MinPaymentWindow(context.Context) (time.Duration, bool, error)
	})
	if !ok {
		t.Skip("the store does not report the shortest payment window")
	}
	ctx := context.Background()
	if w, ok, err := m.MinPaymentWindow(ctx); err != nil || ok {
		t.Fatalf("MinPaymentWindow() on an empty store = %v, %v, %v; want none", w, ok, err)
	}
	mustCreateProduct(t, s, "p", 100)
	for id, window := range map[string]time.Duration{"none": 0, "long": time.Hour, "short": 90 * time.Second, "default": 15 * time.Minute} {
		sl := newSale(id, "p", 3)
		sl.PaymentWindow = window
		if err := s.Sales.CreateSale(ctx, sl); err != nil {
			t.Fatalf("CreateSale(%s) = %v", id, err)
		}
	}
	if w, ok, err := m.MinPaymentWindow(ctx); err != nil || !ok || w != 90*time.Second {
		t.Errorf("MinPaymentWindow() = %v, %v, %v; want 1m30s", w, ok, err)
	}
}

// base is the creation time of test orders: microsecond precision matters.
var base = time.Date(2026, 11, 29, 12, 0, 0, 123_456_000, time.UTC)

func newOrder(id, saleID string, user int64, at time.Time) order.Order {
	return order.Order{
		ID: id, SaleID: saleID, SKU: "sku-" + saleID, UserID: user, Quantity: 1 + user%3,
		PriceCents: 250, Status: order.Created, IdempotencyKey: "key-" + id, CreatedAt: at, UpdatedAt: at,
	}
}

func sortByID(os []order.Order) []order.Order {
	out := slices.Clone(os)
	slices.SortFunc(out, func(a, b order.Order) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func mustInsert(t *testing.T, s Stores, os []order.Order) {
	t.Helper()
	if err := s.Orders.InsertOrders(context.Background(), os); err != nil {
		t.Fatalf("InsertOrders(%d orders) = %v", len(os), err)
	}
}

// saleOrders returns the sale's orders (ScanSaleOrders), sorted by id.
func saleOrders(t *testing.T, s Stores, saleID string) []order.Order {
	t.Helper()
	var got []order.Order
	if err := s.Orders.ScanSaleOrders(context.Background(), saleID, func(o *order.Order) error {
		got = append(got, *o)
		return nil
	}); err != nil {
		t.Fatalf("ScanSaleOrders(%s) = %v", saleID, err)
	}
	return sortByID(got)
}

func testInsertOrdersIdempotent(t *testing.T, s Stores) {
	ctx := context.Background()
	if err := s.Orders.InsertOrders(ctx, nil); err != nil {
		t.Fatalf("InsertOrders(nil) = %v", err)
	}
	var batch1, batch2 []order.Order
	for i := range 30 {
		o := newOrder(fmt.Sprintf("o%03d", i), "s", int64(1+i%7), base.Add(time.Duration(i)*time.Microsecond))
		if i < 20 {
			batch1 = append(batch1, o)
		}
		if i >= 10 {
			batch2 = append(batch2, o)
		}
	}
	mustInsert(t, s, batch1)
	mustInsert(t, s, batch1) // the same batch again
	mustInsert(t, s, batch2) // overlapping: 10 old, 10 new
	want := sortByID(append(slices.Clone(batch1), batch2[10:]...))
	if diff := cmp.Diff(want, saleOrders(t, s, "s")); diff != "" {
		t.Errorf("after repeated and overlapping batches, ScanSaleOrders() mismatch (-want +got):\n%s", diff)
	}

	// A duplicate id with other contents keeps the first; so does a second
	// order with the same user, sale and idempotency key; a batch may
	// repeat an order.
	changed := batch1[0]
	changed.Quantity, changed.Status = 99, order.Paid
	sameKey := newOrder("o999", "s", batch1[1].UserID, base)
	sameKey.IdempotencyKey = batch1[1].IdempotencyKey
	fresh := newOrder("o500", "s", 3, base)
	mustInsert(t, s, []order.Order{changed, sameKey, fresh, fresh})
	want = sortByID(append(want, fresh))
	if diff := cmp.Diff(want, saleOrders(t, s, "s")); diff != "" {
		t.Errorf("after duplicates, ScanSaleOrders() mismatch (-want +got):\n%s", diff)
	}
	for _, o := range want {
		got, err := s.Orders.Order(ctx, o.ID)
		if err != nil {
			t.Fatalf("Order(%s) = %v", o.ID, err)
		}
		if diff := cmp.Diff(o, got); diff != "" {
			t.Errorf("Order(%s) mismatch (-want +got):\n%s", o.ID, diff)
		}
	}
}

// testInsertOrdersConcurrent inserts overlapping batches at once, as
// order workers do when a batch is redelivered while its first delivery is
// still being written.
func testInsertOrdersConcurrent(t *testing.T, s Stores) {
	var all []order.Order
	for i := range 200 {
		all = append(all, newOrder(fmt.Sprintf("c%03d", i), "s", int64(1+i%50), base.Add(time.Duration(i)*time.Microsecond)))
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			// Worker w inserts orders [20w, 20w+60), half of them reversed.
			batch := slices.Clone(all[20*w : min(20*w+60, len(all))])
			if w%2 == 1 {
				slices.Reverse(batch)
			}
			if err := s.Orders.InsertOrders(context.Background(), batch); err != nil {
				t.Errorf("InsertOrders(batch %d) = %v", w, err)
			}
		})
	}
	wg.Wait()
	want := all[:min(20*7+60, len(all))]
	if diff := cmp.Diff(sortByID(want), saleOrders(t, s, "s")); diff != "" {
		t.Errorf("after concurrent overlapping batches, ScanSaleOrders() mismatch (-want +got):\n%s", diff)
	}
}

func testOrder(t *testing.T, s Stores) {
	ctx := context.Background()
	var all []order.Order
	for i := range 40 { // many users, so that every shard holds some
		o := newOrder(fmt.Sprintf("id-%02d", i), "s", int64(1000+i*7919), base.Add(time.Duration(i)*time.Second+time.Duration(i)*time.Microsecond))
		all = append(all, o)
	}
	all[3].Status = order.Paid
	all[4].IdempotencyKey = "a key with spaces and ~!@#"
	all[5].UserID = 1<<63 - 1
	mustInsert(t, s, all)
	for _, want := range all {
		got, err := s.Orders.Order(ctx, want.ID)
		if err != nil {
			t.Fatalf("Order(%s) = %v", want.ID, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Order(%s) mismatch (-want +got):\n%s", want.ID, diff)
		}
		if got.CreatedAt.Location() != time.UTC {
			t.Errorf("Order(%s).CreatedAt is in %v, want UTC", want.ID, got.CreatedAt.Location())
		}
	}
	for _, id := range []string{"missing", "ID-01", "id-01 "} {
		if _, err := s.Orders.Order(ctx, id); !errors.Is(err, order.ErrOrderNotFound) {
			t.Errorf("Order(%q) = %v, want ErrOrderNotFound", id, err)
		}
	}
}

func testListOrders(t *testing.T, s Stores) {
	ctx := context.Background()
	const user = 42
	// 57 orders of one user in groups of up to 4 sharing a created_at, and
	// inserted out of order; plus other users' orders that must not show.
	var mine, others []order.Order
	for i := range 57 {
		at := base.Add(time.Duration(i/4) * time.Microsecond)
		mine = append(mine, newOrder(fmt.Sprintf("u%02d-%c", (i*37)%57, 'a'+i%4), "s", user, at))
	}
	for i := range 30 {
		others = append(others, newOrder(fmt.Sprintf("x%02d", i), "s", int64(43+i), base.Add(time.Duration(i%5)*time.Microsecond)))
	}
	mustInsert(t, s, append(slices.Clone(mine[30:]), others...))
	mustInsert(t, s, mine[:30])

	want := slices.Clone(mine)
	slices.SortFunc(want, func(a, b order.Order) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})

	for _, limit := range []int{1, 5, 7, 56, 57, 100} {
		t.Run(fmt.Sprint("limit=", limit), func(t *testing.T) {
			var got []order.Order
			var after order.Cursor
			for pages := 0; ; pages++ {
				if pages > 60 {
					t.Fatalf("listing does not end")
				}
				page, err := s.Orders.ListOrders(ctx, user, after, limit)
				if err != nil {
					t.Fatalf("ListOrders() = %v", err)
				}
				if len(page) > limit {
					t.Fatalf("ListOrders(limit %d) returned %d orders", limit, len(page))
				}
				got = append(got, page...)
				if len(page) < limit {
					break
				}
				// Round-trip the cursor through its string form, as clients do.
				c, err := order.ParseCursor(order.CursorAfter(&page[len(page)-1]).String())
				if err != nil {
					t.Fatalf("ParseCursor() = %v", err)
				}
				after = c
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("pages of ListOrders() mismatch, want each order once, newest first (-want +got):\n%s", diff)
			}
		})
	}

	if got, err := s.Orders.ListOrders(ctx, 7, order.Cursor{}, 10); err != nil || len(got) != 0 {
		t.Errorf("ListOrders(user without orders) = %v, %v; want none", got, err)
	}
	for i, o := range want {
		page, err := s.Orders.ListOrders(ctx, user, order.CursorAfter(&o), 1)
		if err != nil {
			t.Fatalf("ListOrders(after %s) = %v", o.ID, err)
		}
		if i+1 < len(want) && (len(page) != 1 || page[0].ID != want[i+1].ID) {
			t.Errorf("ListOrders(after %s, 1) = %v, want %s", o.ID, page, want[i+1].ID)
		}
		if i+1 == len(want) && len(page) != 0 {
			t.Errorf("ListOrders(after the last) = %v, want none", page)
		}
	}
}

func testScanSaleOrders(t *testing.T, s Stores) {
	var a, b []order.Order
	for i := range 60 {
		user := int64(1 + i*104729)
		a = append(a, newOrder(fmt.Sprintf("a%02d", i), "sale-a", user, base))
		if i%2 == 0 {
			b = append(b, newOrder(fmt.Sprintf("b%02d", i), "sale-b", user, base))
		}
	}
	if got := saleOrders(t, s, "sale-a"); len(got) != 0 {
		t.Errorf("ScanSaleOrders() before inserts = %v, want none", got)
	}
	mustInsert(t, s, append(slices.Clone(a), b...))
	if diff := cmp.Diff(sortByID(a), saleOrders(t, s, "sale-a")); diff != "" {
		t.Errorf("ScanSaleOrders(sale-a) mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(sortByID(b), saleOrders(t, s, "sale-b")); diff != "" {
		t.Errorf("ScanSaleOrders(sale-b) mismatch (-want +got):\n%s", diff)
	}
	if got := saleOrders(t, s, "SALE-A"); len(got) != 0 {
		t.Errorf("ScanSaleOrders(SALE-A) = %d orders, want none: ids are case-sensitive", len(got))
	}
	// fn's error stops the scan and is returned.
	stop := errors.New("enough")
	calls := 0
	err := s.Orders.ScanSaleOrders(context.Background(), "sale-a", func(*order.Order) error {
		calls++
		return stop
	})
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("ScanSaleOrders with fn failing at once = %v after %d calls, want fn's error after 1", err, calls)
	}
}
