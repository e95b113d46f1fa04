package catalog_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/catalog"
)

// memStore is an in-memory catalog.Store.
type memStore struct {
	mu       sync.Mutex
	products map[string]catalog.Product
	calls    int
}

func newMemStore(ps ...catalog.Product) *memStore {
	s := &memStore{products: map[string]catalog.Product{}}
	for _, p := range ps {
		s.products[p.SKU] = p
	}
	return s
}

func (s *memStore) CreateProduct(_ context.Context, p catalog.Product) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if _, ok := s.products[p.SKU]; ok {
		return catalog.ErrProductExists
	}
	s.products[p.SKU] = p
	return nil
}

func (s *memStore) Product(_ context.Context, sku string) (catalog.Product, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	p, ok := s.products[sku]
	if !ok {
		return catalog.Product{}, catalog.ErrProductNotFound
	}
	return p, nil
}

func (s *memStore) UpdateProduct(_ context.Context, sku string, u catalog.ProductUpdate) (catalog.Product, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	p, ok := s.products[sku]
	if !ok {
		return catalog.Product{}, catalog.ErrProductNotFound
	}
	if u.Name != nil {
		p.Name = *u.Name
	}
	if u.PriceCents != nil {
		p.PriceCents = *u.PriceCents
	}
	s.products[sku] = p
	return p, nil
}

// kindOf returns the spike error kind err wraps, or err itself.
func kindOf(err error) error {
	for _, k := range []error{spike.ErrInvalid, spike.ErrNotFound, spike.ErrConflict} {
		if errors.Is(err, k) {
			return k
		}
	}
	return err
}

func ptr[T any](v T) *T { return &v }

func TestProductValidate(t *testing.T) {
	ok := catalog.Product{SKU: "sku-1", Name: "Widget", PriceCents: 1999, Stock: 10}
	with := func(f func(*catalog.Product)) catalog.Product { p := ok; f(&p); return p }
	tests := []struct {
		name string
		p    catalog.Product
		want error
	}{
		{"valid", ok, nil},
		{"zero price and stock", with(func(p *catalog.Product) { p.PriceCents, p.Stock = 0, 0 }), nil},
		{"empty sku", with(func(p *catalog.Product) { p.SKU = "" }), spike.ErrInvalid},
		{"sku 64 chars", with(func(p *catalog.Product) { p.SKU = strings.Repeat("s", 64) }), nil},
		{"sku 65 chars", with(func(p *catalog.Product) { p.SKU = strings.Repeat("s", 65) }), spike.ErrInvalid},
		{"sku with space", with(func(p *catalog.Product) { p.SKU = "a b" }), spike.ErrInvalid},
		{"sku with slash", with(func(p *catalog.Product) { p.SKU = "a/b" }), spike.ErrInvalid},
		{"empty name", with(func(p *catalog.Product) { p.Name = "" }), spike.ErrInvalid},
		{"name 200 chars", with(func(p *catalog.Product) { p.Name = strings.Repeat("n", 200) }), nil},
		{"name 201 chars", with(func(p *catalog.Product) { p.Name = strings.Repeat("n", 201) }), spike.ErrInvalid},
		{"name 200 runes of 3 bytes", with(func(p *catalog.Product) { p.Name = strings.Repeat("\u20ac", 200) }), nil},
		{"name 201 runes of 3 bytes", with(func(p *catalog.Product) { p.Name = strings.Repeat("\u20ac", 201) }), spike.ErrInvalid},
		{"name invalid UTF-8", with(func(p *catalog.Product) { p.Name = "ab\xffcd" }), spike.ErrInvalid},
		{"negative price", with(func(p *catalog.Product) { p.PriceCents = -1 }), spike.ErrInvalid},
		{"negative stock", with(func(p *catalog.Product) { p.Stock = -1 }), spike.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Validate() = %v, want %v", err, tt.want)
			}
			var de *spike.Error
			if !errors.As(err, &de) || de.Message == "" {
				t.Errorf("Validate() = %#v, want a *spike.Error with a message", err)
			}
		})
	}
}

func TestServiceCreate(t *testing.T) {
	existing := catalog.Product{SKU: "taken", Name: "Old", PriceCents: 1, Stock: 1}
	tests := []struct {
		name      string
		p         catalog.Product
		want      catalog.Product
		wantErr   error
		wantStore bool // whether the store was reached
	}{
		{"creates", catalog.Product{SKU: "new", Name: "New", PriceCents: 500, Stock: 3}, catalog.Product{SKU: "new", Name: "New", PriceCents: 500, Stock: 3}, nil, true},
		{"existing sku", catalog.Product{SKU: "taken", Name: "New", PriceCents: 500}, catalog.Product{}, spike.ErrConflict, true},
		{"invalid never reaches the store", catalog.Product{SKU: "bad sku", Name: "New"}, catalog.Product{}, spike.ErrInvalid, false},
		{"negative price never reaches the store", catalog.Product{SKU: "x", Name: "New", PriceCents: -5}, catalog.Product{}, spike.ErrInvalid, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newMemStore(existing)
			svc := catalog.NewService(st)
			got, err := svc.Create(context.Background(), tt.p)
			if kindOf(err) != tt.wantErr {
				t.Fatalf("Create() error = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Create() mismatch (-want +got):\n%s", diff)
			}
			if (st.calls > 0) != tt.wantStore {
				t.Errorf("store calls = %d, want store reached = %v", st.calls, tt.wantStore)
			}
			if tt.wantErr == nil {
				stored, err := svc.Product(context.Background(), tt.p.SKU)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(tt.want, stored); diff != "" {
					t.Errorf("Product() after Create mismatch (-want +got):\n%s", diff)
				}
			}
			if tt.wantErr == spike.ErrConflict {
				if diff := cmp.Diff(existing, st.products["taken"]); diff != "" {
					t.Errorf("conflicting Create changed the product (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestServiceProduct(t *testing.T) {
	p := catalog.Product{SKU: "sku-1", Name: "Widget", PriceCents: 1999, Stock: 10}
	tests := []struct {
		name      string
		sku       string
		want      catalog.Product
		wantErr   error
		wantStore bool
	}{
		{"found", "sku-1", p, nil, true},
		{"unknown", "sku-2", catalog.Product{}, spike.ErrNotFound, true},
		{"invalid sku is not found without a store read", "../etc", catalog.Product{}, spike.ErrNotFound, false},
		{"empty sku", "", catalog.Product{}, spike.ErrNotFound, false},
		{"too long sku", strings.Repeat("s", 65), catalog.Product{}, spike.ErrNotFound, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newMemStore(p)
			got, err := catalog.NewService(st).Product(context.Background(), tt.sku)
			if kindOf(err) != tt.wantErr {
				t.Fatalf("Product() error = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Product() mismatch (-want +got):\n%s", diff)
			}
			if (st.calls > 0) != tt.wantStore {
				t.Errorf("store calls = %d, want store reached = %v", st.calls, tt.wantStore)
			}
		})
	}
}

func TestServiceUpdate(t *testing.T) {
	p := catalog.Product{SKU: "sku-1", Name: "Widget", PriceCents: 1999, Stock: 10}
	tests := []struct {
		name    string
		sku     string
		u       catalog.ProductUpdate
		want    catalog.Product
		wantErr error
	}{
		{"name", "sku-1", catalog.ProductUpdate{Name: ptr("Gadget")}, catalog.Product{SKU: "sku-1", Name: "Gadget", PriceCents: 1999, Stock: 10}, nil},
		{"price", "sku-1", catalog.ProductUpdate{PriceCents: ptr[int64](5)}, catalog.Product{SKU: "sku-1", Name: "Widget", PriceCents: 5, Stock: 10}, nil},
		{"price to zero", "sku-1", catalog.ProductUpdate{PriceCents: ptr[int64](0)}, catalog.Product{SKU: "sku-1", Name: "Widget", PriceCents: 0, Stock: 10}, nil},
		{"both", "sku-1", catalog.ProductUpdate{Name: ptr("G"), PriceCents: ptr[int64](7)}, catalog.Product{SKU: "sku-1", Name: "G", PriceCents: 7, Stock: 10}, nil},
		{"nothing", "sku-1", catalog.ProductUpdate{}, p, nil},
		{"empty name", "sku-1", catalog.ProductUpdate{Name: ptr("")}, catalog.Product{}, spike.ErrInvalid},
		{"name 201 chars", "sku-1", catalog.ProductUpdate{Name: ptr(strings.Repeat("n", 201))}, catalog.Product{}, spike.ErrInvalid},
		{"name invalid UTF-8", "sku-1", catalog.ProductUpdate{Name: ptr("\xff")}, catalog.Product{}, spike.ErrInvalid},
		{"negative price", "sku-1", catalog.ProductUpdate{PriceCents: ptr[int64](-1)}, catalog.Product{}, spike.ErrInvalid},
		{"valid name, negative price: nothing changes", "sku-1", catalog.ProductUpdate{Name: ptr("G"), PriceCents: ptr[int64](-1)}, catalog.Product{}, spike.ErrInvalid},
		{"unknown sku", "sku-2", catalog.ProductUpdate{Name: ptr("G")}, catalog.Product{}, spike.ErrNotFound},
		{"invalid sku", "a b", catalog.ProductUpdate{Name: ptr("G")}, catalog.Product{}, spike.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newMemStore(p)
			got, err := catalog.NewService(st).Update(context.Background(), tt.sku, tt.u)
			if kindOf(err) != tt.wantErr {
				t.Fatalf("Update() error = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Update() mismatch (-want +got):\n%s", diff)
			}
			if tt.wantErr != nil {
				if diff := cmp.Diff(p, st.products["sku-1"]); diff != "" {
					t.Errorf("failed Update changed the product (-want +got):\n%s", diff)
				}
			}
		})
	}
}
