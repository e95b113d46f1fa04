package payment

import (
	"context"
	"sync"
	"time"
)

// Defaults of the reconciliation sweep (RunReconciler).
const (
	DefaultReconcileInterval = time.Minute
	DefaultReconcileAfter    = 5 * time.Minute
	DefaultReconcileHorizon  = 24 * time.Hour
)

const (
	reconcilePage = 256    // payments read per Store.Payments call
	maxRetries    = 10_000 // failed Reconciles remembered for the next sweep
)

// sweeper is the state of the reconciliation sweeps of one Service.
type sweeper struct {
	mu      sync.Mutex // one sweep at a time
	low     string     // every payment with an id <= low is past the horizon
	last    time.Time  // when the last complete sweep started; zero: none yet
	retries map[string]struct{}
}

// RunReconciler sweeps for stuck payments every interval (<= 0:
// DefaultReconcileInterval) until ctx is done, then returns nil; see
// ReconcileStuck. The first sweep is one interval after the start. Errors
// are logged and the next sweep tries again. Every instance may run one:
// concurrent Reconciles of one payment are harmless (compare-and-set), they
// only cost provider calls.
func (s *Service) RunReconciler(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = DefaultReconcileInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if n, err := s.ReconcileStuck(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("payment reconciliation sweep failed; next one retries", "reconciled", n, "err", err)
		}
	}
}

// ReconcileStuck is one reconciliation sweep: it asks the provider
// (Reconcile) about the payments that are still requires_action or
// processing, reached their provider (a ProviderRef), have not moved for
// Config.ReconcileAfter and were created less than Config.ReconcileHorizon
// ago, and returns how many it reconciled. For webhooks that were lost.
//
// Cost. Provider calls: a stuck payment is asked when it has not moved for
// ReconcileAfter, then 2×, 4×, 8×... that (a sweep asks it when one of
// these ages falls since the previous sweep), so about
// log2(ReconcileHorizon/ReconcileAfter)+1 times in all (9 with the
// defaults), whatever the interval; a Reconcile that fails is tried again
// at the next sweep. The first sweep of a Service asks every stuck payment
// within the horizon once. Store reads: the sweep pages through
// Store.Payments (reconcilePage ids at a time) from a cursor below which
// every payment was created before the horizon; payment ids sort like
// their creation time, so after the first sweep (which reads from the
// start) a sweep reads about the payments created within the horizon. A
// payment whose id sorts below the cursor although it is younger than the
// horizon (a clock more than ReconcileHorizon behind) is not swept.
//
// Sweeps of one Service run one at a time. A store error ends the sweep
// (the next one starts over); provider errors are logged and skipped.
func (s *Service) ReconcileStuck(ctx context.Context) (int, error) {
	sw := &s.sweep
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.retries == nil {
		sw.retries = map[string]struct{}{}
	}
	now := s.now()
	first, since := sw.last.IsZero(), max(now.Sub(sw.last), 0)
	n := 0
	after, advancing := sw.low, true
	for {
		ps, err := s.store.Payments(ctx, after, reconcilePage)
		if err != nil {
			return n, err
		}
		for _, p := range ps {
			after = p.ID
			old := now.Sub(p.CreatedAt) > s.reconHorizon
			if advancing {
				if old {
					sw.low = p.ID
				} else {
					advancing = false
				}
			}
			_, retry := sw.retries[p.ID]
			if old || (p.Status != RequiresAction && p.Status != Processing) || p.ProviderRef == "" {
				delete(sw.retries, p.ID)
				continue
			}
			if !retry && !due(now.Sub(p.UpdatedAt), since, s.reconAfter, first) {
				continue
			}
			if _, err := s.Reconcile(ctx, p.ID); err != nil {
				if ctx.Err() != nil {
					return n, ctx.Err()
				}
				s.log.Warn("payment reconciliation failed; next sweep retries", "payment", p.ID, "provider", p.Provider, "err", err)
				if retry || len(sw.retries) < maxRetries {
					sw.retries[p.ID] = struct{}{}
				}
				continue
			}
			delete(sw.retries, p.ID)
			n++
		}
		if len(ps) < reconcilePage {
			break
		}
	}
	sw.last = now
	return n, nil
}

// due reports whether a payment that has not moved for age is to be asked
// now, since after the previous sweep: when one of after, 2×after,
// 4×after... lies in (age-since, age]; at the first sweep, when age >= after.
func due(age, since, after time.Duration, first bool) bool {
	if age < after {
		return false
	}
	if first {
		return true
	}
	prev := age - since
	t := after
	for t <= prev && t < age {
		t *= 2
	}
	return t > prev && t <= age
}
