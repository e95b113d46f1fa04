package natsbus

import (
	"context"
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/order"
)

// The order workers trust no event for being well formed. Before
// persisting, each message's signature is verified (admit) and each event
// is matched against a reservation in the stock counters (screened). An
// event that fails either is refused: parked on the parked stream for an
// operator to inspect, counted (Config.Rejected), logged, acknowledged on
// the order stream, and never persisted. Every other reader of the stream
// (Unpersisted, Overdue, Placed, the orphan sweep) ignores messages whose
// signature fails too, so a rebuild of the counters never counts them.

// Headers of a parked message, besides the original ones.
const (
	RejectReasonHeader    = "Spike-Reject-Reason"
	OriginalSubjectHeader = "Spike-Original-Subject"
)

// parkTimeout bounds one publish to the parked stream.
const parkTimeout = 5 * time.Second

func (b *Bus) parkedSubject(reason string) string {
	return "spike.parked." + b.cfg.ParkedStream + "." + reason
}

// createParked makes sure the parked stream exists: kept 30 days (1 GiB
// at most, oldest dropped first), read by nothing but operators.
func (b *Bus) createParked(ctx context.Context) error {
	_, err := b.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        b.cfg.ParkedStream,
		Description: "events the order workers refused (unsigned, badly signed, or matching no reservation), for an operator to inspect",
		Subjects:    []string{"spike.parked." + b.cfg.ParkedStream + ".>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    b.cfg.Replicas,
		MaxAge:      30 * 24 * time.Hour,
		MaxBytes:    1 << 30,
		Discard:     jetstream.DiscardOld,
	})
	if err != nil {
		return fmt.Errorf("create stream %s: %w", b.cfg.ParkedStream, err)
	}
	return nil
}

// authentic reports whether a placement message read from the stream
// carries a valid signature.
func (b *Bus) authentic(hdr nats.Header, data []byte) error {
	return b.cfg.Keys.verify(purposePlaced, data, hdr)
}

// admit verifies a delivered message's signature. One that fails is
// refused (parked, then acknowledged) and admit returns false; if parking
// fails it is delivered again later.
func (b *Bus) admit(ctx context.Context, m jetstream.Msg) bool {
	err := b.authentic(m.Headers(), m.Data())
	if err == nil {
		return true
	}
	if perr := b.refuse(ctx, m.Subject(), m.Headers(), m.Data(), reasonOf(err), ""); perr != nil {
		b.log.Warn("order workers: cannot park a refused event; retrying later", "subject", m.Subject(), "err", perr)
		_ = m.NakWithDelay(5 * time.Second)
		return false
	}
	_ = m.Ack()
	return false
}

// refuse parks a refused message with its reason, then counts and logs it.
func (b *Bus) refuse(ctx context.Context, subject string, hdr nats.Header, data []byte, reason, orderID string) error {
	pm := &nats.Msg{Subject: b.parkedSubject(reason), Data: data, Header: nats.Header{}}
	for k, v := range hdr {
		if k != jetstream.MsgIDHeader {
			pm.Header[k] = v
		}
	}
	pm.Header.Set(RejectReasonHeader, reason)
	pm.Header.Set(OriginalSubjectHeader, subject)
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), parkTimeout)
	defer cancel()
	// A refusal retried (its batch failed later, or its ack was lost) is
	// parked once within the parked stream's deduplication window.
	sum := sha256.Sum256(data)
	msgID := fmt.Sprintf("%s.%x", reason, sum[:16])
	if _, err := b.js.PublishMsg(pctx, pm, jetstream.WithMsgID(msgID)); err != nil {
		return fmt.Errorf("park refused event: %w", err)
	}
	b.log.Warn("order workers: refused an event; parked, not persisted",
		"reason", reason, "subject", subject, "order_id", orderID, "parked_on", b.cfg.ParkedStream)
	if b.cfg.Rejected != nil {
		b.cfg.Rejected(reason)
	}
	return nil
}

// SetHolds sets Config.Holds: the counters are built after the bus (they
// are rebuilt from its stream). Call it before RunWorker and Overdue.
func (b *Bus) SetHolds(h inventory.Stock) error {
	hc, ok := h.(inventory.HoldChecker)
	if !ok {
		return fmt.Errorf("the stock counters (%T) cannot tell which reservations they hold", h)
	}
	b.cfg.Holds = hc
	return nil
}

// screened wraps persist: events that match no reservation are refused
// and only the others are persisted. When a sale's counters are missing
// (being rebuilt) the batch fails and is retried, so a genuine order is
// never refused for it.
func (b *Bus) screened(persist PersistFunc) PersistFunc {
	if b.cfg.Holds == nil {
		return persist
	}
	return func(ctx context.Context, events []order.Placed) error {
		status, err := b.holds(ctx, events)
		if err != nil {
			return err
		}
		kept := make([]order.Placed, 0, len(events))
		for i := range events {
			e := &events[i]
			switch status[i] {
			case inventory.Held:
				kept = append(kept, *e)
			case inventory.HoldUnknown:
				return fmt.Errorf("check the reservation of %s: the stock counters of sale %s are missing (being rebuilt)", e.OrderID, e.SaleID)
			default:
				if err := b.refuse(ctx, b.cfg.Subject+"."+e.OrderID, nil, appendPlaced(nil, e), RejectNoReservation, e.OrderID); err != nil {
					return err
				}
			}
		}
		if len(kept) == 0 {
			return nil
		}
		return persist(ctx, kept)
	}
}

// holds asks the counters about each event's reservation.
func (b *Bus) holds(ctx context.Context, events []order.Placed) ([]inventory.HoldStatus, error) {
	res := make([]inventory.Reservation, len(events))
	for i, e := range events {
		res[i] = inventory.Reservation{OrderID: e.OrderID, SaleID: e.SaleID, SKU: e.SKU, UserID: e.UserID,
			Key: e.Key, Quantity: e.Quantity, PriceCents: e.PriceCents}
	}
	status, err := b.cfg.Holds.Holds(ctx, res)
	if err != nil {
		return nil, fmt.Errorf("check reservations: %w", err)
	}
	if len(status) != len(events) {
		return nil, fmt.Errorf("check reservations: %d answers for %d events", len(status), len(events))
	}
	return status, nil
}

// onlyHeld keeps the events whose reservation the counters hold (all of
// them without Config.Holds): for readers that persist outside the worker
// (Overdue). The others are left to the worker to refuse.
func (b *Bus) onlyHeld(ctx context.Context, events []order.Placed) ([]order.Placed, error) {
	if b.cfg.Holds == nil || len(events) == 0 {
		return events, nil
	}
	status, err := b.holds(ctx, events)
	if err != nil {
		return nil, err
	}
	kept := events[:0]
	for i, e := range events {
		if status[i] == inventory.Held {
			kept = append(kept, e)
		}
	}
	return kept, nil
}
