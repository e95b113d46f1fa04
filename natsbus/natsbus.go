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
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spikehq/spike/order"
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
	// BatchSize is the largest batch handed to the persist function.
	// If zero, 512 is used.
	BatchSize int
	// Linger is how long the worker waits for a batch to fill once it has
	// an event. If zero, 5ms is used.
	Linger time.Duration
}

// Bus publishes and consumes order events. It implements order.Stream.
type Bus struct {
	js     jetstream.JetStream
	stream jetstream.Stream
	cfg    Config
	log    *slog.Logger
}

var _ order.Stream = (*Bus)(nil)

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
		cfg.BatchSize = 512
	}
	if cfg.Linger == 0 {
		cfg.Linger = 5 * time.Millisecond
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
	return &Bus{js: js, stream: stream, cfg: cfg, log: log}, nil
}

// Enqueue implements order.Stream: it publishes e with Nats-Msg-Id set to
// its order id and waits for the stream's acknowledgement.
func (b *Bus) Enqueue(ctx context.Context, e order.Placed) error {
	data, err := json.Marshal(&e)
	if err != nil {
		return fmt.Errorf("encode event: %w: %w", err, order.ErrNotEnqueued)
	}
	f, err := b.js.PublishMsgAsync(&nats.Msg{Subject: b.cfg.Subject + "." + e.OrderID, Data: data}, jetstream.WithMsgID(e.OrderID))
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
	info, err := b.stream.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []order.Placed
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; {
		m, err := b.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(b.cfg.Subject+".>"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read stream at %d: %w", seq, err)
		}
		var e order.Placed
		if err := json.Unmarshal(m.Data, &e); err == nil && e.Validate() == nil {
			out = append(out, e)
		} else {
			b.log.Error("malformed event on the stream", "seq", m.Sequence)
		}
		seq = m.Sequence + 1
	}
	return out, nil
}

// DeleteStream deletes the stream and everything on it; for tests.
func (b *Bus) DeleteStream(ctx context.Context) error {
	return b.js.DeleteStream(ctx, b.cfg.Stream)
}

// Placed returns the event of an order still on the stream: acknowledged
// and not yet persisted. Each event has its own subject, so this is an
// index lookup, from any instance.
func (b *Bus) Placed(ctx context.Context, orderID string) (order.Placed, bool, error) {
	m, err := b.stream.GetLastMsgForSubject(ctx, b.cfg.Subject+"."+orderID)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return order.Placed{}, false, nil
	}
	if err != nil {
		return order.Placed{}, false, err
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
// returns after ctx is done and the batch in hand is persisted.
func (b *Bus) RunWorker(ctx context.Context, persist PersistFunc) error {
	msgs := make(chan jetstream.Msg, b.cfg.BatchSize)
	go b.pull(ctx, msgs)
	batch := make([]jetstream.Msg, 0, b.cfg.BatchSize)
	events := make([]order.Placed, 0, b.cfg.BatchSize)
	for {
		m, ok := <-msgs
		if !ok {
			return nil
		}
		batch = append(batch[:0], m)
		// Linger briefly for more: every commit rewrites the touched index
		// pages, so under load a few milliseconds buy batches many times
		// larger; when traffic is light the wait ends with the first gap.
		linger := time.NewTimer(b.cfg.Linger)
	fill:
		for len(batch) < b.cfg.BatchSize {
			select {
			case m, ok := <-msgs:
				if !ok {
					break fill
				}
				batch = append(batch, m)
			default:
				select {
				case m, ok := <-msgs:
					if !ok {
						break fill
					}
					batch = append(batch, m)
				case <-linger.C:
					break fill
				}
			}
		}
		linger.Stop()
		events = events[:0]
		good := batch[:0:0]
		for _, m := range batch {
			var e order.Placed
			if err := json.Unmarshal(m.Data(), &e); err != nil || e.Validate() != nil {
				b.log.Error("dropping malformed event", "subject", m.Subject())
				_ = m.Term()
				continue
			}
			events = append(events, e)
			good = append(good, m)
		}
		b.persistBatch(ctx, persist, events, good)
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
		stop := context.AfterFunc(ctx, it.Drain) // deliver what was pulled, then close
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
		stop()
		it.Stop()
		if ctx.Err() == nil {
			time.Sleep(backoff)
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
