// Package redislimit provides rate limiters shared by every Spike instance
// through Redis: token bucket (GCRA), leaky bucket (pacing), fixed-window
// counter, sliding-window counter and sliding-window log, keyed by a string
// such as a buyer, an IP or a sale.
//
// Each decision is one Lua script call (one round trip) that reads the clock
// with Redis TIME, so instances need no synchronised clocks. A limiter key's
// state lives in one Redis key under the hash tag {<prefix>:<name>:<key>}, so
// the scripts run unchanged on Redis Cluster, and every key has a TTL, so
// memory is bounded by the keys active within one window.
//
// When Redis fails or is slow, a [resilience.Breaker] stops calling it and
// the limiter decides locally, per key, at the configured rate divided by
// [Config.Instances]: the instances together then admit about what Redis
// would have admitted.
//
//	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}})
//	...
//	perBuyer := redislimit.New(client, redislimit.Config{
//		Name: "buyer", Algorithm: redislimit.TokenBucket, Rate: 5, Burst: 10, Instances: 4})
//	ok, retryAfter, err := perBuyer.AllowN(ctx, buyerID, 1)
package redislimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/spikehq/spike/resilience"
)

// Algorithm selects how a [Limiter] counts.
type Algorithm int

const (
	// TokenBucket refills Rate tokens per second up to Burst; each event
	// takes one. Implemented as GCRA: one key holding a timestamp.
	TokenBucket Algorithm = iota
	// LeakyBucket paces events exactly 1/Rate seconds apart with no burst.
	// Allow succeeds only if the next slot is free now; Wait books a slot at
	// most Burst slots ahead and sleeps until it.
	LeakyBucket
	// FixedWindow allows Limit events per Window, the window starting at the
	// key's first event. Cheapest; allows up to 2×Limit across a boundary.
	FixedWindow
	// SlidingWindow weights the previous epoch-aligned window's count by its
	// overlap with the sliding window: Limit per Window in constant memory,
	// approximately.
	SlidingWindow
	// SlidingLog keeps each event's time in a sorted set: exactly Limit per
	// any Window, in memory proportional to Limit per key.
	SlidingLog
)

var algorithmNames = [...]string{"token_bucket", "leaky_bucket", "fixed_window", "sliding_window", "sliding_log"}
var keySuffixes = [...]string{"tb", "lb", "fw", "sw", "sl"}

func (a Algorithm) String() string {
	if a < 0 || int(a) >= len(algorithmNames) {
		return "Algorithm(" + strconv.Itoa(int(a)) + ")"
	}
	return algorithmNames[a]
}

// DefaultPrefix starts every limiter's hash tag unless [Config.Prefix] is set.
const DefaultPrefix = "rl"

// Config configures a [Limiter]. Rate and Burst apply to the buckets, Limit
// and Window to the window algorithms; the others are ignored.
type Config struct {
	// Name identifies the limit ("buyer", "ip", "sale") in Redis keys;
	// limiters with the same Prefix, Name and Algorithm share their counts,
	// on any instance. Empty means "default".
	Name string
	// Prefix starts the hash tag of every key; empty means DefaultPrefix.
	Prefix string
	// Algorithm selects the algorithm; the zero value is TokenBucket.
	Algorithm Algorithm
	// Rate is the events per second of the buckets, across all instances.
	// Zero or negative denies everything; more than 1e6 allows everything.
	Rate float64
	// Burst is the TokenBucket size (zero means 1) or the LeakyBucket queue:
	// how many slots ahead Wait may book (zero: only a free slot now).
	Burst int
	// Limit is the most events per Window of the window algorithms, across
	// all instances. Zero or negative denies everything.
	Limit int
	// Window is the window length, rounded to milliseconds (at least 1 ms);
	// zero means one second.
	Window time.Duration
	// Instances is the number of instances sharing the limit: when Redis is
	// unavailable each decides locally at Rate/Instances (Burst and Limit
	// divided likewise, at least 1). Zero means 1.
	Instances int
	// Timeout bounds each Redis call (within the caller's deadline); zero
	// means 50ms. A timeout counts as a Redis failure.
	Timeout time.Duration
	// Breaker configures the breaker in front of Redis. Zero fields take
	// resilience's defaults except MinimumCalls (10) and OpenTimeout (2s);
	// errors from the caller's own context are never counted as failures.
	Breaker resilience.BreakerConfig
	// MaxKeys bounds the keys the local fallback remembers; zero means 65536.
	MaxKeys int
	// DisableFallback makes Redis failures errors instead of local decisions.
	DisableFallback bool
}

// Keyed is a rate limit over many keys, such as a distributed [Limiter].
type Keyed interface {
	// Allow reports whether one event for key may happen now, consuming it.
	Allow(ctx context.Context, key string) (bool, error)
	// AllowN reports whether n events for key may happen now, consuming
	// them if so; if not, retryAfter is how long until they might (negative:
	// never, n exceeds the capacity).
	AllowN(ctx context.Context, key string, n int) (ok bool, retryAfter time.Duration, err error)
}

var _ Keyed = (*Limiter)(nil)

// Stats are cumulative counters of a [Limiter], for metrics.
type Stats struct {
	Allowed     uint64 // decisions that allowed (by Redis or locally)
	Rejected    uint64 // decisions that rejected
	RedisCalls  uint64 // script calls made to Redis
	RedisErrors uint64 // script calls that failed or timed out
	Fallbacks   uint64 // decisions made locally: Redis failed or the breaker was open
	Breaker     resilience.State
}

// Limiter is a rate limiter shared through Redis, keyed by string. It is
// safe for concurrent use.
type Limiter struct {
	client    rueidis.Client
	alg       Algorithm
	tag       string // "{prefix:name:"
	suffix    string // "}:tb"
	instances int
	timeout   time.Duration
	maxKeys   int
	noFallbk  bool
	breaker   *resilience.Breaker
	script    *rueidis.Lua

	setMu  sync.Mutex // serialises SetRate and SetLimit
	params atomic.Pointer[params]

	nonce string
	seq   atomic.Uint64

	allowed, rejected, redisCalls, redisErrors, fallbacks atomic.Uint64
}

// params is one immutable setting of the limit, swapped whole by SetRate and
// SetLimit together with the local fallback built for it.
type params struct {
	rate      float64
	burst     int
	limit     int
	window    time.Duration
	deny      bool
	unlimited bool
	nArg      string // precomputed ARGV[3]
	arg4      string // precomputed ARGV[4]
	interval  int64  // µs per event, buckets
	local     *resilience.Keyed
}

// New returns a limiter on client configured by cfg.
func New(client rueidis.Client, cfg Config) *Limiter {
	if cfg.Name == "" {
		cfg.Name = "default"
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 50 * time.Millisecond
	}
	if cfg.Window <= 0 {
		cfg.Window = time.Second
	}
	if cfg.Window < time.Millisecond {
		cfg.Window = time.Millisecond
	}
	cfg.Window = cfg.Window.Truncate(time.Millisecond)
	bc := cfg.Breaker
	if bc.Name == "" {
		bc.Name = "redislimit:" + cfg.Name
	}
	if bc.MinimumCalls <= 0 {
		bc.MinimumCalls = 10
	}
	if bc.OpenTimeout <= 0 {
		bc.OpenTimeout = 2 * time.Second
	}
	isFailure := bc.IsFailure
	bc.IsFailure = func(err error) bool {
		if errors.Is(err, errCallerDone) {
			return false
		}
		if isFailure != nil {
			return isFailure(err)
		}
		return err != nil
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	alg := cfg.Algorithm
	if alg < 0 || int(alg) >= len(keySuffixes) {
		alg = TokenBucket
	}
	l := &Limiter{
		client:    client,
		alg:       alg,
		tag:       "{" + cfg.Prefix + ":" + cfg.Name + ":",
		suffix:    "}:" + keySuffixes[alg],
		instances: max(cfg.Instances, 1),
		timeout:   cfg.Timeout,
		maxKeys:   cfg.MaxKeys,
		noFallbk:  cfg.DisableFallback,
		breaker:   resilience.NewBreaker(bc),
		script:    [...]*rueidis.Lua{gcraScript, leakyScript, fixedScript, slidingScript, logScript}[alg],
		nonce:     hex.EncodeToString(b[:]),
	}
	l.params.Store(l.newParams(cfg.Rate, cfg.Burst, cfg.Limit, cfg.Window))
	return l
}

var errCallerDone = errors.New("redislimit: caller's context done")

func (l *Limiter) newParams(rate float64, burst, limit int, window time.Duration) *params {
	p := &params{rate: rate, burst: max(burst, 0), limit: limit, window: window}
	inst := l.instances
	switch l.alg {
	case TokenBucket, LeakyBucket:
		if l.alg == TokenBucket {
			p.burst = max(p.burst, 1)
		}
		switch {
		case math.IsNaN(rate) || rate <= 0:
			p.deny = true
		case rate > 1e6:
			p.unlimited = true
		default:
			p.interval = max(int64(math.Round(1e6/rate)), 1)
			p.nArg = strconv.FormatInt(p.interval, 10)
			p.arg4 = strconv.Itoa(p.burst)
		}
		localRate, localBurst := rate/float64(inst), max(p.burst/inst, 1)
		if l.alg == TokenBucket {
			p.local = resilience.NewKeyed(resilience.KeyedConfig{MaxKeys: l.maxKeys}, func(string) resilience.Limiter {
				return resilience.NewTokenBucket(resilience.TokenBucketConfig{Rate: localRate, Burst: localBurst})
			})
		} else {
			queue := p.burst / inst
			p.local = resilience.NewKeyed(resilience.KeyedConfig{MaxKeys: l.maxKeys}, func(string) resilience.Limiter {
				return resilience.NewLeakyBucket(resilience.LeakyBucketConfig{Rate: localRate, Queue: queue})
			})
		}
	default:
		p.deny = limit <= 0
		p.nArg = strconv.Itoa(limit)
		if l.alg == FixedWindow {
			p.arg4 = strconv.FormatInt(window.Milliseconds(), 10)
		} else {
			p.arg4 = strconv.FormatInt(window.Microseconds(), 10)
		}
		wc := resilience.WindowConfig{Limit: max(limit/inst, 1), Window: window}
		if limit <= 0 {
			wc.Limit = 0
		}
		newLocal := map[Algorithm]func(resilience.WindowConfig) resilience.Limiter{
			FixedWindow:   func(c resilience.WindowConfig) resilience.Limiter { return resilience.NewFixedWindow(c) },
			SlidingWindow: func(c resilience.WindowConfig) resilience.Limiter { return resilience.NewSlidingWindow(c) },
			SlidingLog:    func(c resilience.WindowConfig) resilience.Limiter { return resilience.NewSlidingLog(c) },
		}[l.alg]
		p.local = resilience.NewKeyed(resilience.KeyedConfig{MaxKeys: l.maxKeys}, func(string) resilience.Limiter {
			return newLocal(wc)
		})
	}
	return p
}

// SetRate changes the rate (events per second, across all instances) and
// burst of a bucket limiter; the window algorithms ignore it. The change
// applies to this instance's next call; other instances keep their own
// setting until they are told (Spike pushes limits to every instance through
// its switches). Keys keep their Redis state; the local fallback starts
// afresh. It is safe for concurrent use.
func (l *Limiter) SetRate(rate float64, burst int) {
	l.setMu.Lock()
	defer l.setMu.Unlock()
	p := l.params.Load()
	l.params.Store(l.newParams(rate, burst, p.limit, p.window))
}

// SetLimit changes the events per window (across all instances) of a window
// limiter; the buckets ignore it. See SetRate for when it applies. It is
// safe for concurrent use.
func (l *Limiter) SetLimit(limit int) {
	l.setMu.Lock()
	defer l.setMu.Unlock()
	p := l.params.Load()
	l.params.Store(l.newParams(p.rate, p.burst, limit, p.window))
}

// Key returns the Redis key holding key's state. Its hash tag is
// "{<prefix>:<name>:<key>", so all of one limiter key's state is in one
// Redis Cluster slot.
func (l *Limiter) Key(key string) string { return l.tag + key + l.suffix }

// Allow reports whether one event for key may happen now, consuming it if so.
func (l *Limiter) Allow(ctx context.Context, key string) (bool, error) {
	ok, _, err := l.AllowN(ctx, key, 1)
	return ok, err
}

// AllowN reports whether n events for key may happen now, consuming them if
// so. If not, retryAfter is how long until they might be allowed (negative:
// never, as n exceeds the burst or limit). n ≤ 0 is always allowed.
//
// If Redis fails, times out or its breaker is open, the decision is made
// locally (see [Config.Instances]) and err is nil. AllowN returns an error
// only if ctx is done before Redis answered (ctx.Err()) or, with
// DisableFallback, if Redis failed.
func (l *Limiter) AllowN(ctx context.Context, key string, n int) (ok bool, retryAfter time.Duration, err error) {
	p := l.params.Load()
	switch {
	case n <= 0 || p.unlimited:
		return true, 0, nil
	case p.deny:
		l.rejected.Add(1)
		return false, -1, nil
	}
	var arg4 string
	if l.alg == LeakyBucket {
		arg4 = "0"
	}
	ok, wait, local, err := l.call(ctx, p, key, n, false, arg4)
	if local {
		lim := p.local.Limiter(key)
		ok, wait = lim.AllowN(n), 0
		if !ok {
			wait = lim.Delay()
		}
	}
	if err != nil {
		return false, 0, err
	}
	if ok {
		l.allowed.Add(1)
		return true, 0, nil
	}
	l.rejected.Add(1)
	return false, wait, nil
}

// Delay returns how long until one event for key would be allowed: zero if
// now, negative if never. It consumes nothing; use it for Retry-After.
func (l *Limiter) Delay(ctx context.Context, key string) (time.Duration, error) {
	p := l.params.Load()
	switch {
	case p.unlimited:
		return 0, nil
	case p.deny:
		return -1, nil
	}
	var arg4 string
	if l.alg == LeakyBucket {
		arg4 = strconv.FormatInt(math.MaxInt32, 10)
	}
	ok, wait, local, err := l.call(ctx, p, key, 1, true, arg4)
	switch {
	case err != nil:
		return 0, err
	case local:
		return p.local.Delay(key), nil
	case l.alg == LeakyBucket || !ok:
		return wait, nil
	}
	return 0, nil
}

// Wait blocks until one event for key may happen and consumes it. It returns
// an error wrapping [resilience.ErrRateLimited] without waiting if the wait
// would pass ctx's deadline, can never succeed, or (LeakyBucket) the queue
// is full; and ctx.Err() if ctx is done first. The leaky bucket books its
// slot and sleeps, so waiters are served in order; the others retry after
// the delay Redis reports. A slot booked in Redis is not given back if ctx
// is cancelled during the sleep.
func (l *Limiter) Wait(ctx context.Context, key string) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := l.params.Load()
		if p.unlimited {
			return nil
		}
		if p.deny {
			return errNever
		}
		if l.alg == LeakyBucket {
			return l.waitLeaky(ctx, p, key)
		}
		ok, retry, err := l.AllowN(ctx, key, 1)
		switch {
		case err != nil:
			return err
		case ok:
			return nil
		case retry < 0:
			return errNever
		}
		if d, has := ctx.Deadline(); has && time.Until(d) < retry {
			return errPastDeadline
		}
		if err := sleep(ctx, retry); err != nil {
			return err
		}
	}
}

func (l *Limiter) waitLeaky(ctx context.Context, p *params, key string) error {
	maxAhead := int64(p.burst) * p.interval
	if d, has := ctx.Deadline(); has {
		maxAhead = min(maxAhead, time.Until(d).Microseconds())
	}
	ok, wait, local, err := l.call(ctx, p, key, 1, false, strconv.FormatInt(max(maxAhead, 0), 10))
	if local {
		err = p.local.Wait(ctx, key)
		if err == nil {
			l.allowed.Add(1)
		} else {
			l.rejected.Add(1)
		}
		return err
	}
	if err != nil {
		return err
	}
	if !ok {
		l.rejected.Add(1)
		return errQueueFull
	}
	l.allowed.Add(1)
	return sleep(ctx, wait)
}

var (
	errNever        = fmt.Errorf("%w: request exceeds limiter capacity", resilience.ErrRateLimited)
	errPastDeadline = fmt.Errorf("%w: wait would pass the context deadline", resilience.ErrRateLimited)
	errQueueFull    = fmt.Errorf("%w: leaky bucket queue full", resilience.ErrRateLimited)
)

// call runs the limiter's script for key. It reports local=true when the
// caller should decide locally instead (Redis failed or the breaker is
// open), err when it should give up.
func (l *Limiter) call(ctx context.Context, p *params, key string, n int, peek bool, arg4 string) (ok bool, wait time.Duration, local bool, err error) {
	permit, err := l.breaker.Acquire()
	if err != nil {
		return l.failed(err)
	}
	if arg4 == "" {
		arg4 = p.arg4
	}
	peekArg := "0"
	if peek {
		peekArg = "1"
	}
	args := []string{strconv.Itoa(n), peekArg, p.nArg, arg4}
	if l.alg == SlidingLog {
		args = append(args, l.nonce+strconv.FormatUint(l.seq.Add(1), 36))
	}
	cctx, cancel := context.WithTimeout(ctx, l.timeout)
	l.redisCalls.Add(1)
	reply, err := l.script.Exec(cctx, l.client, []string{l.Key(key)}, args).AsIntSlice()
	cancel()
	if err == nil && len(reply) < 2 {
		err = fmt.Errorf("unexpected reply %v", reply)
	}
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			permit.Record(errCallerDone)
			return false, 0, false, cerr
		}
		permit.Record(err)
		l.redisErrors.Add(1)
		return l.failed(fmt.Errorf("redislimit %s: %w", l.tag[1:], err))
	}
	permit.Record(nil)
	return reply[0] == 1, time.Duration(reply[1]) * time.Microsecond, false, nil
}

func (l *Limiter) failed(err error) (bool, time.Duration, bool, error) {
	if l.noFallbk {
		return false, 0, false, err
	}
	l.fallbacks.Add(1)
	return false, 0, true, nil
}

// Stats returns the limiter's counters.
func (l *Limiter) Stats() Stats {
	return Stats{
		Allowed:     l.allowed.Load(),
		Rejected:    l.rejected.Load(),
		RedisCalls:  l.redisCalls.Load(),
		RedisErrors: l.redisErrors.Load(),
		Fallbacks:   l.fallbacks.Load(),
		Breaker:     l.breaker.State(),
	}
}

// Breaker returns the breaker in front of Redis, to force it open or closed
// or to read its counts.
func (l *Limiter) Breaker() *resilience.Breaker { return l.breaker }

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
