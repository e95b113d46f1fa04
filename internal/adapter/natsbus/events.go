package natsbus

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/spikehq/spike/internal/domain/order"
)

// Names of the order lifecycle stream.
const (
	EventsStreamName = "ORDER_EVENTS"
	EventsSubject    = "spike.orders.events"
)

// Events publishes order lifecycle events (order.paid, order.cancelled,
// order.shipped, order.delivered, order.refunded) on their own stream,
// subject spike.orders.events.<event>.<order id>, kept for a week for
// whoever consumes them (fulfilment, analytics, a data warehouse). The
// ORDERS stream is a work queue for placements only; its workers would
// never take these. It implements order.EventPublisher.
type Events struct {
	js   jetstream.JetStream
	keys *Keys
}

var _ order.EventPublisher = (*Events)(nil)

// EventsConfig configures Events.
type EventsConfig struct {
	// Replicas of the stream; zero means 1.
	Replicas int
	// MaxAge is how long events are kept; zero means 7 days.
	MaxAge time.Duration
}

// NewEvents makes sure the ORDER_EVENTS stream exists.
func NewEvents(ctx context.Context, b *Bus, cfg EventsConfig) (*Events, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = 7 * 24 * time.Hour
	}
	_, err := b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        EventsStreamName,
		Description: "order lifecycle events: paid, cancelled, shipped, delivered, refunded",
		Subjects:    []string{EventsSubject + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
		MaxAge:      cfg.MaxAge,
		Duplicates:  2 * time.Minute,
	})
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", EventsStreamName, err)
	}
	return &Events{js: b.js, keys: b.cfg.Keys}, nil
}

// PublishTransition publishes e, deduplicated by order and status (a
// transition happens once; a retried publish is stored once).
func (ev *Events) PublishTransition(ctx context.Context, e order.TransitionEvent) error {
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	subject := EventsSubject + "." + string(e.To) + "." + e.OrderID
	_, err = ev.js.PublishMsg(ctx, signedMsg(ev.keys, purposeTransition, subject, data), jetstream.WithMsgID(e.OrderID+"."+string(e.To)))
	return err
}
