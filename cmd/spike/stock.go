package main

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/rueidis"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/adapter/redisstock"
	"github.com/spikehq/spike/internal/ledger"
)

// redisStock is the clustered mode's stock: the Redis connection, the
// stock counters on it and their recovery after a Redis loss (a sale whose
// counters are missing or from an older epoch fences with 503, and one
// instance rebuilds it from the database plus the stream). Run both
// counters.Run and recovery.Run.
type redisStock struct {
	client   rueidis.Client
	counters *redisstock.Counters
	recovery *ledger.Recovery
}

func openRedisStock(cfg Config, ids *spike.IDGenerator, st stores, events ledger.EventSource, enqueueTimeout time.Duration, log *slog.Logger) (*redisStock, error) {
	client, err := redisClient(cfg.Redis)
	if err != nil {
		return nil, err
	}
	recovery := ledger.NewRecovery(st, st, events, ledger.RecoveryConfig{Log: log})
	counters := redisstock.New(client, ids, redisstock.Config{
		// A placement that reserved before the fence reaches the stream
		// (or gives up) within the enqueue timeout; the rebuild waits that
		// long before reading the record.
		Settle:   enqueueTimeout + time.Second,
		OnFenced: recovery.Fenced,
		Lookup:   st.Sale,
	})
	recovery.SetStock(counters)
	return &redisStock{client: client, counters: counters, recovery: recovery}, nil
}

func (r *redisStock) Close() { r.client.Close() }

// redisClient connects to Redis with the configured credentials and TLS.
func redisClient(cfg RedisConfig) (rueidis.Client, error) {
	tlsCfg, err := cfg.TLS.config()
	if err != nil {
		return nil, fmt.Errorf("redis.tls: %w", err)
	}
	client, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:      cfg.Addrs,
		Username:         cfg.Username,
		Password:         string(cfg.Password),
		TLSConfig:        tlsCfg,
		ConnWriteTimeout: 2 * time.Second,
		// Client-side caching is not used: sold-out news travels by pub/sub.
		DisableCache: true,
		// After each write the pipeline waits up to this long for more
		// commands: under load many placements' scripts share one write
		// (fewer system calls on both sides), at a cost of microseconds.
		MaxFlushDelay: 20 * time.Microsecond,
	})
	if err != nil {
		return nil, fmt.Errorf("connect to redis %v: %w", cfg.Addrs, err)
	}
	return client, nil
}
