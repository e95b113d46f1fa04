// Package paymenttest holds test support for the payment domain: Memory,
// an in-memory payment.Store, and Run, a conformance suite that any
// payment.Store must pass (the SQLite and MySQL stores run it too).
package paymenttest

import (
	"context"
	"slices"
	"sync"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/payment"
)

// Memory is an in-memory payment.Store, safe for concurrent use.
type Memory struct {
	mu    sync.Mutex
	byID  map[string]*payment.Payment
	byKey map[[2]string]string // (order, key) -> id
	byRef map[[2]string]string // (provider, ref) -> id
}

// NewMemory returns an empty Memory store.
func NewMemory() *Memory {
	return &Memory{byID: map[string]*payment.Payment{}, byKey: map[[2]string]string{}, byRef: map[[2]string]string{}}
}

var _ payment.Store = (*Memory)(nil)

// CreatePayment implements payment.Store.
func (m *Memory) CreatePayment(_ context.Context, p payment.Payment) (payment.Payment, bool, error) {
	if p.ID == "" || p.OrderID == "" || p.IdempotencyKey == "" {
		return payment.Payment{}, false, spike.Errorf(spike.ErrInvalid, "payment needs an id, an order id and a key")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	k := [2]string{p.OrderID, p.IdempotencyKey}
	if id, ok := m.byKey[k]; ok {
		return *m.byID[id], false, nil
	}
	if _, ok := m.byID[p.ID]; ok {
		return payment.Payment{}, false, spike.Errorf(spike.ErrConflict, "payment id %s taken", p.ID)
	}
	c := p
	m.byID[p.ID] = &c
	m.byKey[k] = p.ID
	if p.ProviderRef != "" {
		m.byRef[[2]string{p.Provider, p.ProviderRef}] = p.ID
	}
	return c, true, nil
}

// Payment implements payment.Store.
func (m *Memory) Payment(_ context.Context, id string) (payment.Payment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.byID[id]
	if !ok {
		return payment.Payment{}, payment.ErrPaymentNotFound
	}
	return *p, nil
}

// PaymentByRef implements payment.Store.
func (m *Memory) PaymentByRef(_ context.Context, provider, ref string) (payment.Payment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id, ok := m.byRef[[2]string{provider, ref}]
	if !ok || ref == "" {
		return payment.Payment{}, payment.ErrPaymentNotFound
	}
	return *m.byID[id], nil
}

// OrderPayments implements payment.Store; oldest first (by id).
func (m *Memory) OrderPayments(_ context.Context, orderID string) ([]payment.Payment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []payment.Payment{}
	for _, p := range m.byID {
		if p.OrderID == orderID {
			out = append(out, *p)
		}
	}
	slices.SortFunc(out, func(a, b payment.Payment) int { return cmpString(a.ID, b.ID) })
	return out, nil
}

// UpdatePayment implements payment.Store.
func (m *Memory) UpdatePayment(_ context.Context, p payment.Payment, from []payment.Status) (payment.Payment, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur, ok := m.byID[p.ID]
	if !ok {
		return payment.Payment{}, false, payment.ErrPaymentNotFound
	}
	if !slices.Contains(from, cur.Status) {
		return *cur, false, nil
	}
	if cur.ProviderRef != p.ProviderRef {
		delete(m.byRef, [2]string{cur.Provider, cur.ProviderRef})
		if p.ProviderRef != "" {
			m.byRef[[2]string{cur.Provider, p.ProviderRef}] = cur.ID
		}
	}
	cur.Status, cur.ProviderRef, cur.CheckoutURL = p.Status, p.ProviderRef, p.CheckoutURL
	cur.RefundedCents, cur.RefundRef, cur.RefundedAt = p.RefundedCents, p.RefundRef, p.RefundedAt
	cur.UpdatedAt = p.UpdatedAt
	return *cur, true, nil
}

// Payments implements payment.Store.
func (m *Memory) Payments(_ context.Context, after string, limit int) ([]payment.Payment, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []payment.Payment{}
	for _, p := range m.byID {
		if p.ID > after {
			out = append(out, *p)
		}
	}
	slices.SortFunc(out, func(a, b payment.Payment) int { return cmpString(a.ID, b.ID) })
	if limit >= 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
