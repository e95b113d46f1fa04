package stripepay_test

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v82/webhook"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/adapter/stripepay"
	"github.com/spikehq/spike/internal/domain/payment"
)

// FuzzVerifyWebhook: any header and body are refused as unauthenticated
// (not signed with the secret, or too old) or invalid (signed, but not an
// event Spike can read), never a panic; what is accepted verifies with
// the secret, and an event of a kind Spike acts on names a payment intent.
func FuzzVerifyWebhook(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	ok := `{"id":"evt_1","object":"event","type":"payment_intent.succeeded","created":1800000000,"data":{"object":{"id":"pi_1","object":"payment_intent"}}}`
	f.Add("", []byte(ok), true, int64(0))
	f.Add("t=1800000000,v1=00", []byte(ok), false, int64(0))
	f.Add("", []byte(`{"id":"evt_2","type":"charge.refunded","created":1,"data":{"object":{"id":"ch_1"}}}`), true, int64(0))
	f.Add("", []byte(`{"id":"evt_3","type":"payment_intent.payment_failed","data":{"object":{"id":"pi_1","object":"charge"}}}`), true, int64(0))
	f.Add("", []byte(`{"id":"","type":"payment_intent.canceled"}`), true, int64(0))
	f.Add("", []byte(`{"id":"evt_4","type":"payment_intent.succeeded","data":null}`), true, int64(0))
	f.Add("", []byte(`not json`), true, int64(0))
	f.Add("", []byte(ok), true, int64(301))
	f.Add("t=abc,v1=zz", []byte(ok), false, int64(0))
	p, err := stripepay.New(stripepay.Config{APIKey: "sk_test_fuzz", WebhookSecret: "whsec_fuzz"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, sig string, body []byte, signed bool, ageSeconds int64) {
		h := http.Header{}
		if signed {
			ts := now.Add(-time.Duration(ageSeconds%100_000) * time.Second)
			sp := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: "whsec_fuzz", Timestamp: ts})
			sig = sp.Header
		}
		h.Set("Stripe-Signature", sig)
		ev, err := p.VerifyWebhook(h, body, now)
		if err != nil {
			if !errors.Is(err, spike.ErrUnauthenticated) && !errors.Is(err, spike.ErrInvalid) {
				t.Fatalf("refused with %v: want unauthenticated or invalid", err)
			}
			return
		}
		if _, err := webhook.ConstructEventWithOptions(body, sig, "whsec_fuzz", webhook.ConstructEventOptions{IgnoreTolerance: true, IgnoreAPIVersionMismatch: true}); err != nil {
			t.Fatalf("accepted a webhook stripe-go refuses: %v", err)
		}
		if ev.ID == "" {
			t.Fatalf("accepted an event without an id: %+v", ev)
		}
		if ev.Status != "" && (ev.Ref == "" || ev.Status != payment.Succeeded && ev.Status != payment.Failed) {
			t.Fatalf("an event Spike acts on without a payment intent: %+v", ev)
		}
	})
}
