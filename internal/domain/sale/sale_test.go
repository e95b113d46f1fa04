package sale_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/catalog"
	"github.com/spikehq/spike/internal/domain/sale"
)

var t0 = time.Date(2036, 11, 29, 20, 0, 0, 0, time.UTC)

func validSale() sale.Sale {
	return sale.Sale{ID: "bf-2026", SKU: "sku-1", Stock: 100, PriceCents: 999, PerUserLimit: 2, StartsAt: t0, EndsAt: t0.Add(time.Hour)}
}

func TestValidate(t *testing.T) {
	with := func(f func(*sale.Sale)) sale.Sale { s := validSale(); f(&s); return s }
	tests := []struct {
		name string
		s    sale.Sale
		want error
	}{
		{"valid", validSale(), nil},
		{"no end", with(func(s *sale.Sale) { s.EndsAt = time.Time{} }), nil},
		{"free", with(func(s *sale.Sale) { s.PriceCents = 0 }), nil},
		{"limit 1", with(func(s *sale.Sale) { s.PerUserLimit = 1 }), nil},
		{"limit 1e6", with(func(s *sale.Sale) { s.PerUserLimit = 1_000_000 }), nil},
		{"limit 1e6+1", with(func(s *sale.Sale) { s.PerUserLimit = 1_000_001 }), spike.ErrInvalid},
		{"limit 0", with(func(s *sale.Sale) { s.PerUserLimit = 0 }), spike.ErrInvalid},
		{"limit -1", with(func(s *sale.Sale) { s.PerUserLimit = -1 }), spike.ErrInvalid},
		{"empty id", with(func(s *sale.Sale) { s.ID = "" }), spike.ErrInvalid},
		{"id 65 chars", with(func(s *sale.Sale) { s.ID = strings.Repeat("i", 65) }), spike.ErrInvalid},
		{"id with slash", with(func(s *sale.Sale) { s.ID = "a/b" }), spike.ErrInvalid},
		{"bad sku", with(func(s *sale.Sale) { s.SKU = "a b" }), spike.ErrInvalid},
		{"empty sku", with(func(s *sale.Sale) { s.SKU = "" }), spike.ErrInvalid},
		{"stock 0", with(func(s *sale.Sale) { s.Stock = 0 }), spike.ErrInvalid},
		{"stock -1", with(func(s *sale.Sale) { s.Stock = -1 }), spike.ErrInvalid},
		{"negative price", with(func(s *sale.Sale) { s.PriceCents = -1 }), spike.ErrInvalid},
		{"ends at starts", with(func(s *sale.Sale) { s.EndsAt = s.StartsAt }), spike.ErrInvalid},
		{"ends before starts", with(func(s *sale.Sale) { s.EndsAt = s.StartsAt.Add(-time.Millisecond) }), spike.ErrInvalid},
		{"ends 1ms after starts", with(func(s *sale.Sale) { s.EndsAt = s.StartsAt.Add(time.Millisecond) }), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.s.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var de *spike.Error
			if !errors.Is(err, tt.want) || !errors.As(err, &de) || de.Message == "" {
				t.Fatalf("Validate() = %#v, want a %v *spike.Error", err, tt.want)
			}
		})
	}
}

func TestActiveAtAndStateAt(t *testing.T) {
	s := validSale()
	open := validSale()
	open.EndsAt = time.Time{}
	tests := []struct {
		name       string
		s          sale.Sale
		at         time.Time
		remaining  int64
		wantActive bool
		wantState  sale.State
	}{
		{"before start", s, t0.Add(-time.Nanosecond), 100, false, sale.Scheduled},
		{"at start (inclusive)", s, t0, 100, true, sale.Active},
		{"during", s, t0.Add(30 * time.Minute), 5, true, sale.Active},
		{"just before end", s, s.EndsAt.Add(-time.Nanosecond), 1, true, sale.Active},
		{"at end (exclusive)", s, s.EndsAt, 1, false, sale.Ended},
		{"after end", s, s.EndsAt.Add(time.Hour), 1, false, sale.Ended},
		{"sold out during", s, t0.Add(time.Minute), 0, true, sale.SoldOut},
		{"negative remaining is sold out", s, t0.Add(time.Minute), -1, true, sale.SoldOut},
		{"sold out before start is scheduled", s, t0.Add(-time.Minute), 0, false, sale.Scheduled},
		{"sold out after end is ended", s, s.EndsAt, 0, false, sale.Ended},
		{"no end, far future", open, t0.Add(100 * 365 * 24 * time.Hour), 1, true, sale.Active},
		{"no end, sold out", open, t0.Add(time.Hour), 0, true, sale.SoldOut},
		{"no end, before start", open, t0.Add(-time.Second), 1, false, sale.Scheduled},
		{"other time zone, same instant as start", s, t0.In(time.FixedZone("X", 3600)), 1, true, sale.Active},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.s.ActiveAt(tt.at); got != tt.wantActive {
				t.Errorf("ActiveAt(%v) = %v, want %v", tt.at, got, tt.wantActive)
			}
			if got := tt.s.StateAt(tt.at, tt.remaining); got != tt.wantState {
				t.Errorf("StateAt(%v, %d) = %q, want %q", tt.at, tt.remaining, got, tt.wantState)
			}
		})
	}
}

// memStore is an in-memory sale.Store that takes stock from products.
type memStore struct {
	mu       sync.Mutex
	products map[string]int64 // sku → stock
	sales    map[string]sale.Sale
}

func (m *memStore) CreateSale(_ context.Context, s sale.Sale) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.sales[s.ID]; ok {
		return sale.ErrSaleExists
	}
	stock, ok := m.products[s.SKU]
	if !ok {
		return catalog.ErrProductNotFound
	}
	if stock < s.Stock {
		return sale.ErrInsufficientStock
	}
	m.products[s.SKU] = stock - s.Stock
	m.sales[s.ID] = s
	return nil
}

func (m *memStore) Sale(_ context.Context, id string) (sale.Sale, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sales[id]
	if !ok {
		return sale.Sale{}, sale.ErrSaleNotFound
	}
	return s, nil
}

func (m *memStore) Sales(context.Context) ([]sale.Sale, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []sale.Sale
	for _, s := range m.sales {
		out = append(out, s)
	}
	return out, nil
}

// memCounters is an in-memory sale.Counters.
type memCounters struct {
	mu        sync.Mutex
	remaining map[string]int64
	opened    []sale.Sale
}

func (c *memCounters) Open(_ context.Context, s sale.Sale) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.opened = append(c.opened, s)
	if _, ok := c.remaining[s.ID]; !ok {
		c.remaining[s.ID] = s.Stock
	}
	return nil
}

func (c *memCounters) End(context.Context, string, time.Time) error { return nil }

func (c *memCounters) Remaining(_ context.Context, id string) (int64, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.remaining[id]
	return n, ok, nil
}

func newService() (*sale.Service, *memStore, *memCounters) {
	st := &memStore{products: map[string]int64{"sku-1": 100, "sku-2": 5}, sales: map[string]sale.Sale{}}
	c := &memCounters{remaining: map[string]int64{}}
	return sale.NewService(st, c), st, c
}

func kindOf(err error) error {
	for _, k := range []error{spike.ErrInvalid, spike.ErrNotFound, spike.ErrConflict, spike.ErrInsufficient, spike.ErrUnavailable} {
		if errors.Is(err, k) {
			return k
		}
	}
	return err
}

func TestServiceCreate(t *testing.T) {
	paris := time.FixedZone("Paris", 3600)
	tests := []struct {
		name         string
		in           sale.Sale
		want         sale.Sale // StartsAt zero: "now" (checked separately)
		wantErr      error
		wantProducts map[string]int64
	}{
		{
			name:         "explicit",
			in:           sale.Sale{ID: "s1", SKU: "sku-1", Stock: 40, PriceCents: 10, PerUserLimit: 3, StartsAt: t0, EndsAt: t0.Add(time.Hour)},
			want:         sale.Sale{ID: "s1", SKU: "sku-1", Stock: 40, PriceCents: 10, PerUserLimit: 3, StartsAt: t0, EndsAt: t0.Add(time.Hour)},
			wantProducts: map[string]int64{"sku-1": 60, "sku-2": 5},
		},
		{
			name:         "defaults: per_user_limit 1, starts_at now",
			in:           sale.Sale{ID: "s1", SKU: "sku-1", Stock: 1, PriceCents: 10},
			want:         sale.Sale{ID: "s1", SKU: "sku-1", Stock: 1, PriceCents: 10, PerUserLimit: 1},
			wantProducts: map[string]int64{"sku-1": 99, "sku-2": 5},
		},
		{
			name:         "times are UTC, truncated to the millisecond",
			in:           sale.Sale{ID: "s1", SKU: "sku-1", Stock: 1, PerUserLimit: 1, StartsAt: t0.Add(1234567 * time.Nanosecond).In(paris), EndsAt: t0.Add(time.Hour + 999999*time.Nanosecond).In(paris)},
			want:         sale.Sale{ID: "s1", SKU: "sku-1", Stock: 1, PerUserLimit: 1, StartsAt: t0.Add(time.Millisecond), EndsAt: t0.Add(time.Hour)},
			wantProducts: map[string]int64{"sku-1": 99, "sku-2": 5},
		},
		{
			name:         "all of the product's stock",
			in:           sale.Sale{ID: "s1", SKU: "sku-2", Stock: 5, PerUserLimit: 1, StartsAt: t0},
			want:         sale.Sale{ID: "s1", SKU: "sku-2", Stock: 5, PerUserLimit: 1, StartsAt: t0},
			wantProducts: map[string]int64{"sku-1": 100, "sku-2": 0},
		},
		{
			name:         "more than the product's stock",
			in:           sale.Sale{ID: "s1", SKU: "sku-2", Stock: 6, PerUserLimit: 1, StartsAt: t0},
			wantErr:      spike.ErrInsufficient,
			wantProducts: map[string]int64{"sku-1": 100, "sku-2": 5},
		},
		{
			name:         "unknown sku",
			in:           sale.Sale{ID: "s1", SKU: "sku-3", Stock: 1, PerUserLimit: 1, StartsAt: t0},
			wantErr:      spike.ErrNotFound,
			wantProducts: map[string]int64{"sku-1": 100, "sku-2": 5},
		},
		{
			name:         "negative limit is not defaulted",
			in:           sale.Sale{ID: "s1", SKU: "sku-1", Stock: 1, PerUserLimit: -1, StartsAt: t0},
			wantErr:      spike.ErrInvalid,
			wantProducts: map[string]int64{"sku-1": 100, "sku-2": 5},
		},
		{
			name:         "ends before the default start",
			in:           sale.Sale{ID: "s1", SKU: "sku-1", Stock: 1, EndsAt: time.Now().Add(-time.Minute)},
			wantErr:      spike.ErrInvalid,
			wantProducts: map[string]int64{"sku-1": 100, "sku-2": 5},
		},
		{
			name:         "ends within the same millisecond as it starts",
			in:           sale.Sale{ID: "s1", SKU: "sku-1", Stock: 1, StartsAt: t0.Add(100 * time.Microsecond), EndsAt: t0.Add(900 * time.Microsecond)},
			wantErr:      spike.ErrInvalid,
			wantProducts: map[string]int64{"sku-1": 100, "sku-2": 5},
		},
		{
			name:         "ends in the past",
			in:           sale.Sale{ID: "s1", SKU: "sku-1", Stock: 1, StartsAt: time.Now().Add(-time.Hour), EndsAt: time.Now().Add(-time.Minute)},
			wantErr:      spike.ErrInvalid,
			wantProducts: map[string]int64{"sku-1": 100, "sku-2": 5},
		},
		{
			name:         "payment window below zero",
			in:           sale.Sale{ID: "s1", SKU: "sku-1", Stock: 1, StartsAt: t0, PaymentWindow: -time.Second},
			wantErr:      spike.ErrInvalid,
			wantProducts: map[string]int64{"sku-1": 100, "sku-2": 5},
		},
		{
			name:         "stock 0",
			in:           sale.Sale{ID: "s1", SKU: "sku-1", Stock: 0, StartsAt: t0},
			wantErr:      spike.ErrInvalid,
			wantProducts: map[string]int64{"sku-1": 100, "sku-2": 5},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc, st, c := newService()
			before := time.Now().UTC().Truncate(time.Millisecond)
			got, err := svc.Create(context.Background(), tt.in)
			after := time.Now().UTC()
			if kindOf(err) != tt.wantErr {
				t.Fatalf("Create() error = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.wantProducts, st.products); diff != "" {
				t.Errorf("product stock mismatch (-want +got):\n%s", diff)
			}
			if tt.wantErr != nil {
				if len(c.opened) != 0 || len(st.sales) != 0 {
					t.Errorf("failed Create opened %d counters and stored %d sales", len(c.opened), len(st.sales))
				}
				return
			}
			want := tt.want
			if want.StartsAt.IsZero() {
				if got.StartsAt.Before(before) || got.StartsAt.After(after) {
					t.Errorf("StartsAt = %v, want now (within [%v, %v])", got.StartsAt, before, after)
				}
				want.StartsAt = got.StartsAt
			}
			if got.StartsAt.Location() != time.UTC || (!got.EndsAt.IsZero() && got.EndsAt.Location() != time.UTC) {
				t.Errorf("times not in UTC: %v, %v", got.StartsAt, got.EndsAt)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Create() mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]sale.Sale{got}, c.opened); diff != "" {
				t.Errorf("opened counters mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(got, st.sales[got.ID]); diff != "" {
				t.Errorf("stored sale mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestServiceCreateDuplicate(t *testing.T) {
	svc, st, _ := newService()
	s := sale.Sale{ID: "s1", SKU: "sku-1", Stock: 10, StartsAt: t0}
	if _, err := svc.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Create(context.Background(), s); kindOf(err) != spike.ErrConflict {
		t.Fatalf("second Create() = %v, want conflict", err)
	}
	if got := st.products["sku-1"]; got != 90 {
		t.Errorf("product stock = %d after a duplicate create, want 90", got)
	}
}

func TestServiceView(t *testing.T) {
	svc, st, c := newService()
	now := time.Now().UTC()
	st.sales["live"] = sale.Sale{ID: "live", SKU: "sku-1", Stock: 10, PerUserLimit: 1, StartsAt: now.Add(-time.Hour)}
	st.sales["soon"] = sale.Sale{ID: "soon", SKU: "sku-1", Stock: 10, PerUserLimit: 1, StartsAt: now.Add(time.Hour)}
	st.sales["over"] = sale.Sale{ID: "over", SKU: "sku-1", Stock: 10, PerUserLimit: 1, StartsAt: now.Add(-2 * time.Hour), EndsAt: now.Add(-time.Hour)}
	st.sales["gone"] = sale.Sale{ID: "gone", SKU: "sku-1", Stock: 10, PerUserLimit: 1, StartsAt: now.Add(-time.Hour)}
	st.sales["rebuilding"] = sale.Sale{ID: "rebuilding", SKU: "sku-1", Stock: 10, PerUserLimit: 1, StartsAt: now.Add(-time.Hour)}
	c.remaining = map[string]int64{"live": 7, "soon": 10, "over": 3, "gone": 0}
	type view struct {
		Remaining, Sold int64
		State           sale.State
	}
	tests := []struct {
		name    string
		id      string
		want    view
		wantErr error
	}{
		{"active", "live", view{7, 3, sale.Active}, nil},
		{"scheduled", "soon", view{10, 0, sale.Scheduled}, nil},
		{"ended", "over", view{3, 7, sale.Ended}, nil},
		{"sold out", "gone", view{0, 10, sale.SoldOut}, nil},
		{"counters not open", "rebuilding", view{}, spike.ErrUnavailable},
		{"unknown", "nope", view{}, spike.ErrNotFound},
		{"invalid id", "a/b", view{}, spike.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := svc.View(context.Background(), tt.id)
			if kindOf(err) != tt.wantErr {
				t.Fatalf("View() error = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if diff := cmp.Diff(tt.want, view{v.Remaining, v.Sold, v.State}); diff != "" {
				t.Errorf("View() mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(st.sales[tt.id], v.Sale); diff != "" {
				t.Errorf("View().Sale mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
