package history

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// The checker is only worth its violations: each test below breaks one
// promise in a hand-made history and requires the checker to name it, and
// a clean history of the same shapes must pass.

var t0 = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

// scenario builds a history and its final state.
type scenario struct {
	ops []Op
	f   Final
}

func newScenario() *scenario {
	return &scenario{f: Final{ReadAt: at(100), AuditOK: true,
		Sales: []Sale{{ID: "s1", Stock: 10, Remaining: 10, PerUserLimit: 2}}}}
}

func placed(id, sale string, qty int64) string {
	return fmt.Sprintf(`{"order_id":%q,"sale_id":%q,"quantity":%d,"status":"pending"}`, id, sale, qty)
}

func errBody(code string) string { return fmt.Sprintf(`{"error":{"code":%q,"message":"x"}}`, code) }

func (s *scenario) op(kind Kind, user int64, key, order string, start float64, status int, body string) *scenario {
	op := Op{Kind: kind, User: user, Sale: "s1", Key: key, Qty: 1, OrderID: order, Start: at(start), End: at(start + 0.1), Status: status, Body: body}
	if status == 429 || status == 503 {
		op.RetryAfter = "1"
	}
	s.ops = append(s.ops, op)
	return s
}

func (s *scenario) lost(kind Kind, user int64, key string, start float64) *scenario {
	s.ops = append(s.ops, Op{Kind: kind, User: user, Sale: "s1", Key: key, Qty: 1, Start: at(start), End: at(start + 30), Err: "context deadline exceeded"})
	return s
}

// order adds a final order; the sale's counters follow (live orders hold
// their units).
func (s *scenario) order(id string, user int64, status string, ts ...Transition) *scenario {
	o := Order{ID: id, Sale: "s1", User: user, Qty: 1, Status: status, Transitions: ts}
	s.f.Orders = append(s.f.Orders, o)
	if live(o) {
		s.f.Sales[0].Sold++
		s.f.Sales[0].Remaining--
	}
	return s
}

func tr(name, from, to string) Transition {
	return Transition{Transition: name, From: from, To: to, At: at(50)}
}

// clean is a history with every kind of op that keeps every promise.
func clean() *scenario {
	s := newScenario()
	s.op(Place, 1, "k1", "", 1, 202, placed("o1", "s1", 1))
	s.op(Replay, 1, "k1", "", 2, 202, placed("o1", "s1", 1))
	s.lost(Place, 2, "k2", 1)                                // indeterminate…
	s.op(Place, 2, "k2", "", 40, 202, placed("o2", "s1", 1)) // …then answered
	s.lost(Place, 3, "k3", 1)                                // indeterminate, never answered: placed it
	s.op(Place, 4, "k4", "", 1, 409, errBody("sold_out"))
	s.op(Place, 4, "k4", "", 2, 503, errBody("unavailable"))
	s.op(Pay, 1, "p1", "o1", 3, 201, `{"payment_id":"pay1","order_id":"o1","status":"requires_action"}`)
	s.op(Checkout, 1, "", "o1", 4, 200, `{"ref":"r","status":"succeeded"}`)
	s.op(Cancel, 2, "", "o2", 41, 200, `{"order_id":"o2","status":"cancelled"}`)
	s.op(Cancel, 1, "", "o1", 60, 409, errBody("conflict"))
	s.op(Get, 1, "", "o1", 5, 200, `{"order_id":"o1","user_id":1,"status":"created"}`)
	s.order("o1", 1, "paid", tr("pay", "created", "paid"))
	s.order("o2", 2, "cancelled", tr("cancel", "created", "cancelled"))
	s.order("o3", 3, "created")
	return s
}

func TestCleanHistoryPasses(t *testing.T) {
	s := clean()
	if v := Check(s.ops, s.f, Options{}); len(v) > 0 {
		t.Fatalf("a clean history fails: %v", v)
	}
}

func TestEachViolationIsFound(t *testing.T) {
	tests := []struct {
		name   string
		rule   string
		break_ func(s *scenario)
	}{
		{"500 answer", "answer", func(s *scenario) { s.op(Place, 9, "k9", "", 3, 500, errBody("internal")) }},
		{"400 to a valid request", "answer", func(s *scenario) { s.op(Place, 9, "k9", "", 3, 400, errBody("invalid")) }},
		{"404 for an acknowledged order", "answer", func(s *scenario) { s.op(Get, 1, "", "o1", 6, 404, errBody("not_found")) }},
		{"409 with a code the route has not", "answer", func(s *scenario) { s.op(Place, 9, "k9", "", 3, 409, errBody("insufficient_stock")) }},
		{"503 without Retry-After", "answer", func(s *scenario) {
			s.ops = append(s.ops, Op{Kind: Place, User: 9, Sale: "s1", Key: "k9", Qty: 1, Start: at(3), End: at(3), Status: 503, Body: errBody("unavailable")})
		}},
		{"202 for another quantity", "answer", func(s *scenario) { s.ops[0].Body = placed("o1", "s1", 2) }},
		{"cancel answered 200 but not cancelled", "answer", func(s *scenario) {
			s.op(Cancel, 3, "", "o3", 70, 200, `{"order_id":"o3","status":"created"}`)
		}},
		{"another buyer's order read", "answer", func(s *scenario) { s.op(Get, 1, "", "o2", 6, 200, `{"order_id":"o2","user_id":2}`) }},
		{"replay answered another order", "ack", func(s *scenario) {
			s.ops[1].Body = placed("o9", "s1", 1)
			s.order("o9", 1, "created")
		}},
		{"one order for two keys", "ack", func(s *scenario) { s.op(Place, 1, "k1b", "", 3, 202, placed("o1", "s1", 1)) }},
		{"acknowledged order lost", "lost", func(s *scenario) {
			s.f.Orders = s.f.Orders[1:] // o1 gone
			s.f.Sales[0].Sold--
			s.f.Sales[0].Remaining++
		}},
		{"acknowledged order still pending", "lost", func(s *scenario) {
			s.f.Orders[2].Status = "pending"
			s.f.Orders[1].Status = "pending"
			s.f.Orders[1].Transitions = nil
		}},
		{"replay answered 409 after a 202", "replay", func(s *scenario) { s.op(Place, 1, "k1", "", 3, 409, errBody("sold_out")) }},
		{"order for a key only rejected", "at-most-once", func(s *scenario) { s.order("o4", 4, "created") }},
		{"two orders for one indeterminate key", "at-most-once", func(s *scenario) { s.order("o3b", 3, "created") }},
		{"oversold", "I1", func(s *scenario) {
			s.f.Sales[0].Stock = 1
			s.f.Sales[0].Remaining = -1
		}},
		{"above the per-user limit", "I3", func(s *scenario) {
			s.f.Sales[0].PerUserLimit = 1
			s.op(Place, 1, "k1c", "", 3, 202, placed("o5", "s1", 1))
			s.order("o5", 1, "created")
		}},
		{"stock not back after a cancel", "I4", func(s *scenario) { s.f.Sales[0].Remaining-- }},
		{"stock back twice", "I4", func(s *scenario) { s.f.Sales[0].Remaining++ }},
		{"cancelled after paid", "transitions", func(s *scenario) {
			s.f.Orders[0].Status = "cancelled"
			s.f.Orders[0].Transitions = append(s.f.Orders[0].Transitions, tr("expire", "paid", "cancelled"))
			s.f.Sales[0].Sold--
			s.f.Sales[0].Remaining++
		}},
		{"cancelled twice", "transitions", func(s *scenario) {
			s.f.Orders[1].Transitions = append(s.f.Orders[1].Transitions, tr("expire", "created", "cancelled"))
		}},
		{"status disagrees with history", "transitions", func(s *scenario) { s.f.Orders[0].Transitions = nil }},
		{"cancel answered 200, order ended paid", "cancel", func(s *scenario) {
			s.op(Cancel, 1, "", "o1", 2.5, 200, `{"order_id":"o1","status":"cancelled"}`)
		}},
		{"cancel answered 409, order ended cancelled", "cancel", func(s *scenario) {
			s.op(Cancel, 2, "", "o2", 42, 409, errBody("conflict"))
		}},
		{"paid without a press", "paid", func(s *scenario) { s.ops = append(s.ops[:8], s.ops[9:]...) }},
		{"unpaid past its deadline", "I6", func(s *scenario) {
			d := at(90)
			s.f.Orders[2].PaymentDeadline = &d
		}},
		{"expired before its deadline", "I6", func(s *scenario) {
			d, c := at(90), at(80)
			s.f.Orders[1].PaymentDeadline, s.f.Orders[1].CancelledAt, s.f.Orders[1].CancelReason = &d, &c, "payment_timeout"
		}},
		{"order listed twice", "at-most-once", func(s *scenario) { s.f.Orders = append(s.f.Orders, s.f.Orders[2]) }},
		{"audit failed", "audit", func(s *scenario) { s.f.AuditOK, s.f.AuditFailures = false, []string{"I7: payment captured twice"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := clean()
			tt.break_(s)
			v := Check(s.ops, s.f, Options{})
			found := false
			for _, x := range v {
				if x.Rule == tt.rule {
					found = true
				}
			}
			if !found {
				t.Fatalf("no %q violation found; got %v", tt.rule, v)
			}
			t.Logf("found: %v", v)
		})
	}
}

// Indeterminate answers are those that did not come from Spike.
func TestIndeterminate(t *testing.T) {
	for _, tt := range []struct {
		op   Op
		want bool
	}{
		{Op{Err: "EOF"}, true},
		{Op{Status: 502, Body: "<html>"}, true},
		{Op{Status: 504}, true},
		{Op{Status: 503, Body: "<html>No server is available</html>"}, true},
		{Op{Status: 503, Body: errBody("unavailable")}, false},
		{Op{Status: 500, Body: errBody("internal")}, false},
		{Op{Status: 202, Body: placed("o", "s", 1)}, false},
	} {
		if got := tt.op.Indeterminate(); got != tt.want {
			t.Errorf("%+v: indeterminate %v, want %v", tt.op, got, tt.want)
		}
	}
}

// A deadline slack covers a skewed instance's clock.
func TestClockSlack(t *testing.T) {
	s := clean()
	d, c := at(90), at(89)
	s.f.Orders[1].PaymentDeadline, s.f.Orders[1].CancelledAt, s.f.Orders[1].CancelReason = &d, &c, "payment_timeout"
	if v := Check(s.ops, s.f, Options{ClockSlack: 2 * time.Second}); len(v) > 0 {
		t.Fatalf("1 s early with 2 s of slack: %v", v)
	}
	if v := Check(s.ops, s.f, Options{}); len(v) == 0 || !strings.Contains(v[0].Detail, "before its deadline") {
		t.Fatalf("1 s early without slack: %v", v)
	}
}

func TestHistoryConcurrentAdd(t *testing.T) {
	h := New()
	done := make(chan bool)
	for g := range 8 {
		go func() {
			for i := range 100 {
				h.Add(Op{Client: g, Kind: Get, Start: at(float64(i))})
			}
			done <- true
		}()
	}
	for range 8 {
		<-done
	}
	ops := h.Ops()
	if len(ops) != 800 {
		t.Fatalf("%d ops, want 800", len(ops))
	}
	for i := 1; i < len(ops); i++ {
		if ops[i].Start.Before(ops[i-1].Start) {
			t.Fatal("ops not ordered by start")
		}
	}
	var b strings.Builder
	if err := h.WriteJSONL(&b); err != nil || strings.Count(b.String(), "\n") != 800 {
		t.Fatalf("jsonl: %v, %d lines", err, strings.Count(b.String(), "\n"))
	}
}
