package redisstock_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spikehq/spike/internal/adapter/redisstock"
	"github.com/spikehq/spike/internal/domain/inventory"
	"github.com/spikehq/spike/internal/domain/sale"
	"github.com/spikehq/spike/internal/testkit/stocktest"
)

// clusterPort returns a loopback port that is free together with its
// cluster bus port (port+10000).
func clusterPort(t *testing.T) int {
	t.Helper()
	for range 100 {
		p := 20000 + rand.IntN(10000)
		l1, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+10000))
		l1.Close()
		if err != nil {
			continue
		}
		l2.Close()
		return p
	}
	t.Fatal("no free port pair for a cluster node")
	return 0
}

// startCluster starts three Redis Cluster masters on loopback and returns
// their addresses; they are killed at cleanup.
func startCluster(t *testing.T) []string {
	t.Helper()
	mustRedisAddr(t)
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Skip("redis-cli not found")
	}
	var addrs []string
	for range 3 {
		s := &server{T: t, Dir: t.TempDir(), Args: []string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"}}
		if _, err := exec.LookPath("redis-server"); err != nil {
			t.Skip("redis-server not found")
		}
		s.Port = clusterPort(t)
		s.Start()
		t.Cleanup(s.Kill)
		addrs = append(addrs, s.Addr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, a := range addrs {
		_, port, _ := net.SplitHostPort(a)
		for {
			out, _ := exec.CommandContext(ctx, "redis-cli", "-p", port, "cluster", "info").CombinedOutput()
			if strings.Contains(string(out), "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster not ok on %s: %s", a, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return addrs
}

func TestCluster(t *testing.T) {
	addrs := startCluster(t)
	ctx := context.Background()
	client := newClient(t, addrs...)
	if mode := client.Mode(); mode != "cluster" {
		t.Fatalf("client mode %q, want cluster", mode)
	}
	// The rules every inventory.Stock keeps, on the cluster.
	t.Run("Conformance", func(t *testing.T) {
		stocktest.Run(t, func(t *testing.T) (a, b inventory.Stock) {
			return newCounters(t, client, redisstock.Config{}), newCounters(t, newClient(t, addrs...), redisstock.Config{})
		})
	})
	a := newCounters(t, client, redisstock.Config{})
	b := newCounters(t, newClient(t, addrs...), redisstock.Config{})
	// The checks below wait for news that a publishes and b hears: news
	// published before b has subscribed is missed (an instance relearns it
	// from its next reply, and b sends none while it waits), so first make
	// sure b hears: news of a probe sale, published until b has it.
	probe := campaign(t, 2, 1)
	if err := a.Open(ctx, probe); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Reserve(ctx, req(probe, 1, "k", 1)); err != nil { // b learns the sale
		t.Fatal(err)
	}
	news := probe.ID + " " + strconv.FormatInt(redisstock.Epoch(a, probe.ID), 10) + " 1000001" // sold out
	eventually(t, "b to hear news", func() bool {
		if err := client.Do(ctx, client.B().Publish().Channel("spiketest:stock").Message(news).Build()).Error(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		return redisstock.SoldOut(b, probe.ID)
	})

	// Six sales, two on each master (redis-cli gives each a third of the
	// slots).
	for i := range 6 {
		var cp sale.Sale
		for {
			cp = campaign(t, 3, 1)
			slot, err := client.Do(ctx, client.B().ClusterKeyslot().Key("spiketest:{sale:"+cp.ID+"}:meta").Build()).AsInt64()
			if err != nil {
				t.Fatal(err)
			}
			if int(slot*3/16384) == i%3 {
				break
			}
		}
		if err := a.Open(ctx, cp); err != nil {
			t.Fatalf("Open() on cluster = %v", err)
		}
		var last inventory.Reservation
		for u := range int64(3) {
			res, _, err := b.Reserve(ctx, req(cp, u+1, "k", 1))
			if err != nil {
				t.Fatalf("Reserve() on cluster = %v", err)
			}
			if err := b.Confirm(ctx, res); err != nil {
				t.Fatal(err)
			}
			last = res
		}
		if _, replay, err := a.Reserve(ctx, req(cp, 1, "k", 1)); err != nil || !replay {
			t.Errorf("replay on cluster = %v, %v", replay, err)
		}
		eventually(t, "sold-out news across the cluster", func() bool { return redisstock.SoldOut(a, cp.ID) })
		if _, _, err := a.Reserve(ctx, req(cp, 9, "k", 1)); !errors.Is(err, inventory.ErrSoldOut) {
			t.Errorf("Reserve() on a sold-out sale = %v", err)
		}
		if err := a.Release(ctx, last); err != nil {
			t.Fatal(err)
		}
		eventually(t, "restock news across the cluster", func() bool { return !redisstock.SoldOut(b, cp.ID) })
		if st, ok, err := b.Stats(ctx, cp.ID); err != nil || !ok || st.Remaining != 1 || st.Held != 2 {
			t.Errorf("Stats() = %+v, %v, %v", st, ok, err)
		}
		if err := a.Restore(ctx, cp, nil); err != nil {
			t.Fatalf("Restore() on cluster = %v", err)
		}
		eventually(t, "the restored epoch on the other instance", func() bool { return redisstock.Epoch(b, cp.ID) == redisstock.Epoch(a, cp.ID) })
		if n, ok, err := b.Remaining(ctx, cp.ID); n != 3 || !ok || err != nil {
			t.Errorf("Remaining() after Restore = %d, %v, %v", n, ok, err)
		}
	}

	// Lose every node's data: sales fence, rebuild and resume.
	checkRecovery(t, addrs, func() {
		for _, addr := range addrs {
			_, port, _ := net.SplitHostPort(addr)
			if out, err := exec.Command("redis-cli", "-p", port, "flushall").CombinedOutput(); err != nil {
				t.Fatalf("flushall %s: %v %s", addr, err, out)
			}
		}
	})
}
