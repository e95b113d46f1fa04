package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/spikehq/spike/internal/switches"
)

// SwitchBucket is the KV bucket that is Spike's config centre.
const SwitchBucket = "spike_switches"

// Switches keeps a switches.Board in step with the config centre: a
// JetStream KV bucket every instance watches, so a change made on any
// instance reaches all of them within the watch's delivery delay
// (milliseconds while NATS is reachable).
type Switches struct {
	kv    jetstream.KeyValue
	board *switches.Board
	log   *slog.Logger
	keys  *Keys // signs and verifies stored values; nil: plain values
}

// NewSwitches opens (creating if needed) the switch bucket.
func NewSwitches(ctx context.Context, b *Bus, board *switches.Board, log *slog.Logger) (*Switches, error) {
	kv, err := b.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      SwitchBucket,
		Description: "Spike runtime switches and limits",
		History:     10,
		Replicas:    b.cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("open switch bucket: %w", err)
	}
	sw := &Switches{kv: kv, board: board, log: log, keys: b.cfg.Keys}
	return sw, sw.load(ctx)
}

// load applies the stored values before the instance serves, so it never
// starts with defaults an operator has overridden.
func (s *Switches) load(ctx context.Context) error {
	keys, err := s.kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read switches: %w", err)
	}
	for _, k := range keys {
		e, err := s.kv.Get(ctx, k)
		if err != nil {
			continue // deleted meanwhile
		}
		if err := s.apply(k, e.Value()); err != nil {
			s.log.Warn("ignoring switch value", "err", err)
		}
	}
	return nil
}

// Run applies the bucket's current values and then every change, until ctx
// is done.
func (s *Switches) Run(ctx context.Context) error {
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch switches: %w", err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e == nil {
				continue // the initial values have all been delivered
			}
			switch e.Operation() {
			case jetstream.KeyValuePut:
				if err := s.apply(e.Key(), e.Value()); err != nil {
					s.log.Warn("ignoring switch value", "err", err)
				} else {
					s.log.Info("switch", "name", e.Key())
				}
			default:
				s.board.Reset(e.Key())
			}
		}
	}
}

// Set validates and stores a switch, and applies it here at once.
func (s *Switches) Set(ctx context.Context, name, value string) error {
	canon, err := s.board.Validate(name, value)
	if err != nil {
		return err
	}
	if _, err := s.kv.Put(ctx, name, signSwitch(s.keys, name, canon)); err != nil {
		return fmt.Errorf("store switch %s: %w", name, err)
	}
	return s.board.Apply(name, canon)
}

// A stored switch value, with keys, is "spike-sig <signature>\n<value>":
// the KV bucket keeps no headers. The signature covers the switch's name
// too, so a value cannot be moved to another switch.
const switchSigPrefix = "spike-sig "

func signSwitch(k *Keys, name, value string) []byte {
	if k == nil {
		return []byte(value)
	}
	return []byte(switchSigPrefix + k.signature(purposeSwitch, switchSigned(name, value)) + "\n" + value)
}

func switchSigned(name, value string) []byte { return []byte(name + "\x00" + value) }

// apply verifies a stored value and applies it; an unsigned or badly
// signed value (written by something other than an instance) is refused.
func (s *Switches) apply(name string, stored []byte) error {
	value := string(stored)
	if s.keys != nil {
		head, rest, ok := strings.Cut(value, "\n")
		sig, signed := strings.CutPrefix(head, switchSigPrefix)
		if !ok || !signed {
			return fmt.Errorf("switch %s: unsigned value refused", name)
		}
		if err := s.keys.verify(purposeSwitch, switchSigned(name, rest), nats.Header{SigHeader: []string{sig}}); err != nil {
			return fmt.Errorf("switch %s: %w", name, err)
		}
		value = rest
	}
	return s.board.Apply(name, value)
}
