package catalogcache

import (
	"cmp"
	"context"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Count-min sketch dimensions: 4 rows of 1024 counters, 16 KiB per sketch.
const (
	sketchDepth = 4
	sketchWidth = 1024
	// maxCandidates bounds the SKUs tracked by name, so reads of many
	// distinct SKUs cannot grow the tracker.
	maxCandidates = 1024
)

type sketch [sketchDepth][sketchWidth]atomic.Uint32

func (sk *sketch) add(h uint64) uint32 {
	est := ^uint32(0)
	for i := range sketchDepth {
		est = min(est, sk[i][(h>>(16*i))%sketchWidth].Add(1))
	}
	return est
}

func (sk *sketch) estimate(h uint64) uint32 {
	est := ^uint32(0)
	for i := range sketchDepth {
		est = min(est, sk[i][(h>>(16*i))%sketchWidth].Load())
	}
	return est
}

// hotTracker finds the k most read SKUs over a sliding window. Reads are
// counted in a count-min sketch per half window; the window is the current
// half plus the previous one. A SKU read at least admit times in the
// current half becomes a candidate, tracked by name; every half window the
// candidates are ranked by their estimated reads over the whole window,
// and those with at least minReads make up the hot set.
type hotTracker struct {
	k        int
	minReads uint32
	admit    uint32
	half     int64 // ns
	seed     maphash.Seed

	cur   atomic.Pointer[sketch]
	next  atomic.Int64                      // UnixNano of the next rotation
	cands atomic.Pointer[map[string]uint64] // SKU → hash; copied on write
	hot   atomic.Pointer[[]string]

	mu   sync.Mutex // rotation and admission
	prev *sketch
}

func newHotTracker(k, minReads int, window time.Duration, now int64) *hotTracker {
	t := &hotTracker{
		k:        k,
		minReads: uint32(minReads),
		admit:    max(uint32(minReads)/2, 1),
		half:     max(int64(window)/2, 1),
		seed:     maphash.MakeSeed(),
		prev:     new(sketch),
	}
	t.cur.Store(new(sketch))
	t.next.Store(now + t.half)
	t.cands.Store(&map[string]uint64{})
	t.hot.Store(&[]string{})
	return t
}

// record counts a read of sku at now. It does not allocate except when it
// admits a new candidate.
func (t *hotTracker) record(sku string, now int64) {
	if now >= t.next.Load() {
		t.rotate(now, false)
	}
	h := maphash.String(t.seed, sku)
	if t.cur.Load().add(h) < t.admit {
		return
	}
	if _, ok := (*t.cands.Load())[sku]; ok {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.cands.Load()
	if _, ok := old[sku]; ok || len(old) >= maxCandidates {
		return
	}
	m := make(map[string]uint64, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[strings.Clone(sku)] = h
	t.cands.Store(&m)
}

// rotate starts a new half window if one is due at now. Readers that find
// the rotation under way go on (wait false); they count in either half.
func (t *hotTracker) rotate(now int64, wait bool) {
	if wait {
		t.mu.Lock()
	} else if !t.mu.TryLock() {
		return
	}
	defer t.mu.Unlock()
	next := t.next.Load()
	if now < next {
		return
	}
	cur := t.cur.Load()
	prev := t.prev
	if now >= next+t.half { // idle for a whole half: prev is older than the window
		prev = new(sketch)
	}
	type scored struct {
		sku   string
		reads uint32
	}
	var ranked []scored
	kept := map[string]uint64{}
	for sku, h := range *t.cands.Load() {
		c, p := cur.estimate(h), prev.estimate(h)
		if c+p >= t.minReads {
			ranked = append(ranked, scored{sku, c + p})
		}
		if c >= t.admit { // still read: stays a candidate for the next window
			kept[sku] = h
		}
	}
	slices.SortFunc(ranked, func(a, b scored) int {
		return cmp.Or(cmp.Compare(b.reads, a.reads), strings.Compare(a.sku, b.sku))
	})
	hot := make([]string, 0, min(len(ranked), t.k))
	for _, r := range ranked[:min(len(ranked), t.k)] {
		hot = append(hot, r.sku)
	}
	t.hot.Store(&hot)
	t.cands.Store(&kept)
	t.prev = cur
	t.cur.Store(new(sketch))
	for next <= now {
		next += t.half
	}
	t.next.Store(next)
}

// HotKeys returns the SKUs found hottest in the last window, hottest
// first: at most Options.HotKeys of them, each read at least
// Options.HotMinReads times in Options.HotWindow. The set is recomputed
// every half window. The caller may modify the slice.
func (s *Store) HotKeys() []string {
	if s.hot == nil {
		return nil
	}
	s.hot.rotateIfDue(s.now())
	return slices.Clone(*s.hot.hot.Load())
}

func (t *hotTracker) rotateIfDue(now int64) {
	if now >= t.next.Load() {
		t.rotate(now, true)
	}
}

// refreshHot reloads every hot key from the database into L1 with
// Options.HotTTL, through the breaker and the concurrency cap, joining any
// load of the same key under way. A key that fails to load keeps its entry,
// which may then be served stale. Run calls it every Options.HotRefresh.
func (s *Store) refreshHot(ctx context.Context) {
	if s.opts.CacheOnly != nil && s.opts.CacheOnly() {
		return
	}
	for _, sku := range s.HotKeys() {
		ch := s.group.DoChan(sku, func() (any, error) {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.LoadTimeout)
			defer cancel()
			return s.load(ctx, sku, true)
		})
		select {
		case <-ch:
			s.stats.hotRefreshes.Add(1)
		case <-ctx.Done():
			return
		}
	}
}

// Run refreshes the hot keys every Options.HotRefresh and repeats the
// evictions of Evict (Options.RepeatEvict) until ctx is done, then returns
// nil; evictions still waiting are then not repeated. Without it hot keys
// are still detected but expire and reload like the others.
func (s *Store) Run(ctx context.Context) error {
	var refresh <-chan time.Time
	if s.hot != nil {
		tick := time.NewTicker(s.opts.HotRefresh)
		defer tick.Stop()
		refresh = tick.C
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var pending []repeatEvict // in the order of their times: the delay is fixed
	for {
		var due <-chan time.Time
		if len(pending) > 0 {
			timer.Reset(time.Until(pending[0].at))
			due = timer.C
		}
		select {
		case <-ctx.Done():
			return nil
		case <-refresh:
			s.refreshHot(ctx)
		case r := <-s.repeats:
			pending = append(pending, r)
		case <-due:
			r := pending[0]
			pending = pending[1:]
			ectx, cancel := context.WithTimeout(ctx, s.opts.LoadTimeout)
			if err := s.evict(ectx, r.sku); err != nil {
				s.opts.Logger.Warn("repeat product cache invalidation", "sku", r.sku, "err", err)
			}
			cancel()
		}
	}
}
