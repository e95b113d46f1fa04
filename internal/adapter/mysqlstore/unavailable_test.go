package mysqlstore_test

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/adapter/mysqlstore"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/testkit/faultproxy"
)

// TestUnreachableIsUnavailable: an order shard that cannot be reached
// (refused, or a proxy in front of it that closes every connection, as
// while MySQL restarts) answers ErrUnavailable, the API's 503 + Retry-After,
// never an unclassified error (a 500). e2e's TestChaos found the 500s.
func TestUnreachableIsUnavailable(t *testing.T) {
	cfg := layout(t, 1)
	mustOpen(t, cfg) // the schema

	// A proxy to a port nobody listens on: every connection is accepted,
	// then closed (the driver's "invalid connection").
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	closing, err := faultproxy.Start(dead)
	if err != nil {
		t.Fatal(err)
	}
	defer closing.Close()

	up, err := faultproxy.Start(mustConfig(t, cfg.OrderShards[0].Primary).Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()

	for _, tc := range []struct {
		name string
		addr string
		stop func()
	}{
		{"closed by a proxy", closing.Addr(), func() {}},
		{"refused", up.Addr(), func() { up.CloseAll(); up.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			shard := mustConfig(t, cfg.OrderShards[0].Primary)
			shard.Addr = tc.addr
			s, err := mysqlstore.Open(mysqlstore.Config{Primary: cfg.Primary, OrderShards: []mysqlstore.ShardConfig{{Primary: shard.FormatDSN()}}})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			tc.stop()
			ctx := context.Background()
			_, err = s.Order(ctx, "06H3S5JSFBEOALJNJMIVE3QD50")
			if !errors.Is(err, spike.ErrUnavailable) || !errors.Is(err, mysqlstore.ErrUnavailable) {
				t.Errorf("Order() = %v, want ErrUnavailable", err)
			}
			_, err = s.ListOrders(ctx, 7, order.Cursor{}, 10)
			if !errors.Is(err, spike.ErrUnavailable) {
				t.Errorf("ListOrders() = %v, want ErrUnavailable", err)
			}
			var se *spike.Error
			if !errors.As(err, &se) || se != mysqlstore.ErrUnavailable {
				t.Errorf("ListOrders(): errors.As finds %v, want mysqlstore.ErrUnavailable (the API's 503)", se)
			}
		})
	}

	// A reachable shard's "not found" stays not found.
	s := mustOpen(t, cfg)
	if _, err := s.Order(context.Background(), "06H3S5JSFBEOALJNJMIVE3QD50"); !errors.Is(err, order.ErrOrderNotFound) {
		t.Errorf("Order() of an unknown id = %v, want not found", err)
	}
}

func mustConfig(t *testing.T, dsn string) *mysql.Config {
	t.Helper()
	c, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
