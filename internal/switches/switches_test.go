package switches_test

import (
	"errors"
	"testing"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/switches"
)

func TestValidate(t *testing.T) {
	b := switches.New(switches.Defs)
	tests := []struct {
		name, value, want string
		kind              error
	}{
		{switches.OrdersAccept, "false", "false", nil},
		{switches.OrdersAccept, "0", "false", nil},
		{switches.OrdersAccept, "TRUE", "true", nil},
		{switches.OrdersAccept, "maybe", "", spike.ErrInvalid},
		{switches.Notifications, "false", "false", nil},
		{switches.Notifications, "off", "", spike.ErrInvalid},
		{switches.UserRate, "20", "20", nil},
		{switches.UserRate, "0.5", "0.5", nil},
		{switches.UserRate, "-1", "", spike.ErrInvalid},
		{switches.UserRate, "NaN", "", spike.ErrInvalid},
		{switches.UserRate, "1e10", "", spike.ErrInvalid},
		{switches.UserBurst, "0", "", spike.ErrInvalid}, // Min 1
		{switches.BreakerSwitch("redis_stock"), "open", "open", nil},
		{switches.BreakerSwitch("redis_stock"), "auto", "auto", nil},
		{switches.BreakerSwitch("order_stream"), "closed", "closed", nil},
		{switches.BreakerSwitch("order_stream"), "Open", "", spike.ErrInvalid},
		{switches.BreakerSwitch("order_stream"), "true", "", spike.ErrInvalid},
		{switches.BreakerSwitch("no_such_dependency"), "open", "", spike.ErrNotFound},
		{"no.such", "1", "", spike.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name+"="+tt.value, func(t *testing.T) {
			got, err := b.Validate(tt.name, tt.value)
			if tt.kind != nil {
				if !errors.Is(err, tt.kind) {
					t.Fatalf("Validate() error %v, want kind %v", err, tt.kind)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Validate() = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestApplyNotifiesOnChangeOnly(t *testing.T) {
	b := switches.New(switches.Defs)
	var seen []string
	b.OnChange(func(name, value string) { seen = append(seen, name+"="+value) })
	if !b.On(switches.OrdersAccept) || !b.On(switches.Notifications) || b.Number(switches.UserRate) != 20 {
		t.Fatalf("defaults: %v", b.Snapshot())
	}
	b.Apply(switches.OrdersAccept, "false")
	b.Apply(switches.OrdersAccept, "0") // same value: no callback
	if err := b.Apply(switches.UserRate, "bogus"); err == nil {
		t.Error("an invalid value was applied")
	}
	b.Reset(switches.OrdersAccept)
	want := []string{"orders.accept=false", "orders.accept=true"}
	if len(seen) != len(want) || seen[0] != want[0] || seen[1] != want[1] {
		t.Errorf("callbacks %v, want %v", seen, want)
	}
	if b.Number(switches.UserRate) != 20 {
		t.Errorf("an invalid apply changed the rate to %v", b.Number(switches.UserRate))
	}
	if v := b.Value("no.such"); v != "" {
		t.Errorf("unknown switch has value %q", v)
	}
}
