package main

import (
	"fmt"
	"io"
	"net"

	"github.com/go-sql-driver/mysql"
)

// checkConfig is `spike serve --check-config`: the configuration (file,
// environment and flags) has loaded and passed Validate; this adds the
// checks that need no connection (DSNs and addresses parse) and prints
// "config ok" and the mode. It connects to nothing, creates nothing (not
// even the data folder or the JWT secret), and starts nothing.
func checkConfig(cfg Config, stdout io.Writer) error {
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return fmt.Errorf("config addr: %q is not host:port", cfg.Addr)
	}
	if cfg.Pprof != "" {
		if _, _, err := net.SplitHostPort(cfg.Pprof); err != nil {
			return fmt.Errorf("config pprof: %q is not host:port", cfg.Pprof)
		}
	}
	dsns := map[string]string{}
	if cfg.MySQL.Primary != "" {
		dsns["mysql.primary"] = cfg.MySQL.Primary
	}
	for i, r := range cfg.MySQL.Replicas {
		dsns[fmt.Sprintf("mysql.replicas[%d]", i)] = r
	}
	for i, s := range cfg.MySQL.OrderShards {
		dsns[fmt.Sprintf("mysql.order_shards[%d].primary", i)] = s.Primary
		for j, r := range s.Replicas {
			dsns[fmt.Sprintf("mysql.order_shards[%d].replicas[%d]", i, j)] = r
		}
	}
	for key, dsn := range dsns {
		d, err := mysql.ParseDSN(dsn)
		if err != nil {
			return fmt.Errorf("config %s: not a MySQL DSN: %v", key, err)
		}
		if d.DBName == "" {
			return fmt.Errorf("config %s: the DSN names no database (user:pw@tcp(host:3306)/DATABASE)", key)
		}
	}
	mode := "embedded mode"
	if !cfg.Embedded() {
		mode = "clustered backends"
	}
	fmt.Fprintf(stdout, "config ok (%s)\n", mode)
	for _, w := range configWarnings(cfg) {
		fmt.Fprintln(stdout, "warning:", w)
	}
	return nil
}

// configWarnings names settings that load but are likely mistakes.
func configWarnings(cfg Config) []string {
	var out []string
	if !cfg.Embedded() && cfg.JWTSecret == "" {
		out = append(out, "jwt_secret is empty: each instance would sign tokens with its own generated secret; set the same one everywhere")
	}
	if len(cfg.NATS.URLs) > 0 && cfg.NATS.Replicas > len(cfg.NATS.URLs) {
		out = append(out, fmt.Sprintf("nats.replicas %d with %d nats.urls: the stream needs a JetStream cluster of at least %d servers (fine if these URLs seed a larger cluster)",
			cfg.NATS.Replicas, len(cfg.NATS.URLs), cfg.NATS.Replicas))
	}
	if !cfg.Embedded() && len(cfg.Redis.Addrs) == 0 {
		out = append(out, "redis.addrs is empty: the stock counters are in process, so run only ONE instance")
	}
	return out
}
