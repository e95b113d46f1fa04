package redisstock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/sale"
)

// Confirm marks a reservation as durably recorded, so that replays of its
// key are answered with it: one round trip. It changes nothing if the key
// no longer maps to the reservation's order (released, or counters lost).
// If Redis does not answer, Confirm returns an ErrUnavailable error and
// keeps trying in the background (Run) for a while (confirming is idempotent),
// since until it succeeds replays of the key answer ErrInProgress.
func (c *Counters) Confirm(ctx context.Context, res inventory.Reservation) error {
	err := c.confirm(ctx, res)
	if err != nil && !isRedisErr(err) {
		c.enqueue(job{fn: func(ctx context.Context) error { return c.confirm(ctx, res) }})
	}
	if err != nil {
		return fmt.Errorf("confirm %s: %w", res.OrderID, fail(err))
	}
	return nil
}

func (c *Counters) confirm(ctx context.Context, res inventory.Reservation) error {
	k := c.keysFor(res.SaleID)
	return c.exec(ctx, confirmScript, []string{k.keys}, field(res.UserID, res.Key), res.OrderID).Error()
}

// Release gives a reservation's units back to the sale and forgets its key,
// as if the request had never been made: one round trip. It is for
// reservations that were never durably recorded; releasing twice changes
// nothing. On fenced counters it changes nothing either and returns nil:
// the rebuild recomputes them from the record, which does not hold the
// order. A sale that was sold out is un-flagged on every instance.
func (c *Counters) Release(ctx context.Context, res inventory.Reservation) error {
	k := c.keysFor(res.SaleID)
	reply, err := c.exec(ctx, releaseScript, k.four, field(res.UserID, res.Key), res.OrderID,
		strconv.FormatInt(res.UserID, 10), c.opts.Channel, res.SaleID).AsStrSlice()
	if err != nil {
		return fmt.Errorf("release %s: %w", res.OrderID, fail(err))
	}
	if reply[0] == "OK" {
		if v, ok := c.sales.Load(res.SaleID); ok {
			s := v.(*saleState)
			sv, _ := strconv.ParseInt(reply[2], 10, 64)
			s.observe(s.epoch.Load(), sv)
		}
	}
	return nil
}

// Return implements inventory.Stock: one round trip. The returned order
// ids are kept in a set under the sale's hash tag, which expires with the
// sale's other keys. A sale whose counters restock is un-flagged on every
// instance. On fenced counters it returns inventory.ErrFenced (retry once
// the sale is rebuilt: the rebuild counts the order returned if the record
// says it is cancelled).
func (c *Counters) Return(ctx context.Context, r inventory.Return) (bool, error) {
	s, err := c.lookup(ctx, r.SaleID)
	if errors.Is(err, sale.ErrSaleNotFound) {
		return false, inventory.ErrNotOpen
	}
	if err != nil {
		return false, err
	}
	reply, err := c.exec(ctx, returnScript, []string{s.k.meta, s.k.stock, s.k.users, s.k.keys, s.k.returned},
		field(r.UserID, r.Key), r.OrderID, strconv.FormatInt(r.Quantity, 10), strconv.FormatInt(r.UserID, 10),
		c.opts.Channel, r.SaleID).AsStrSlice()
	if err != nil {
		return false, fmt.Errorf("return %s: %w", r.OrderID, fail(err))
	}
	switch reply[0] {
	case "OK":
		e, _ := strconv.ParseInt(reply[1], 10, 64)
		sv, _ := strconv.ParseInt(reply[3], 10, 64)
		if e == s.epoch.Load() {
			s.observe(e, sv)
		}
		return true, nil
	case "D":
		return false, nil
	case "N":
		return false, inventory.ErrSaleEnded
	case "X":
		return false, inventory.ErrNotHeld
	case "F":
		return false, c.fence(s)
	}
	return false, fail(fmt.Errorf("return: unexpected reply %q", reply))
}

// state is a sale's counters as Redis holds them.
type state struct {
	healthy bool
	epoch   int64 // of the meta hash; 0 when missing
	sv      int64
	stats   inventory.Stats
}

func (c *Counters) state(ctx context.Context, k saleKeys) (state, error) {
	reply, err := c.exec(ctx, stateScript, k.four).AsStrSlice()
	if err != nil {
		return state{}, fail(err)
	}
	n := func(i int) int64 {
		if i >= len(reply) {
			return 0
		}
		v, _ := strconv.ParseInt(reply[i], 10, 64)
		return v
	}
	st := state{healthy: reply[0] == "OK", epoch: n(1)}
	if st.healthy {
		st.sv = n(3)
		st.stats = inventory.Stats{Remaining: n(2), Held: n(4), Buyers: int(n(5)), MaxPerBuyer: n(6), Allocated: n(7)}
	}
	return st, nil
}

// Remaining returns the units a sale has left in Redis; ok is false if its
// counters are missing or fenced (being rebuilt). One round trip (the
// script also sums the buyers' units, so it is for dashboards and audits,
// not the hot path).
func (c *Counters) Remaining(ctx context.Context, saleID string) (remaining int64, ok bool, err error) {
	st, err := c.state(ctx, c.keysFor(saleID))
	if err != nil || !st.healthy {
		return 0, false, err
	}
	return st.stats.Remaining, true, nil
}

// Stats returns a snapshot of a sale's counters, for audits; ok is false if
// they are missing or fenced. It reads every buyer's units: O(buyers).
func (c *Counters) Stats(ctx context.Context, saleID string) (inventory.Stats, bool, error) {
	st, err := c.state(ctx, c.keysFor(saleID))
	if err != nil || !st.healthy {
		return inventory.Stats{}, false, err
	}
	return st.stats, true, nil
}

// Restore replaces a sale's counters with ones rebuilt from its holdings
// (see inventory.Stock), under a new epoch, atomically. It takes the rebuild lock but
// neither fences nor waits: use it when nothing else is placing orders for
// the sale (tests, tools). Returns ErrRebuilding if another instance holds
// the lock.
func (c *Counters) Restore(ctx context.Context, cp sale.Sale, holdings []inventory.Holding) error {
	s := c.register(cp)
	token, ok, err := c.lock(ctx, s.k)
	if err != nil {
		return fmt.Errorf("restore sale %s: %w", cp.ID, err)
	}
	if !ok {
		return fmt.Errorf("restore sale %s: %w", cp.ID, ErrRebuilding)
	}
	defer c.unlock(ctx, s.k, token)
	st, err := c.state(ctx, s.k)
	if err != nil {
		return fmt.Errorf("restore sale %s: %w", cp.ID, err)
	}
	if err := c.write(ctx, s, token, newEpoch(s.epoch.Load(), st.epoch), holdings); err != nil {
		return fmt.Errorf("restore sale %s: %w", cp.ID, err)
	}
	return nil
}

// ErrRebuilding is returned by Restore when another instance holds the
// sale's rebuild lock.
var ErrRebuilding = fmt.Errorf("another instance is rebuilding the sale: %w", inventory.ErrFenced)

// Rebuild recovers a sale whose counters are fenced, so that the sale
// resumes on every instance. It is what the integrator runs after
// Config.OnFenced (ledger.Recovery does):
//
//  1. If Redis holds healthy counters under an epoch newer than this
//     instance's (another instance rebuilt them), it adopts that epoch and
//     returns false.
//  2. It takes the sale's rebuild lock (SET NX PX LockTTL); if another
//     instance holds it, it returns false: that one rebuilds.
//  3. It fences the sale everywhere (deletes the stock key), waits Settle
//     for placements that reserved before the fence to finish enqueueing,
//     then calls load for the sale's holdings: persisted orders plus
//     events still on the stream, the ones no longer live marked Returned
//     (as ledger.SaleHoldings gathers them).
//  4. It stages the buyers and keys under a new epoch and switches all keys
//     of the sale at once in one script (only if it still holds the lock),
//     which publishes the new epoch: other instances adopt it at once (or
//     on their next reserve, which answers "epoch changed").
//
// rebuilt reports whether this call wrote the counters.
func (c *Counters) Rebuild(ctx context.Context, cp sale.Sale, load func(ctx context.Context) ([]inventory.Holding, error)) (rebuilt bool, err error) {
	s := c.register(cp)
	settled := func(st state) bool {
		if st.healthy && st.epoch > s.epoch.Load() {
			c.adopt(s, st.epoch)
			s.observe(st.epoch, st.sv)
			return true
		}
		return st.healthy && st.epoch == s.epoch.Load()
	}
	st, err := c.state(ctx, s.k)
	if err != nil {
		return false, fmt.Errorf("rebuild sale %s: %w", cp.ID, err)
	}
	if settled(st) {
		s.fenced.Store(false)
		return false, nil
	}
	token, ok, err := c.lock(ctx, s.k)
	if err != nil || !ok {
		return false, err
	}
	defer c.unlock(ctx, s.k, token)
	if st, err = c.state(ctx, s.k); err != nil {
		return false, fmt.Errorf("rebuild sale %s: %w", cp.ID, err)
	}
	if settled(st) { // rebuilt by another instance before we locked
		s.fenced.Store(false)
		return false, nil
	}
	s.fenced.Store(true)
	if n, err := c.exec(ctx, fenceScript, []string{s.k.lock, s.k.stock}, token).AsInt64(); err != nil || n != 1 {
		return false, fmt.Errorf("rebuild sale %s: fence: lock lost or %w", cp.ID, fail(err))
	}
	if c.opts.Settle > 0 {
		t := time.NewTimer(c.opts.Settle)
		select {
		case <-ctx.Done():
			t.Stop()
			return false, ctx.Err()
		case <-t.C:
		}
	}
	holdings, err := load(ctx)
	if err != nil {
		return false, fmt.Errorf("rebuild sale %s: load: %w", cp.ID, err)
	}
	if err := c.write(ctx, s, token, newEpoch(s.epoch.Load(), st.epoch), holdings); err != nil {
		return false, fmt.Errorf("rebuild sale %s: %w", cp.ID, err)
	}
	return true, nil
}

func (c *Counters) lock(ctx context.Context, k saleKeys) (token string, ok bool, err error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	token = hex.EncodeToString(b[:])
	err = c.do(ctx, c.client.B().Set().Key(k.lock).Value(token).Nx().Px(c.opts.LockTTL).Build()).Error()
	if rueidis.IsRedisNil(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fail(err)
	}
	return token, true, nil
}

func (c *Counters) unlock(ctx context.Context, k saleKeys, token string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_ = c.exec(ctx, unlockScript, []string{k.lock}, token).Error() // else it expires
}

// stageChunk bounds the fields sent in one HSET while staging.
const stageChunk = 1000

// write stages holdings under epoch and switches the sale to them.
func (c *Counters) write(ctx context.Context, s *saleState, token string, epoch int64, holdings []inventory.Holding) error {
	es := strconv.FormatInt(epoch, 10)
	users := map[int64]int64{}
	keys := map[string]string{}
	seen := map[string]bool{}
	var returned []string
	remaining := s.cp.Stock
	for _, h := range holdings {
		if seen[h.OrderID] {
			continue
		}
		seen[h.OrderID] = true
		state := "|1"
		if h.Returned {
			state = "|2"
			returned = append(returned, h.OrderID)
		} else {
			remaining -= h.Quantity
			users[h.UserID] += h.Quantity
		}
		keys[field(h.UserID, h.Key)] = h.OrderID + "|" + strconv.FormatInt(h.Quantity, 10) + "|" +
			strconv.FormatInt(h.PlacedAt.UnixMicro(), 10) + state
	}
	stUsers, stKeys, stReturned := s.k.users+"~"+es, s.k.keys+"~"+es, s.k.returned+"~"+es
	var cmds rueidis.Commands
	stage := func(key string, fv []string) {
		for len(fv) > 0 {
			n := min(len(fv), 2*stageChunk)
			b := c.client.B().Hset().Key(key).FieldValue()
			for i := 0; i < n; i += 2 {
				b = b.FieldValue(fv[i], fv[i+1])
			}
			cmds = append(cmds, b.Build())
			fv = fv[n:]
		}
		cmds = append(cmds, c.client.B().Pexpire().Key(key).Milliseconds(c.opts.LockTTL.Milliseconds()).Build())
	}
	ufv := []string{"_e", es}
	for u, n := range users {
		ufv = append(ufv, strconv.FormatInt(u, 10), strconv.FormatInt(n, 10))
	}
	var sv int64
	if remaining <= 0 {
		sv = 1
	}
	kfv := []string{"_e", es, "_sv", strconv.FormatInt(sv, 10)}
	for f, v := range keys {
		kfv = append(kfv, f, v)
	}
	cmds = append(cmds, c.client.B().Del().Key(stUsers, stKeys, stReturned).Build())
	stage(stUsers, ufv)
	stage(stKeys, kfv)
	for len(returned) > 0 {
		n := min(len(returned), stageChunk)
		cmds = append(cmds, c.client.B().Sadd().Key(stReturned).Member(returned[:n]...).Build())
		returned = returned[n:]
	}
	cmds = append(cmds, c.client.B().Pexpire().Key(stReturned).Milliseconds(c.opts.LockTTL.Milliseconds()).Build())
	c.trips.Add(uint64(len(cmds)))
	for _, r := range c.client.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			return fmt.Errorf("stage: %w", fail(err))
		}
	}
	args := append([]string{token, es}, c.campaignArgs(s.cp)...)
	args = append(args, strconv.FormatInt(c.expireAt(s.cp), 10), strconv.FormatInt(remaining, 10),
		strconv.FormatInt(sv, 10), c.opts.Channel, s.cp.ID)
	n, err := c.exec(ctx, commitScript, []string{s.k.meta, s.k.stock, s.k.users, s.k.keys, s.k.lock, stUsers, stKeys, s.k.returned, stReturned}, args...).AsInt64()
	switch {
	case err != nil:
		return fmt.Errorf("commit: %w", fail(err))
	case n == 0:
		return fmt.Errorf("commit: rebuild lock lost (LockTTL %v too short?): %w", c.opts.LockTTL, inventory.ErrFenced)
	case n != 1:
		return fmt.Errorf("commit: staged counters incomplete: %w", inventory.ErrFenced)
	}
	c.adopt(s, epoch)
	s.observe(epoch, sv)
	return nil
}

// Run receives other instances' news (sold out, restocked, rebuilt under a
// new epoch), resubscribing after connection losses, sends the deferred
// confirms (ConfirmLater) and does the queued background work (undos,
// confirm retries), until ctx is done. Then it
// makes one last attempt at the work still queued, for at most
// DrainTimeout, and returns. Without Run the counters stay correct, only
// slower to learn (a reserve learns the same news from its own reply), but
// in-doubt reserves are not undone and failed confirms not retried.
func (c *Counters) Run(ctx context.Context) error {
	drain, cancelDrain := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelDrain()
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(c.opts.DrainTimeout, cancelDrain) })
	defer stop()
	var wg sync.WaitGroup
	for range c.opts.RetryWorkers {
		wg.Go(func() { c.work(ctx, drain) })
	}
	wg.Go(func() { c.runConfirmer(ctx, drain) })
	c.subscribe(ctx)
	wg.Wait()
	return nil
}

func (c *Counters) subscribe(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for {
		start := time.Now()
		c.trips.Add(1)
		err := c.client.Receive(ctx, c.client.B().Subscribe().Channel(c.opts.Channel).Build(), func(m rueidis.PubSubMessage) {
			c.handle(m.Message)
		})
		if ctx.Err() != nil {
			return
		}
		_ = err // connection lost: resubscribe; news missed meanwhile is relearnt from replies
		if time.Since(start) > 10*time.Second {
			backoff = 50 * time.Millisecond
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// handle applies a "saleid epoch sv" message.
func (c *Counters) handle(msg string) {
	p := strings.Fields(msg)
	if len(p) != 3 {
		return
	}
	v, ok := c.sales.Load(p[0])
	if !ok {
		return
	}
	s := v.(*saleState)
	epoch, err1 := strconv.ParseInt(p[1], 10, 64)
	sv, err2 := strconv.ParseInt(p[2], 10, 64)
	if err1 != nil || err2 != nil {
		return
	}
	c.adopt(s, epoch) // published only by scripts that ran on healthy counters of that epoch
	s.observe(epoch, sv)
}

// End implements inventory.Stock: the sale's window ends at at (unless it
// ends earlier already), for every instance at once.
func (c *Counters) End(ctx context.Context, saleID string, at time.Time) error {
	s, err := c.lookup(ctx, saleID)
	if err != nil {
		return err
	}
	reply, err := c.exec(ctx, endScript, s.k.four, ms(at)).AsStrSlice()
	if err != nil {
		return fmt.Errorf("end %s: %w", saleID, fail(err))
	}
	if reply[0] == "F" {
		return c.fence(s)
	}
	return nil
}

var _ inventory.HoldChecker = (*Counters)(nil)

// Holds implements inventory.HoldChecker: one HMGET per reservation of the
// buyer's key and the sale's epoch, sent together. A sale whose keys hash
// is missing is HoldUnknown (and, like a fenced reserve, calls OnFenced so
// that it is rebuilt); a sale unknown to Redis and to Config.Lookup is
// NotHeld.
func (c *Counters) Holds(ctx context.Context, res []inventory.Reservation) ([]inventory.HoldStatus, error) {
	out := make([]inventory.HoldStatus, len(res))
	states := make([]*saleState, len(res))
	cmds := make(rueidis.Commands, 0, len(res))
	asked := make([]int, 0, len(res))
	for i, r := range res {
		s, err := c.lookup(ctx, r.SaleID)
		if errors.Is(err, sale.ErrSaleNotFound) {
			out[i] = inventory.NotHeld
			continue
		}
		if err != nil {
			return nil, err
		}
		states[i] = s
		cmds = append(cmds, c.client.B().Hmget().Key(s.k.keys).Field(field(r.UserID, r.Key), "_e").Build())
		asked = append(asked, i)
	}
	if len(cmds) == 0 {
		return out, nil
	}
	c.trips.Add(1)
	for j, reply := range c.client.DoMulti(ctx, cmds...) {
		i := asked[j]
		vals, err := reply.ToArray()
		if err != nil || len(vals) != 2 {
			return nil, fail(fmt.Errorf("holds: %v (%d values)", err, len(vals)))
		}
		if vals[1].IsNil() {
			out[i] = inventory.HoldUnknown
			if s := states[i]; c.opts.OnFenced != nil {
				c.opts.OnFenced(s.cp.ID)
			}
			continue
		}
		out[i] = inventory.NotHeld
		v, err := vals[0].ToString()
		if err != nil {
			continue // no such key
		}
		h, err := parseHold(v)
		r, cp := res[i], states[i].cp
		if err == nil && h.orderID == r.OrderID && h.quantity == r.Quantity && cp.SKU == r.SKU && cp.PriceCents == r.PriceCents {
			out[i] = inventory.Held
		}
	}
	return out, nil
}
