// Package sandboxpay is "sandbox", Spike's embedded payment provider: a
// simulated gateway that behaves like a real one. Create answers a checkout
// URL on Spike's own server (served by Gateway.Handler) where a person
// presses "pay" or "fail", or a program POSTs {"outcome": ...}; the gateway
// then confirms through a signed webhook POSTed to Spike over HTTP, retried
// with backoff until answered 2xx, sometimes duplicated or delivered out of
// order (Config's rates), exactly what a real provider does.
//
// # Clusters and restarts
//
// The gateway shares no state between instances and keeps none across a
// restart; instead a payment's ref (and so its checkout URL) describes the
// payment itself and is signed:
//
//	ref = "sbx_" + base64url(paymentID "|" amountCents "|" createdUnix) + "." + base64url(MAC)
//
// where MAC is the first 16 bytes of HMAC-SHA256 under Config.Secret (with
// a domain prefix that keeps it apart from the webhook signatures). Every
// instance that shares Config.Secret therefore accepts every other's refs:
// the checkout page of a payment works on whichever instance the buyer's
// request reaches, and that instance queues and delivers the webhook
// itself (Run). A ref with a bad MAC is unknown (404, spike.ErrNotFound).
// Create is deterministic (idempotent by payment id on every instance).
// Refs are URL-safe and at most 200 characters (payment ids at most 64).
//
// What an instance decides it remembers in memory (Config.Records), to
// answer 409 when the same instance is asked for the other outcome.
// Nothing depends on it: an instance that does not remember a payment
// (another instance decided it, or this one restarted) shows its page as
// still open and accepts either outcome, and Spike's payment.Service
// sorts it out, since it moves a payment forward only (compare-and-set):
// a "failed" pressed after a "succeeded" (on another instance) is delivered
// and ignored (the payment stays succeeded, the order paid); a "succeeded"
// after a "failed" is applied (failed → succeeded is a buyer's second
// attempt, allowed for every provider), so the order becomes paid. A real
// gateway would refuse the second press; the simulator cannot know of it
// without shared state, and accepts that.
//
// For the same reason Status of a payment this instance has not decided is
// requires_action (the simulator cannot know; the webhook from the
// instance that decided it is what moves the payment), and Refund succeeds
// for any payment whose ref verifies, whatever this instance remembers,
// with a refund ref derived from the payment id ("sbr_" + id), the same on
// every instance. Webhooks queued and not yet delivered are lost when their
// instance stops; the buyer can press again (the page is open again).
package sandboxpay

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	randv2 "math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/domain/payment"
)

// Name is the provider's name.
const Name = "sandbox"

// Config configures a Gateway. Zero values are usable except WebhookURL
// and CheckoutBase, which Spike's server knows.
type Config struct {
	// Secret signs the webhooks (and verifies them in VerifyWebhook) and
	// the refs. Every instance of a cluster must have the same one. Zero:
	// a random secret, good only for a single Gateway that is also the
	// verifier and is never restarted.
	Secret []byte
	// WebhookURL receives the webhooks: Spike's own POST /v1/payments/webhooks/sandbox.
	WebhookURL string
	// CheckoutBase is the URL prefix of the checkout page on Spike's
	// server; a payment's checkout URL is CheckoutBase + "/" + ref.
	CheckoutBase string
	// Latency delays every provider call (Create, Refund, Status).
	Latency time.Duration
	// FailureRate is the probability (0–1) that a provider call fails as
	// if the gateway could not be reached.
	FailureRate float64
	// DuplicateRate is the probability that an outcome's webhook is
	// delivered twice (the copy after the original was answered).
	DuplicateRate float64
	// ReorderRate is the probability that a stale "processing" webhook,
	// timestamped before the outcome, is delivered after the outcome's.
	ReorderRate float64
	// HTTPClient delivers the webhooks. Zero: a client of its own that
	// does not follow redirects.
	HTTPClient *http.Client
	// QueueSize bounds the webhook deliveries not yet answered 2xx
	// (queued, being sent, or waiting to be retried); an outcome that
	// would exceed it is refused with 503. Zero: 1024.
	QueueSize int
	// Workers is how many deliveries are sent at once. Zero: 2.
	Workers int
	// RetryMin and RetryMax bound the backoff between attempts of a
	// delivery (doubling, jittered). Zero: 100ms and 30s.
	RetryMin, RetryMax time.Duration
	// AttemptTimeout bounds one delivery attempt. Zero: 10s.
	AttemptTimeout time.Duration
	// MaxAttempts drops a delivery after that many failed attempts.
	// Zero: retry until answered (while Run runs).
	MaxAttempts int
	// Records bounds the outcomes this Gateway remembers (for the 409 of
	// a second, different outcome); the oldest are forgotten first.
	// Forgetting one changes nothing else (see the package doc). Zero: 100000.
	Records int
	// Now is the clock. Zero: time.Now.
	Now func() time.Time
	// Logger receives failed deliveries. Zero: discard.
	Logger *slog.Logger
}

// event is the webhook body.
type event struct {
	ID     string         `json:"id"`
	Ref    string         `json:"ref"`
	Status payment.Status `json:"status"`
	At     time.Time      `json:"at"`
}

type delivery struct {
	ev      event
	attempt int
	due     time.Time
	then    []*delivery // enqueued once ev is answered 2xx
}

// Gateway is the simulated gateway; it implements payment.Provider. Its
// webhook deliveries are background work owned by Run.
type Gateway struct {
	cfg     Config
	client  *http.Client
	now     func() time.Time
	log     *slog.Logger
	queue   chan *delivery
	wake    chan struct{}
	running atomic.Bool

	mu       sync.Mutex
	decided  map[string]payment.Status // payment id -> outcome decided here
	fifo     []string                  // decided's keys, oldest first
	inflight int                       // deliveries admitted and not yet answered or dropped
	retries  []*delivery               // waiting for their due time
}

var _ payment.Provider = (*Gateway)(nil)

// New returns a Gateway. Start its deliveries with Run.
func New(cfg Config) *Gateway {
	if len(cfg.Secret) == 0 {
		cfg.Secret = make([]byte, 32)
		_, _ = rand.Read(cfg.Secret)
	}
	cfg.CheckoutBase = strings.TrimRight(cfg.CheckoutBase, "/")
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 1024
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 100 * time.Millisecond
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 30 * time.Second
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = cfg.RetryMin
	}
	if cfg.Records <= 0 {
		cfg.Records = 100_000
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = 10 * time.Second
	}
	g := &Gateway{cfg: cfg, client: cfg.HTTPClient, now: cfg.Now, log: cfg.Logger,
		queue: make(chan *delivery, cfg.QueueSize), wake: make(chan struct{}, 1),
		decided: map[string]payment.Status{}}
	if g.client == nil {
		g.client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if g.now == nil {
		g.now = time.Now
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	return g
}

// Name implements payment.Provider.
func (g *Gateway) Name() string { return Name }

func randomID(prefix string) string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func roll(rate float64) bool { return rate > 0 && randv2.Float64() < rate }

// call simulates the network: Latency, then a failure at FailureRate.
func (g *Gateway) call(ctx context.Context) error {
	if g.cfg.Latency > 0 {
		t := time.NewTimer(g.cfg.Latency)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	if roll(g.cfg.FailureRate) {
		return spike.Errorf(spike.ErrUnavailable, "sandbox: simulated gateway failure")
	}
	return nil
}

// Create implements payment.Provider: the ref is made from p.ID,
// p.AmountCents and p.CreatedAt (Unix seconds, 0 if zero) and signed, so
// Create is idempotent by p.ID on every instance sharing the secret. The
// id must be 1–64 bytes.
func (g *Gateway) Create(ctx context.Context, p payment.Payment) (string, string, payment.Status, error) {
	if err := g.call(ctx); err != nil {
		return "", "", "", err
	}
	if p.ID == "" || len(p.ID) > MaxPaymentID || p.AmountCents <= 0 {
		return "", "", "", spike.Errorf(spike.ErrInvalid, "sandbox: payment needs an id of 1-%d bytes and a positive amount", MaxPaymentID)
	}
	var created int64
	if !p.CreatedAt.IsZero() {
		created = p.CreatedAt.Unix()
	}
	ref := g.makeRef(refInfo{paymentID: p.ID, amountCents: p.AmountCents, created: created})
	return ref, g.CheckoutURL(ref), g.status(p.ID), nil
}

// CheckoutURL is the checkout page of ref.
func (g *Gateway) CheckoutURL(ref string) string { return g.cfg.CheckoutBase + "/" + ref }

// status is the outcome decided here, or requires_action.
func (g *Gateway) status(paymentID string) payment.Status {
	g.mu.Lock()
	defer g.mu.Unlock()
	if st, ok := g.decided[paymentID]; ok {
		return st
	}
	return payment.RequiresAction
}

// paymentID identifies p: by its ref, which must verify (and name p.ID
// when p has one), or by p.ID when it has no ref yet.
func (g *Gateway) paymentID(p payment.Payment) (string, error) {
	if p.ProviderRef == "" {
		if p.ID == "" {
			return "", spike.Errorf(spike.ErrInvalid, "sandbox: payment has neither a ref nor an id")
		}
		return p.ID, nil
	}
	in, ok := g.parseRef(p.ProviderRef)
	if !ok || (p.ID != "" && p.ID != in.paymentID) {
		return "", spike.Errorf(spike.ErrNotFound, "sandbox: unknown payment (ref not signed with this gateway's secret, or of another payment)")
	}
	return in.paymentID, nil
}

// Refund implements payment.Provider: idempotent by payment id, and the
// same on every instance: the refund ref is "sbr_" + the payment id. It
// succeeds for any payment whose ref verifies, whatever this instance
// remembers (another instance may have taken the success; Spike refunds
// only the payments it holds succeeded).
func (g *Gateway) Refund(ctx context.Context, p payment.Payment) (string, error) {
	if err := g.call(ctx); err != nil {
		return "", err
	}
	id, err := g.paymentID(p)
	if err != nil {
		return "", err
	}
	return "sbr_" + id, nil
}

// Status implements payment.Provider: the outcome decided on this
// instance, else requires_action (the simulator cannot know an outcome
// decided on another instance or before a restart; that instance's webhook
// is what moves the payment). A ref that does not verify is
// spike.ErrNotFound.
func (g *Gateway) Status(ctx context.Context, p payment.Payment) (payment.Status, error) {
	if err := g.call(ctx); err != nil {
		return "", err
	}
	id, err := g.paymentID(p)
	if err != nil {
		return "", err
	}
	return g.status(id), nil
}

// VerifyWebhook implements payment.Provider.
func (g *Gateway) VerifyWebhook(h http.Header, body []byte, now time.Time) (payment.WebhookEvent, error) {
	if err := payment.Verify(g.cfg.Secret, h.Get(payment.SignatureHeader), body, now, 0); err != nil {
		return payment.WebhookEvent{}, err
	}
	var ev event
	if err := json.Unmarshal(body, &ev); err != nil || ev.Ref == "" || !ev.Status.Valid() {
		return payment.WebhookEvent{}, spike.Errorf(spike.ErrInvalid, "malformed sandbox webhook")
	}
	return payment.WebhookEvent{ID: ev.ID, Ref: ev.Ref, Status: ev.Status, At: ev.At}, nil
}

var (
	errUnknownRef = errors.New("unknown payment")
	errDecided    = errors.New("payment already decided")
	errBusy       = errors.New("webhook queue full")
)

// Decide records the buyer's outcome (succeeded or failed) for ref and
// queues its webhooks, on this instance: ref may come from any instance
// sharing the secret (a ref that does not verify is unknown). Deciding the
// outcome this instance remembers again does nothing; the other one is an
// error, as is an outcome the queue has no room for (nothing changes then).
// An instance that does not remember the payment accepts either outcome
// (see the package doc).
func (g *Gateway) Decide(ref string, outcome payment.Status) (payment.Status, error) {
	if outcome != payment.Succeeded && outcome != payment.Failed {
		return "", fmt.Errorf("sandbox: outcome must be succeeded or failed")
	}
	in, ok := g.parseRef(ref)
	if !ok {
		return "", errUnknownRef
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if st, ok := g.decided[in.paymentID]; ok {
		if st == outcome {
			return st, nil
		}
		return st, errDecided
	}
	now := g.now()
	first := &delivery{ev: event{ID: randomID("evt_"), Ref: ref, Status: outcome, At: now}}
	if roll(g.cfg.DuplicateRate) {
		first.then = append(first.then, &delivery{ev: first.ev})
	}
	if roll(g.cfg.ReorderRate) {
		// The "processing" the gateway passed through, arriving late.
		first.then = append(first.then, &delivery{ev: event{ID: randomID("evt_"), Ref: ref, Status: payment.Processing, At: now.Add(-time.Millisecond)}})
	}
	n := 1 + len(first.then)
	if g.inflight+n > g.cfg.QueueSize {
		return payment.RequiresAction, errBusy
	}
	g.inflight += n
	g.remember(in.paymentID, outcome)
	g.queue <- first // room: len(queue) <= inflight <= QueueSize
	return outcome, nil
}

// remember records a decided outcome, forgetting the oldest beyond
// Config.Records. Called with g.mu held.
func (g *Gateway) remember(paymentID string, st payment.Status) {
	g.decided[paymentID] = st
	g.fifo = append(g.fifo, paymentID)
	for len(g.fifo) > g.cfg.Records {
		delete(g.decided, g.fifo[0])
		g.fifo[0] = ""
		g.fifo = g.fifo[1:]
	}
}

// Pending returns how many webhook deliveries are not yet answered 2xx.
func (g *Gateway) Pending() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inflight
}

// Run delivers the queued webhooks until ctx is done, with Workers
// concurrent deliveries, and returns once none of its goroutines is left.
// Deliveries not yet answered stay queued for a later Run. Only one Run at
// a time.
func (g *Gateway) Run(ctx context.Context) error {
	if !g.running.CompareAndSwap(false, true) {
		return errors.New("sandboxpay: Run is already running")
	}
	defer g.running.Store(false)
	var wg sync.WaitGroup
	for range g.cfg.Workers {
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case d := <-g.queue:
					g.deliver(ctx, d)
				}
			}
		})
	}
	wg.Go(func() { g.schedule(ctx) })
	wg.Wait()
	return nil
}

// schedule moves retries into the queue when they are due.
func (g *Gateway) schedule(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		g.mu.Lock()
		now := g.now()
		next := time.Duration(-1)
		keep := g.retries[:0]
		for _, d := range g.retries {
			if wait := d.due.Sub(now); wait <= 0 {
				g.queue <- d // room: see Decide
			} else {
				keep = append(keep, d)
				if next < 0 || wait < next {
					next = wait
				}
			}
		}
		clear(g.retries[len(keep):])
		g.retries = keep
		g.mu.Unlock()
		if next < 0 {
			next = time.Hour
		}
		t.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-g.wake:
		case <-t.C:
		}
	}
}

func (g *Gateway) retry(d *delivery, wait time.Duration) {
	g.mu.Lock()
	d.due = g.now().Add(wait)
	g.retries = append(g.retries, d)
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
}

func (g *Gateway) backoff(attempt int) time.Duration {
	d := g.cfg.RetryMin
	for i := 1; i < attempt && d < g.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, g.cfg.RetryMax)
	return d/2 + time.Duration(randv2.Int64N(int64(d/2)+1))
}

func (g *Gateway) deliver(ctx context.Context, d *delivery) {
	err := g.post(ctx, d.ev)
	if err == nil {
		g.mu.Lock()
		g.inflight--
		for _, next := range d.then {
			g.queue <- next // reserved in Decide
		}
		g.mu.Unlock()
		return
	}
	if ctx.Err() != nil {
		g.retry(d, 0) // stopped, not failed: the next Run sends it
		return
	}
	d.attempt++
	if g.cfg.MaxAttempts > 0 && d.attempt >= g.cfg.MaxAttempts {
		g.log.Error("sandbox webhook dropped", "event", d.ev.ID, "ref", d.ev.Ref, "attempts", d.attempt, "err", err)
		g.mu.Lock()
		g.inflight -= 1 + len(d.then)
		g.mu.Unlock()
		return
	}
	wait := g.backoff(d.attempt)
	g.log.Warn("sandbox webhook failed; retrying", "event", d.ev.ID, "ref", d.ev.Ref, "attempt", d.attempt, "in", wait, "err", err)
	g.retry(d, wait)
}

func (g *Gateway) post(ctx context.Context, ev event) error {
	body, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, g.cfg.AttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.cfg.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "spike-sandboxpay")
	req.Header.Set(payment.SignatureHeader, payment.Sign(g.cfg.Secret, g.now(), body))
	resp, err := g.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("webhook answered %d", resp.StatusCode)
	}
	return nil
}
