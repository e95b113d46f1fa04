package httpapi

import (
	"io"
	"net/http"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/payment"
)

// The routes after the 202: payments, cancellation, refunds, shipping,
// ending a sale and restocking. Every one is idempotent: repeating a call
// that succeeded answers 200 with the resource as it now is.

func (s *Server) lifecycleRoutes() {
	if s.Lifecycle == nil {
		return
	}
	s.handle("POST /v1/orders/{id}/cancel", "cancel_order", s.buyer(s.orderTransition(order.Cancel, false)))
	s.handle("POST /v1/orders/{id}/ship", "ship_order", s.admin(s.orderTransition(order.Ship, true)))
	s.handle("POST /v1/orders/{id}/deliver", "deliver_order", s.admin(s.orderTransition(order.Deliver, false)))
	s.handle("POST /v1/orders/{id}/refund", "refund_order", s.admin(s.refundOrder))
	s.handle("GET /v1/orders/{id}/history", "order_history", s.buyer(s.orderHistory))
	s.handle("POST /v1/sales/{id}/end", "end_sale", s.admin(s.endSale))
	s.handle("POST /v1/products/{sku}/stock", "adjust_stock", s.admin(s.adjustStock))
	if s.Payments != nil {
		s.handle("POST /v1/orders/{id}/payments", "create_payment", s.buyer(s.createPayment))
		s.handle("GET /v1/payments/{id}", "get_payment", s.buyer(s.getPayment))
		s.handle("POST /v1/payments/webhooks/{provider}", "payment_webhook", s.paymentWebhook)
	}
	for prefix, h := range s.Checkout {
		s.mux.Handle(prefix, h)
	}
}

type shipRequest struct {
	Carrier  string `json:"carrier"`
	Tracking string `json:"tracking"`
}

func (s *Server) orderTransition(t order.Transition, withShipment bool) identityHandler {
	return func(w http.ResponseWriter, r *http.Request, id Identity) error {
		req := order.Request{OrderID: r.PathValue("id"), Transition: t, Caller: order.Caller{UserID: id.UserID, Admin: id.Admin}}
		if withShipment {
			var body shipRequest
			if err := decode(r, &body, false); err != nil {
				return err
			}
			if !validText(body.Carrier, 100) || !validText(body.Tracking, 200) {
				return spike.Errorf(spike.ErrInvalid, "carrier (1-100 characters) and tracking (1-200 characters) are required")
			}
			req.Carrier, req.Tracking = body.Carrier, body.Tracking
		} else if err := decode(r, &struct{}{}, true); err != nil {
			return err
		}
		o, err := s.Lifecycle.Apply(r.Context(), req)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, orderJSON(&o))
	}
}

func validText(v string, max int) bool {
	if len(v) == 0 || len(v) > max*4 {
		return false
	}
	n := 0
	for _, c := range v {
		if c < 0x20 || c == 0x7f || c == '\uFFFD' {
			return false
		}
		n++
	}
	return n <= max
}

// refundOrder refunds a paid, shipped or delivered order: the provider
// first (503 while it cannot be reached; retrying is safe), then the order.
func (s *Server) refundOrder(w http.ResponseWriter, r *http.Request, id Identity) error {
	if err := decode(r, &struct{}{}, true); err != nil {
		return err
	}
	caller := order.Caller{UserID: id.UserID, Admin: true}
	o, err := s.Lifecycle.Order(r.Context(), r.PathValue("id"), caller)
	if err != nil {
		return err
	}
	if o.Status == order.Refunded {
		return writeJSON(w, http.StatusOK, orderJSON(&o))
	}
	if _, err := order.Next(o.Status, order.Refund); err != nil {
		return err
	}
	if s.Payments != nil {
		if _, err := s.Payments.Refund(r.Context(), o.ID); err != nil {
			return err
		}
	}
	o, err = s.Lifecycle.Apply(r.Context(), order.Request{OrderID: o.ID, Transition: order.Refund, Caller: caller})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, orderJSON(&o))
}

type historyEntry struct {
	From       order.Status     `json:"from"`
	To         order.Status     `json:"to"`
	Transition order.Transition `json:"transition"`
	Cause      string           `json:"cause"`
	At         time.Time        `json:"at"`
}

func (s *Server) orderHistory(w http.ResponseWriter, r *http.Request, id Identity) error {
	o, err := s.Orders.Order(r.Context(), r.PathValue("id"), order.Caller{UserID: id.UserID, Admin: id.Admin})
	if err != nil {
		return err
	}
	h, err := s.Lifecycle.History(r.Context(), o.ID)
	if err != nil {
		return err
	}
	out := make([]historyEntry, len(h))
	for i, e := range h {
		out[i] = historyEntry{From: e.From, To: e.To, Transition: e.Transition, Cause: e.Cause, At: e.At.UTC()}
	}
	return writeJSON(w, http.StatusOK, map[string]any{"order_id": o.ID, "history": out})
}

func (s *Server) endSale(w http.ResponseWriter, r *http.Request, _ Identity) error {
	if err := decode(r, &struct{}{}, true); err != nil {
		return err
	}
	v, err := s.Sales.End(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, saleJSON(v))
}

type stockRequest struct {
	Delta  *int64 `json:"delta"`
	Reason string `json:"reason"`
}

func (s *Server) adjustStock(w http.ResponseWriter, r *http.Request, _ Identity) error {
	key := r.Header.Get("Idempotency-Key")
	if !spike.ValidIdempotencyKey(key) {
		return spike.Errorf(spike.ErrInvalid, "header Idempotency-Key is required: 1-128 printable ASCII characters")
	}
	var req stockRequest
	if err := decode(r, &req, false); err != nil {
		return err
	}
	if req.Delta == nil {
		return spike.Errorf(spike.ErrInvalid, "delta is required")
	}
	p, err := s.Catalog.AdjustStock(r.Context(), r.PathValue("sku"), key, *req.Delta, req.Reason)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, p)
}

// ---- payments

type paymentRequest struct {
	Provider string `json:"provider"`
}

type paymentResponse struct {
	PaymentID   string         `json:"payment_id"`
	OrderID     string         `json:"order_id"`
	Provider    string         `json:"provider"`
	AmountCents int64          `json:"amount_cents"`
	Status      payment.Status `json:"status"`
	CheckoutURL string         `json:"checkout_url,omitempty"`
	CreatedAt   time.Time      `json:"created_at"`
	RefundedAt  *time.Time     `json:"refunded_at,omitempty"`
}

func paymentJSON(p *payment.Payment) paymentResponse {
	out := paymentResponse{PaymentID: p.ID, OrderID: p.OrderID, Provider: p.Provider, AmountCents: p.AmountCents,
		Status: p.Status, CheckoutURL: p.CheckoutURL, CreatedAt: p.CreatedAt.UTC()}
	if !p.RefundedAt.IsZero() {
		t := p.RefundedAt.UTC()
		out.RefundedAt = &t
	}
	return out
}

func (s *Server) createPayment(w http.ResponseWriter, r *http.Request, id Identity) error {
	key := r.Header.Get("Idempotency-Key")
	if !spike.ValidIdempotencyKey(key) {
		return spike.Errorf(spike.ErrInvalid, "header Idempotency-Key is required: 1-128 printable ASCII characters")
	}
	var req paymentRequest
	if err := decode(r, &req, true); err != nil {
		return err
	}
	// Only the order's buyer pays for it.
	o, err := s.Lifecycle.Order(r.Context(), r.PathValue("id"), order.Caller{UserID: id.UserID})
	if err != nil {
		return err
	}
	p, err := s.Payments.Start(r.Context(), payment.OrderRef{ID: o.ID, UserID: o.UserID, AmountCents: o.AmountCents(),
		Status: o.Status, PaymentDeadline: o.PaymentDeadline}, key, req.Provider)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, paymentJSON(&p))
}

func (s *Server) getPayment(w http.ResponseWriter, r *http.Request, id Identity) error {
	p, err := s.Payments.Payment(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	if !id.Admin && p.UserID != id.UserID {
		return payment.ErrPaymentNotFound
	}
	return writeJSON(w, http.StatusOK, paymentJSON(&p))
}

// paymentWebhook takes a provider's delivery. It carries no token: the
// provider's signature is the authentication, checked before anything is
// read from the body.
func (s *Server) paymentWebhook(w http.ResponseWriter, r *http.Request) error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return errTooLarge
	}
	if err := s.Payments.HandleWebhook(r.Context(), r.PathValue("provider"), r.Header, body); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}
