package natsbus

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/spikehq/spike/internal/domain/order"
)

// PersistedSubject is the core NATS subject on which clustered instances
// announce the orders their workers persisted.
//
// Every instance keeps the orders it acknowledged in a pending index until
// they are persisted; with many instances another instance's worker usually
// persists them (they share one durable consumer). Without a word from it,
// the placing instance learns that only from its pending sweeper: one
// stream lookup (a JetStream API request) per order, for most orders. One
// announcement per committed batch replaces those lookups; the sweeper stays
// for announcements lost while an instance was disconnected.
const PersistedSubject = "spike.orders.persisted"

// announceChunk bounds the orders of one announcement (about 40 bytes
// each, well under NATS's default 1 MB payload).
const announceChunk = 1000

// AnnouncePersisted wraps persist: once a batch is committed it publishes
// the batch's orders on subject (PersistedSubject if empty) as lines of
// "<user id> <order id>", without waiting for the server. A failed publish
// is logged and ignored: the sweepers catch up.
func AnnouncePersisted(nc *nats.Conn, subject string, persist PersistFunc, log *slog.Logger) PersistFunc {
	return announcePersisted(nc, subject, nil, persist, log)
}

// AnnouncePersisted is the package's AnnouncePersisted over the bus's
// connection, each announcement signed with Config.Keys: a forged one
// would drop orders from the instances' pending and batch indexes.
func (b *Bus) AnnouncePersisted(subject string, persist PersistFunc) PersistFunc {
	return announcePersisted(b.nc, subject, b.cfg.Keys, persist, b.log)
}

func announcePersisted(nc *nats.Conn, subject string, keys *Keys, persist PersistFunc, log *slog.Logger) PersistFunc {
	if subject == "" {
		subject = PersistedSubject
	}
	return func(ctx context.Context, events []order.Placed) error {
		if err := persist(ctx, events); err != nil {
			return err
		}
		for start := 0; start < len(events); start += announceChunk {
			chunk := events[start:min(start+announceChunk, len(events))]
			m := signedMsg(keys, purposePersisted, subject, appendPersisted(make([]byte, 0, 40*len(chunk)), chunk))
			if err := nc.PublishMsg(m); err != nil {
				log.Warn("announce persisted orders", "orders", len(chunk), "err", err)
			}
		}
		return nil
	}
}

// Reasons a received announcement is dropped (the reason label of the
// rejection count).
const (
	RejectAnnouncementUnsigned     = "announcement_" + RejectUnsigned
	RejectAnnouncementUnknownKey   = "announcement_" + RejectUnknownKey
	RejectAnnouncementBadSignature = "announcement_" + RejectBadSignature
)

func appendPersisted(buf []byte, events []order.Placed) []byte {
	for i := range events {
		buf = strconv.AppendInt(buf, events[i].UserID, 10)
		buf = append(buf, ' ')
		buf = append(buf, events[i].OrderID...)
		buf = append(buf, '\n')
	}
	return buf
}

// FollowPersisted calls fn for every order announced on subject
// (PersistedSubject if empty), this instance's own included, until ctx is
// done; then it unsubscribes and returns nil. fn is called from one
// goroutine at a time and should be quick. Malformed lines are skipped.
func FollowPersisted(ctx context.Context, nc *nats.Conn, subject string, fn func(userID int64, orderID string)) error {
	return followPersisted(ctx, nc, subject, nil, nil, fn)
}

// FollowPersisted is the package's FollowPersisted over the bus's
// connection, believing only announcements signed with Config.Keys; any
// other is dropped and passed to Config.Rejected with its reason
// (RejectAnnouncementUnsigned, …).
func (b *Bus) FollowPersisted(ctx context.Context, subject string, fn func(userID int64, orderID string)) error {
	return followPersisted(ctx, b.nc, subject, b.cfg.Keys, b.cfg.Rejected, fn)
}

func followPersisted(ctx context.Context, nc *nats.Conn, subject string, keys *Keys, rejected func(string), fn func(userID int64, orderID string)) error {
	if subject == "" {
		subject = PersistedSubject
	}
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		if err := keys.verify(purposePersisted, m.Data, m.Header); err != nil {
			if rejected != nil {
				rejected("announcement_" + reasonOf(err))
			}
			return
		}
		parsePersisted(m.Data, fn)
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", subject, err)
	}
	defer sub.Unsubscribe()
	// Make sure the server has the subscription before waiting.
	fctx, cancel := context.WithTimeout(ctx, flushTimeout)
	err = nc.FlushWithContext(fctx)
	cancel()
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("subscribe %s: %w", subject, err)
	}
	<-ctx.Done()
	return nil
}

func parsePersisted(data []byte, fn func(userID int64, orderID string)) {
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		user, id, ok := bytes.Cut(line, []byte{' '})
		if !ok || len(id) == 0 || len(id) > 64 {
			continue
		}
		u, err := strconv.ParseInt(string(user), 10, 64)
		if err != nil {
			continue
		}
		fn(u, string(id))
	}
}
