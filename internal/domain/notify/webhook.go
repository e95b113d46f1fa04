package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spikehq/spike/resilience"
)

// Headers of a webhook request.
const (
	// SignatureHeader carries "sha256=" and the hex HMAC-SHA256 of the
	// request body under the shared secret; see [Verify].
	SignatureHeader = "X-Spike-Signature"
	// IDHeader carries [Notification.ID], for deduplication.
	IDHeader = "X-Spike-Notification-Id"
)

// WebhookConfig configures a [Webhook].
type WebhookConfig struct {
	// URL receives a POST per notification.
	URL string
	// Secret signs each body (see SignatureHeader). If empty, requests
	// are unsigned.
	Secret []byte
	// Client sends the requests; nil means a client of its own that
	// does not follow redirects. Deadlines come from Send's context.
	Client *http.Client
}

// Webhook is a [Provider] that POSTs each notification as JSON to a URL.
// A 2xx answer is success. Connection errors, timeouts, 5xx, 408 and 429
// are transient (marked [resilience.Retryable]); any other answer is final.
// It is safe for concurrent use.
type Webhook struct {
	url    string
	secret []byte
	client *http.Client
}

// NewWebhook returns a Webhook provider.
func NewWebhook(cfg WebhookConfig) *Webhook {
	c := cfg.Client
	if c == nil {
		c = &http.Client{
			Transport: &http.Transport{
				Proxy:               http.ProxyFromEnvironment,
				MaxIdleConnsPerHost: 16,
				IdleConnTimeout:     90 * time.Second,
			},
			// A redirected POST would become a GET: treat it as an answer.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return &Webhook{url: cfg.URL, secret: cfg.Secret, client: c}
}

// CloseIdleConnections closes the client's idle keep-alive connections
// (and so their goroutines); the Notifier's Run calls it when it stops.
func (w *Webhook) CloseIdleConnections() { w.client.CloseIdleConnections() }

// StatusError is a webhook answer other than 2xx.
type StatusError struct {
	Code int
}

func (e *StatusError) Error() string { return fmt.Sprintf("webhook answered %d", e.Code) }

// Send implements [Provider].
func (w *Webhook) Send(ctx context.Context, n Notification) error {
	body, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("encode notification %s: %w", n.ID, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "spike-notify/1")
	req.Header.Set(IDHeader, n.ID)
	if len(w.secret) > 0 {
		req.Header.Set(SignatureHeader, Sign(w.secret, body))
	}
	resp, err := w.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("webhook: %w", ctx.Err()) // the caller's timeout decides
		}
		return resilience.Retryable(fmt.Errorf("webhook: %w", err))
	}
	// Drain a little so the connection can be reused.
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return nil
	case c >= 500, c == http.StatusRequestTimeout, c == http.StatusTooManyRequests:
		return resilience.Retryable(&StatusError{Code: c})
	default:
		return &StatusError{Code: c}
	}
}

// Sign returns the SignatureHeader value for body under secret:
// "sha256=" followed by the hex HMAC-SHA256.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// Verify reports whether header is a valid SignatureHeader for body under
// secret, comparing in constant time. Receivers written in Go can use it.
func Verify(secret, body []byte, header string) bool {
	got, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	sum, err := hex.DecodeString(got)
	if err != nil {
		return false
	}
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return hmac.Equal(sum, m.Sum(nil))
}
