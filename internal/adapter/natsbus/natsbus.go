// Package natsbus carries Spike's events on NATS JetStream: the ORDERS
// stream of OrderPlaced events between the placement path and the order
// workers. In embedded mode the NATS server runs inside the spike process
// (see Embedded); clustered deployments connect to a NATS cluster.
package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/order"
)

// Names on the NATS side.
const (
	StreamName    = "ORDERS"
	PlacedSubject = "spike.orders.placed"
	WorkerName    = "order-workers"
)

// Config configures the order stream.
type Config struct {
	// Stream, Subject and Consumer name the stream, its subject and the
	// workers' durable consumer. If empty, StreamName, PlacedSubject and
	// WorkerName are used.
	Stream, Subject, Consumer string
	// Replicas of the stream. If zero, 1 is used.
	Replicas int
	// Duplicates is the stream's deduplication window. If zero, 2m is used.
	Duplicates time.Duration
	// AckWait is how long a consumed event may stay unacknowledged before it
	// is delivered again: how long the events held by a dead worker wait.
	// Redelivery is harmless (inserts are idempotent). If zero, 10s is used.
	AckWait time.Duration
	// BatchSize is the largest batch (in events) handed to the persist
	// function; a batch may exceed it by one message's events. If zero,
	// 2048 is used.
	BatchSize int
	// Linger is how long the worker waits for a batch to fill once it has
	// an event. Placements are acknowledged when the stream stores them, so
	// this delays only persistence, and under load each commit then
	// carries many more orders per index page it rewrites. If zero, 50ms
	// is used.
	Linger time.Duration
	// PublishBatch, if above 1, publishes placements in batches of up to
	// this many events per stream message (see batch.go).
	PublishBatch int
	// Clustered says other instances publish to the same stream. With
	// PublishBatch above 1, each instance then answers lookups of the
	// orders its nodes made (AnswerLookups, lookup.go) and asks the others
	// for theirs.
	Clustered bool
	// PublishInFlight is how many batches may await their acknowledgement
	// at once. If zero, 2 is used.
	PublishInFlight int
	// PublishLinger, if positive, is how long a batch may wait for more
	// placements once the previous batch carried more than one (so never
	// under light traffic). Each message costs the stream server a store,
	// an ack, a delivery and a consumer ack whatever it carries: a NATS
	// server shared by several instances, each sending small batches,
	// spends more on messages than the instances save in latency.
	PublishLinger time.Duration
	// OrphanSweep is how often a worker looks for events the consumer will
	// never deliver (see sweepOrphans). If zero, 10s is used.
	OrphanSweep time.Duration

	// Proof of origin (see sign.go and screen.go). Keys sign every event
	// published and verify every event read; nil: unsigned and unchecked
	// (tests only). Holds, if set, is asked whether each event matches a
	// reservation before it is persisted. Rejected, if set, is called once
	// per event refused, with its reason. Refused events are parked on
	// ParkedStream (if empty, Stream+"_PARKED").
	Keys         *Keys
	Holds        inventory.HoldChecker
	Rejected     func(reason string)
	ParkedStream string
}

// Bus publishes and consumes order events. It implements order.Stream.
type Bus struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	cfg    Config
	log    *slog.Logger

	nc *nats.Conn

	// Batched publishing only (Config.PublishBatch > 1).
	requests      chan *publishRequest
	index         storedIndex
	closed        chan struct{}
	closeOnce     sync.Once
	publisherDone chan struct{}

	timeouts timeouts // EnqueueWithin's shared expiries

	// Batched publishing's counters (Published).
	publishedMsgs, publishedEvents atomic.Uint64
	publishedBeside                atomic.Uint64 // batches not full sent beside one in flight, not for its lateness

	// Clustered batched publishing: the nodes this bus answers for.
	lookupMu   sync.Mutex
	nodes      map[string]bool
	lookupSubs []*nats.Subscription
}

var (
	_ order.Stream      = (*Bus)(nil)
	_ order.TimedStream = (*Bus)(nil)
)

// New makes sure the ORDERS stream and the order-workers consumer exist and
// returns a Bus over nc.
func New(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger) (*Bus, error) {
	if cfg.Stream == "" {
		cfg.Stream = StreamName
	}
	if cfg.Subject == "" {
		cfg.Subject = PlacedSubject
	}
	if cfg.Consumer == "" {
		cfg.Consumer = WorkerName
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.Duplicates == 0 {
		cfg.Duplicates = 2 * time.Minute
	}
	if cfg.AckWait == 0 {
		cfg.AckWait = 10 * time.Second
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 2048
	}
	if cfg.OrphanSweep == 0 {
		cfg.OrphanSweep = 10 * time.Second
	}
	if cfg.Linger == 0 {
		cfg.Linger = 50 * time.Millisecond
	}
	if cfg.ParkedStream == "" {
		cfg.ParkedStream = cfg.Stream + "_PARKED"
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(16384),
		jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		return nil, err
	}
	stream, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        cfg.Stream,
		Description: "OrderPlaced events not yet persisted by the order workers",
		Subjects:    []string{cfg.Subject + ".>"}, // one subject per order id, so an order can be looked up
		Retention:   jetstream.WorkQueuePolicy,    // an event leaves once persisted
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		Duplicates:  cfg.Duplicates,
		Discard:     jetstream.DiscardNew,
	})
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", cfg.Stream, err)
	}
	_, err = stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       cfg.Consumer,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxAckPending: 4 * cfg.BatchSize,
		FilterSubject: cfg.Subject + ".>",
	})
	if err != nil {
		return nil, fmt.Errorf("create consumer %s: %w", cfg.Consumer, err)
	}
	b := &Bus{js: js, nc: nc, stream: stream, cfg: cfg, log: log, closed: make(chan struct{}), publisherDone: make(chan struct{})}
	if err := b.createParked(ctx); err != nil {
		return nil, err
	}
	b.index.init()
	// Events stored in batches by an earlier run are found by id only
	// through the index: fill it before anything is published or consumed.
	// (Clustered, an earlier run's events carry another node: they are
	// found on the stream, as any dead instance's are.)
	if cfg.PublishBatch > 1 {
		if !cfg.Clustered {
			queued, err := b.Unpersisted(ctx)
			if err != nil {
				return nil, fmt.Errorf("read stream %s: %w", cfg.Stream, err)
			}
			for _, e := range queued {
				b.index.restored(e)
			}
		}
		if b.cfg.PublishInFlight == 0 {
			b.cfg.PublishInFlight = 2
		}
		b.requests = make(chan *publishRequest, 4*cfg.PublishBatch)
		go b.publishLoop()
	} else {
		close(b.publisherDone)
	}
	return b, nil
}

// Close stops the batch publisher; Enqueue then fails. Batches already
// sent still get their answers: Close returns once they have (within the
// publish timeout, 30s) and the publisher has stopped, so nothing of the
// bus's own runs after it. It does not close the NATS connection.
func (b *Bus) Close() {
	b.closeOnce.Do(func() { close(b.closed) })
	<-b.publisherDone
	b.stopLookups()
}

// Enqueue implements order.Stream: it publishes e with Nats-Msg-Id set to
// its order id and waits for the stream's acknowledgement.
func (b *Bus) Enqueue(ctx context.Context, e order.Placed) error {
	if err := encodable(e); err != nil {
		return err
	}
	if b.requests != nil {
		return b.enqueueBatched(ctx, e, nil)
	}
	data := appendPlaced(make([]byte, 0, 256), &e)
	f, err := b.js.PublishMsgAsync(signedMsg(b.cfg.Keys, purposePlaced, b.cfg.Subject+"."+e.OrderID, data), jetstream.WithMsgID(e.OrderID))
	if err != nil {
		// Not sent at all (stalled, closed connection).
		return fmt.Errorf("publish %s: %w: %w", e.OrderID, err, order.ErrNotEnqueued)
	}
	select {
	case <-f.Ok():
		return nil
	case err := <-f.Err():
		var apiErr *jetstream.APIError
		if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.As(err, &apiErr) {
			// Nobody stored it, or the stream refused it.
			return fmt.Errorf("publish %s: %w: %w", e.OrderID, err, order.ErrNotEnqueued)
		}
		return fmt.Errorf("publish %s: %w", e.OrderID, err)
	case <-ctx.Done():
		return fmt.Errorf("publish %s: %w", e.OrderID, ctx.Err())
	}
}

// EnqueueWithin implements order.TimedStream: Enqueue, giving up after
// about d. Batched, the wait shares a coarse timer with every placement
// due to give up in the same few milliseconds.
func (b *Bus) EnqueueWithin(ctx context.Context, e order.Placed, d time.Duration) error {
	if b.requests == nil {
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		return b.Enqueue(ctx, e)
	}
	if err := encodable(e); err != nil {
		return err
	}
	return b.enqueueBatched(ctx, e, b.timeouts.after(d))
}

// encodable refuses an event the hand-written encoder (like
// encoding/json) has no form for.
func encodable(e order.Placed) error {
	if y := e.PlacedAt.Year(); y < 1 || y > 9999 {
		return fmt.Errorf("event %s: placed_at %v out of range: %w", e.OrderID, e.PlacedAt, order.ErrNotEnqueued)
	}
	return nil
}

// Backlog returns the number of events not yet persisted and acknowledged.
func (b *Bus) Backlog(ctx context.Context) (uint64, error) {
	info, err := b.stream.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

// Unpersisted returns every event still on the stream, oldest first: the
// acknowledged placements that the order workers have not yet persisted
// (some may be persisted but not yet acknowledged; order ids tell them apart).
func (b *Bus) Unpersisted(ctx context.Context) ([]order.Placed, error) {
	var out []order.Placed
	seen := make(map[string]bool)
	err := b.eachMessage(ctx, 0, func(m *jetstream.RawStreamMsg) bool {
		if err := b.authentic(m.Header, m.Data); err != nil {
			return true // never counted; the worker refuses it
		}
		n := len(out)
		var err error
		if out, err = decodeEvents(m.Data, out); err != nil {
			b.log.Error("malformed event on the stream", "seq", m.Sequence)
		}
		// An in-doubt event published again may be on the stream twice.
		for _, e := range out[n:] {
			if !seen[e.OrderID] {
				seen[e.OrderID] = true
				out[n] = e
				n++
			}
		}
		out = out[:n]
		return true
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// eachMessage calls visit with every message on the stream from sequence
// from onwards (the oldest if it is gone), oldest first, until visit
// returns false.
func (b *Bus) eachMessage(ctx context.Context, from uint64, visit func(m *jetstream.RawStreamMsg) bool) error {
	info, err := b.stream.Info(ctx)
	if err != nil {
		return err
	}
	if from > info.State.LastSeq+1 {
		from = 0 // a stream made anew: its sequences start over
	}
	for seq := max(from, info.State.FirstSeq); info.State.Msgs > 0 && seq <= info.State.LastSeq; {
		m, err := b.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(b.cfg.Subject+".>"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read stream at %d: %w", seq, err)
		}
		if !visit(m) {
			return nil
		}
		seq = m.Sequence + 1
	}
	return nil
}

// Overdue returns up to limit events stored on the stream before the
// given time and still there, oldest first, reading from sequence from
// (0: the oldest message); next is the sequence after the last message
// read. Placements whose persistence is late, typically because the
// worker that took them died and the stream redelivers them only after
// its AckWait, or held back by the Pacer during a burst. In normal
// operation the oldest event is a few milliseconds old, so this reads one
// message.
func (b *Bus) Overdue(ctx context.Context, before time.Time, from uint64, limit int) (events []order.Placed, next uint64, err error) {
	next = from
	if limit <= 0 {
		return nil, next, nil
	}
	err = b.eachMessage(ctx, from, func(m *jetstream.RawStreamMsg) bool {
		if !m.Time.Before(before) {
			return false
		}
		next = m.Sequence + 1
		if b.authentic(m.Header, m.Data) != nil {
			return true // the worker refuses it
		}
		var err error
		if events, err = decodeEvents(m.Data, events); err != nil {
			b.log.Error("malformed event on the stream", "seq", m.Sequence)
		}
		return len(events) < limit
	})
	if err != nil {
		return nil, from, err
	}
	events, err = b.onlyHeld(ctx, events)
	if err != nil {
		return nil, from, err
	}
	return events, next, nil
}

// Placed returns the event of an order still on the stream: acknowledged
// and not yet persisted. An event published alone has its own subject, so
// this is an index lookup, from any instance; one published in a batch is
// found in the bus's own index of them (embedded: everything on the stream
// is there, what this process published and what was there when it
// started), or clustered by asking the instance that placed it (lookup.go).
func (b *Bus) Placed(ctx context.Context, orderID string) (order.Placed, bool, error) {
	if b.requests != nil {
		e, ok, err := b.placedHere(ctx, orderID)
		if ok || err != nil || !b.cfg.Clustered {
			return e, ok, err
		}
		return b.placedElsewhere(ctx, orderID)
	}
	m, err := b.stream.GetLastMsgForSubject(ctx, b.cfg.Subject+"."+orderID)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return order.Placed{}, false, nil
	}
	if err != nil {
		return order.Placed{}, false, err
	}
	if b.authentic(m.Header, m.Data) != nil {
		return order.Placed{}, false, nil // not an order: the worker refuses it
	}
	var e order.Placed
	if err := json.Unmarshal(m.Data, &e); err != nil {
		return order.Placed{}, false, fmt.Errorf("decode event %s: %w", orderID, err)
	}
	return e, true, nil
}

// PersistFunc stores a batch of events; when it returns nil they are
// acknowledged and leave the stream.
type PersistFunc func(ctx context.Context, events []order.Placed) error

// RunWorker consumes the stream as the shared durable consumer, handing
// persist batches of up to Config.BatchSize events: whatever has arrived,
// so batches grow with load and latency stays low when it is light. It
// returns after ctx is done, the batch in hand is persisted and its
// goroutines (the puller, the orphan sweeper) have stopped.
func (b *Bus) RunWorker(ctx context.Context, persist PersistFunc) error {
	persist = b.screened(persist) // events matching no reservation are refused
	msgs := make(chan jetstream.Msg, b.cfg.BatchSize)
	// The puller and the orphan sweeper are this call's: it returns only
	// after both have, so once RunWorker returns nothing of the worker's
	// touches the stream or calls persist (the caller may close the store).
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { b.pull(ctx, msgs) })
	wg.Go(func() { b.runOrphanSweeper(ctx, persist) })
	batch := make([]jetstream.Msg, 0, b.cfg.BatchSize)
	events := make([]order.Placed, 0, b.cfg.BatchSize)
	// add decodes m into the batch; a message may carry many events.
	add := func(m jetstream.Msg) {
		if !b.admit(ctx, m) {
			return // badly signed: refused
		}
		n := len(events)
		var err error
		if events, err = decodeEvents(m.Data(), events); err != nil {
			events = events[:n]
			b.log.Error("dropping malformed event", "subject", m.Subject())
			_ = m.Term()
			return
		}
		batch = append(batch, m)
	}
	for {
		m, ok := <-msgs
		if !ok {
			return nil
		}
		batch, events = batch[:0], events[:0]
		add(m)
		// Linger briefly for more: every commit rewrites the touched index
		// pages, so under load a few milliseconds buy batches many times
		// larger; when traffic is light the wait ends with the first gap.
		linger := time.NewTimer(b.cfg.Linger)
	fill:
		for len(events) < b.cfg.BatchSize {
			select {
			case m, ok := <-msgs:
				if !ok {
					break fill
				}
				add(m)
			default:
				select {
				case m, ok := <-msgs:
					if !ok {
						break fill
					}
					add(m)
				case <-linger.C:
					break fill
				}
			}
		}
		linger.Stop()
		b.persistBatch(ctx, persist, events, batch)
	}
}

// pull feeds msgs from the durable consumer until ctx is done, then
// closes it. An iterator that breaks (the server restarted, the consumer
// was recreated, heartbeats stopped) is replaced after a backoff, so the
// workers resume by themselves once NATS is back.
func (b *Bus) pull(ctx context.Context, msgs chan<- jetstream.Msg) {
	defer close(msgs)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		it, err := b.messages(ctx)
		if err != nil {
			b.log.Warn("order workers: cannot subscribe; retrying", "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		// When ctx is done, drain the iterator: deliver what was pulled,
		// then close. A goroutine of pull's own (not context.AfterFunc's),
		// so that pull waits for it.
		iterDone, drainDone := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(drainDone)
			select {
			case <-ctx.Done():
				it.Drain()
			case <-iterDone:
			}
		}()
		for {
			m, err := it.Next()
			if err != nil {
				if !errors.Is(err, jetstream.ErrMsgIteratorClosed) && ctx.Err() == nil {
					b.log.Warn("order workers: consumer iterator failed; resubscribing", "err", err)
				}
				break
			}
			backoff = 100 * time.Millisecond
			msgs <- m
		}
		close(iterDone)
		<-drainDone
		it.Stop()
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
	}
}

func (b *Bus) messages(ctx context.Context) (jetstream.MessagesContext, error) {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cons, err := b.stream.Consumer(cctx, b.cfg.Consumer)
	if err != nil {
		return nil, err
	}
	return cons.Messages(jetstream.PullMaxMessages(2*b.cfg.BatchSize), jetstream.WithMessagesErrOnMissingHeartbeat(true))
}

// persistBatch retries persist until it succeeds or the process is
// stopping; unacknowledged events are delivered again later anyway.
func (b *Bus) persistBatch(ctx context.Context, persist PersistFunc, events []order.Placed, msgs []jetstream.Msg) {
	if len(events) == 0 {
		return
	}
	backoff := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		// Persisting a batch in hand is finished even while stopping.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		err := persist(pctx, events)
		cancel()
		if err == nil {
			for _, m := range msgs {
				_ = m.Ack()
			}
			b.index.forgetAll(events)
			return
		}
		b.log.Warn("persist batch", "events", len(events), "attempt", attempt, "err", err)
		if ctx.Err() != nil {
			return // redelivered after AckWait, or at the next start
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// ackFloor returns the stream sequence at and below which the consumer
// will deliver nothing again: its ack floor, or its last delivered event
// when none awaits an ack. A variable for tests, which cannot make a
// work-queue stream keep acknowledged events.
var ackFloor = func(ctx context.Context, b *Bus) (uint64, error) {
	cons, err := b.stream.Consumer(ctx, b.cfg.Consumer)
	if err != nil {
		return 0, err
	}
	ci := cons.CachedInfo()
	if ci.NumAckPending == 0 {
		// Nothing delivered is awaiting an ack, so nothing up to the last
		// delivered event will be delivered again either.
		return ci.Delivered.Stream, nil
	}
	return ci.AckFloor.Stream, nil
}

func (b *Bus) ackFloor(ctx context.Context) (uint64, error) { return ackFloor(ctx, b) }

func (b *Bus) runOrphanSweeper(ctx context.Context, persist PersistFunc) {
	t := time.NewTicker(b.cfg.OrphanSweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := b.sweepOrphans(ctx, persist)
		switch {
		case err != nil && ctx.Err() == nil:
			b.log.Warn("order workers: orphan sweep failed", "err", err)
		case n > 0:
			b.log.Warn("order workers: persisted events the consumer had lost", "events", n)
		}
		if b.cfg.Clustered && b.requests != nil {
			if n, err := b.sweepIndex(ctx); err != nil && ctx.Err() == nil {
				b.log.Warn("order index sweep failed", "err", err)
			} else if n > 0 {
				b.log.Info("dropped persisted orders from the index (their announcements were lost)", "orders", n)
			}
		}
	}
}

// sweepOrphans persists, then deletes, the events still on the stream at
// or below the consumer's ack floor. A work-queue stream removes an event
// once it is acknowledged, so none should be there; but after the NATS
// server is killed its consumer state and its stream can disagree
// (e2e NATSRestarted saw 64 such events sit for minutes; compare
// nats-server#6905), and the consumer never delivers them again. An
// acknowledged order must not wait forever: inserts are idempotent, so a
// race with a worker that has the same event in hand costs nothing.
func (b *Bus) sweepOrphans(ctx context.Context, persist PersistFunc) (int, error) {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	floor, err := b.ackFloor(cctx)
	if err != nil {
		return 0, err
	}
	info, err := b.stream.Info(cctx)
	if err != nil {
		return 0, err
	}
	if info.State.Msgs == 0 || info.State.FirstSeq > floor {
		return 0, nil
	}
	var events []order.Placed
	var seqs []uint64
	for seq := info.State.FirstSeq; seq <= floor; {
		m, err := b.stream.GetMsg(cctx, seq, jetstream.WithGetMsgSubject(b.cfg.Subject+".>"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return 0, err
		}
		if m.Sequence > floor {
			break
		}
		if err := b.authentic(m.Header, m.Data); err != nil {
			if err := b.refuse(cctx, m.Subject, m.Header, m.Data, reasonOf(err), ""); err != nil {
				return 0, err
			}
			seqs = append(seqs, m.Sequence)
			seq = m.Sequence + 1
			continue
		}
		n := len(events)
		if events, err = decodeEvents(m.Data, events); err != nil {
			events = events[:n]
			b.log.Error("dropping malformed event", "seq", m.Sequence)
		}
		seqs = append(seqs, m.Sequence)
		seq = m.Sequence + 1
	}
	if len(seqs) == 0 {
		return 0, nil
	}
	if len(events) > 0 {
		// Persisting what was read is finished even while stopping (the
		// worker waits for it), within a deadline of its own.
		pctx, pcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		err := persist(pctx, events)
		pcancel()
		if err != nil {
			return 0, err
		}
	}
	for _, seq := range seqs {
		if err := b.stream.DeleteMsg(cctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return len(events), err
		}
	}
	b.index.forgetAll(events)
	return len(events), nil
}
