package natsbus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/spikehq/spike"
)

// InvalidateSubject is the core NATS subject that carries catalog cache
// invalidations: the message body is the SKU whose cached product changed.
const InvalidateSubject = "spike.catalog.invalidate"

// Invalidations carries product cache invalidations between instances on
// core NATS pub/sub (not JetStream): delivery takes milliseconds while NATS
// is reachable, and a message published while an instance is disconnected
// is lost to it, so caches must also expire their entries (the TTL is the
// backstop). It implements catalogcache.Invalidator and is safe for
// concurrent use.
type Invalidations struct {
	nc      *nats.Conn
	subject string
}

// NewInvalidations returns Invalidations over nc on subject. If subject is
// empty, InvalidateSubject is used.
func NewInvalidations(nc *nats.Conn, subject string) *Invalidations {
	if subject == "" {
		subject = InvalidateSubject
	}
	return &Invalidations{nc: nc, subject: subject}
}

// flushTimeout bounds the round trip Publish waits for when ctx has no
// deadline of its own.
const flushTimeout = time.Second

// Publish tells every subscribed instance that the product sku changed. It
// returns once the NATS server has the message (a flush round trip), or an
// error if it could not be sent, e.g. while disconnected.
func (i *Invalidations) Publish(ctx context.Context, sku string) error {
	if err := i.nc.Publish(i.subject, []byte(sku)); err != nil {
		return fmt.Errorf("publish invalidation %s: %w", sku, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, flushTimeout)
		defer cancel()
	}
	if err := i.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("publish invalidation %s: %w", sku, err)
	}
	return nil
}

// Subscribe calls fn with the SKU of every invalidation received (including
// this instance's own) until ctx is done, then unsubscribes and returns nil.
// fn is called from one goroutine at a time, in arrival order; it should
// be quick. Messages that are not a valid SKU are dropped.
func (i *Invalidations) Subscribe(ctx context.Context, fn func(sku string)) error {
	sub, err := i.nc.Subscribe(i.subject, func(m *nats.Msg) {
		if sku := string(m.Data); spike.ValidID(sku) {
			fn(sku)
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", i.subject, err)
	}
	defer sub.Unsubscribe()
	// Make sure the server has the subscription before waiting.
	fctx, cancel := context.WithTimeout(ctx, flushTimeout)
	err = i.nc.FlushWithContext(fctx)
	cancel()
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("subscribe %s: %w", i.subject, err)
	}
	<-ctx.Done()
	return nil
}
