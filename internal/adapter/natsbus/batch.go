package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spikehq/spike/internal/domain/order"
)

// Batched publishing (Config.PublishBatch > 1) is a group commit: placements
// that arrive while earlier ones are being stored share one stream message.
// Every message costs the NATS server a store, a publish acknowledgement, a
// delivery, an ack and a delete, on the same cores as the HTTP stack; one
// message per batch pays those once per batch. The price is that an order
// no longer has a subject of its own to be looked up by, so the bus keeps
// its own index of the events it stored and has not seen persisted (see
// Placed). In embedded mode this process is the stream's only publisher
// and its index is complete. Clustered (Config.Clustered), each instance
// answers for the orders its own ids name (lookup.go): another instance
// asks it over core NATS, and reads the stream itself only when nobody
// answers for that node any more (its instance died).

// gatherMax bounds how long an embedded batch waits behind one in flight
// (publishLoop): far above the in-process stream's acknowledgement under
// load, far below what a caller waits for its placement.
const gatherMax = 5 * time.Millisecond

// publishRequest is one Enqueue waiting for its batch.
type publishRequest struct {
	e     order.Placed
	done  chan error // buffered: the publisher never blocks on it
	state atomic.Int32
}

const (
	requestQueued    = iota
	requestTaken     // the publisher has it: its fate is the batch's
	requestWithdrawn // its caller gave up before the publisher took it
)

var requestPool = sync.Pool{New: func() any { return &publishRequest{done: make(chan error, 1)} }}

// enqueueBatched hands e to the publisher and waits for its batch's
// acknowledgement.
func (b *Bus) enqueueBatched(ctx context.Context, e order.Placed, expired <-chan struct{}) error {
	if b.index.stored(e.OrderID) {
		return nil // already on the stream: what Nats-Msg-Id does for single messages
	}
	r := requestPool.Get().(*publishRequest)
	r.e = e
	r.state.Store(requestQueued)
	select {
	case b.requests <- r:
	case <-b.closed:
		requestPool.Put(r)
		return fmt.Errorf("publish %s: bus closed: %w", e.OrderID, order.ErrNotEnqueued)
	case <-ctx.Done():
		requestPool.Put(r)
		return fmt.Errorf("publish %s: %w: %w", e.OrderID, ctx.Err(), order.ErrNotEnqueued)
	case <-expired:
		requestPool.Put(r)
		return fmt.Errorf("publish %s: %w: %w", e.OrderID, context.DeadlineExceeded, order.ErrNotEnqueued)
	}
	var gaveUp error
	select {
	case err := <-r.done:
		requestPool.Put(r)
		return err
	case <-b.closed:
		if r.state.CompareAndSwap(requestQueued, requestWithdrawn) {
			return fmt.Errorf("publish %s: bus closed: %w", e.OrderID, order.ErrNotEnqueued)
		}
		return <-r.done // taken before the close: its batch is answered
	case <-ctx.Done():
		gaveUp = ctx.Err()
	case <-expired:
		gaveUp = context.DeadlineExceeded
	}
	if r.state.CompareAndSwap(requestQueued, requestWithdrawn) {
		// Never taken, so never sent; the publisher drops it (and
		// recycles it).
		return fmt.Errorf("publish %s: %w: %w", e.OrderID, gaveUp, order.ErrNotEnqueued)
	}
	// In a batch on its way: in doubt. r is left to the publisher's
	// answer and the garbage collector.
	return fmt.Errorf("publish %s: %w", e.OrderID, gaveUp)
}

// publishLoop takes queued requests in batches and publishes each batch as
// one message, with at most Config.PublishInFlight batches awaiting their
// acknowledgement: while they are, new requests queue and form the next
// batch, so batches grow with load and stay single under light traffic.
// With Config.PublishLinger, a batch that follows one of several
// placements waits that long for more before it goes.
//
// The goroutines that wait for the acknowledgements are publishLoop's: it
// waits for them before it reports itself done (Close waits for that).
func (b *Bus) publishLoop() {
	defer close(b.publisherDone)
	var waiting sync.WaitGroup
	defer waiting.Wait()
	slots := make(chan struct{}, b.cfg.PublishInFlight)
	// freed wakes a batch gathering behind one in flight (below).
	freed := make(chan struct{}, 1)
	wait := time.NewTimer(time.Hour) // fillFor's, reused
	wait.Stop()
	var batch []*publishRequest
	last := 0 // placements in the previous batch
	partial := func() bool { return len(batch) > 0 && len(batch) < b.cfg.PublishBatch }
	behind := func() bool { return len(slots) > 1 } // another batch awaits its ack
	for {
		select {
		case slots <- struct{}{}:
		case <-b.closed:
			return
		}
		batch = batch[:0]
		select {
		case r := <-b.requests:
			batch = appendTaken(batch, r)
		case <-b.closed:
			return
		}
	fill:
		for len(batch) < b.cfg.PublishBatch {
			select {
			case r := <-b.requests:
				batch = appendTaken(batch, r)
			default:
				break fill
			}
		}
		if b.cfg.PublishLinger > 0 && last > 1 && partial() {
			batch, _ = b.fillFor(batch, wait, b.cfg.PublishLinger, nil, always)
		}
		// Embedded, while an earlier batch awaits its acknowledgement, one
		// that is not full waits for it (up to gatherMax), gathering more
		// placements, rather than going out beside it: a message costs the
		// stream server a store, an acknowledgement, a delivery and an ack
		// whatever it carries, and the in-process stream acknowledges
		// within a millisecond or two (docs/benchmarks.md: 9.3 → 13.5
		// placements per message, 4 % less CPU per placement). A full
		// batch, or one behind an acknowledgement that is late (a slowed
		// stream), goes at once: up to PublishInFlight stay on their way.
		// Clustered, the stream is a network round trip away and
		// PublishLinger does the gathering.
		late := false // the acknowledgement awaited took longer than gatherMax
		if !b.cfg.Clustered && partial() && behind() {
			batch, late = b.fillFor(batch, wait, gatherMax, freed, behind)
		}
		if !late && partial() && behind() {
			b.publishedBeside.Add(1)
		}
		last = len(batch)
		if len(batch) == 0 {
			<-slots
			continue
		}
		// A fresh buffer each time: the future keeps the message for retries.
		data := appendBatch(make([]byte, 0, 256*len(batch)), batch)
		first := batch[0].e.OrderID
		b.index.publishing(batch)
		f, err := b.js.PublishMsgAsync(signedMsg(b.cfg.Keys, purposePlaced, b.cfg.Subject+".b."+first, data), jetstream.WithMsgID(batchMsgID(batch)))
		waiters := append([]*publishRequest(nil), batch...)
		if err != nil {
			// Not sent at all (stalled, closed connection).
			b.settle(waiters, fmt.Errorf("publish batch %s: %w: %w", first, err, order.ErrNotEnqueued))
			<-slots
			continue
		}
		waiting.Go(func() {
			defer func() {
				<-slots
				select {
				case freed <- struct{}{}:
				default:
				}
			}()
			select {
			case ack := <-f.Ok():
				b.settled(waiters, ack.Sequence)
			case err := <-f.Err():
				var apiErr *jetstream.APIError
				if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.As(err, &apiErr) {
					err = fmt.Errorf("publish batch %s: %w: %w", first, err, order.ErrNotEnqueued)
				} else {
					err = fmt.Errorf("publish batch %s: %w", first, err)
				}
				b.settle(waiters, err)
			}
		})
	}
}

// fillFor adds queued requests to batch until it is full, d has passed on
// t (expired), the bus closes (the batch still goes out), or, checked at
// each request and each signal on wake, more reports false.
func (b *Bus) fillFor(batch []*publishRequest, t *time.Timer, d time.Duration, wake <-chan struct{}, more func() bool) (_ []*publishRequest, expired bool) {
	t.Reset(d) // Go 1.23+: no stale tick to drain
	defer t.Stop()
	for len(batch) < b.cfg.PublishBatch && more() {
		select {
		case r := <-b.requests:
			batch = appendTaken(batch, r)
		case <-wake:
		case <-t.C:
			return batch, true
		case <-b.closed:
			return batch, false
		}
	}
	return batch, false
}

func always() bool { return true }

// Published reports how many batch messages the stream has acknowledged
// and how many placements they carried: their ratio is the mean batch, the
// group commit's effect (one stream store, delivery and ack per message).
func (b *Bus) Published() (messages, events uint64) {
	return b.publishedMsgs.Load(), b.publishedEvents.Load()
}

// appendTaken adds r to batch unless its caller withdrew it.
func appendTaken(batch []*publishRequest, r *publishRequest) []*publishRequest {
	if !r.state.CompareAndSwap(requestQueued, requestTaken) {
		requestPool.Put(r)
		return batch
	}
	return append(batch, r)
}

// batchMsgID is a batch's Nats-Msg-Id: its first order id and a hash of
// all of them. The first id alone would let the stream take a later batch
// that starts with a re-published in-doubt event for a duplicate of the
// first one, and drop the rest of it while acknowledging it.
func batchMsgID(batch []*publishRequest) string {
	h := fnv.New64a()
	for _, r := range batch {
		h.Write([]byte(r.e.OrderID))
		h.Write([]byte{0})
	}
	return "b." + batch[0].e.OrderID + "." + strconv.FormatUint(h.Sum64(), 36)
}

// settled records that the batch's message is stored at seq and answers
// its callers.
func (b *Bus) settled(waiters []*publishRequest, seq uint64) {
	b.publishedMsgs.Add(1)
	b.publishedEvents.Add(uint64(len(waiters)))
	b.index.confirm(waiters, seq, time.Now())
	for _, r := range waiters {
		r.done <- nil
	}
}

// settle records a batch that failed (certainly not stored, or in doubt)
// and answers its callers.
func (b *Bus) settle(waiters []*publishRequest, err error) {
	for _, r := range waiters {
		b.index.forget(r.e.OrderID)
		r.done <- err
	}
}

// storedIndex holds the events this process stored in batches and has not
// yet seen persisted: what Placed answers from, since batched events have
// no subject of their own. An entry is made before its batch is published
// and marked stored on the acknowledgement, so a worker that persists the
// batch before the acknowledgement arrives still removes it for good.
type storedIndex struct {
	mu      sync.Mutex
	entries map[string]*indexEntry
}

type indexEntry struct {
	e      order.Placed
	stored bool
	seq    uint64    // the stream sequence of its message; 0: not known
	at     time.Time // when it was stored
}

func (x *storedIndex) init() { x.entries = make(map[string]*indexEntry) }

// publishing indexes a batch's events before it is published (one lock
// per batch: the placements' own lookups take it too).
func (x *storedIndex) publishing(batch []*publishRequest) {
	x.mu.Lock()
	for _, r := range batch {
		if _, ok := x.entries[r.e.OrderID]; !ok {
			x.entries[r.e.OrderID] = &indexEntry{e: r.e}
		}
	}
	x.mu.Unlock()
}

// restored indexes an event read back from the stream at start.
func (x *storedIndex) restored(e order.Placed) {
	x.mu.Lock()
	x.entries[e.OrderID] = &indexEntry{e: e, stored: true, at: time.Now()}
	x.mu.Unlock()
}

// confirm marks a batch's events stored in the message at seq.
func (x *storedIndex) confirm(batch []*publishRequest, seq uint64, at time.Time) {
	x.mu.Lock()
	for _, r := range batch {
		if en, ok := x.entries[r.e.OrderID]; ok {
			en.stored, en.seq, en.at = true, seq, at
		}
	}
	x.mu.Unlock()
}

// entry returns a copy of a stored event's entry.
func (x *storedIndex) entry(id string) (indexEntry, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if en, ok := x.entries[id]; ok && en.stored {
		return *en, true
	}
	return indexEntry{}, false
}

// older returns the distinct stream sequences of entries stored before t,
// at most limit of them.
func (x *storedIndex) older(t time.Time, limit int) []uint64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	seen := map[uint64]bool{}
	var out []uint64
	for _, en := range x.entries {
		if en.stored && en.seq != 0 && en.at.Before(t) && !seen[en.seq] {
			seen[en.seq] = true
			out = append(out, en.seq)
			if len(out) == limit {
				break
			}
		}
	}
	return out
}

// forgetSeqs drops the entries whose message is one of seqs.
func (x *storedIndex) forgetSeqs(seqs map[uint64]bool) int {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := 0
	for id, en := range x.entries {
		if en.stored && seqs[en.seq] {
			delete(x.entries, id)
			n++
		}
	}
	return n
}

func (x *storedIndex) forget(id string) {
	x.mu.Lock()
	delete(x.entries, id)
	x.mu.Unlock()
}

func (x *storedIndex) forgetAll(events []order.Placed) {
	x.mu.Lock()
	for i := range events {
		delete(x.entries, events[i].OrderID)
	}
	x.mu.Unlock()
}

func (x *storedIndex) stored(id string) bool {
	_, ok := x.entry(id)
	return ok
}

// decodeEvents decodes a stream message: one event (a JSON object) or a
// batch (a JSON array of them).
func decodeEvents(data []byte, into []order.Placed) ([]order.Placed, error) {
	if out, ok := decodeFast(data, into); ok {
		for k := len(into); k < len(out); k++ {
			if err := out[k].Validate(); err != nil {
				return into, err
			}
		}
		return out, nil
	}
	i := 0
	for i < len(data) && (data[i] == ' ' || data[i] == '\n' || data[i] == '\t' || data[i] == '\r') {
		i++
	}
	if i < len(data) && data[i] == '[' {
		var batch []order.Placed
		if err := json.Unmarshal(data, &batch); err != nil {
			return into, err
		}
		if len(batch) == 0 {
			return into, errors.New("empty batch")
		}
		for k := range batch {
			if err := batch[k].Validate(); err != nil {
				return into, err
			}
		}
		return append(into, batch...), nil
	}
	var e order.Placed
	if err := json.Unmarshal(data, &e); err != nil {
		return into, err
	}
	if err := e.Validate(); err != nil {
		return into, err
	}
	return append(into, e), nil
}

// appendBatch encodes the batch's events as a JSON array, by hand: the
// publisher encodes every placement, and reflection was most of its cost.
// TestAppendPlacedMatchesJSON holds it to encoding/json.
func appendBatch(buf []byte, batch []*publishRequest) []byte {
	buf = append(buf, '[')
	for i, r := range batch {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendPlaced(buf, &r.e)
	}
	return append(buf, ']')
}

func appendPlaced(buf []byte, e *order.Placed) []byte {
	buf = append(buf, `{"v":`...)
	buf = strconv.AppendInt(buf, int64(e.V), 10)
	buf = append(buf, `,"order_id":`...)
	buf = appendString(buf, e.OrderID)
	buf = append(buf, `,"sale_id":`...)
	buf = appendString(buf, e.SaleID)
	buf = append(buf, `,"sku":`...)
	buf = appendString(buf, e.SKU)
	buf = append(buf, `,"user_id":`...)
	buf = strconv.AppendInt(buf, e.UserID, 10)
	buf = append(buf, `,"quantity":`...)
	buf = strconv.AppendInt(buf, e.Quantity, 10)
	buf = append(buf, `,"price_cents":`...)
	buf = strconv.AppendInt(buf, e.PriceCents, 10)
	buf = append(buf, `,"idempotency_key":`...)
	buf = appendString(buf, e.Key)
	buf = append(buf, `,"placed_at":"`...)
	buf = e.PlacedAt.AppendFormat(buf, time.RFC3339Nano)
	if !e.PaymentDeadline.IsZero() { // omitzero
		buf = append(buf, `","payment_deadline":"`...)
		buf = e.PaymentDeadline.AppendFormat(buf, time.RFC3339Nano)
	}
	return append(buf, `"}`...)
}

const hex = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD, as
// encoding/json does.
func appendString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				buf = append(buf, '\\', c)
			case c < 0x20:
				buf = append(buf, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				buf = append(buf, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, `\ufffd`...)
		} else {
			buf = append(buf, s[i:i+size]...)
		}
		i += size
	}
	return append(buf, '"')
}

// decodeFast decodes data when it is exactly what appendBatch or
// appendPlaced writes and holds no escaped strings; ok is false for
// anything else, which encoding/json then decodes. The order workers decode
// every event, and reflection was most of that cost.
func decodeFast(data []byte, into []order.Placed) (out []order.Placed, ok bool) {
	p := fastParser{data: data}
	if p.peek('[') {
		p.i++
		for {
			e, ok := p.event()
			if !ok {
				return into, false
			}
			into = append(into, e)
			if p.peek(',') {
				p.i++
				continue
			}
			if p.peek(']') && p.i+1 == len(data) {
				return into, true
			}
			return into, false
		}
	}
	e, ok := p.event()
	if !ok || p.i != len(data) {
		return into, false
	}
	return append(into, e), true
}

type fastParser struct {
	data []byte
	i    int
}

func (p *fastParser) peek(c byte) bool { return p.i < len(p.data) && p.data[p.i] == c }

func (p *fastParser) lit(s string) bool {
	if len(p.data)-p.i < len(s) || string(p.data[p.i:p.i+len(s)]) != s {
		return false
	}
	p.i += len(s)
	return true
}

func (p *fastParser) str() (string, bool) {
	if !p.peek('"') {
		return "", false
	}
	start := p.i + 1
	for j := start; j < len(p.data); j++ {
		switch c := p.data[j]; {
		case c == '"':
			p.i = j + 1
			return string(p.data[start:j]), true
		case c == '\\' || c < 0x20 || c >= utf8.RuneSelf:
			return "", false // escapes, control or non-ASCII bytes: leave them to encoding/json
		}
	}
	return "", false
}

func (p *fastParser) int() (int64, bool) {
	start := p.i
	if p.peek('-') {
		p.i++
	}
	digits := p.i
	for p.i < len(p.data) && p.data[p.i] >= '0' && p.data[p.i] <= '9' {
		p.i++
	}
	if p.i-digits > 1 && p.data[digits] == '0' {
		return 0, false // a leading zero is not JSON
	}
	n, err := strconv.ParseInt(string(p.data[start:p.i]), 10, 64)
	return n, err == nil
}

func (p *fastParser) event() (e order.Placed, ok bool) {
	var v int64
	var at, deadline string
	var hasDeadline bool
	if !p.lit(`{"v":`) {
		return e, false
	}
	if v, ok = p.int(); !ok || v != int64(int(v)) {
		return e, false
	}
	e.V = int(v)
	ok = p.lit(`,"order_id":`)
	if ok {
		e.OrderID, ok = p.str()
	}
	if ok = ok && p.lit(`,"sale_id":`); ok {
		e.SaleID, ok = p.str()
	}
	if ok = ok && p.lit(`,"sku":`); ok {
		e.SKU, ok = p.str()
	}
	if ok = ok && p.lit(`,"user_id":`); ok {
		e.UserID, ok = p.int()
	}
	if ok = ok && p.lit(`,"quantity":`); ok {
		e.Quantity, ok = p.int()
	}
	if ok = ok && p.lit(`,"price_cents":`); ok {
		e.PriceCents, ok = p.int()
	}
	if ok = ok && p.lit(`,"idempotency_key":`); ok {
		e.Key, ok = p.str()
	}
	if ok = ok && p.lit(`,"placed_at":`); ok {
		at, ok = p.str()
	}
	if ok && p.lit(`,"payment_deadline":`) {
		hasDeadline = true
		deadline, ok = p.str()
	}
	if !ok || !p.lit(`}`) {
		return e, false
	}
	t, err := time.Parse(time.RFC3339Nano, at)
	if err != nil {
		return e, false
	}
	e.PlacedAt = t
	if hasDeadline {
		if e.PaymentDeadline, err = time.Parse(time.RFC3339Nano, deadline); err != nil {
			return e, false
		}
	}
	return e, true
}
