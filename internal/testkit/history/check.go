package history

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Order is an order as the final read found it: GET /v1/orders (the
// listing of each buyer of the history) and its /history.
type Order struct {
	ID              string
	Sale            string
	User            int64
	Qty             int64
	Status          string
	CancelReason    string
	PaymentDeadline *time.Time
	CancelledAt     *time.Time
	Transitions     []Transition
}

// Transition is one entry of GET /v1/orders/{id}/history.
type Transition struct {
	From, To, Transition, Cause string
	At                          time.Time
}

// Sale is a sale as GET /v1/sales/{id} shows it once the stream drained.
type Sale struct {
	ID           string
	Stock        int64
	Remaining    int64
	Sold         int64
	PerUserLimit int64
}

// Final is the state read through the API after the faults healed and
// the stream drained.
type Final struct {
	ReadAt time.Time
	// Orders are every order of every buyer who appears in the history.
	Orders []Order
	// Sales are every sale of the history.
	Sales []Sale
	// AuditOK is `spike audit`'s verdict; AuditFailures its failed checks.
	AuditOK       bool
	AuditFailures []string
}

// Options tune the checks that compare clocks.
type Options struct {
	// ClockSlack is how far an instance's clock may be off (a skew the
	// test injected): deadlines are judged with that much slack.
	ClockSlack time.Duration
}

// Violation is one broken promise.
type Violation struct {
	Rule   string // "answer", "ack", "replay", "at-most-once", "lost", "I1", "I3", "I4", "I6", "transitions", "cancel", "paid", "audit"
	Detail string
}

func (v Violation) String() string { return v.Rule + ": " + v.Detail }

// allowed is, per kind of op, every status the API allows for a valid
// request (docs/api.md) and the error codes each may carry. The requests
// of the history are well formed and authorised, so 400, 401, 403 and 404
// are not among them: a 404 for an acknowledged order is a lost order.
var allowed = map[Kind]map[int][]string{
	Place: {202: nil, 409: {"sold_out", "limit_exceeded", "sale_not_active", "conflict"},
		429: {"rate_limited", "overloaded"}, 503: {"unavailable", "overloaded"}},
	Replay: {202: nil, 429: {"rate_limited", "overloaded"}, 503: {"unavailable", "overloaded"}},
	Pay:    {201: nil, 409: {"conflict"}, 429: {"rate_limited", "overloaded"}, 503: {"unavailable", "overloaded"}},
	// Buyers here only ever press "succeeded": the sandbox's 409 (the
	// other outcome was chosen) cannot be due.
	Checkout: {200: nil, 429: {"rate_limited", "overloaded"}, 503: {"unavailable", "overloaded"}},
	Cancel:   {200: nil, 409: {"conflict"}, 429: {"rate_limited", "overloaded"}, 503: {"unavailable", "overloaded"}},
	Get:      {200: nil, 429: {"rate_limited", "overloaded"}, 503: {"unavailable", "overloaded"}},
}

type keyID struct {
	user int64
	sale string
	key  string
}

// keyState is what the history says of one idempotency key of a placement.
type keyState struct {
	qty           int64
	orders        map[string]bool // order ids of its 202s
	firstAckEnd   time.Time
	indeterminate bool // some attempt has no answer: it may have placed
	acked         bool
}

// Check proves, from the ops and the final state alone, that the API kept
// its promises; it returns every violation found (none: the run passed).
func Check(ops []Op, f Final, opt Options) []Violation {
	c := &checker{opt: opt, f: f, keys: map[keyID]*keyState{}, byOrder: map[string]keyID{}, orders: map[string]Order{}}
	for _, o := range f.Orders {
		if _, dup := c.orders[o.ID]; dup {
			c.fail("at-most-once", "order %s listed twice", o.ID)
		}
		c.orders[o.ID] = o
	}
	for _, op := range ops {
		c.answer(op)
	}
	c.placements(ops)
	c.replays(ops)
	c.phantoms()
	c.stock()
	c.lifecycles(ops)
	if !f.AuditOK {
		c.fail("audit", "spike audit failed: %s", strings.Join(f.AuditFailures, "; "))
	}
	return c.out
}

type checker struct {
	opt     Options
	f       Final
	keys    map[keyID]*keyState
	byOrder map[string]keyID // order id → the key whose 202 named it
	orders  map[string]Order
	out     []Violation
}

func (c *checker) fail(rule, format string, args ...any) {
	c.out = append(c.out, Violation{Rule: rule, Detail: fmt.Sprintf(format, args...)})
}

func describe(op Op) string {
	s := fmt.Sprintf("%s by user %d", op.Kind, op.User)
	if op.Sale != "" {
		s += " sale " + op.Sale
	}
	if op.Key != "" {
		s += " key " + op.Key
	}
	if op.OrderID != "" {
		s += " order " + op.OrderID
	}
	return s + " at " + op.Start.UTC().Format("15:04:05.000")
}

// answer checks that the op's answer is one its route allows, with the
// API's error shape and Retry-After where due, and a 2xx body that fits.
func (c *checker) answer(op Op) {
	if op.Indeterminate() {
		return
	}
	codes, ok := allowed[op.Kind][op.Status]
	if !ok {
		c.fail("answer", "%s: status %d is not an answer the API allows: %s", describe(op), op.Status, trim(op.Body))
		return
	}
	if op.Status >= 400 {
		code := errorCode(op.Body)
		if !contains(codes, code) {
			c.fail("answer", "%s: %d with error code %q, want one of %v: %s", describe(op), op.Status, code, codes, trim(op.Body))
		}
		if (op.Status == 429 || op.Status == 503) && op.RetryAfter == "" {
			c.fail("answer", "%s: %d without Retry-After", describe(op), op.Status)
		}
		return
	}
	var b struct {
		OrderID   string `json:"order_id"`
		SaleID    string `json:"sale_id"`
		Quantity  int64  `json:"quantity"`
		Status    string `json:"status"`
		PaymentID string `json:"payment_id"`
		UserID    int64  `json:"user_id"`
	}
	if op.Kind != Checkout && json.Unmarshal([]byte(op.Body), &b) != nil {
		c.fail("answer", "%s: %d with a body that is not JSON: %s", describe(op), op.Status, trim(op.Body))
		return
	}
	switch op.Kind {
	case Place, Replay:
		if b.OrderID == "" || b.SaleID != op.Sale || b.Quantity != op.Qty {
			c.fail("answer", "%s: 202 %s does not name an order of %d units of the sale", describe(op), trim(op.Body), op.Qty)
		}
	case Pay:
		if b.PaymentID == "" || b.OrderID != op.OrderID {
			c.fail("answer", "%s: 201 %s is not a payment of the order", describe(op), trim(op.Body))
		}
	case Cancel:
		if b.OrderID != op.OrderID || b.Status != "cancelled" {
			c.fail("answer", "%s: 200 %s, want the order cancelled", describe(op), trim(op.Body))
		}
	case Get:
		if b.OrderID != op.OrderID || b.UserID != op.User {
			c.fail("answer", "%s: 200 %s is not the buyer's order", describe(op), trim(op.Body))
		}
	}
}

// placements maps every 202 to its key and checks that a key has one
// order, an order one key, and that the order exists as acknowledged.
func (c *checker) placements(ops []Op) {
	for _, op := range ops {
		if op.Kind != Place && op.Kind != Replay {
			continue
		}
		k := keyID{op.User, op.Sale, op.Key}
		ks := c.keys[k]
		if ks == nil {
			ks = &keyState{qty: op.Qty, orders: map[string]bool{}}
			c.keys[k] = ks
		}
		if op.Indeterminate() {
			ks.indeterminate = true
			continue
		}
		if op.Status != 202 {
			continue
		}
		var b struct {
			OrderID string `json:"order_id"`
		}
		json.Unmarshal([]byte(op.Body), &b)
		if b.OrderID == "" {
			continue // reported by answer
		}
		if !ks.acked || op.End.Before(ks.firstAckEnd) {
			ks.firstAckEnd = op.End
		}
		ks.acked = true
		ks.orders[b.OrderID] = true
		if prev, ok := c.byOrder[b.OrderID]; ok && prev != k {
			c.fail("ack", "order %s answered to user %d key %s and to user %d key %s", b.OrderID, prev.user, prev.key, k.user, k.key)
		}
		c.byOrder[b.OrderID] = k
	}
	for k, ks := range c.keys {
		if len(ks.orders) > 1 {
			c.fail("ack", "user %d sale %s key %s answered with %d orders: %v", k.user, k.sale, k.key, len(ks.orders), sortedKeys(ks.orders))
		}
		for id := range ks.orders {
			o, ok := c.orders[id]
			switch {
			case !ok:
				c.fail("lost", "order %s (user %d key %s, answered 202) is not among the buyer's orders", id, k.user, k.key)
			case o.User != k.user || o.Sale != k.sale || o.Qty != ks.qty:
				c.fail("ack", "order %s reads user %d sale %s qty %d; answered 202 to user %d sale %s qty %d", id, o.User, o.Sale, o.Qty, k.user, k.sale, ks.qty)
			case o.Status == "pending":
				c.fail("lost", "order %s (user %d key %s) is still pending after the stream drained (I5)", id, k.user, k.key)
			}
		}
	}
}

// replays checks the replay rule: once a key was answered 202, every
// later request with it answers 202 again (never a 409), with the same
// order (placements checked the order).
func (c *checker) replays(ops []Op) {
	for _, op := range ops {
		if op.Kind != Place && op.Kind != Replay || op.Indeterminate() || op.Status != 409 {
			continue
		}
		ks := c.keys[keyID{op.User, op.Sale, op.Key}]
		if ks != nil && ks.acked && op.Start.After(ks.firstAckEnd) {
			c.fail("replay", "%s: 409 %s after the key was answered 202", describe(op), errorCode(op.Body))
		}
	}
}

// phantoms checks that every order no 202 named is explained by a
// distinct key of the same buyer, sale and quantity whose attempts were
// indeterminate (at most one order each); a key answered only with
// rejections placed nothing.
func (c *checker) phantoms() {
	type slot struct {
		user int64
		sale string
		qty  int64
	}
	free := map[slot]int{}
	for k, ks := range c.keys {
		if ks.indeterminate && !ks.acked {
			free[slot{k.user, k.sale, ks.qty}]++
		}
	}
	ids := sortedKeys(ordersSet(c.orders))
	for _, id := range ids {
		if _, ok := c.byOrder[id]; ok {
			continue
		}
		o := c.orders[id]
		s := slot{o.User, o.Sale, o.Qty}
		if free[s] == 0 {
			c.fail("at-most-once", "order %s (user %d sale %s qty %d) was never answered 202 and no indeterminate request of that buyer is left to explain it", id, o.User, o.Sale, o.Qty)
			continue
		}
		free[s]--
	}
}

// live reports whether an order holds its units: not cancelled, and not
// refunded before it shipped.
func live(o Order) bool {
	switch o.Status {
	case "cancelled":
		return false
	case "refunded":
		for _, t := range o.Transitions {
			if t.Transition == "ship" {
				return true
			}
		}
		return false
	}
	return true
}

// stock checks I1, I3's per-buyer limit and I4 for every sale: the units
// of live orders are the sale's sold, remaining + sold = stock.
func (c *checker) stock() {
	type userSale struct {
		user int64
		sale string
	}
	liveUnits := map[string]int64{}
	perUser := map[userSale]int64{}
	for _, o := range c.orders {
		if live(o) {
			liveUnits[o.Sale] += o.Qty
			perUser[userSale{o.User, o.Sale}] += o.Qty
		}
	}
	limits := map[string]int64{}
	for _, s := range c.f.Sales {
		limits[s.ID] = s.PerUserLimit
		n := liveUnits[s.ID]
		if n > s.Stock || s.Sold > s.Stock || s.Remaining < 0 {
			c.fail("I1", "sale %s oversold: %d units in live orders, sold %d, remaining %d, of %d", s.ID, n, s.Sold, s.Remaining, s.Stock)
		}
		if s.Sold != n || s.Remaining+n != s.Stock {
			c.fail("I4", "sale %s: sold %d remaining %d of %d, but live orders hold %d units", s.ID, s.Sold, s.Remaining, s.Stock, n)
		}
	}
	for us, n := range perUser {
		if lim, ok := limits[us.sale]; ok && n > lim {
			c.fail("I3", "user %d holds %d units of sale %s (limit %d)", us.user, n, us.sale, lim)
		}
	}
}

// lifecycles checks each order's transitions (one path through the state
// machine, nothing after a payment but fulfilment and refunds), that the
// buyers' answers agree with where the orders ended, and the deadlines.
func (c *checker) lifecycles(ops []Op) {
	for _, id := range sortedKeys(ordersSet(c.orders)) {
		c.transitions(c.orders[id])
		c.deadline(c.orders[id])
	}
	pressed := map[string]bool{} // orders whose checkout a buyer pressed (or may have)
	for _, op := range ops {
		if op.Kind == Checkout && (op.Indeterminate() || op.Status == 200) {
			pressed[op.OrderID] = true
		}
	}
	for _, op := range ops {
		if op.Kind != Cancel || op.Indeterminate() {
			continue
		}
		o, ok := c.orders[op.OrderID]
		if !ok {
			continue // lost or phantom: reported above when it matters
		}
		switch {
		case op.Status == 200 && o.Status != "cancelled":
			c.fail("cancel", "%s: answered cancelled, the order ended %s", describe(op), o.Status)
		case op.Status == 409 && o.Status == "cancelled":
			c.fail("cancel", "%s: answered 409 %s, yet the order ended cancelled", describe(op), trim(op.Body))
		}
	}
	for _, id := range sortedKeys(ordersSet(c.orders)) {
		o := c.orders[id]
		for _, t := range o.Transitions {
			if t.Transition == "pay" && !pressed[id] {
				c.fail("paid", "order %s was paid, but its buyer never pressed pay", id)
			}
		}
	}
}

// next is the state machine of docs/api.md: transition → from states → to.
var next = map[string]struct {
	from []string
	to   string
}{
	"pay":     {[]string{"pending", "created"}, "paid"},
	"cancel":  {[]string{"pending", "created"}, "cancelled"},
	"expire":  {[]string{"pending", "created"}, "cancelled"},
	"ship":    {[]string{"paid"}, "shipped"},
	"deliver": {[]string{"shipped"}, "delivered"},
	"refund":  {[]string{"paid", "shipped", "delivered"}, "refunded"},
}

func (c *checker) transitions(o Order) {
	state := "created"
	for _, t := range o.Transitions {
		rule, ok := next[t.Transition]
		from := t.From
		if from == "pending" {
			from = "created"
		}
		if !ok || !contains(rule.from, state) || from != state || t.To != rule.to {
			c.fail("transitions", "order %s: %s %s→%s from state %s (history %s)", o.ID, t.Transition, t.From, t.To, state, describeTransitions(o.Transitions))
			return
		}
		state = t.To
	}
	if o.Status != state && !(o.Status == "pending" && state == "created") {
		c.fail("transitions", "order %s is %s, its history ends at %s (%s)", o.ID, o.Status, state, describeTransitions(o.Transitions))
	}
}

// deadline checks I6 on the final state: no unpaid order more than 5 s
// past its deadline, and no order expired before it.
func (c *checker) deadline(o Order) {
	if o.PaymentDeadline == nil {
		return
	}
	slack := c.opt.ClockSlack
	if (o.Status == "created" || o.Status == "pending") && c.f.ReadAt.After(o.PaymentDeadline.Add(5*time.Second+slack)) {
		c.fail("I6", "order %s is still %s %v past its deadline %s", o.ID, o.Status, c.f.ReadAt.Sub(*o.PaymentDeadline).Round(time.Millisecond), o.PaymentDeadline.UTC().Format(time.RFC3339Nano))
	}
	if o.CancelReason == "payment_timeout" && o.CancelledAt != nil && o.CancelledAt.Before(o.PaymentDeadline.Add(-slack)) {
		c.fail("I6", "order %s expired at %s, before its deadline %s", o.ID, o.CancelledAt.UTC().Format(time.RFC3339Nano), o.PaymentDeadline.UTC().Format(time.RFC3339Nano))
	}
}

func describeTransitions(ts []Transition) string {
	parts := make([]string, len(ts))
	for i, t := range ts {
		parts[i] = t.Transition + ":" + t.From + "→" + t.To
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func ordersSet(m map[string]Order) map[string]bool {
	out := make(map[string]bool, len(m))
	for id := range m {
		out[id] = true
	}
	return out
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func trim(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}
