package natsbus

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
)

// Events carry proof of origin: an HMAC-SHA256, with a key only Spike
// instances hold, over a purpose label and the message's exact bytes, in
// the SigHeader header as "<key id>:<base64 MAC>". A client that can
// publish on NATS but lacks the key cannot make an event the workers
// accept. The purpose label keeps a signed message of one kind from being
// replayed as another (a lifecycle event as a placement).

// SigHeader is the NATS header carrying an event's signature.
const SigHeader = "Spike-Sig"

// MinKeyLen is the shortest accepted event key, in bytes.
const MinKeyLen = 32

// Purposes of signed messages.
const (
	purposePlaced     = "spike/orders.placed/v1"
	purposeTransition = "spike/orders.events/v1"
	purposeSwitch     = "spike/switch/v1"
	purposePersisted  = "spike/orders.persisted/v1"
	purposeInvalidate = "spike/invalidate/v1"
)

// Reasons an event is rejected (the reason label of the rejection count).
const (
	RejectUnsigned      = "unsigned"
	RejectUnknownKey    = "unknown_key"
	RejectBadSignature  = "bad_signature"
	RejectNoReservation = "no_reservation"
)

// rejection is why a message failed verification; its reason is one of
// the Reject* constants.
type rejection struct{ reason string }

func (r *rejection) Error() string { return "event rejected: " + r.reason }

// reasonOf returns the Reject* reason of a verification error.
func reasonOf(err error) string {
	var r *rejection
	if errors.As(err, &r) {
		return r.reason
	}
	return "error"
}

// Keys signs events with the current key and verifies them with the
// current key or any previous one (during a rotation). Every instance
// sharing a stream needs the same keys.
type Keys struct {
	id     string
	key    []byte
	accept map[string][]byte // key id → key
}

// NewKeys returns Keys that sign with current and also accept previous.
// Every key must be at least MinKeyLen bytes.
func NewKeys(current []byte, previous ...[]byte) (*Keys, error) {
	k := &Keys{id: KeyID(current), key: current, accept: make(map[string][]byte)}
	for i, key := range append([][]byte{current}, previous...) {
		if len(key) < MinKeyLen {
			return nil, fmt.Errorf("event key %d: %d bytes, need at least %d", i, len(key), MinKeyLen)
		}
		k.accept[KeyID(key)] = key
	}
	return k, nil
}

// KeyID names a key without revealing it: the first 8 hex digits of a
// SHA-256 of it, so a rotation needs no separate id in the configuration.
func KeyID(key []byte) string {
	sum := sha256.Sum256(append([]byte("spike-event-key-id\x00"), key...))
	return fmt.Sprintf("%x", sum[:4])
}

// ID returns the id of the signing key.
func (k *Keys) ID() string { return k.id }

func mac(key []byte, purpose string, data []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(purpose))
	h.Write([]byte{0})
	h.Write(data)
	return h.Sum(nil)
}

// signature returns the SigHeader value for data.
func (k *Keys) signature(purpose string, data []byte) string {
	return k.id + ":" + base64.RawStdEncoding.EncodeToString(mac(k.key, purpose, data))
}

// verify checks data's signature in h. Nil Keys verify everything (tests
// and tools that run without keys).
func (k *Keys) verify(purpose string, data []byte, h nats.Header) error {
	if k == nil {
		return nil
	}
	v := h.Get(SigHeader)
	if v == "" {
		return &rejection{RejectUnsigned}
	}
	id, sig, ok := strings.Cut(v, ":")
	key, known := k.accept[id]
	if !ok || !known {
		return &rejection{RejectUnknownKey}
	}
	got, err := base64.RawStdEncoding.DecodeString(sig)
	if err != nil || !hmac.Equal(got, mac(key, purpose, data)) {
		return &rejection{RejectBadSignature}
	}
	return nil
}

// signedMsg is the one place a message is made ready to publish: the
// subject, the bytes and, with keys, their signature.
func signedMsg(k *Keys, purpose, subject string, data []byte) *nats.Msg {
	m := &nats.Msg{Subject: subject, Data: data}
	if k != nil {
		m.Header = nats.Header{SigHeader: []string{k.signature(purpose, data)}}
	}
	return m
}
