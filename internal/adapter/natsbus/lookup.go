package natsbus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/order"
)

// Clustered batched publishing (Config.Clustered): an order's event shares
// a stream message with others and has no subject of its own, so "is this
// order on the stream?" is answered by the instance that placed it, which
// indexes every event it stored until it is persisted. Order ids carry the
// node of the instance that made them (spike.IDNode); each instance
// answers on LookupSubject.<node> for its nodes (AnswerLookups). When
// nobody answers for a node (NATS reports no responders: its instance is
// gone) the asker reads the stream itself, which then holds the dead
// instance's unpersisted events and nothing more can be added to it.

// LookupSubject prefixes the core NATS subjects on which instances answer
// lookups of the orders their nodes made: LookupSubject + "." + node.
const LookupSubject = "spike.orders.lookup"

// purposeLookup signs lookup answers: a client on NATS without the key
// cannot answer for an instance ("not on the stream" could get a stored
// order's units freed).
const purposeLookup = "spike/orders.lookup/v1"

const (
	// lookupTimeout bounds one lookup request.
	lookupTimeout = 2 * time.Second
	// staleEntry is the age past which an index entry is checked against
	// the stream before it is trusted: normally a worker persists an event
	// within milliseconds and the announcement removes the entry; an older
	// one may have lost its announcement (a disconnect).
	staleEntry = 2 * time.Second
	// sweepAge and sweepBatch: the orphan sweeper drops index entries
	// older than sweepAge whose message has left the stream, checking at
	// most sweepBatch messages per round.
	sweepAge   = time.Minute
	sweepBatch = 512
)

// notFound starts a signed "not on the stream" answer; the order id
// follows.
const notFound = "-"

// AnswerLookups makes the bus answer other instances' lookups of the
// orders whose ids carry node, until Close. Call it for this instance's
// node before placing, and again for each new node (after a lost lease).
// Only for Config.Clustered.
func (b *Bus) AnswerLookups(node string) error {
	b.lookupMu.Lock()
	defer b.lookupMu.Unlock()
	if b.nodes[node] {
		return nil
	}
	sub, err := b.nc.Subscribe(LookupSubject+"."+node, b.answerLookup)
	if err != nil {
		return fmt.Errorf("answer lookups for node %s: %w", node, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	defer cancel()
	if err := b.nc.FlushWithContext(ctx); err != nil {
		sub.Unsubscribe()
		return fmt.Errorf("answer lookups for node %s: %w", node, err)
	}
	if b.nodes == nil {
		b.nodes = map[string]bool{}
	}
	b.nodes[node] = true
	b.lookupSubs = append(b.lookupSubs, sub)
	return nil
}

func (b *Bus) answersFor(node string) bool {
	b.lookupMu.Lock()
	defer b.lookupMu.Unlock()
	return b.nodes[node]
}

func (b *Bus) stopLookups() {
	b.lookupMu.Lock()
	defer b.lookupMu.Unlock()
	for _, s := range b.lookupSubs {
		_ = s.Unsubscribe()
	}
	if len(b.lookupSubs) > 0 {
		// Let the server know at once: a lookup then finds no responders
		// and reads the stream, instead of waiting for an answer.
		_ = b.nc.FlushTimeout(flushTimeout)
	}
	b.lookupSubs = nil
}

// answerLookup answers one lookup from the index. An error (the stream not
// answering) goes unanswered: the asker times out and knows nothing, which
// is the truth.
func (b *Bus) answerLookup(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	id := string(m.Data)
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	e, ok, err := b.placedHere(ctx, id)
	if err != nil {
		b.log.Warn("answer an order lookup", "order_id", id, "err", err)
		return
	}
	var data []byte
	if ok {
		data = appendPlaced(make([]byte, 0, 256), &e)
	} else {
		data = append([]byte(notFound), id...)
	}
	if err := m.RespondMsg(signedMsg(b.cfg.Keys, purposeLookup, m.Reply, data)); err != nil {
		b.log.Warn("answer an order lookup", "order_id", id, "err", err)
	}
}

// placedHere finds an event in this bus's index. An entry older than
// staleEntry is trusted only while its message is still on the stream.
func (b *Bus) placedHere(ctx context.Context, id string) (order.Placed, bool, error) {
	en, ok := b.index.entry(id)
	if !ok {
		return order.Placed{}, false, nil
	}
	if b.cfg.Clustered && en.seq != 0 && time.Since(en.at) > staleEntry {
		_, err := b.stream.GetMsg(ctx, en.seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			b.index.forget(id) // persisted (its announcement was lost)
			return order.Placed{}, false, nil
		}
		if err != nil {
			return order.Placed{}, false, err
		}
	}
	return en.e, true, nil
}

// placedElsewhere asks the instance whose node made id; if none answers
// for it, it reads the stream.
func (b *Bus) placedElsewhere(ctx context.Context, id string) (order.Placed, bool, error) {
	node, ok := spike.IDNode(id)
	if !ok || b.answersFor(node) {
		// Not an order id; or one of this instance's own, which its
		// index holds until persisted.
		return order.Placed{}, false, nil
	}
	rctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	m, err := b.nc.RequestWithContext(rctx, LookupSubject+"."+node, []byte(id))
	if errors.Is(err, nats.ErrNoResponders) {
		return b.findOnStream(ctx, id)
	}
	if err != nil {
		return order.Placed{}, false, fmt.Errorf("look up order %s: %w", id, err)
	}
	if err := b.cfg.Keys.verify(purposeLookup, m.Data, m.Header); err != nil {
		return order.Placed{}, false, fmt.Errorf("look up order %s: %w", id, err)
	}
	if rest, ok := strings.CutPrefix(string(m.Data), notFound); ok {
		if rest != id {
			return order.Placed{}, false, fmt.Errorf("look up order %s: answer for %q", id, rest)
		}
		return order.Placed{}, false, nil
	}
	events, err := decodeEvents(m.Data, nil)
	if err != nil || len(events) != 1 || events[0].OrderID != id {
		return order.Placed{}, false, fmt.Errorf("look up order %s: malformed answer", id)
	}
	return events[0], true, nil
}

// findOnStream reads every message on the stream for the event of id.
// Only for an order whose instance is gone: the stream holds what it stored
// and not yet persisted (a work queue drops what is acknowledged).
func (b *Bus) findOnStream(ctx context.Context, id string) (order.Placed, bool, error) {
	var found order.Placed
	var ok bool
	var events []order.Placed
	err := b.eachMessage(ctx, 0, func(m *jetstream.RawStreamMsg) bool {
		if b.authentic(m.Header, m.Data) != nil {
			return true
		}
		events, _ = decodeEvents(m.Data, events[:0])
		for _, e := range events {
			if e.OrderID == id {
				found, ok = e, true
				return false
			}
		}
		return true
	})
	return found, ok, err
}

// sweepIndex drops the entries stored over sweepAge ago whose message has
// left the stream (persisted, with its announcement lost): without it they
// would stay for ever.
func (b *Bus) sweepIndex(ctx context.Context) (int, error) {
	seqs := b.index.older(time.Now().Add(-sweepAge), sweepBatch)
	gone := map[uint64]bool{}
	for _, seq := range seqs {
		_, err := b.stream.GetMsg(ctx, seq)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			gone[seq] = true
		case err != nil:
			return 0, err
		}
	}
	return b.index.forgetSeqs(gone), nil
}

// Forget drops an order from the index: its event is persisted (a worker,
// maybe another instance's, announced it).
func (b *Bus) Forget(orderID string) {
	if b.requests != nil {
		b.index.forget(orderID)
	}
}
