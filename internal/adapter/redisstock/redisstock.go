// Package redisstock keeps the stock counters of running sales in Redis,
// shared by every instance of a clustered deployment: the clustered
// equivalent of [inventory.Counters]; both implement [inventory.Stock].
//
// The reserve step is one Lua script (window, per-user limit, stock and the
// idempotency key, checked and taken atomically); confirm and release are
// one script each. All keys of a sale share the hash tag {sale:<id>}, so the
// scripts run unchanged on Redis Cluster. rueidis pipelines concurrent
// calls automatically, so many placements share one network write.
//
// Each sale's counters carry an epoch in every one of their keys. A script
// that finds a key missing or the epoch changed answers "fenced", Reserve
// returns [inventory.ErrFenced] (503), and one instance rebuilds the
// counters from the record with [Counters.Rebuild] (ledger.Recovery runs
// it). See docs/redis.md.
//
// Work that must outlive a request (undoing a reserve whose reply was lost,
// retrying a confirm) goes to a bounded queue that [Counters.Run] drains;
// Run returns once that work is done or given up.
package redisstock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/domain/sale"
)

var (
	_ order.Reserver      = (*Counters)(nil)
	_ inventory.Stock     = (*Counters)(nil)
	_ inventory.Rebuilder = (*Counters)(nil)
)

// ErrUnavailable is returned (wrapping the cause) when Redis does not answer
// or answers with an error; it maps to 503.
var ErrUnavailable = &spike.Error{Kind: spike.ErrUnavailable, Message: "the stock counters are unavailable"}

// Config configures Counters. The zero Config is valid: every zero field
// takes the default named with it.
type Config struct {
	// Prefix starts every key. If empty, "spike" is used.
	Prefix string
	// Channel is the pub/sub channel that carries sold-out, restock and
	// rebuild news between instances. If empty, Prefix+":stock" is used.
	Channel string
	// KeyTTL is how long a sale's keys (and so its idempotency keys) live
	// after its end: they expire at max(now, EndsAt) + KeyTTL. Sales without
	// an end never expire. If zero, 24h is used.
	KeyTTL time.Duration
	// LockTTL bounds a rebuild: the lock expires after it, so a crashed
	// rebuilder does not hold the sale fenced for ever. It must exceed
	// Settle plus the time to read the record. If zero, 30s is used.
	LockTTL time.Duration
	// Settle is how long Rebuild waits between fencing the sale and reading
	// the record, so that placements that reserved before the fence finish
	// their enqueue (and are in the record). Set it to at least the
	// enqueue timeout of order.Service. If zero, 5s is used; negative: none.
	Settle time.Duration
	// FenceNotify is the least time between two OnFenced calls for one
	// sale. If zero, 1s is used.
	FenceNotify time.Duration
	// OnFenced is called, on the caller's request path, so it must not
	// block (ledger.Recovery.Fenced queues the sale), when a reserve or a
	// return finds a sale's counters fenced. The integrator rebuilds then;
	// see Rebuild. May be nil.
	OnFenced func(saleID string)
	// Lookup returns a sale that this instance has not seen and whose
	// counters are missing from Redis (lost, or never opened): a
	// sale.Store's Sale, which returns sale.ErrSaleNotFound for an unknown
	// sale. If nil, such a sale is sale.ErrSaleNotFound, which is wrong after
	// a Redis loss: set it.
	Lookup func(ctx context.Context, saleID string) (sale.Sale, error)
	// RetryQueue bounds the background work waiting for Run (undoing
	// reserves in doubt, retrying confirms); work beyond it is dropped and
	// counted (Dropped). If zero, 4096 is used.
	RetryQueue int
	// RetryWorkers is how many queued jobs Run works on at once. If zero,
	// 8 is used.
	RetryWorkers int
	// DrainTimeout bounds how long Run, once its ctx is done, keeps making
	// last attempts at the queued work. If zero, 5s is used.
	DrainTimeout time.Duration
}

// Counters are the stock counters of every sale, kept in Redis.
// They are safe for concurrent use.
type Counters struct {
	client  rueidis.Client
	ids     *spike.IDGenerator
	opts    Config
	sales   sync.Map // sale id → *saleState
	trips   atomic.Uint64
	jobs    chan job
	dropped atomic.Uint64

	// Deferred confirms (confirm.go), sent by Run's confirmer.
	confirms   chan inventory.Reservation
	confirming atomic.Bool
}

// saleState is what an instance knows of one sale.
type saleState struct {
	cp    sale.Sale
	k     saleKeys
	epoch atomic.Int64 // the epoch of the counters this instance trusts; 0: none yet
	flag  atomic.Pointer[version]

	fenced     atomic.Bool
	lastNotify atomic.Int64 // Unix nanoseconds of the last OnFenced call
}

// version orders news about a sale's sold-out state.
type version struct{ epoch, sv int64 }

func (v *version) newer(than *version) bool {
	return than == nil || v.epoch > than.epoch || (v.epoch == than.epoch && v.sv > than.sv)
}

type saleKeys struct {
	meta, stock, users, keys, lock, returned string
	four                                     []string
}

func (c *Counters) keysFor(id string) saleKeys {
	base := c.opts.Prefix + ":{sale:" + id + "}:"
	k := saleKeys{meta: base + "meta", stock: base + "stock", users: base + "users", keys: base + "keys", lock: base + "lock", returned: base + "returned"}
	k.four = []string{k.meta, k.stock, k.users, k.keys}
	return k
}

// New returns counters kept through client, naming new orders with ids.
// Call Run to receive other instances' news and do the background work.
func New(client rueidis.Client, ids *spike.IDGenerator, opts Config) *Counters {
	if opts.Prefix == "" {
		opts.Prefix = "spike"
	}
	if opts.Channel == "" {
		opts.Channel = opts.Prefix + ":stock"
	}
	if opts.KeyTTL == 0 {
		opts.KeyTTL = 24 * time.Hour
	}
	if opts.LockTTL == 0 {
		opts.LockTTL = 30 * time.Second
	}
	if opts.Settle == 0 {
		opts.Settle = 5 * time.Second
	}
	if opts.FenceNotify == 0 {
		opts.FenceNotify = time.Second
	}
	if opts.RetryQueue == 0 {
		opts.RetryQueue = 4096
	}
	if opts.RetryWorkers == 0 {
		opts.RetryWorkers = 8
	}
	if opts.DrainTimeout == 0 {
		opts.DrainTimeout = 5 * time.Second
	}
	return &Counters{client: client, ids: ids, opts: opts, jobs: make(chan job, opts.RetryQueue),
		confirms: make(chan inventory.Reservation, 8*confirmBatch)}
}

// RoundTrips returns how many commands (each one request and one reply,
// usually a script) these counters have sent to Redis. Auto-pipelining
// packs concurrent ones into shared network writes, but each still waits
// for its own reply.
func (c *Counters) RoundTrips() uint64 { return c.trips.Load() }

func (c *Counters) exec(ctx context.Context, s *rueidis.Lua, keys []string, args ...string) rueidis.RedisResult {
	c.trips.Add(1)
	return s.Exec(ctx, c.client, keys, args)
}

func (c *Counters) do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	c.trips.Add(1)
	return c.client.Do(ctx, cmd)
}

// unavailable wraps a Redis failure so that it is both ErrUnavailable (503)
// and the cause.
type unavailable struct{ err error }

func (e *unavailable) Error() string   { return "redis stock: " + e.err.Error() }
func (e *unavailable) Unwrap() []error { return []error{ErrUnavailable, e.err} }

func fail(err error) error {
	if err == nil {
		return nil
	}
	var se *spike.Error
	if errors.As(err, &se) {
		return err
	}
	return &unavailable{err}
}

func (c *Counters) expireAt(cp sale.Sale) int64 {
	if cp.EndsAt.IsZero() {
		return 0
	}
	end := cp.EndsAt
	if now := time.Now(); now.After(end) {
		end = now
	}
	return end.Add(c.opts.KeyTTL).UnixMilli()
}

func ms(t time.Time) string {
	if t.IsZero() {
		return "0"
	}
	return strconv.FormatInt(t.UnixMilli(), 10)
}

func (c *Counters) campaignArgs(cp sale.Sale) []string {
	return []string{cp.SKU, strconv.FormatInt(cp.PriceCents, 10), strconv.FormatInt(cp.PerUserLimit, 10),
		strconv.FormatInt(cp.Stock, 10), ms(cp.StartsAt), ms(cp.EndsAt)}
}

// register makes cp known locally (replacing an earlier campaign of the
// same id but keeping what is known of its counters) and returns its state.
func (c *Counters) register(cp sale.Sale) *saleState {
	s := &saleState{cp: cp, k: c.keysFor(cp.ID)}
	if v, loaded := c.sales.LoadOrStore(cp.ID, s); loaded {
		old := v.(*saleState)
		if old.cp == cp {
			return old
		}
		s.epoch.Store(old.epoch.Load())
		s.flag.Store(old.flag.Load())
		s.fenced.Store(old.fenced.Load())
		c.sales.Store(cp.ID, s)
	}
	return s
}

// Open starts counting a new sale with all of its units remaining, unless
// Redis already holds counters for it (then it adopts them and changes
// nothing). Call it when a sale is created, never to recover a sale: after
// a Redis loss it would hand out the whole allocation again. Recovery is
// Rebuild's job.
func (c *Counters) Open(ctx context.Context, cp sale.Sale) error {
	s := c.register(cp)
	epoch := newEpoch(s.epoch.Load(), 0)
	args := append([]string{strconv.FormatInt(epoch, 10)}, c.campaignArgs(cp)...)
	args = append(args, strconv.FormatInt(c.expireAt(cp), 10))
	got, err := c.exec(ctx, openScript, []string{s.k.meta, s.k.stock, s.k.users, s.k.keys, s.k.returned}, args...).ToString()
	if err != nil {
		return fmt.Errorf("open sale %s: %w", cp.ID, fail(err))
	}
	e, _ := strconv.ParseInt(got, 10, 64)
	c.adopt(s, e)
	return nil
}

// newEpoch returns an epoch above both known epochs: Unix milliseconds, so
// that epochs keep growing across a Redis loss, which forgets them.
func newEpoch(a, b int64) int64 {
	return max(time.Now().UnixMilli(), a+1, b+1)
}

// adopt makes e the trusted epoch of s if it is newer, and clears the fence.
func (c *Counters) adopt(s *saleState, e int64) {
	for {
		old := s.epoch.Load()
		if e <= old {
			if e == old && e != 0 {
				s.fenced.Store(false)
			}
			return
		}
		if s.epoch.CompareAndSwap(old, e) {
			s.fenced.Store(false)
			return
		}
	}
}

// observe records news about the sold-out state of s.
func (s *saleState) observe(epoch, sv int64) {
	v := &version{epoch, sv}
	for {
		old := s.flag.Load()
		if !v.newer(old) {
			return
		}
		if s.flag.CompareAndSwap(old, v) {
			return
		}
	}
}

// soldOut reports whether the sale is known to be sold out under the
// trusted epoch.
func (s *saleState) soldOut() bool {
	v := s.flag.Load()
	return v != nil && v.sv&1 == 1 && v.epoch == s.epoch.Load()
}

// fence marks s fenced and tells the integrator, at most once per
// FenceNotify.
func (c *Counters) fence(s *saleState) error {
	s.fenced.Store(true)
	if c.opts.OnFenced != nil {
		now := time.Now().UnixNano()
		last := s.lastNotify.Load()
		if now-last >= int64(c.opts.FenceNotify) && s.lastNotify.CompareAndSwap(last, now) {
			c.opts.OnFenced(s.cp.ID)
		}
	}
	return inventory.ErrFenced
}

// lookup returns what this instance knows of a sale, learning it from the
// meta hash in Redis (one round trip, once per sale and instance) or, when
// that is missing, from Config.Lookup.
func (c *Counters) lookup(ctx context.Context, id string) (*saleState, error) {
	if v, ok := c.sales.Load(id); ok {
		return v.(*saleState), nil
	}
	k := c.keysFor(id)
	m, err := c.do(ctx, c.client.B().Hgetall().Key(k.meta).Build()).AsStrMap()
	if err != nil {
		return nil, fail(err)
	}
	if m["sku"] != "" && m["limit"] != "" {
		num := func(f string) int64 { n, _ := strconv.ParseInt(m[f], 10, 64); return n }
		t := func(f string) time.Time {
			if n := num(f); n != 0 {
				return time.UnixMilli(n).UTC()
			}
			return time.Time{}
		}
		cp := sale.Sale{ID: id, SKU: m["sku"], Stock: num("alloc"), PriceCents: num("price"),
			PerUserLimit: num("limit"), StartsAt: t("starts"), EndsAt: t("ends")}
		s := c.register(cp)
		c.adopt(s, num("epoch"))
		return s, nil
	}
	if c.opts.Lookup == nil {
		return nil, sale.ErrSaleNotFound
	}
	cp, err := c.opts.Lookup(ctx, id)
	if err != nil {
		return nil, err
	}
	return c.register(cp), nil
}

func field(user int64, key string) string {
	return strconv.FormatInt(user, 10) + ":" + key
}

// hold is a parsed "orderid|qty|placedµs|state" value.
type hold struct {
	orderID   string
	quantity  int64
	placed    int64
	confirmed bool
}

func parseHold(v string) (hold, error) {
	p := strings.Split(v, "|")
	if len(p) != 4 {
		return hold{}, fmt.Errorf("bad hold %q", v)
	}
	q, err1 := strconv.ParseInt(p[1], 10, 64)
	t, err2 := strconv.ParseInt(p[2], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return hold{}, fmt.Errorf("bad hold %q: %w", v, err)
	}
	// The last field is 0 (reserved), 1 (confirmed) or 2 (returned, which
	// implies confirmed).
	return hold{orderID: p[0], quantity: q, placed: t, confirmed: p[3] != "0"}, nil
}

func (s *saleState) reservation(r inventory.Request, h hold) inventory.Reservation {
	return inventory.Reservation{
		OrderID: h.orderID, SaleID: s.cp.ID, SKU: s.cp.SKU, UserID: r.UserID, Key: r.Key,
		Quantity: h.quantity, PriceCents: s.cp.PriceCents, PlacedAt: time.UnixMicro(h.placed).UTC(),
	}
}

func (s *saleState) replay(r inventory.Request, v string) (inventory.Reservation, bool, error) {
	h, err := parseHold(v)
	switch {
	case err != nil:
		return inventory.Reservation{}, false, err
	case h.quantity != r.Quantity:
		return inventory.Reservation{}, false, inventory.ErrKeyReused
	case !h.confirmed:
		// The reservation goes with the error, so the caller can check
		// whether its event is stored after all (its instance may be gone).
		return s.reservation(r, h), false, inventory.ErrInProgress
	}
	return s.reservation(r, h), true, nil
}

// Reserve takes r.Quantity units of the sale for the buyer in one atomic
// step (one script, one round trip). A key that already holds a
// reservation returns it with replay set and changes nothing; an
// unconfirmed one is ErrInProgress. On a sale known to be sold out it only
// looks the key up (one HMGET instead of the script).
// Returns sale.ErrSaleNotFound, ErrKeyReused, ErrInProgress,
// ErrNotActive, ErrLimit, ErrSoldOut, ErrFenced (the counters are being
// rebuilt), an ErrInvalid error when the quantity is out of range, or an
// ErrUnavailable error when Redis fails.
func (c *Counters) Reserve(ctx context.Context, r inventory.Request) (inventory.Reservation, bool, error) {
	s, err := c.lookup(ctx, r.SaleID)
	if err != nil {
		return inventory.Reservation{}, false, err
	}
	f := field(r.UserID, r.Key)
	if s.soldOut() {
		// As on the script's path, an invalid quantity is invalid even when
		// sold out.
		if r.Quantity < 1 || r.Quantity > s.cp.PerUserLimit {
			return inventory.Reservation{}, false, spike.Errorf(spike.ErrInvalid, "quantity must be between 1 and the per-user limit (%d)", s.cp.PerUserLimit)
		}
		if res, replay, done, err := c.peek(ctx, s, r, f); done {
			return res, replay, err
		}
	}
	// A second pass only after adopting a newer epoch.
	for range 2 {
		epoch := s.epoch.Load()
		id := c.ids.New()
		reply, err := c.exec(ctx, reserveScript, s.k.four, strconv.FormatInt(epoch, 10), strconv.FormatInt(r.UserID, 10), f,
			strconv.FormatInt(r.Quantity, 10), id, c.opts.Channel, s.cp.ID).AsStrSlice()
		if err != nil {
			if !isRedisErr(err) {
				// The script may have run (timeout, broken connection): undo
				// it, or its units stay held with a key nobody can confirm.
				c.undo(s, r, id)
			}
			return inventory.Reservation{}, false, fail(err)
		}
		switch reply[0] {
		case "OK":
			placed, _ := strconv.ParseInt(reply[2], 10, 64)
			sv, _ := strconv.ParseInt(reply[3], 10, 64)
			s.observe(epoch, sv)
			s.fenced.Store(false)
			return s.reservation(r, hold{orderID: id, quantity: r.Quantity, placed: placed}), false, nil
		case "R":
			return s.replay(r, reply[1])
		case "S":
			sv, _ := strconv.ParseInt(reply[2], 10, 64)
			s.observe(epoch, sv)
			return inventory.Reservation{}, false, inventory.ErrSoldOut
		case "L":
			return inventory.Reservation{}, false, inventory.ErrLimit
		case "N":
			return inventory.Reservation{}, false, inventory.ErrNotActive
		case "I":
			return inventory.Reservation{}, false, spike.Errorf(spike.ErrInvalid, "quantity must be between 1 and the per-user limit (%s)", reply[1])
		case "E":
			e, _ := strconv.ParseInt(reply[1], 10, 64)
			if e > epoch {
				c.adopt(s, e) // rebuilt by another instance: retry under its epoch
				continue
			}
			return inventory.Reservation{}, false, c.fence(s) // older than ours: stale data
		case "F":
			return inventory.Reservation{}, false, c.fence(s)
		default:
			return inventory.Reservation{}, false, fail(fmt.Errorf("reserve: unexpected reply %q", reply))
		}
	}
	return inventory.Reservation{}, false, inventory.ErrFenced // rebuilt twice meanwhile: retry later
}

// peek is the sold-out path: the replay check must come first (a key that
// got 202 gets it again after the sell-out), so it reads the key's hold,
// together with the keys hash's epoch and stock version, in one HMGET.
// done is false when the full script must decide: the epoch is not the
// trusted one (lost or rebuilt counters), or the sale was restocked.
func (c *Counters) peek(ctx context.Context, s *saleState, r inventory.Request, f string) (res inventory.Reservation, replay, done bool, err error) {
	epoch := s.epoch.Load()
	c.trips.Add(1)
	vals, err := c.client.Do(ctx, c.client.B().Hmget().Key(s.k.keys).Field(f, "_e", "_sv").Build()).ToArray()
	if err != nil {
		return inventory.Reservation{}, false, true, fail(err)
	}
	if len(vals) != 3 {
		return inventory.Reservation{}, false, true, fail(fmt.Errorf("peek: %d values", len(vals)))
	}
	h, herr := vals[0].ToString()
	e, _ := vals[1].AsInt64()
	sv, _ := vals[2].AsInt64()
	if e != epoch || epoch == 0 {
		return inventory.Reservation{}, false, false, nil
	}
	s.observe(epoch, sv)
	switch {
	case herr == nil:
		res, replay, err = s.replay(r, h)
		return res, replay, true, err
	case sv&1 == 0:
		return inventory.Reservation{}, false, false, nil
	}
	return inventory.Reservation{}, false, true, inventory.ErrSoldOut
}

// isRedisErr reports whether err is an error reply from Redis, after which
// the command certainly did not take effect (scripts here fail before
// writing); any other error leaves it in doubt.
func isRedisErr(err error) bool {
	_, ok := rueidis.IsRedisErr(err)
	return ok
}

// undoAfter are the delays after which undo releases again: rueidis may
// send the release on another connection than the reserve, so Redis could
// run it first; the reserve may also still be queued behind a slow Redis.
var undoAfter = []time.Duration{0, 250 * time.Millisecond, time.Second, 5 * time.Second}

// retryFor bounds each round of retries of a queued job.
const retryFor = 10 * time.Second

// job is background work for Run: fn, retried for up to retryFor after
// each of the delays in after (one round at once if after is empty).
type job struct {
	after []time.Duration
	fn    func(ctx context.Context) error
}

// enqueue hands j to Run's workers, or drops it when the queue is full.
func (c *Counters) enqueue(j job) {
	select {
	case c.jobs <- j:
	default:
		c.dropped.Add(1)
	}
}

// Dropped returns how many background jobs (undos, confirm retries) were
// dropped because the queue was full. A dropped undo leaves its units held
// under a key nobody confirms until the sale is rebuilt; a dropped confirm
// leaves its key answering "in progress" to replays until then.
func (c *Counters) Dropped() uint64 { return c.dropped.Load() }

// Queued returns how many background jobs wait for Run.
func (c *Counters) Queued() int { return len(c.jobs) }

// undo releases, in the background, a reservation whose reserve script may
// or may not have run. Repeating it is safe: the release script only acts
// if the key maps to this very order id, which no retry of the request
// reuses.
func (c *Counters) undo(s *saleState, r inventory.Request, orderID string) {
	res := inventory.Reservation{OrderID: orderID, SaleID: s.cp.ID, UserID: r.UserID, Key: r.Key}
	c.enqueue(job{after: undoAfter, fn: func(ctx context.Context) error { return c.Release(ctx, res) }})
}

// work runs queued jobs until ctx is done, then makes one last attempt at
// each job still queued or in hand, within DrainTimeout.
func (c *Counters) work(ctx context.Context, drain context.Context) {
	for {
		select {
		case j := <-c.jobs:
			if !c.runJob(ctx, j) {
				_ = j.fn(drain)
			}
		case <-ctx.Done():
			for {
				select {
				case j := <-c.jobs:
					if drain.Err() == nil {
						_ = j.fn(drain)
					}
				default:
					return
				}
			}
		}
	}
}

// runJob runs j's rounds; false if ctx ended before j's last round
// succeeded.
func (c *Counters) runJob(ctx context.Context, j job) bool {
	after := j.after
	if len(after) == 0 {
		after = []time.Duration{0}
	}
	for _, d := range after {
		if ctx.Err() != nil {
			return false
		}
		if d > 0 {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return false
			case <-t.C:
			}
		}
		rctx, cancel := context.WithTimeout(ctx, retryFor)
		ok := retry(rctx, j.fn)
		cancel()
		if !ok && ctx.Err() != nil {
			return false
		}
	}
	return true
}

// retry calls fn until it succeeds (true) or ctx is done, with backoff.
func retry(ctx context.Context, fn func(context.Context) error) bool {
	backoff := 20 * time.Millisecond
	for fn(ctx) != nil {
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		backoff = min(2*backoff, time.Second)
	}
	return true
}
