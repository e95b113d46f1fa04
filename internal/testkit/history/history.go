// Package history records what buyers asked Spike and what they were
// answered, and checks from that record alone (plus one read of the final
// state through the API) that the API kept its promises: Jepsen's idea,
// for the e2e chaos test (e2e/chaos_test.go).
//
// A History is the list of operations (place, replay, pay, checkout,
// cancel, get), each with its inputs, when it started and ended, and its
// answer, or the transport error that left it indeterminate (it may or may
// not have happened). Check compares the history with the final state:
// every 202 maps to exactly one order, no key has two orders, no acked
// order is lost, stock is conserved, paid orders stay paid, every answer
// is one docs/api.md allows for its route, and indeterminate operations
// happened at most once.
package history

import (
	"encoding/json"
	"io"
	"sort"
	"sync"
	"time"
)

// Kind is what an operation asked.
type Kind string

const (
	// Place is POST /v1/sales/{id}/orders with a new key (or the same key
	// again after an indeterminate answer).
	Place Kind = "place"
	// Replay is POST /v1/sales/{id}/orders with a key that was answered
	// 202 before: it must answer the same order.
	Replay Kind = "replay"
	// Pay is POST /v1/orders/{id}/payments.
	Pay Kind = "pay"
	// Checkout is POST <checkout_url> on the sandbox gateway.
	Checkout Kind = "checkout"
	// Cancel is POST /v1/orders/{id}/cancel by the buyer.
	Cancel Kind = "cancel"
	// Get is GET /v1/orders/{id} by the buyer.
	Get Kind = "get"
)

// Op is one request and its answer.
type Op struct {
	Client  int    `json:"client"` // the goroutine that sent it
	Kind    Kind   `json:"kind"`
	User    int64  `json:"user"`
	Sale    string `json:"sale,omitempty"`
	Key     string `json:"key,omitempty"` // Idempotency-Key (place, replay, pay)
	Qty     int64  `json:"qty,omitempty"`
	OrderID string `json:"order_id,omitempty"` // the order acted on (pay, checkout, cancel, get)

	Start time.Time `json:"start"`
	End   time.Time `json:"end"`

	Status     int    `json:"status,omitempty"` // 0: no answer
	Body       string `json:"body,omitempty"`
	RetryAfter string `json:"retry_after,omitempty"`
	Err        string `json:"err,omitempty"` // transport error: indeterminate
}

// Indeterminate reports whether the op has no answer from Spike: a
// transport error, or an answer of the load balancer rather than of an
// instance (502/504, or a 503 without the API's error body, when the
// instance died or no instance was up). Such an op may or may not have
// taken effect.
func (o Op) Indeterminate() bool {
	if o.Err != "" || o.Status == 0 || o.Status == 502 || o.Status == 504 {
		return true
	}
	return o.Status == 503 && errorCode(o.Body) == ""
}

// History is a list of operations, safe for concurrent use.
type History struct {
	mu  sync.Mutex
	ops []Op
}

// New returns an empty history.
func New() *History { return &History{} }

// Add records a finished op.
func (h *History) Add(op Op) {
	h.mu.Lock()
	h.ops = append(h.ops, op)
	h.mu.Unlock()
}

// Ops returns the ops recorded so far, ordered by start time.
func (h *History) Ops() []Op {
	h.mu.Lock()
	ops := append([]Op(nil), h.ops...)
	h.mu.Unlock()
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].Start.Before(ops[j].Start) })
	return ops
}

// Len returns the number of ops recorded.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ops)
}

// WriteJSONL writes the history, one op per line, for a failing run's
// artifacts.
func (h *History) WriteJSONL(w io.Writer) error {
	enc := json.NewEncoder(w)
	for _, op := range h.Ops() {
		if err := enc.Encode(op); err != nil {
			return err
		}
	}
	return nil
}

// Counts returns how many ops of each kind ended with each status (0 for
// indeterminate), for the test's log.
func (h *History) Counts() map[Kind]map[int]int {
	out := map[Kind]map[int]int{}
	for _, op := range h.Ops() {
		if out[op.Kind] == nil {
			out[op.Kind] = map[int]int{}
		}
		s := op.Status
		if op.Indeterminate() {
			s = 0
		}
		out[op.Kind][s]++
	}
	return out
}

func errorCode(body string) string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal([]byte(body), &e) != nil {
		return ""
	}
	return e.Error.Code
}
