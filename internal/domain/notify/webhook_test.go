package notify_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/domain/notify"
	"github.com/spikehq/spike/resilience"
)

func TestWebhookSignsAndPosts(t *testing.T) {
	secret := []byte("webhook-secret")
	type got struct {
		method, ctype, sig, id string
		body                   []byte
	}
	reqs := make(chan got, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		reqs <- got{r.Method, r.Header.Get("Content-Type"), r.Header.Get(notify.SignatureHeader), r.Header.Get(notify.IDHeader), b}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()

	at := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	n := notify.Notification{V: 1, ID: "order_created:o1", Kind: notify.KindOrderCreated, OrderID: "o1", UserID: 42,
		SaleID: "bf", SKU: "phone-1", Quantity: 2, AmountCents: 1998, At: at}
	if err := notify.NewWebhook(notify.WebhookConfig{URL: srv.URL, Secret: secret}).Send(context.Background(), n); err != nil {
		t.Fatalf("Send: %v", err)
	}
	r := <-reqs
	// The signature, computed here independently of notify.Sign.
	m := hmac.New(sha256.New, secret)
	m.Write(r.body)
	want := "sha256=" + hex.EncodeToString(m.Sum(nil))
	if r.method != "POST" || r.ctype != "application/json" || r.sig != want || r.id != "order_created:o1" {
		t.Errorf("request %s %q sig %q id %q; want POST application/json sig %q", r.method, r.ctype, r.sig, r.id, want)
	}
	if !notify.Verify(secret, r.body, r.sig) {
		t.Error("Verify rejects a good signature")
	}
	if notify.Verify(secret, append(bytes.Clone(r.body), ' '), r.sig) || notify.Verify([]byte("other"), r.body, r.sig) ||
		notify.Verify(secret, r.body, strings.TrimPrefix(r.sig, "sha256=")) || notify.Verify(secret, r.body, "sha256=zz") {
		t.Error("Verify accepts a bad signature")
	}
	var back notify.Notification
	if err := json.Unmarshal(r.body, &back); err != nil || back != n {
		t.Errorf("body %s decodes to %+v (%v), want %+v", r.body, back, err, n)
	}
	for _, field := range []string{`"kind":"order_created"`, `"order_id":"o1"`, `"user_id":42`, `"id":"order_created:o1"`, `"v":1`} {
		if !bytes.Contains(r.body, []byte(field)) {
			t.Errorf("body %s lacks %s", r.body, field)
		}
	}
}

func TestWebhookClassifiesFailures(t *testing.T) {
	tests := []struct {
		status    int
		retryable bool
	}{
		{200, false}, {202, false},
		{500, true}, {502, true}, {503, true}, {429, true}, {408, true},
		{400, false}, {401, false}, {404, false}, {410, false},
		{302, false}, // not followed: a redirected POST would become a GET
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.status == 302 {
					w.Header().Set("Location", "/elsewhere")
				}
				w.WriteHeader(tt.status)
			}))
			defer srv.Close()
			err := notify.NewWebhook(notify.WebhookConfig{URL: srv.URL}).Send(context.Background(), orderCreated(1))
			if tt.status < 300 {
				if err != nil {
					t.Errorf("status %d: %v", tt.status, err)
				}
				return
			}
			var se *notify.StatusError
			if !errors.As(err, &se) || se.Code != tt.status || resilience.IsRetryable(err) != tt.retryable {
				t.Errorf("status %d: error %v (retryable %v), want StatusError retryable=%v", tt.status, err, resilience.IsRetryable(err), tt.retryable)
			}
		})
	}
}

func TestWebhookTransportErrors(t *testing.T) {
	// Nothing listens: connection refused is transient.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	err = notify.NewWebhook(notify.WebhookConfig{URL: "http://" + addr}).Send(context.Background(), orderCreated(1))
	if err == nil || !resilience.IsRetryable(err) {
		t.Errorf("connection refused: %v (retryable %v), want a retryable error", err, resilience.IsRetryable(err))
	}

	// A receiver that hangs: the caller's deadline ends the send, and the
	// error says so (the Notifier's timeout turns that into a retry).
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- notify.NewWebhook(notify.WebhookConfig{URL: srv.URL}).Send(ctx, orderCreated(1)) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) || resilience.IsRetryable(err) {
		t.Errorf("hanging receiver, caller cancelled: %v, want context.Canceled, not marked retryable", err)
	}
}

func TestNotifierWithWebhook(t *testing.T) {
	// A receiver that fails the first delivery of each notification: the
	// notifier retries it and every notification arrives.
	secret := []byte("s")
	seen := make(chan string, 10)
	var first = map[string]bool{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if !notify.Verify(secret, b, r.Header.Get(notify.SignatureHeader)) {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		id := r.Header.Get(notify.IDHeader)
		if !first[id] {
			first[id] = true // handlers run one at a time here: one worker
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		seen <- id
	}))
	defer srv.Close()
	n := notify.New(notify.NewWebhook(notify.WebhookConfig{URL: srv.URL, Secret: secret}), notify.Config{
		Workers: 1,
		Retry:   resilience.RetryConfig{BaseDelay: time.Millisecond},
	})
	start(t, n)
	for i := range 3 {
		n.Notify(orderCreated(i))
	}
	n.Close(context.Background())
	close(seen)
	var ids []string
	for id := range seen {
		ids = append(ids, id)
	}
	if s := n.Stats(); s.Sent != 3 || s.Retries != 3 || len(ids) != 3 {
		t.Errorf("received %v, stats %v; want 3 sent after 3 retries", ids, s)
	}
}

func TestLogProvider(t *testing.T) {
	var buf bytes.Buffer
	p := notify.NewLog(slog.New(slog.NewTextHandler(&buf, nil)))
	if err := p.Send(context.Background(), notify.Notification{ID: "order_created:o7", Kind: notify.KindOrderCreated, OrderID: "o7", UserID: 7}); err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); !strings.Contains(out, "order_id=o7") || !strings.Contains(out, "kind=order_created") {
		t.Errorf("log output %q", out)
	}
}
