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
//
// With keys (Bus.Invalidations), every invalidation is signed like an
// event (sign.go), the MAC covering its subject and SKU, and one that
// fails verification is dropped and reported: a client that may publish
// on the subject but lacks the key cannot evict anything.
type Invalidations struct {
	nc       *nats.Conn
	subject  string
	keys     *Keys
	rejected func(reason string)
}

// NewInvalidations returns unsigned Invalidations over nc on subject: it
// signs nothing and accepts every well-formed message. If subject is
// empty, InvalidateSubject is used.
func NewInvalidations(nc *nats.Conn, subject string) *Invalidations {
	if subject == "" {
		subject = InvalidateSubject
	}
	return &Invalidations{nc: nc, subject: subject}
}

// Invalidations returns Invalidations over the bus's connection on subject
// (InvalidateSubject if empty), signed with Config.Keys; a received
// invalidation that fails verification is dropped and passed to
// Config.Rejected with its reason (RejectInvalidationUnsigned, …).
func (b *Bus) Invalidations(subject string) *Invalidations {
	i := NewInvalidations(b.js.Conn(), subject)
	i.keys, i.rejected = b.cfg.Keys, b.cfg.Rejected
	return i
}

// Reasons a received invalidation is dropped (the reason label of the
// rejection count): the event reasons with this prefix.
const (
	RejectInvalidationUnsigned     = "invalidation_" + RejectUnsigned
	RejectInvalidationUnknownKey   = "invalidation_" + RejectUnknownKey
	RejectInvalidationBadSignature = "invalidation_" + RejectBadSignature
)

// signed is what an invalidation's MAC covers: its subject too, so a
// product's invalidation is not taken for a sale's.
func (i *Invalidations) signed(sku []byte) []byte {
	return append(append([]byte(i.subject), 0), sku...)
}

// flushTimeout bounds the round trip Publish waits for when ctx has no
// deadline of its own.
const flushTimeout = time.Second

// Publish tells every subscribed instance that the product sku changed. It
// returns once the NATS server has the message (a flush round trip), or an
// error if it could not be sent, e.g. while disconnected.
func (i *Invalidations) Publish(ctx context.Context, sku string) error {
	m := &nats.Msg{Subject: i.subject, Data: []byte(sku)}
	if i.keys != nil {
		m.Header = nats.Header{SigHeader: []string{i.keys.signature(purposeInvalidate, i.signed(m.Data))}}
	}
	if err := i.nc.PublishMsg(m); err != nil {
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
// be quick. Messages that are not a valid SKU, and with keys those whose
// signature fails, are dropped.
func (i *Invalidations) Subscribe(ctx context.Context, fn func(sku string)) error {
	sub, err := i.nc.Subscribe(i.subject, func(m *nats.Msg) {
		if err := i.keys.verify(purposeInvalidate, i.signed(m.Data), m.Header); err != nil {
			if i.rejected != nil {
				i.rejected("invalidation_" + reasonOf(err))
			}
			return
		}
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
