// Package loadgentest provides an in-memory fake of the parts of the Spike
// HTTP API that spike bench drives (products, sales, order placement with
// idempotency keys, order reads, audit), for testing the load generator
// without a real server. It is not a reference implementation: it keeps
// everything in one mutex-guarded map and persists nothing.
package loadgentest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"

	"github.com/golang-jwt/jwt/v5"
)

// Server is a running fake. Its fields may be changed before traffic starts.
type Server struct {
	*httptest.Server

	// BreakIdempotency, when true, makes replays of an accepted key get a
	// new order id: a bug the load generator must detect.
	BreakIdempotency bool

	secret   []byte
	mu       sync.Mutex
	products map[string]*product
	sales    map[string]*sale
	orders   map[string]*order
	reads    map[string]int
	nextID   int64
}

type product struct {
	SKU        string `json:"sku"`
	Name       string `json:"name"`
	PriceCents int64  `json:"price_cents"`
	Stock      int64  `json:"stock"`
}

type sale struct {
	ID           string `json:"id"`
	SKU          string `json:"sku"`
	Stock        int64  `json:"stock"`
	PriceCents   int64  `json:"price_cents"`
	PerUserLimit int64  `json:"per_user_limit"`
	sold         int64
	held         map[string]int64  // user → units
	keys         map[string]string // user + "\x00" + key → order id
}

type order struct {
	OrderID  string `json:"order_id"`
	SaleID   string `json:"sale_id"`
	SKU      string `json:"sku"`
	UserID   string `json:"user_id"`
	Quantity int64  `json:"quantity"`
	Status   string `json:"status"`
}

// NewServer starts a fake that accepts tokens signed with secret. Close it
// when done.
func NewServer(secret []byte) *Server {
	s := &Server{secret: secret, products: map[string]*product{}, sales: map[string]*sale{}, orders: map[string]*order{}, reads: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/products", s.createProduct)
	mux.HandleFunc("GET /v1/products/{sku}", s.getProduct)
	mux.HandleFunc("POST /v1/sales", s.createSale)
	mux.HandleFunc("GET /v1/sales/{id}", s.getSale)
	mux.HandleFunc("POST /v1/sales/{id}/orders", s.placeOrder)
	mux.HandleFunc("GET /v1/orders/{id}", s.getOrder)
	mux.HandleFunc("GET /v1/admin/audit", s.audit)
	s.Server = httptest.NewServer(mux)
	return s
}

// Accepted returns the number of distinct orders placed.
func (s *Server) Accepted() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.orders)
}

// ProductReads returns how many times each SKU (and each sale id) was read.
func (s *Server) ProductReads() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]int, len(s.reads))
	for k, v := range s.reads {
		m[k] = v
	}
	return m
}

func writeErr(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":{"code":%q,"message":%q}}`, code, code)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// auth returns the caller's user id and whether they are an admin, or
// writes 401 and returns ok=false.
func (s *Server) auth(w http.ResponseWriter, r *http.Request) (user string, admin, ok bool) {
	h, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !found {
		writeErr(w, http.StatusUnauthorized, "unauthenticated")
		return "", false, false
	}
	claims := jwt.MapClaims{}
	_, err := jwt.ParseWithClaims(h, claims, func(*jwt.Token) (any, error) { return s.secret, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired())
	sub, _ := claims["sub"].(string)
	if err != nil || sub == "" {
		writeErr(w, http.StatusUnauthorized, "unauthenticated")
		return "", false, false
	}
	if _, err := strconv.ParseUint(sub, 10, 64); err != nil {
		writeErr(w, http.StatusUnauthorized, "unauthenticated")
		return "", false, false
	}
	role, _ := claims["role"].(string)
	return sub, role == "admin", true
}

func (s *Server) admin(w http.ResponseWriter, r *http.Request) bool {
	_, admin, ok := s.auth(w, r)
	if ok && !admin {
		writeErr(w, http.StatusForbidden, "forbidden")
		return false
	}
	return ok
}

func (s *Server) createProduct(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	var p product
	if json.NewDecoder(r.Body).Decode(&p) != nil || p.SKU == "" || p.Name == "" || p.Stock < 0 || p.PriceCents < 0 {
		writeErr(w, http.StatusBadRequest, "invalid")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.products[p.SKU] != nil {
		writeErr(w, http.StatusConflict, "conflict")
		return
	}
	s.products[p.SKU] = &p
	writeJSON(w, http.StatusCreated, p)
}

func (s *Server) getProduct(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.reads[r.PathValue("sku")]++
	p := s.products[r.PathValue("sku")]
	var cp product
	if p != nil {
		cp = *p
	}
	s.mu.Unlock()
	if p == nil {
		writeErr(w, http.StatusNotFound, "not_found")
		return
	}
	writeJSON(w, http.StatusOK, cp)
}

func (s *Server) getSale(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.reads[r.PathValue("id")]++
	sl := s.sales[r.PathValue("id")]
	var view map[string]any
	if sl != nil {
		view = map[string]any{"id": sl.ID, "sku": sl.SKU, "stock": sl.Stock, "remaining": sl.Stock - sl.sold, "sold": sl.sold,
			"price_cents": sl.PriceCents, "per_user_limit": sl.PerUserLimit, "state": "active"}
	}
	s.mu.Unlock()
	if sl == nil {
		writeErr(w, http.StatusNotFound, "not_found")
		return
	}
	writeJSON(w, http.StatusOK, view)
}

func (s *Server) createSale(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	var sl sale
	if json.NewDecoder(r.Body).Decode(&sl) != nil || sl.ID == "" || sl.Stock <= 0 {
		writeErr(w, http.StatusBadRequest, "invalid")
		return
	}
	if sl.PerUserLimit == 0 {
		sl.PerUserLimit = 1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.products[sl.SKU]
	switch {
	case p == nil:
		writeErr(w, http.StatusNotFound, "not_found")
		return
	case s.sales[sl.ID] != nil:
		writeErr(w, http.StatusConflict, "conflict")
		return
	case p.Stock < sl.Stock:
		writeErr(w, http.StatusConflict, "insufficient_stock")
		return
	}
	p.Stock -= sl.Stock
	sl.held, sl.keys = map[string]int64{}, map[string]string{}
	s.sales[sl.ID] = &sl
	writeJSON(w, http.StatusCreated, sl)
}

func (s *Server) placeOrder(w http.ResponseWriter, r *http.Request) {
	user, _, ok := s.auth(w, r)
	if !ok {
		return
	}
	key := r.Header.Get("Idempotency-Key")
	var body struct {
		Quantity *int64 `json:"quantity"`
	}
	if key == "" || len(key) > 128 || json.NewDecoder(r.Body).Decode(&body) != nil {
		writeErr(w, http.StatusBadRequest, "invalid")
		return
	}
	q := int64(1)
	if body.Quantity != nil {
		q = *body.Quantity
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := s.sales[r.PathValue("id")]
	if sl == nil {
		writeErr(w, http.StatusNotFound, "not_found")
		return
	}
	if q < 1 || q > sl.PerUserLimit {
		writeErr(w, http.StatusBadRequest, "invalid")
		return
	}
	k := user + "\x00" + key
	if id, ok := sl.keys[k]; ok && !s.BreakIdempotency { // replay check first
		o := s.orders[id]
		if o.Quantity != q {
			writeErr(w, http.StatusConflict, "conflict")
			return
		}
		writeJSON(w, http.StatusAccepted, map[string]any{"order_id": id, "sale_id": sl.ID, "quantity": q, "status": "pending"})
		return
	}
	switch {
	case sl.sold+q > sl.Stock:
		writeErr(w, http.StatusConflict, "sold_out")
		return
	case sl.held[user]+q > sl.PerUserLimit && !s.BreakIdempotency:
		writeErr(w, http.StatusConflict, "limit_exceeded")
		return
	}
	s.nextID++
	id := fmt.Sprintf("o%08d", s.nextID)
	sl.sold += q
	sl.held[user] += q
	sl.keys[k] = id
	s.orders[id] = &order{OrderID: id, SaleID: sl.ID, SKU: sl.SKU, UserID: user, Quantity: q, Status: "created"}
	writeJSON(w, http.StatusAccepted, map[string]any{"order_id": id, "sale_id": sl.ID, "quantity": q, "status": "pending"})
}

func (s *Server) getOrder(w http.ResponseWriter, r *http.Request) {
	user, admin, ok := s.auth(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	o := s.orders[r.PathValue("id")]
	var cp order
	if o != nil {
		cp = *o
	}
	s.mu.Unlock()
	if o == nil || (!admin && cp.UserID != user) {
		writeErr(w, http.StatusNotFound, "not_found")
		return
	}
	writeJSON(w, http.StatusOK, cp)
}

type check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	oversold, overLimit := 0, 0
	for _, sl := range s.sales {
		if sl.sold > sl.Stock {
			oversold++
		}
		for _, n := range sl.held {
			if n > sl.PerUserLimit {
				overLimit++
			}
		}
	}
	checks := []check{
		{"I1_no_oversell", oversold == 0, fmt.Sprintf("%d sales oversold", oversold)},
		{"I3_no_duplicates", overLimit == 0, fmt.Sprintf("%d buyers over their limit", overLimit)},
	}
	ok := true
	for _, c := range checks {
		ok = ok && c.OK
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": ok, "checks": checks})
}
