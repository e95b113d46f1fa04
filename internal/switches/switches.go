// Package switches holds Spike's runtime switches: degradation switches
// (stop taking orders, drop notifications, serve reads from cache only) and
// limits that operators turn during an incident. Every instance keeps the
// values in memory, read lock-free on hot paths; a config centre (a NATS KV
// bucket, see natsbus) stores them and pushes changes to every instance.
package switches

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/spikehq/spike"
)

// Kind is the type of a switch's value.
type Kind int

// Kinds of switches.
const (
	Bool Kind = iota
	Number
	Choice // one of Def.Choices
)

// Def defines a switch.
type Def struct {
	Name    string
	Kind    Kind
	Default string
	Help    string
	Min     float64  // for Number
	Choices []string // for Choice
}

// Names of the built-in switches.
const (
	OrdersAccept   = "orders.accept"        // false: placements answer 503
	Notifications  = "notifications"        // false: buyer notifications are dropped (counted), not sent
	ReadsCacheOnly = "reads.cache_only"     // true: product reads never reach the database
	UserRate       = "ratelimit.user_rps"   // placements per second per buyer; 0: unlimited
	UserBurst      = "ratelimit.user_burst" // burst per buyer
	SaleRate       = "ratelimit.sale_rps"   // placements per second per sale, per instance; 0: unlimited

	// Limits of the other routes (httpapi's route limits), per instance.
	IPRate     = "ratelimit.ip_rps"      // anonymous requests per second per client IP; 0: unlimited
	IPBurst    = "ratelimit.ip_burst"    // burst per client IP
	BuyerRate  = "ratelimit.buyer_rps"   // a buyer's requests other than placements, per second; 0: unlimited
	BuyerBurst = "ratelimit.buyer_burst" // burst per buyer
	AdminRate  = "ratelimit.admin_rps"   // an admin's requests per second; 0: unlimited
	AdminBurst = "ratelimit.admin_burst" // burst per admin
)

// Breaker overrides: a switch per guarded dependency (BreakerSwitch), for
// operators during an incident. BreakerAuto leaves the breaker to its
// measurements; BreakerOpen refuses every call at once (take a dependency
// out); BreakerClosed lets every call through (a breaker that trips on a
// false alarm). Going back to auto closes the breaker with a fresh window.
const (
	BreakerAuto   = "auto"
	BreakerOpen   = "open"
	BreakerClosed = "closed"
)

// BreakerDependencies are the dependencies whose breakers have a switch:
// the names of the dependency label of spike_breaker_state.
var BreakerDependencies = []string{"order_stream", "redis_stock", "order_writes", "order_reads", "sale_db", "sale_counters", "catalog_db", "notifications", "payments"}

// BreakerSwitch returns the name of the switch of dependency's breaker.
func BreakerSwitch(dependency string) string { return "breaker." + dependency }

// Defs are the built-in switches.
var Defs = append([]Def{
	{Name: OrdersAccept, Kind: Bool, Default: "true", Help: "take order placements (false: 503 unavailable)"},
	{Name: Notifications, Kind: Bool, Default: "true", Help: "send buyer notifications (false: drop them, counted)"},
	{Name: ReadsCacheOnly, Kind: Bool, Default: "false", Help: "serve product reads from caches only"},
	{Name: UserRate, Kind: Number, Default: "20", Help: "placements per second per buyer, per instance (0: unlimited)"},
	{Name: UserBurst, Kind: Number, Default: "40", Help: "burst of placements per buyer", Min: 1},
	{Name: SaleRate, Kind: Number, Default: "0", Help: "placements per second per sale, per instance (0: unlimited)"},
	{Name: IPRate, Kind: Number, Default: "100", Help: "anonymous requests (product and sale reads, readyz, metrics, refused tokens) per second per client IP (IPv6: per /64), per instance (0: unlimited)"},
	{Name: IPBurst, Kind: Number, Default: "200", Help: "burst of anonymous requests per client IP", Min: 1},
	{Name: BuyerRate, Kind: Number, Default: "20", Help: "a buyer's requests other than placements (order, listing, payment reads; cancel; pay) per second, per instance (0: unlimited)"},
	{Name: BuyerBurst, Kind: Number, Default: "40", Help: "burst of a buyer's requests other than placements", Min: 1},
	{Name: AdminRate, Kind: Number, Default: "100", Help: "an admin token's requests per second, per instance (0: unlimited)"},
	{Name: AdminBurst, Kind: Number, Default: "500", Help: "burst of an admin token's requests", Min: 1},
}, breakerDefs()...)

func breakerDefs() []Def {
	var defs []Def
	for _, dep := range BreakerDependencies {
		defs = append(defs, Def{
			Name: BreakerSwitch(dep), Kind: Choice, Default: BreakerAuto,
			Choices: []string{BreakerAuto, BreakerOpen, BreakerClosed},
			Help:    "circuit breaker of " + dep + ": auto, open (refuse every call) or closed (let every call through); no effect where the dependency is not used",
		})
	}
	return defs
}

// Board holds the current value of every switch. It is safe for
// concurrent use; reads are lock-free.
type Board struct {
	defs   map[string]Def
	values map[string]*atomic.Value // name → string; the map itself never changes

	mu       sync.Mutex
	onChange []func(name, value string)
}

// New returns a board with every switch at its default.
func New(defs []Def) *Board {
	b := &Board{defs: map[string]Def{}, values: map[string]*atomic.Value{}}
	for _, d := range defs {
		b.defs[d.Name] = d
		v := &atomic.Value{}
		v.Store(d.Default)
		b.values[d.Name] = v
	}
	return b
}

// ErrUnknown is returned for a switch that does not exist.
var ErrUnknown = &spike.Error{Kind: spike.ErrNotFound, Message: "no such switch"}

// Validate checks that value suits the switch name and returns it in
// canonical form.
func (b *Board) Validate(name, value string) (string, error) {
	d, ok := b.defs[name]
	if !ok {
		return "", ErrUnknown
	}
	switch d.Kind {
	case Bool:
		v, err := strconv.ParseBool(value)
		if err != nil {
			return "", spike.Errorf(spike.ErrInvalid, "switch %s takes true or false", name)
		}
		return strconv.FormatBool(v), nil
	case Choice:
		if !slices.Contains(d.Choices, value) {
			return "", spike.Errorf(spike.ErrInvalid, "switch %s takes one of %s", name, strings.Join(d.Choices, ", "))
		}
		return value, nil
	default:
		v, err := strconv.ParseFloat(value, 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) || v < d.Min || v > 1e9 {
			return "", spike.Errorf(spike.ErrInvalid, "switch %s takes a number between %g and 1e9", name, d.Min)
		}
		return strconv.FormatFloat(v, 'g', -1, 64), nil
	}
}

// Apply sets a switch from the config centre. Invalid values are ignored
// (and reported), so a bad write cannot break an instance.
func (b *Board) Apply(name, value string) error {
	canon, err := b.Validate(name, value)
	if err != nil {
		return fmt.Errorf("switch %s=%q: %w", name, value, err)
	}
	v := b.values[name]
	if old, _ := v.Load().(string); old == canon {
		return nil
	}
	v.Store(canon)
	b.mu.Lock()
	fns := slices.Clone(b.onChange)
	b.mu.Unlock()
	for _, fn := range fns {
		fn(name, canon)
	}
	return nil
}

// Reset returns a switch to its default (the config centre deleted it).
func (b *Board) Reset(name string) {
	if d, ok := b.defs[name]; ok {
		b.Apply(name, d.Default)
	}
}

// OnChange registers fn to be called after a switch changes.
func (b *Board) OnChange(fn func(name, value string)) {
	b.mu.Lock()
	b.onChange = append(b.onChange, fn)
	b.mu.Unlock()
}

// Value returns a switch's current value, or "" if it does not exist.
func (b *Board) Value(name string) string {
	v, ok := b.values[name]
	if !ok {
		return ""
	}
	return v.Load().(string)
}

// On reports whether a boolean switch is on.
func (b *Board) On(name string) bool { return b.Value(name) == "true" }

// Number returns a numeric switch's value.
func (b *Board) Number(name string) float64 {
	f, _ := strconv.ParseFloat(b.Value(name), 64)
	return f
}

// Snapshot returns every switch with its value, sorted by name.
func (b *Board) Snapshot() []State {
	names := slices.Sorted(maps.Keys(b.defs))
	out := make([]State, 0, len(names))
	for _, n := range names {
		d := b.defs[n]
		out = append(out, State{Name: n, Value: b.Value(n), Default: d.Default, Help: d.Help})
	}
	return out
}

// State is one switch as the admin API shows it.
type State struct {
	Name    string `json:"name"`
	Value   string `json:"value"`
	Default string `json:"default"`
	Help    string `json:"help"`
}
