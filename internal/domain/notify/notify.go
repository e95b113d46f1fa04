package notify

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spikehq/spike/resilience"
)

// Kind is what a notification is about.
type Kind string

// Kinds of notifications.
const (
	// KindOrderCreated is sent once an order is persisted (status created).
	KindOrderCreated Kind = "order_created"
	// After the 202: one per transition of the order's state machine.
	KindOrderPaid      Kind = "order_paid"
	KindOrderCancelled Kind = "order_cancelled"
	KindOrderShipped   Kind = "order_shipped"
	KindOrderDelivered Kind = "order_delivered"
	KindOrderRefunded  Kind = "order_refunded"
)

// Version is the schema version of [Notification] as sent to receivers.
// Fields are only ever added; receivers ignore fields they do not know.
const Version = 1

// Notification is one message to a buyer about an order. It is what a
// [Provider] delivers; Webhook sends it as JSON.
type Notification struct {
	V int `json:"v"` // schema version; Notify sets Version when zero
	// ID identifies the notification for deduplication: receivers may get
	// the same one more than once. Notify sets it to "<kind>:<order id>"
	// when empty.
	ID          string    `json:"id"`
	Kind        Kind      `json:"kind"`
	OrderID     string    `json:"order_id"`
	UserID      int64     `json:"user_id"`
	SaleID      string    `json:"sale_id,omitempty"`
	SKU         string    `json:"sku,omitempty"`
	Quantity    int64     `json:"quantity,omitempty"`
	AmountCents int64     `json:"amount_cents,omitempty"`
	At          time.Time `json:"at"` // when it happened (for order_created: the placement time)
}

// Provider delivers notifications (an SMS or e-mail gateway, a webhook).
// Send must honour ctx's deadline. It marks transient failures that are
// safe to retry with [resilience.Retryable]; other errors are final.
// A Provider must be safe for concurrent use.
type Provider interface {
	Send(ctx context.Context, n Notification) error
}

// Reason is why a notification was dropped without being sent.
type Reason int

// Reasons for dropping a notification.
const (
	PoolFull    Reason = iota // every worker busy and the queue full
	SwitchOff                 // the notifications switch is off
	BreakerOpen               // the provider's circuit breaker is open
	Shutdown                  // the notifier is closing or closed
	numReasons
)

// Reasons lists every Reason, for metrics.
var Reasons = []Reason{PoolFull, SwitchOff, BreakerOpen, Shutdown}

// String returns the reason as a metric label: pool_full, switch_off,
// breaker_open or shutdown.
func (r Reason) String() string {
	switch r {
	case PoolFull:
		return "pool_full"
	case SwitchOff:
		return "switch_off"
	case BreakerOpen:
		return "breaker_open"
	case Shutdown:
		return "shutdown"
	}
	return "unknown"
}

// ErrSwitchedOff is returned by [Notifier.Notify] while the notifications
// switch is off.
var ErrSwitchedOff = errors.New("notify: notifications are switched off")

// Config configures a [Notifier]. The zero value is valid.
type Config struct {
	// Workers is the number of sends in flight at most; default 4.
	Workers int
	// Queue is how many notifications may wait for a worker; beyond it
	// they are dropped (PoolFull). Default 4096; negative means none wait.
	Queue int
	// Timeout bounds each attempt to send; default 5s.
	Timeout time.Duration
	// Enabled reports whether notifications may be sent (the
	// notifications switch). It is checked when a notification is queued
	// and again before it is sent. Nil means always.
	Enabled func() bool
	// Breaker configures the provider's circuit breaker; zero fields take
	// resilience's defaults (count window of 100 calls, opens at 50%
	// failures after 20, open 30s). Name defaults to "notifications".
	Breaker resilience.BreakerConfig
	// Retry configures retries of a failed send. Only errors marked
	// [resilience.Retryable] and attempts that hit Timeout are retried.
	// Zero fields take resilience's defaults (3 attempts, full jitter from
	// 50ms to 1s); MaxElapsed defaults to 3×Timeout; RetryIf is replaced.
	// Budget defaults to a new [resilience.RetryBudget] shared by every
	// send of this notifier, so in an outage retries add ~10% load.
	Retry resilience.RetryConfig
	// Logger receives failed sends at debug level; nil discards them.
	// Outcomes are counted in [Stats] either way.
	Logger *slog.Logger
}

// Notifier sends notifications asynchronously through a Provider, as
// non-core work that can never slow its callers. Notify queues; the
// workers of [Notifier.Run], which its owner starts and waits for, send.
// It is safe for concurrent use.
type Notifier struct {
	provider Provider
	enabled  func() bool
	breaker  *resilience.Breaker
	budget   *resilience.RetryBudget
	policy   resilience.Policy
	log      *slog.Logger
	workers  int

	mu        sync.RWMutex // guards closed against Notify racing Close
	closed    bool         // queue is closed: Notify refuses
	queue     chan Notification
	running   bool               // Run has started
	abandoned bool               // Close stopped waiting for Run
	stop      context.CancelFunc // Run's: cancels the sends in flight
	done      chan struct{}      // closed when Run returns

	sent, failed, retries atomic.Uint64
	dropped               [numReasons]atomic.Uint64
}

// New returns a Notifier sending through p. It starts nothing: the caller
// runs [Notifier.Run] (its workers) and stops it with Close.
func New(p Provider, cfg Config) *Notifier {
	if cfg.Workers <= 0 {
		cfg.Workers = 4
	}
	if cfg.Queue == 0 {
		cfg.Queue = 4096
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Enabled == nil {
		cfg.Enabled = func() bool { return true }
	}
	if cfg.Breaker.Name == "" {
		cfg.Breaker.Name = "notifications"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	n := &Notifier{provider: p, enabled: cfg.Enabled, log: cfg.Logger, workers: cfg.Workers,
		queue: make(chan Notification, max(cfg.Queue, 0)), done: make(chan struct{})}
	n.breaker = resilience.NewBreaker(cfg.Breaker)

	rc := cfg.Retry
	if rc.MaxElapsed <= 0 {
		rc.MaxElapsed = 3 * cfg.Timeout
	}
	if rc.Budget == nil {
		rc.Budget = resilience.NewRetryBudget(resilience.RetryBudgetConfig{})
	}
	n.budget = rc.Budget
	rc.RetryIf = func(err error) bool {
		return resilience.IsRetryable(err) || errors.Is(err, resilience.ErrTimeout)
	}
	onRetry := rc.OnRetry
	rc.OnRetry = func(attempt int, err error, delay time.Duration) {
		n.retries.Add(1)
		if onRetry != nil {
			onRetry(attempt, err, delay)
		}
	}
	// Retry outermost: each attempt asks the breaker and gets its own
	// timeout; an open breaker's refusal is not retried.
	n.policy = resilience.Chain(resilience.NewRetry(rc), n.breaker, resilience.NewTimeout(cfg.Timeout))
	return n
}

// Run sends queued notifications with Config.Workers workers until Close
// (after the queue has drained) or until ctx is done (sends in flight are
// cancelled, the rest dropped and counted as Shutdown); it returns when
// its workers have stopped. Call it once; Notify refuses after it returns.
// Without Run nothing is sent, and Close waits for it until its ctx is done.
func (n *Notifier) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n.mu.Lock()
	if n.running {
		n.mu.Unlock()
		return errors.New("notify: Run called twice")
	}
	if n.abandoned {
		n.mu.Unlock()
		return nil // Close gave up before Run started, and dropped the queue
	}
	n.running, n.stop = true, cancel
	n.mu.Unlock()
	defer close(n.done)

	var wg sync.WaitGroup
	for range n.workers {
		wg.Go(func() {
			for {
				select {
				case msg, ok := <-n.queue:
					if !ok {
						return // closed and drained
					}
					n.send(ctx, msg)
				case <-ctx.Done():
					return
				}
			}
		})
	}
	wg.Wait()
	// Stopped by ctx: accept nothing more and drop what still waits.
	n.closeQueue()
	for range n.queue {
		n.dropped[Shutdown].Add(1)
	}
	// A provider's keep-alive connections (a Webhook's) hold goroutines
	// of their own: nothing will use them again.
	if c, ok := n.provider.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
	return nil
}

// closeQueue makes Notify refuse and lets the workers drain the queue.
func (n *Notifier) closeQueue() {
	n.mu.Lock()
	if !n.closed {
		n.closed = true
		close(n.queue)
	}
	n.mu.Unlock()
}

// Notify queues msg to be sent and returns at once; it never blocks. It
// returns nil if msg was queued, ErrSwitchedOff if the notifications switch
// is off, resilience.ErrBulkheadFull if the queue is full and
// resilience.ErrClosed after Close; in those cases msg is dropped and
// counted. The outcome of the send itself is only counted (see Stats):
// delivery is at most once.
func (n *Notifier) Notify(msg Notification) error {
	if !n.enabled() {
		n.dropped[SwitchOff].Add(1)
		return ErrSwitchedOff
	}
	if msg.V == 0 {
		msg.V = Version
	}
	if msg.ID == "" {
		msg.ID = string(msg.Kind) + ":" + msg.OrderID
	}
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.closed {
		n.dropped[Shutdown].Add(1)
		return resilience.ErrClosed
	}
	select {
	case n.queue <- msg:
		return nil
	default:
		n.dropped[PoolFull].Add(1)
		return resilience.ErrBulkheadFull
	}
}

// send runs on one of Run's workers.
func (n *Notifier) send(ctx context.Context, msg Notification) {
	if ctx.Err() != nil {
		n.dropped[Shutdown].Add(1)
		return
	}
	if !n.enabled() { // switched off while it waited
		n.dropped[SwitchOff].Add(1)
		return
	}
	err := n.policy.Do(ctx, func(ctx context.Context) error { return n.provider.Send(ctx, msg) })
	switch {
	case err == nil:
		n.sent.Add(1)
	case errors.Is(err, resilience.ErrBreakerOpen):
		n.dropped[BreakerOpen].Add(1)
	case ctx.Err() != nil:
		n.dropped[Shutdown].Add(1)
	default:
		n.failed.Add(1)
		n.log.Debug("notification failed", "id", msg.ID, "err", err)
	}
}

// Close stops accepting notifications and waits for Run to send the
// queued ones and return. If ctx is done first, sends in flight are
// cancelled and the rest are dropped (counted as Shutdown); Close then
// returns once Run has (a Run not yet started then returns at once). It is
// safe to call more than once.
func (n *Notifier) Close(ctx context.Context) {
	n.closeQueue()
	select {
	case <-n.done:
		return
	case <-ctx.Done():
	}
	n.mu.Lock()
	n.abandoned = true
	running, stop := n.running, n.stop
	n.mu.Unlock()
	if running {
		stop()
		<-n.done
		return
	}
	for range n.queue {
		n.dropped[Shutdown].Add(1)
	}
}

// Stats are a Notifier's counters, cumulative since New, for metrics.
type Stats struct {
	Sent    uint64             // delivered
	Failed  uint64             // attempted, and failed after any retries
	Dropped [numReasons]uint64 // never attempted (or cut short), by Reason
	Retries uint64             // retries made
	Refused uint64             // retries the retry budget refused
	Queued  int                // waiting for a worker now
	Breaker resilience.State   // the provider's circuit breaker
}

// Breaker returns the provider's circuit breaker, for operators'
// overrides (Stats reports its state).
func (n *Notifier) Breaker() *resilience.Breaker { return n.breaker }

// Stats returns the current counters.
func (n *Notifier) Stats() Stats {
	s := Stats{
		Sent:    n.sent.Load(),
		Failed:  n.failed.Load(),
		Retries: n.retries.Load(),
		Refused: n.budget.Refused(),
		Queued:  len(n.queue),
		Breaker: n.breaker.State(),
	}
	for i := range s.Dropped {
		s.Dropped[i] = n.dropped[i].Load()
	}
	return s
}

// DroppedFor returns how many notifications were dropped for reason r.
func (s Stats) DroppedFor(r Reason) uint64 {
	if r < 0 || r >= numReasons {
		return 0
	}
	return s.Dropped[r]
}

// String summarises the counters, for logs.
func (s Stats) String() string {
	return fmt.Sprintf("sent=%d failed=%d dropped[pool_full=%d switch_off=%d breaker_open=%d shutdown=%d] retries=%d breaker=%s",
		s.Sent, s.Failed, s.Dropped[PoolFull], s.Dropped[SwitchOff], s.Dropped[BreakerOpen], s.Dropped[Shutdown], s.Retries, s.Breaker)
}
