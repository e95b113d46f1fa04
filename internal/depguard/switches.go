package depguard

import (
	"log/slog"

	"github.com/spikehq/spike/internal/switches"
	"github.com/spikehq/spike/resilience"
)

// FollowSwitches applies the breaker.<dependency> switches to breakers,
// now and on every change: open forces a breaker open, closed forces it
// closed, auto gives it back to its measurements (closed, with a fresh
// window). A dependency missing from breakers (not used in this mode,
// e.g. redis_stock when embedded) is left alone.
func FollowSwitches(board *switches.Board, breakers map[Dependency]*resilience.Breaker, log *slog.Logger) {
	apply := func(dep Dependency, value string) {
		b := breakers[dep]
		if b == nil {
			return
		}
		switch value {
		case switches.BreakerOpen:
			b.ForceOpen()
		case switches.BreakerClosed:
			b.ForceClosed()
		default:
			if s := b.State(); s != resilience.ForcedOpen && s != resilience.ForcedClosed {
				return // already following its measurements
			}
			b.Reset()
		}
		log.Warn("circuit breaker override", "dependency", string(dep), "switch", value)
	}
	byName := map[string]Dependency{}
	for dep := range breakers {
		name := switches.BreakerSwitch(string(dep))
		byName[name] = dep
		if v := board.Value(name); v != switches.BreakerAuto && v != "" {
			apply(dep, v)
		}
	}
	board.OnChange(func(name, value string) {
		if dep, ok := byName[name]; ok {
			apply(dep, value)
		}
	})
}
