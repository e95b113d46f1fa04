package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/catalog"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/sale"
	"github.com/spikehq/spike/internal/switches"
)

// ---- products

type productRequest struct {
	SKU        string `json:"sku"`
	Name       string `json:"name"`
	PriceCents *int64 `json:"price_cents"`
	Stock      int64  `json:"stock"`
}

func (s *Server) createProduct(w http.ResponseWriter, r *http.Request, _ Identity) error {
	var req productRequest
	if err := decode(r, &req, false); err != nil {
		return err
	}
	if req.PriceCents == nil {
		return spike.Errorf(spike.ErrInvalid, "price_cents is required")
	}
	p, err := s.Catalog.Create(r.Context(), catalog.Product{SKU: req.SKU, Name: req.Name, PriceCents: *req.PriceCents, Stock: req.Stock})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, p)
}

func (s *Server) getProduct(w http.ResponseWriter, r *http.Request, _ string) (int, error) {
	p, err := s.Catalog.Product(r.Context(), r.PathValue("sku"))
	if err != nil {
		return 0, err
	}
	return http.StatusOK, writeJSON(w, http.StatusOK, p)
}

func (s *Server) updateProduct(w http.ResponseWriter, r *http.Request, _ Identity) error {
	var u catalog.ProductUpdate
	if err := decode(r, &u, false); err != nil {
		return err
	}
	p, err := s.Catalog.Update(r.Context(), r.PathValue("sku"), u)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, p)
}

// ---- sales

type saleRequest struct {
	ID           string     `json:"id"`
	SKU          string     `json:"sku"`
	Stock        int64      `json:"stock"`
	PriceCents   *int64     `json:"price_cents"`
	PerUserLimit *int64     `json:"per_user_limit"`
	StartsAt     *time.Time `json:"starts_at"`
	EndsAt       *time.Time `json:"ends_at"`
	// PaymentWindow in seconds; absent: sale.DefaultPaymentWindow, 0: none.
	PaymentWindow *int64 `json:"payment_window"`
}

type saleResponse struct {
	ID           string     `json:"id"`
	SKU          string     `json:"sku"`
	Stock        int64      `json:"stock"`
	Remaining    int64      `json:"remaining"`
	Sold         int64      `json:"sold"`
	PriceCents   int64      `json:"price_cents"`
	PerUserLimit int64      `json:"per_user_limit"`
	StartsAt     time.Time  `json:"starts_at"`
	EndsAt       *time.Time `json:"ends_at"`
	State        sale.State `json:"state"`
	// PaymentWindow in seconds (0: no payment deadline).
	PaymentWindow int64 `json:"payment_window"`
}

func saleJSON(v sale.View) saleResponse {
	out := saleResponse{
		ID: v.ID, SKU: v.SKU, Stock: v.Stock, Remaining: v.Remaining, Sold: v.Sold,
		PriceCents: v.PriceCents, PerUserLimit: v.PerUserLimit, StartsAt: v.StartsAt, State: v.State,
		PaymentWindow: int64(v.PaymentWindow / time.Second),
	}
	if !v.EndsAt.IsZero() {
		out.EndsAt = &v.EndsAt
	}
	return out
}

func (s *Server) createSale(w http.ResponseWriter, r *http.Request, _ Identity) error {
	var req saleRequest
	if err := decode(r, &req, false); err != nil {
		return err
	}
	sl := sale.Sale{ID: req.ID, SKU: req.SKU, Stock: req.Stock, PerUserLimit: 1}
	if req.PriceCents == nil {
		return spike.Errorf(spike.ErrInvalid, "price_cents is required")
	}
	sl.PriceCents = *req.PriceCents
	if req.PerUserLimit != nil {
		if *req.PerUserLimit < 1 {
			return spike.Errorf(spike.ErrInvalid, "per_user_limit must be >= 1")
		}
		sl.PerUserLimit = *req.PerUserLimit
	}
	if req.StartsAt != nil {
		sl.StartsAt = *req.StartsAt
	}
	if req.EndsAt != nil {
		sl.EndsAt = *req.EndsAt
	}
	sl.PaymentWindow = sale.DefaultPaymentWindow
	if req.PaymentWindow != nil {
		w := *req.PaymentWindow
		if w < 0 || w > int64(sale.MaxPaymentWindow/time.Second) {
			return spike.Errorf(spike.ErrInvalid, "payment_window must be between 0 and %d seconds", int64(sale.MaxPaymentWindow/time.Second))
		}
		sl.PaymentWindow = time.Duration(w) * time.Second
	}
	created, err := s.Sales.Create(r.Context(), sl)
	if err != nil {
		return err
	}
	v, err := s.Sales.View(r.Context(), created.ID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, saleJSON(v))
}

func (s *Server) getSale(w http.ResponseWriter, r *http.Request) error {
	v, err := s.Sales.View(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, saleJSON(v))
}

// ---- orders

var errKeyMissing = &spike.Error{Kind: spike.ErrInvalid, Message: "Idempotency-Key header must be 1-128 printable ASCII characters"}

type placeRequest struct {
	Quantity *int64 `json:"quantity"`
}

var errQuantity = &spike.Error{Kind: spike.ErrInvalid, Message: "quantity must be an integer >= 1"}

// decodeQuantity reads a placement body: empty or {"quantity": n}. The
// common exact shape is parsed by hand (a flash sale sends it by the
// million); anything else goes through encoding/json, which gives the same
// answer (FuzzQuantityFastPath checks that they agree).
func decodeQuantity(r *http.Request) (int64, error) {
	buf := bodyBuffers.Get().(*bytes.Buffer)
	defer bodyBuffers.Put(buf)
	body, err := readBody(r, buf)
	if err != nil {
		return 0, err
	}
	if len(body) == 0 {
		return 1, nil
	}
	if q, ok := fastQuantity(body); ok {
		if q < 1 {
			return 0, errQuantity
		}
		return q, nil
	}
	var req placeRequest
	if err := decodeBytes(body, &req, true); err != nil {
		return 0, err
	}
	if req.Quantity == nil {
		return 1, nil
	}
	if *req.Quantity < 1 {
		return 0, errQuantity
	}
	return *req.Quantity, nil
}

// fastQuantity parses exactly {"quantity":N} with optional spaces, N a
// JSON integer of at most 18 digits; ok is false for anything else.
func fastQuantity(b []byte) (q int64, ok bool) {
	const key = `"quantity"`
	i := 0
	skip := func() {
		for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
			i++
		}
	}
	if i >= len(b) || b[i] != '{' {
		return 0, false
	}
	i++
	skip()
	if !bytes.HasPrefix(b[i:], []byte(key)) {
		return 0, false
	}
	i += len(key)
	skip()
	if i >= len(b) || b[i] != ':' {
		return 0, false
	}
	i++
	skip()
	neg := false
	if i < len(b) && b[i] == '-' {
		neg = true
		i++
	}
	start := i
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		q = q*10 + int64(b[i]-'0')
		i++
	}
	digits := i - start
	if digits == 0 || digits > 18 || (digits > 1 && b[start] == '0') {
		return 0, false
	}
	skip()
	if i != len(b)-1 || b[i] != '}' {
		return 0, false
	}
	if neg {
		q = -q
	}
	return q, true
}

// placeOrder is the hot path: the cheapest checks come first. saleID is
// the path's, when ServeHTTP found it ("" through the mux).
func (s *Server) placeOrder(w http.ResponseWriter, r *http.Request, saleID string) (int, error) {
	if g := s.Guards; g != nil && !g.accepting() {
		s.guard.reject("orders_accept_switch")
		return 0, errNotAccepted
	}
	if saleID == "" {
		saleID = r.PathValue("id")
	}
	if !spike.ValidID(saleID) {
		return 0, sale.ErrSaleNotFound
	}
	id, err := s.Auth.Authenticate(r)
	if err != nil {
		return 0, err
	}
	key := headerValue(r.Header, "Idempotency-Key")
	if !spike.ValidIdempotencyKey(key) {
		return 0, errKeyMissing
	}
	if g := s.Guards; g != nil {
		if !g.allowUser(r.Context(), id.UserID) {
			s.guard.reject("user_rate")
			return 0, errUserRate
		}
		if !g.allowSale(saleID) {
			s.guard.reject("sale_rate")
			return 0, errSaleRate
		}
	}
	qty, err := decodeQuantity(r)
	if err != nil {
		return 0, err
	}
	o, err := s.Orders.Place(r.Context(), order.PlaceRequest{UserID: id.UserID, SaleID: saleID, Key: key, Quantity: qty})
	if err != nil {
		s.placementFailed(err)
		return 0, err
	}
	s.metrics.accepted.Inc()
	bp := placedBodies.Get().(*[]byte)
	b := (*bp)[:0]
	b = append(b, `{"order_id":`...)
	b = strconv.AppendQuote(b, o.ID)
	b = append(b, `,"sale_id":`...)
	b = strconv.AppendQuote(b, o.SaleID)
	b = append(b, `,"quantity":`...)
	b = strconv.AppendInt(b, o.Quantity, 10)
	b = append(b, `,"status":"pending"}`+"\n"...)
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(http.StatusAccepted)
	w.Write(b)
	*bp = b
	placedBodies.Put(bp)
	return http.StatusAccepted, nil
}

// placedBodies are the buffers of 202 answers.
var placedBodies = sync.Pool{New: func() any { b := make([]byte, 0, 128); return &b }}

// placementFailed counts a refused placement by its outcome.
func (s *Server) placementFailed(err error) {
	if de, ok := err.(*spike.Error); ok {
		if h := s.hot[de]; h != nil && h.outcome != nil {
			h.outcome.Inc()
			return
		}
	}
	s.metrics.placement(err)
}

type orderResponse struct {
	OrderID         string        `json:"order_id"`
	SaleID          string        `json:"sale_id"`
	SKU             string        `json:"sku"`
	UserID          int64         `json:"user_id"`
	Quantity        int64         `json:"quantity"`
	PriceCents      int64         `json:"price_cents"`
	AmountCents     int64         `json:"amount_cents"`
	Status          order.Status  `json:"status"`
	CreatedAt       time.Time     `json:"created_at"`
	UpdatedAt       time.Time     `json:"updated_at"`
	PaymentDeadline *time.Time    `json:"payment_deadline,omitempty"`
	PaidAt          *time.Time    `json:"paid_at,omitempty"`
	CancelledAt     *time.Time    `json:"cancelled_at,omitempty"`
	CancelReason    string        `json:"cancel_reason,omitempty"`
	Shipment        *shipmentJSON `json:"shipment,omitempty"`
	RefundedAt      *time.Time    `json:"refunded_at,omitempty"`
}

type shipmentJSON struct {
	Carrier     string     `json:"carrier"`
	Tracking    string     `json:"tracking"`
	ShippedAt   time.Time  `json:"shipped_at"`
	DeliveredAt *time.Time `json:"delivered_at,omitempty"`
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func orderJSON(o *order.Order) orderResponse {
	out := orderResponse{
		OrderID: o.ID, SaleID: o.SaleID, SKU: o.SKU, UserID: o.UserID, Quantity: o.Quantity,
		PriceCents: o.PriceCents, AmountCents: o.AmountCents(), Status: o.Status, CreatedAt: o.CreatedAt.UTC(),
		UpdatedAt: o.UpdatedAt.UTC(), PaymentDeadline: optTime(o.PaymentDeadline), PaidAt: optTime(o.PaidAt),
		CancelledAt: optTime(o.CancelledAt), CancelReason: o.CancelReason, RefundedAt: optTime(o.RefundedAt),
	}
	if out.UpdatedAt.IsZero() {
		out.UpdatedAt = out.CreatedAt
	}
	if !o.ShippedAt.IsZero() {
		out.Shipment = &shipmentJSON{Carrier: o.Carrier, Tracking: o.Tracking, ShippedAt: o.ShippedAt.UTC(), DeliveredAt: optTime(o.DeliveredAt)}
	}
	return out
}

func (s *Server) getOrder(w http.ResponseWriter, r *http.Request, id Identity) error {
	o, err := s.Orders.Order(r.Context(), r.PathValue("id"), order.Caller{UserID: id.UserID, Admin: id.Admin})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, orderJSON(&o))
}

type listResponse struct {
	Orders     []orderResponse `json:"orders"`
	NextCursor string          `json:"next_cursor,omitempty"`
}

func (s *Server) listOrders(w http.ResponseWriter, r *http.Request, id Identity) error {
	q := r.URL.Query()
	limit := 20
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return spike.Errorf(spike.ErrInvalid, "limit must be an integer between 1 and 100")
		}
		limit = n
	}
	after, err := order.ParseCursor(q.Get("cursor"))
	if err != nil {
		return err
	}
	orders, next, err := s.Orders.List(r.Context(), id.UserID, after, limit)
	if err != nil {
		return err
	}
	resp := listResponse{Orders: make([]orderResponse, len(orders)), NextCursor: next.String()}
	for i := range orders {
		resp.Orders[i] = orderJSON(&orders[i])
	}
	return writeJSON(w, http.StatusOK, resp)
}

// ---- operations

func (s *Server) audit(w http.ResponseWriter, r *http.Request) error {
	rep, err := s.Auditor.Audit(r.Context())
	if err != nil {
		return spike.Errorf(spike.ErrUnavailable, "audit could not read the record: %v", err)
	}
	return writeJSON(w, http.StatusOK, rep)
}

func (s *Server) getSwitches(w http.ResponseWriter, r *http.Request, _ Identity) error {
	if s.Guards == nil || s.Guards.Switches == nil {
		return writeJSON(w, http.StatusOK, map[string]any{"switches": []switches.State{}})
	}
	return writeJSON(w, http.StatusOK, map[string]any{"switches": s.Guards.Switches.Snapshot()})
}

func (s *Server) putSwitch(w http.ResponseWriter, r *http.Request, _ Identity) error {
	if s.SwitchStore == nil || s.Guards == nil || s.Guards.Switches == nil {
		return spike.Errorf(spike.ErrUnavailable, "switches have no config centre here")
	}
	var req struct {
		Value json.RawMessage `json:"value"`
	}
	if err := decode(r, &req, false); err != nil {
		return err
	}
	// Accept "value": false, 20 or "false", "20".
	value := strings.Trim(string(bytes.TrimSpace(req.Value)), `"`)
	if value == "" {
		return spike.Errorf(spike.ErrInvalid, `body must be {"value": ...}`)
	}
	name := r.PathValue("name")
	if err := s.SwitchStore.Set(r.Context(), name, value); err != nil {
		return err
	}
	for _, st := range s.Guards.Switches.Snapshot() {
		if st.Name == name {
			return writeJSON(w, http.StatusOK, st)
		}
	}
	return switches.ErrUnknown
}
