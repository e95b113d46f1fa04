package main

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-sql-driver/mysql"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spikehq/spike/internal/adapter/natsbus"
)

// Authenticated, encrypted transports and signed events (docs/security.md,
// "Transports and events"): the configuration types, their checks, and
// what they turn into for each client library.

// MarshalJSON keeps every secret out of printed configurations.
func (s Secret) MarshalJSON() ([]byte, error) {
	if s == "" {
		return []byte(`""`), nil
	}
	return []byte(`"REDACTED"`), nil
}

var _ json.Marshaler = Secret("")

// TLSFiles is a client's TLS: on when Enable is set or any file is named.
// CAFile verifies the server (empty: the system's roots); CertFile and
// KeyFile are this client's certificate for mutual TLS; ServerName
// overrides the name checked in the server's certificate.
type TLSFiles struct {
	Enable     bool   `yaml:"enable"`
	CAFile     string `yaml:"ca_file"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	ServerName string `yaml:"server_name"`
}

// ListenTLS is the embedded NATS server's TLS: its certificate, and
// ClientCAFile to require client certificates issued by that CA.
type ListenTLS struct {
	CertFile     string `yaml:"cert_file"`
	KeyFile      string `yaml:"key_file"`
	ClientCAFile string `yaml:"client_ca_file"`
}

// EventsConfig holds the key that signs events (natsbus.Keys).
type EventsConfig struct {
	// HMACKey signs every event and switch value; every instance sharing
	// the NATS streams needs the same one (at least 32 bytes). Empty in
	// embedded mode: one is kept in the data folder (events.key).
	HMACKey Secret `yaml:"hmac_key"`
	// PreviousHMACKey is still accepted (not used to sign) during a
	// rotation, until the events it signed have been persisted.
	PreviousHMACKey Secret `yaml:"previous_hmac_key"`
}

func (f TLSFiles) on() bool { return f.Enable || f.CAFile != "" || f.CertFile != "" || f.KeyFile != "" }

// config builds the client TLS configuration; nil when TLS is off.
func (f TLSFiles) config() (*tls.Config, error) {
	if !f.on() {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName}
	if f.CAFile != "" {
		pool, err := certPool(f.CAFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if f.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// config builds the embedded server's TLS configuration; nil when no
// certificate is named.
func (l ListenTLS) config() (*tls.Config, error) {
	if l.CertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(l.CertFile, l.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if l.ClientCAFile != "" {
		pool, err := certPool(l.ClientCAFile)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

func certPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s: no PEM certificate in it", file)
	}
	return pool, nil
}

// check reports a half-configured client certificate, naming the key.
func (f TLSFiles) check(key string) error {
	if (f.CertFile == "") != (f.KeyFile == "") {
		return fmt.Errorf("config %s.cert_file and %s.key_file: set both or neither", key, key)
	}
	if _, err := f.config(); err != nil {
		return fmt.Errorf("config %s: %w", key, err)
	}
	return nil
}

// validateTransport checks the credentials, TLS and event key settings.
func (c *Config) validateTransport() error {
	n := c.NATS
	switch {
	case n.Token != "" && (n.User != "" || n.Password != ""):
		return errors.New("config nats.token: set a token or nats.user and nats.password, not both")
	case n.User != "" && n.Password == "":
		return errors.New("config nats.password: required with nats.user")
	case len(n.URLs) > 0 && (n.ListenTLS != ListenTLS{} || n.InsecureListenLoopback):
		return errors.New("config nats.listen_tls and nats.insecure_listen_loopback apply to embedded NATS only; drop them or nats.urls")
	case len(n.URLs) == 0 && n.TLS.on():
		return errors.New("config nats.tls: applies to external NATS (nats.urls) only; the embedded server's certificate is nats.listen_tls")
	case (n.ListenTLS.CertFile == "") != (n.ListenTLS.KeyFile == ""):
		return errors.New("config nats.listen_tls.cert_file and key_file: set both or neither")
	case n.ListenTLS.ClientCAFile != "" && n.ListenTLS.CertFile == "":
		return errors.New("config nats.listen_tls.client_ca_file: needs cert_file and key_file")
	case len(n.URLs) > 0 && c.Events.HMACKey == "":
		return errors.New("config events.hmac_key: required with nats.urls (every instance signs and verifies events with the same key, at least 32 bytes)")
	case c.Events.HMACKey != "" && len(c.Events.HMACKey) < natsbus.MinKeyLen,
		c.Events.PreviousHMACKey != "" && len(c.Events.PreviousHMACKey) < natsbus.MinKeyLen:
		return fmt.Errorf("config events.hmac_key: must be at least %d bytes", natsbus.MinKeyLen)
	case c.MySQL.Password != "" && c.MySQL.User == "":
		return errors.New("config mysql.user: required with mysql.password")
	case c.Redis.Username != "" && c.Redis.Password == "":
		return errors.New("config redis.password: required with redis.username")
	}
	if err := n.checkAuth(); err != nil {
		return err
	}
	if n.Listen != "" {
		ec, err := n.embeddedConfig("")
		if err != nil {
			return err
		}
		if err := ec.CheckListen(); err != nil {
			return fmt.Errorf("config nats.listen: %w", err)
		}
	}
	if _, err := n.ListenTLS.config(); err != nil {
		return fmt.Errorf("config nats.listen_tls: %w", err)
	}
	for key, f := range map[string]TLSFiles{"nats.tls": n.TLS, "redis.tls": c.Redis.TLS, "mysql.tls": c.MySQL.TLS} {
		if err := f.check(key); err != nil {
			return err
		}
	}
	return nil
}

// embeddedConfig is the embedded server's configuration, keeping its data
// in dir. The TLS files are read by the caller (validateTransport
// already did): here only their presence counts. The nkey seed file is
// read (and refused unless private).
func (n NATSConfig) embeddedConfig(dir string) (natsbus.EmbeddedConfig, error) {
	cfg := natsbus.EmbeddedConfig{Dir: dir, Listen: n.Listen, SyncAlways: n.SyncAlways,
		User: n.User, Password: string(n.Password), Token: string(n.Token), InsecureLoopback: n.InsecureListenLoopback}
	if n.ListenTLS.CertFile != "" {
		cfg.TLS, _ = n.ListenTLS.config()
	}
	return cfg, n.embeddedAuth(&cfg)
}

// clientOptions are the credentials and TLS of a connection to external
// NATS.
func (n NATSConfig) clientOptions() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case n.Token != "":
		opts = append(opts, nats.Token(string(n.Token)))
	case n.User != "":
		opts = append(opts, nats.UserInfo(n.User, string(n.Password)))
	}
	keyed, err := n.clientAuthOptions()
	if err != nil {
		return nil, err
	}
	opts = append(opts, keyed...)
	tc, err := n.TLS.config()
	if err != nil {
		return nil, fmt.Errorf("nats.tls: %w", err)
	}
	if tc != nil {
		opts = append(opts, nats.Secure(tc))
	}
	return opts, nil
}

// mysqlTLSName is the name the MySQL TLS configuration is registered
// under (mysql.RegisterTLSConfig); DSNs refer to it as tls=spike.
const mysqlTLSName = "spike"

// withTransport applies mysql.user, mysql.password and mysql.tls to every DSN
// of the configuration, registering the TLS configuration first.
func (m MySQLConfig) withTransport() (MySQLConfig, error) {
	tc, err := m.TLS.config()
	if err != nil {
		return m, fmt.Errorf("mysql.tls: %w", err)
	}
	if tc != nil {
		if err := mysql.RegisterTLSConfig(mysqlTLSName, tc); err != nil {
			return m, fmt.Errorf("mysql.tls: %w", err)
		}
	}
	apply := func(dsn string) (string, error) {
		mc, err := mysql.ParseDSN(dsn)
		if err != nil {
			return "", fmt.Errorf("mysql DSN: %w", err)
		}
		if m.User != "" {
			mc.User, mc.Passwd = m.User, string(m.Password)
		}
		if tc != nil {
			mc.TLSConfig = mysqlTLSName
		}
		return mc.FormatDSN(), nil
	}
	out := m
	out.Replicas = nil
	out.OrderShards = nil
	if out.Primary, err = apply(m.Primary); err != nil {
		return m, err
	}
	for _, r := range m.Replicas {
		d, err := apply(r)
		if err != nil {
			return m, err
		}
		out.Replicas = append(out.Replicas, d)
	}
	for _, sh := range m.OrderShards {
		s := ShardEntry{}
		if s.Primary, err = apply(sh.Primary); err != nil {
			return m, err
		}
		for _, r := range sh.Replicas {
			d, err := apply(r)
			if err != nil {
				return m, err
			}
			s.Replicas = append(s.Replicas, d)
		}
		out.OrderShards = append(out.OrderShards, s)
	}
	return out, nil
}

const eventKeyFile = "events.key"

// eventKeys returns the keys that sign and verify events: the configured
// ones, or in embedded NATS mode the one kept in the data folder (created
// on first use; the stream is this instance's alone).
func (c *Config) eventKeys() (*natsbus.Keys, error) {
	key := []byte(c.Events.HMACKey)
	if len(key) == 0 {
		var err error
		if key, err = keptSecret(c.Data, eventKeyFile); err != nil {
			return nil, fmt.Errorf("event key: %w", err)
		}
	}
	var previous [][]byte
	if c.Events.PreviousHMACKey != "" {
		previous = append(previous, []byte(c.Events.PreviousHMACKey))
	}
	keys, err := natsbus.NewKeys(key, previous...)
	if err != nil {
		return nil, fmt.Errorf("config events.hmac_key: %w", err)
	}
	return keys, nil
}

// keptSecret returns the secret kept in dir/name, creating a random one
// (64 hex digits, mode 0600) if there is none; two processes racing both
// read the winner's.
func keptSecret(dir, name string) ([]byte, error) {
	path := filepath.Join(dir, name)
	b, err := os.ReadFile(path)
	if err == nil {
		s := strings.TrimSpace(string(b))
		if len(s) < natsbus.MinKeyLen {
			return nil, fmt.Errorf("%s: shorter than %d characters", path, natsbus.MinKeyLen)
		}
		return []byte(s), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	raw := make([]byte, 32)
	rand.Read(raw)
	tmp, err := os.CreateTemp(dir, name+".*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.WriteString(hex.EncodeToString(raw) + "\n")
	if err := errors.Join(werr, tmp.Chmod(0o600), tmp.Close()); err != nil {
		return nil, err
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	return keptSecret(dir, name)
}

// rejectedEvents counts the events the order workers refused, and the
// cache invalidations dropped, by reason.
type rejectedEvents struct{ vec *prometheus.CounterVec }

func newRejectedEvents() rejectedEvents {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "spike_events_rejected_total",
		Help: "Events the order workers refused (parked, never persisted), by reason: unsigned, unknown_key, bad_signature, no_reservation; and cache invalidations dropped: invalidation_unsigned, invalidation_unknown_key, invalidation_bad_signature; persisted-order announcements dropped: announcement_unsigned, announcement_unknown_key, announcement_bad_signature.",
	}, []string{"reason"})
	for _, r := range []string{natsbus.RejectUnsigned, natsbus.RejectUnknownKey, natsbus.RejectBadSignature, natsbus.RejectNoReservation,
		natsbus.RejectInvalidationUnsigned, natsbus.RejectInvalidationUnknownKey, natsbus.RejectInvalidationBadSignature,
		natsbus.RejectAnnouncementUnsigned, natsbus.RejectAnnouncementUnknownKey, natsbus.RejectAnnouncementBadSignature} {
		vec.WithLabelValues(r)
	}
	return rejectedEvents{vec: vec}
}

func (r rejectedEvents) count(reason string) { r.vec.WithLabelValues(reason).Inc() }
