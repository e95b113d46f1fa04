package sandboxpay

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/payment"
)

var fuzzSecret = []byte("sandbox fuzz secret")

func fuzzGateway() *Gateway {
	return New(Config{Secret: fuzzSecret, WebhookURL: "http://127.0.0.1:1/hook", CheckoutBase: "http://127.0.0.1:1/sandbox/checkout", Records: 64})
}

// FuzzVerifyWebhook: a webhook verifies only with this secret's signature
// of its exact body; anything else is refused as unauthenticated (never a
// panic), and a signed body that is not a webhook event is invalid.
func FuzzVerifyWebhook(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	good := `{"id":"evt_1","ref":"sbx_x.y","status":"succeeded","at":"2026-01-01T00:00:00Z"}`
	f.Add(payment.Sign(fuzzSecret, now, []byte(good)), []byte(good), false)
	f.Add("", []byte(good), true)
	f.Add("t=1800000000,v1=00", []byte(good), false)
	f.Add("", []byte(`{"id":"e","ref":"","status":"succeeded"}`), true)
	f.Add("", []byte(`{"id":"e","ref":"r","status":"refunded"}`), true)
	f.Add("", []byte(`{"id":"e","ref":"r","status":"failed","at":"not a time"}`), true)
	f.Add("", []byte(`[]`), true)
	f.Add("", []byte(``), true)
	g := fuzzGateway()
	f.Fuzz(func(t *testing.T, sig string, body []byte, signed bool) {
		if signed {
			sig = payment.Sign(fuzzSecret, now, body)
		}
		h := http.Header{}
		h.Set(payment.SignatureHeader, sig)
		ev, err := g.VerifyWebhook(h, body, now)
		if err != nil {
			if !errors.Is(err, spike.ErrUnauthenticated) && !errors.Is(err, spike.ErrInvalid) {
				t.Fatalf("refused with %v: want unauthenticated or invalid", err)
			}
			if signed && errors.Is(err, spike.ErrUnauthenticated) {
				t.Fatalf("a body signed with the secret was refused: %v", err)
			}
			return
		}
		if payment.Verify(fuzzSecret, sig, body, now, 0) != nil {
			t.Fatalf("accepted %q with signature %q that does not verify", body, sig)
		}
		if ev.Ref == "" || !ev.Status.Valid() {
			t.Fatalf("accepted an event without a ref or a valid status: %+v", ev)
		}
	})
}

// FuzzCheckout: the checkout page takes any ref, method, content type and
// body without a panic or a 5xx other than the queue's 503; a ref this
// secret did not sign is 404; refs that verify decode to what was signed.
func FuzzCheckout(f *testing.F) {
	g := fuzzGateway()
	ref := g.makeRef(refInfo{paymentID: "pay_1", amountCents: 999, created: 1_800_000_000})
	f.Add(ref, "POST", "application/json", `{"outcome":"succeeded"}`)
	f.Add(ref, "POST", "application/json", `{"outcome":"failed"}`)
	f.Add(ref, "POST", "application/x-www-form-urlencoded", `outcome=succeeded`)
	f.Add(ref, "POST", "application/json", `{"outcome":"refunded"}`)
	f.Add(ref, "POST", "application/json", `{"outcome":`)
	f.Add(ref, "GET", "", ``)
	f.Add(ref+"x", "POST", "application/json", `{"outcome":"succeeded"}`)
	f.Add("sbx_", "POST", "", ``)
	f.Add("sbx_.", "GET", "", ``)
	f.Add(strings.Repeat("A", 300), "HEAD", "", ``)
	f.Add(ref, "DELETE", "text/plain", `x`)
	f.Add(ref, "POST", "multipart/form-data; boundary=x", "--x\r\nContent-Disposition: form-data; name=\"outcome\"\r\n\r\nsucceeded\r\n--x--\r\n")
	f.Fuzz(func(t *testing.T, ref, method, contentType, body string) {
		if in, ok := g.parseRef(ref); ok && g.makeRef(in) != ref {
			t.Fatalf("ref %q verifies but is not the one its fields make (%q)", ref, g.makeRef(in))
		}
		switch method {
		case "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH":
		default:
			method = "POST"
		}
		req := httptest.NewRequest(method, "/sandbox/checkout/x", strings.NewReader(body))
		req.SetPathValue("ref", ref)
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		rec := httptest.NewRecorder()
		g.Handler().ServeHTTP(rec, req)
		_, known := g.parseRef(ref)
		switch rec.Code {
		case 200, 303, 400, 405, 409, 413:
		case 404:
			if known && method != "DELETE" && method != "PUT" && method != "PATCH" {
				// a verified ref is never unknown
				t.Fatalf("%s of a verified ref: 404 %s", method, rec.Body.String())
			}
		case 503:
			if rec.Header().Get("Retry-After") == "" {
				t.Fatal("503 without Retry-After")
			}
		default:
			t.Fatalf("%s %q %q: status %d %s", method, contentType, body, rec.Code, rec.Body.String())
		}
		if rec.Code == 200 && method == "POST" && !known {
			t.Fatalf("an unsigned ref %q was decided", ref)
		}
	})
}
