package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.yaml.in/yaml/v3"

	"github.com/spikehq/spike/internal/adapter/redisstock"
	"github.com/spikehq/spike/internal/auth"
	"github.com/spikehq/spike/internal/depguard"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/httpapi"
)

// Secret is a string that never shows in logs.
type Secret string

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// Config is the effective configuration of a command: defaults, then the
// YAML file (--config), then SPIKE_* environment variables, then flags.
// deploy/spike.example.yaml lists every key. Every key has an environment
// variable: SPIKE_ and its path in upper case joined by "_" (nats.urls is
// SPIKE_NATS_URLS); lists are comma-separated.
type Config struct {
	Addr      string `yaml:"addr"`       // HTTP listen address
	Data      string `yaml:"data"`       // data folder: SQLite, embedded JetStream, the generated JWT secret
	JWTSecret Secret `yaml:"jwt_secret"` // HS256 secret; if empty, one is kept in Data
	LogFormat string `yaml:"log_format"` // text or json
	Pprof     string `yaml:"pprof"`      // if set, net/http/pprof is served here (loopback only, unless PprofForce)
	// PprofForce allows pprof on an address that is not loopback.
	PprofForce bool `yaml:"pprof_force"`
	// MetricsAddr, if set, serves /metrics (and pprof, when Pprof is the
	// same address) on a listener of its own, and not on Addr.
	MetricsAddr string `yaml:"metrics_addr"`

	HTTP HTTPConfig `yaml:"http"`

	// JWTSecrets replaces jwt_secret for rotation: every one is accepted,
	// the first signs. Each secret, from any source, is at least 32 bytes.
	JWTSecrets []Secret   `yaml:"jwt_secrets"`
	Auth       AuthConfig `yaml:"auth"` // tokens of an OpenID Connect identity provider

	NATS     NATSConfig     `yaml:"nats"`
	MySQL    MySQLConfig    `yaml:"mysql"`
	Redis    RedisConfig    `yaml:"redis"`
	Limits   LimitsConfig   `yaml:"limits"`
	Notify   NotifyConfig   `yaml:"notify"`
	Payments PaymentsConfig `yaml:"payments"`
	Events   EventsConfig   `yaml:"events"` // event signing key (transport.go)
	Otel     OtelConfig     `yaml:"otel"`   // traces (tracing.go)

	ConfigFile string `yaml:"-"`

	wrapStream func(order.Stream) order.Stream // tests: inject faults in front of the stream
	tracer     trace.TracerProvider            // tests: trace into this provider (an in-memory exporter's)
}

// AuthConfig adds tokens of an OpenID Connect identity provider to Spike's
// own HS256 tokens.
type AuthConfig struct {
	OIDC AuthOIDCConfig `yaml:"oidc"`
}

// AuthOIDCConfig is the identity provider; without an issuer, none.
type AuthOIDCConfig struct {
	Issuer          string        `yaml:"issuer"`           // tokens' iss; discovery at issuer/.well-known/openid-configuration
	JWKSURL         string        `yaml:"jwks_url"`         // empty: discovered
	Audience        string        `yaml:"audience"`         // required: must be among the tokens' aud
	UserClaim       string        `yaml:"user_claim"`       // holds the positive int64 user id; a dotted path reaches nested claims
	AdminClaim      string        `yaml:"admin_claim"`      // a token is admin when this claim equals admin_value
	AdminValue      string        `yaml:"admin_value"`      // or is an array containing it
	RefreshInterval time.Duration `yaml:"refresh_interval"` // the keys are fetched again this often (and on an unknown kid)
}

// HTTPConfig tunes the public listener.
type HTTPConfig struct {
	// TrustedProxies are addresses or CIDR prefixes of the load balancers
	// whose X-Forwarded-For names the client for the per-IP limit; from
	// any other peer the header is ignored.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// MetricsAdmin requires an admin token for /metrics on Addr (without
	// metrics_addr).
	MetricsAdmin bool `yaml:"metrics_admin"`
}

// NATSConfig selects the stream. Without URLs, NATS runs embedded.
type NATSConfig struct {
	URLs       []string `yaml:"urls"`        // external NATS servers; empty: embedded
	Listen     string   `yaml:"listen"`      // embedded only: also listen on this address
	SyncAlways bool     `yaml:"sync_always"` // embedded only: fsync every stream write
	Replicas   int      `yaml:"replicas"`    // stream replicas: 1, or 3 in a NATS cluster
	// PublishBatch is how many placements may share one stream message
	// (group commit). Batched events are found by id through the
	// publishing instance's own index; clustered instances ask each other
	// (natsbus/lookup.go). 0: 128; 1: one message per order.
	PublishBatch int `yaml:"publish_batch"`
	// PublishLinger is how long a batch may wait for more placements
	// while placements arrive in groups (never under light traffic):
	// fewer, fuller messages for a NATS server shared by several
	// instances. 0: 1ms with urls, none embedded (where it costs
	// latency and saves little); negative: none.
	PublishLinger time.Duration `yaml:"publish_linger"`

	// Credentials and TLS (transport.go, docs/security.md). With urls,
	// what this instance presents; embedded, what every client of a
	// listening server must present (the instance's own connection too).
	User                   string    `yaml:"user"`
	Password               Secret    `yaml:"password"`
	Token                  Secret    `yaml:"token"`
	TLS                    TLSFiles  `yaml:"tls"`                      // external NATS only
	ListenTLS              ListenTLS `yaml:"listen_tls"`               // embedded only: the server's certificate
	InsecureListenLoopback bool      `yaml:"insecure_listen_loopback"` // embedded only: listen on loopback without auth and TLS

	// NKeys and NATS permissions (natsauth.go, docs/security.md).
	// NkeySeedFile, instead of a user or a token, is this instance's nkey
	// seed: presented to nats.urls; embedded, the listening server's
	// instance user. CredsFile (nats.urls only) is a .creds file (user JWT
	// and seed). Both must be private to their owner (mode 0600).
	NkeySeedFile string      `yaml:"nkey_seed_file"`
	CredsFile    string      `yaml:"creds_file"`
	Monitor      NATSMonitor `yaml:"monitor"` // embedded with listen only: a read-only user
}

// MySQLConfig selects MySQL. Without a primary, SQLite in Data is used.
type MySQLConfig struct {
	Primary     string       `yaml:"primary"`      // DSN of catalog and sales (and orders without shards)
	Replicas    []string     `yaml:"replicas"`     // DSNs for reads that may be stale
	OrderShards []ShardEntry `yaml:"order_shards"` // order databases; buckets are split evenly
	Migrate     bool         `yaml:"migrate"`      // apply migrations at start (else run spike migrate)

	// Credentials and TLS for every DSN above (transport.go): User and
	// Password replace the DSNs' own when set.
	User     string   `yaml:"user"`
	Password Secret   `yaml:"password"`
	TLS      TLSFiles `yaml:"tls"`
}

// ShardEntry is one order database.
type ShardEntry struct {
	Primary  string   `yaml:"primary"`
	Replicas []string `yaml:"replicas"`
}

// RedisConfig selects Redis for the stock counters. Without addresses
// the counters are in process (one instance only).
type RedisConfig struct {
	Addrs    []string `yaml:"addrs"` // one address, or several nodes of a Redis Cluster
	Password Secret   `yaml:"password"`

	// ACL user (with Password) and TLS (transport.go).
	Username string   `yaml:"username"`
	TLS      TLSFiles `yaml:"tls"`
}

// LimitsConfig bounds the adaptive admission limiter.
type LimitsConfig struct {
	AdmissionInitial int `yaml:"admission_initial"` // starting concurrency limit
	AdmissionMin     int `yaml:"admission_min"`     // the limit never adapts below this
	AdmissionMax     int `yaml:"admission_max"`
	// Instances is how many instances share the Redis-distributed limits:
	// while Redis is unreachable each admits its share locally.
	Instances int `yaml:"instances"`
	// AbandonAfter is when a reservation left unconfirmed by a dead
	// instance (and whose event is not durable) is released on its key's
	// next replay. It must exceed the enqueue timeout by a wide margin.
	AbandonAfter time.Duration `yaml:"abandon_after"`
	// InstanceLease is the TTL of each instance's lease in Redis
	// (clustered mode): a request that died with its instance is settled
	// by a retry of its key about this long after the death, on any
	// instance. An instance stops publishing once its lease has less than
	// half of it left (Redis unreachable).
	InstanceLease time.Duration `yaml:"instance_lease"`
	// ShutdownTimeout bounds a graceful stop.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// The order stream's adaptive concurrency limit (resilience.Probed):
	// it stays between StreamMin and StreamMax, and shrinks once the mean
	// publish latency exceeds max(StreamTolerance × the unqueued latency,
	// the unqueued latency + StreamSlack). StreamMin must stay at or below
	// what a slowed stream serves at once.
	StreamMin       int           `yaml:"stream_min"`
	StreamMax       int           `yaml:"stream_max"`
	StreamTolerance float64       `yaml:"stream_tolerance"`
	StreamSlack     time.Duration `yaml:"stream_slack"`
	// StockTimeout bounds each call to the Redis stock counters (reserve,
	// confirm, release); a reserve cut by it is undone and answered 503.
	StockTimeout time.Duration `yaml:"stock_timeout"`
	// PersistYield is how long an order worker may hold a batch while
	// placements arrive fast and the CPU is saturated (order.Pacer): the
	// stream absorbs the burst and the workers catch up after. It bounds
	// the persistence lag during a burst; 0 never holds. It must stay
	// below the stream's 10s redelivery wait.
	PersistYield time.Duration `yaml:"persist_yield"`
}

// NotifyConfig selects where buyer notifications go. Notifications are
// non-core: sent by a small pool of workers after orders are persisted,
// dropped (and counted) when the pool is full, the provider is failing or
// the notifications switch is off.
type NotifyConfig struct {
	// Provider is webhook, log or none; empty means webhook when
	// WebhookURL is set, else none (a log line per order costs about a
	// tenth of the placement path's CPU at full load).
	Provider      string        `yaml:"provider"`
	WebhookURL    string        `yaml:"webhook_url"`    // receives a signed JSON POST per notification
	WebhookSecret Secret        `yaml:"webhook_secret"` // HMAC-SHA256 key of the X-Spike-Signature header
	Workers       int           `yaml:"workers"`        // sends in flight at most
	Queue         int           `yaml:"queue"`          // notifications waiting for a worker; more are dropped
	Timeout       time.Duration `yaml:"timeout"`        // per attempt to send
}

// PaymentsConfig selects the payment provider and the life of orders after
// the 202 (deadlines, stock returns).
type PaymentsConfig struct {
	// Provider is the default provider: sandbox (a built-in simulated
	// gateway) or stripe.
	Provider string `yaml:"provider"`
	// PublicURL is where buyers and the sandbox gateway reach this API
	// (checkout pages and webhooks); empty: http:// and the listen address.
	// Behind a load balancer, its address.
	PublicURL string `yaml:"public_url"`
	// DeadlineSweep is how often each instance cancels orders past their
	// payment deadline.
	DeadlineSweep time.Duration `yaml:"deadline_sweep"`
	// SettleAfter is how long after a sale ends its unsold units go back to
	// the product (placements in flight at the end finish first).
	SettleAfter time.Duration `yaml:"settle_after"`
	Sandbox     SandboxConfig `yaml:"sandbox"`
	Stripe      StripeConfig  `yaml:"stripe"`
}

// SandboxConfig tunes the simulated gateway.
type SandboxConfig struct {
	// Secret signs its checkout references and webhooks; every instance
	// needs the same one. Empty: derived from the JWT secret.
	Secret        Secret        `yaml:"secret"`
	Latency       time.Duration `yaml:"latency"`        // added to each call to the gateway
	FailureRate   float64       `yaml:"failure_rate"`   // share of calls that fail (the breaker's test)
	DuplicateRate float64       `yaml:"duplicate_rate"` // share of webhooks delivered twice
	ReorderRate   float64       `yaml:"reorder_rate"`   // share of payments that also get a late, out-of-order event
}

// StripeConfig configures the Stripe provider.
type StripeConfig struct {
	APIKey        Secret `yaml:"api_key"`
	WebhookSecret Secret `yaml:"webhook_secret"`
	BackendURL    string `yaml:"backend_url"` // empty: Stripe's API (set for stripe-mock)
}

// provider returns the effective provider: webhook, log or none.
func (n NotifyConfig) provider() string {
	if n.Provider == "" {
		if n.WebhookURL != "" {
			return "webhook"
		}
		return "none"
	}
	return n.Provider
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Addr: "127.0.0.1:8080", Data: "./spike-data", LogFormat: "text",
		NATS: NATSConfig{Replicas: 1},
		Limits: LimitsConfig{AdmissionInitial: 1000, AdmissionMin: 256, AdmissionMax: 20000, Instances: 1, AbandonAfter: 90 * time.Second, InstanceLease: redisstock.DefaultLeaseTTL, ShutdownTimeout: time.Minute,
			StreamMin: depguard.StreamLimitMin, StreamMax: depguard.StreamLimitMax, StreamTolerance: depguard.StreamLimitTolerance, StreamSlack: depguard.StreamLimitSlack,
			StockTimeout: depguard.StockCallTimeout, PersistYield: 4 * time.Second},
		Notify:   NotifyConfig{Workers: 4, Queue: 4096, Timeout: 2 * time.Second},
		Payments: PaymentsConfig{Provider: "sandbox", DeadlineSweep: 500 * time.Millisecond, SettleAfter: 10 * time.Second},
		Auth:     AuthConfig{OIDC: AuthOIDCConfig{UserClaim: "sub", RefreshInterval: time.Hour}},
		Otel:     defaultOtel,
	}
}

// Embedded reports whether no external backend is configured.
func (c *Config) Embedded() bool {
	return len(c.NATS.URLs) == 0 && c.MySQL.Primary == "" && len(c.Redis.Addrs) == 0
}

// flagSet returns the flags every command shares, bound to a config
// loaded after parsing (see load).
type flagSet struct {
	*flag.FlagSet
	cfg *Config
}

func newFlagSet(name string) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), cfg: &Config{}}
	fs.SetOutput(io.Discard)
	fs.String("addr", "", "HTTP listen address (env SPIKE_ADDR; default 127.0.0.1:8080)")
	fs.String("data", "", "data folder (env SPIKE_DATA; default ./spike-data)")
	fs.String("config", "", "YAML config file selecting backends (env SPIKE_CONFIG)")
	return fs
}

// load parses args and builds the effective configuration:
// defaults < config file < environment < flags.
func (fs *flagSet) load(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Config{}, helpFor(fs.FlagSet)
		}
		return Config{}, fmt.Errorf("%s: %w", fs.Name(), err)
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	cfg := DefaultConfig()
	cfg.ConfigFile = getenv("SPIKE_CONFIG")
	if f := fs.Lookup("config"); f.Value.String() != "" {
		cfg.ConfigFile = f.Value.String()
	}
	if cfg.ConfigFile != "" {
		if err := loadFile(&cfg, cfg.ConfigFile); err != nil {
			return Config{}, err
		}
	}
	if err := applyEnv(reflect.ValueOf(&cfg).Elem(), "SPIKE", getenv); err != nil {
		return Config{}, err
	}
	var ferr error
	fs.Visit(func(f *flag.Flag) {
		if ferr == nil && f.Name != "config" {
			ferr = setFlag(&cfg, f.Name, f.Value.String())
		}
	})
	if ferr != nil {
		return Config{}, ferr
	}
	return cfg, cfg.Validate()
}

// setFlag applies a flag to the config by the key it stands for.
func setFlag(cfg *Config, name, value string) error {
	key, ok := flagKeys[name]
	if !ok {
		return nil // a command's own flag
	}
	return setPath(reflect.ValueOf(cfg).Elem(), strings.Split(key, "."), value, "--"+name)
}

// flagKeys maps flags to config keys.
var flagKeys = map[string]string{
	"addr": "addr", "data": "data", "pprof": "pprof", "pprof-force": "pprof_force", "metrics-addr": "metrics_addr",
	"nats-listen": "nats.listen", "sync-always": "nats.sync_always",
	"notify": "notify.provider", "notify-webhook-url": "notify.webhook_url",
}

func loadFile(cfg *Config, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true) // an unknown key is an error, named
	if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: %w%s", path, err, keysOnLines(b, err))
	}
	normalize(reflect.ValueOf(cfg).Elem())
	return nil
}

var errLine = regexp.MustCompile(`line (\d+):`)

// keysOnLines names the keys on the lines a YAML error points at: the
// decoder's type errors give only line numbers.
func keysOnLines(doc []byte, err error) string {
	var root yaml.Node
	if yaml.Unmarshal(doc, &root) != nil {
		return ""
	}
	var names []string
	for _, m := range errLine.FindAllStringSubmatch(err.Error(), -1) {
		line, _ := strconv.Atoi(m[1])
		if k := keyAt(&root, "", line); k != "" {
			names = append(names, k)
		}
	}
	if len(names) == 0 {
		return ""
	}
	return " (key " + strings.Join(names, ", ") + ")"
}

func keyAt(n *yaml.Node, prefix string, line int) string {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			if k := keyAt(c, prefix, line); k != "" {
				return k
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, val := n.Content[i], n.Content[i+1]
			path := strings.TrimPrefix(prefix+"."+key.Value, ".")
			if val.Line == line && val.Kind == yaml.ScalarNode || key.Line == line && val.Kind == yaml.ScalarNode {
				return path
			}
			if k := keyAt(val, path, line); k != "" {
				return k
			}
		}
	}
	return ""
}

// normalize turns empty lists into nil, so "urls: []" means the default.
func normalize(v reflect.Value) {
	for i := range v.NumField() {
		f := v.Field(i)
		switch {
		case !v.Type().Field(i).IsExported():
		case f.Kind() == reflect.Struct:
			normalize(f)
		case f.Kind() == reflect.Slice && f.Len() == 0:
			f.Set(reflect.Zero(f.Type()))
		}
	}
}

// applyEnv sets every leaf of v from SPIKE_<PATH> when that is set.
func applyEnv(v reflect.Value, prefix string, getenv func(string) string) error {
	t := v.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		name := prefix + "_" + strings.ToUpper(tag)
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct && fv.Type() != reflect.TypeOf(time.Duration(0)) {
			if err := applyEnv(fv, name, getenv); err != nil {
				return err
			}
			continue
		}
		if s := getenv(name); s != "" {
			if err := setValue(fv, s, name); err != nil {
				return err
			}
		}
	}
	return nil
}

func setPath(v reflect.Value, path []string, value, source string) error {
	t := v.Type()
	for i := range t.NumField() {
		if t.Field(i).Tag.Get("yaml") == path[0] {
			if len(path) == 1 {
				return setValue(v.Field(i), value, source)
			}
			return setPath(v.Field(i), path[1:], value, source)
		}
	}
	return fmt.Errorf("%s: no such setting", source)
}

// setValue parses s into a config leaf; source names the setting in errors.
func setValue(v reflect.Value, s, source string) error {
	switch {
	case v.Type() == reflect.TypeOf(time.Duration(0)):
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%s: %q is not a duration like 30s", source, s)
		}
		v.SetInt(int64(d))
	case v.Kind() == reflect.String:
		v.SetString(s)
	case v.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%s: %q is not true or false", source, s)
		}
		v.SetBool(b)
	case v.Kind() == reflect.Float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("%s: %q is not a number", source, s)
		}
		v.SetFloat(f)
	case v.Kind() == reflect.Int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("%s: %q is not an integer", source, s)
		}
		v.SetInt(int64(n))
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
		parts := reflect.Zero(v.Type()) // []string, or []Secret
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = reflect.Append(parts, reflect.ValueOf(p).Convert(v.Type().Elem()))
			}
		}
		v.Set(parts)
	case v.Type() == reflect.TypeOf([]ShardEntry(nil)):
		// SPIKE_MYSQL_ORDER_SHARDS: comma-separated primary DSNs.
		var shards []ShardEntry
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				shards = append(shards, ShardEntry{Primary: p})
			}
		}
		v.Set(reflect.ValueOf(shards))
	default:
		return fmt.Errorf("%s: cannot be set from text", source)
	}
	return nil
}

// Validate reports the first setting that cannot work, by its key.
func (c *Config) Validate() error {
	switch {
	case c.Addr == "":
		return errors.New("config addr: must not be empty")
	case c.Data == "":
		return errors.New("config data: must not be empty")
	case c.LogFormat != "text" && c.LogFormat != "json":
		return fmt.Errorf("config log_format: %q must be text or json", c.LogFormat)
	case c.Pprof != "" && !c.PprofForce && !loopbackAddr(c.Pprof):
		return fmt.Errorf("config pprof: %q is not a loopback address (pprof shows memory and stacks); use 127.0.0.1:PORT, or pprof_force (--pprof-force) to expose it anyway", c.Pprof)
	case c.MetricsAddr != "" && c.HTTP.MetricsAdmin:
		return errors.New("config http.metrics_admin: applies to /metrics on addr; with metrics_addr set it is not served there; drop one")
	case c.MetricsAddr != "" && c.MetricsAddr == c.Addr && !strings.HasSuffix(c.Addr, ":0"):
		return errors.New("config metrics_addr: must differ from addr")
	case c.NATS.Replicas != 1 && c.NATS.Replicas != 3 && c.NATS.Replicas != 5:
		return fmt.Errorf("config nats.replicas: %d must be 1, 3 or 5", c.NATS.Replicas)
	case len(c.NATS.URLs) > 0 && (c.NATS.Listen != "" || c.NATS.SyncAlways):
		return errors.New("config nats.listen and nats.sync_always apply to embedded NATS only; drop them or nats.urls")
	case c.NATS.PublishBatch < 0 || c.NATS.PublishBatch > 4096:
		return fmt.Errorf("config nats.publish_batch: %d must be between 0 (automatic) and 4096", c.NATS.PublishBatch)
	case c.NATS.PublishLinger > 100*time.Millisecond:
		return fmt.Errorf("config nats.publish_linger: %v is above 100ms: every placement of a busy sale would wait that long", c.NATS.PublishLinger)
	case len(c.MySQL.Replicas) > 0 && c.MySQL.Primary == "", len(c.MySQL.OrderShards) > 0 && c.MySQL.Primary == "":
		return errors.New("config mysql.primary: required when replicas or order_shards are set")
	case c.Limits.AdmissionMin < 1 || c.Limits.AdmissionMax < c.Limits.AdmissionMin ||
		c.Limits.AdmissionInitial < c.Limits.AdmissionMin || c.Limits.AdmissionInitial > c.Limits.AdmissionMax:
		return fmt.Errorf("config limits: need 1 <= admission_min (%d) <= admission_initial (%d) <= admission_max (%d)",
			c.Limits.AdmissionMin, c.Limits.AdmissionInitial, c.Limits.AdmissionMax)
	case c.Limits.AbandonAfter < 3*enqueueTimeout:
		return fmt.Errorf("config limits.abandon_after: %v must be at least %v (3x the enqueue timeout)", c.Limits.AbandonAfter, 3*enqueueTimeout)
	case c.Limits.InstanceLease < time.Second || c.Limits.InstanceLease > c.Limits.AbandonAfter/3:
		return fmt.Errorf("config limits.instance_lease: %v must be between 1s and a third of limits.abandon_after (%v)", c.Limits.InstanceLease, c.Limits.AbandonAfter)
	case c.Limits.Instances < 1:
		return errors.New("config limits.instances: must be at least 1")
	case c.Limits.ShutdownTimeout <= 0:
		return errors.New("config limits.shutdown_timeout: must be positive")
	case c.Limits.StreamMin < 1 || c.Limits.StreamMax < c.Limits.StreamMin:
		return fmt.Errorf("config limits.stream_min, limits.stream_max: need 1 <= stream_min (%d) <= stream_max (%d)", c.Limits.StreamMin, c.Limits.StreamMax)
	case !(c.Limits.StreamTolerance >= 1 && c.Limits.StreamTolerance <= 100):
		return fmt.Errorf("config limits.stream_tolerance: %g must be between 1 and 100", c.Limits.StreamTolerance)
	case c.Limits.StreamSlack < 0:
		return errors.New("config limits.stream_slack: must not be negative")
	case c.Limits.StockTimeout < 10*time.Millisecond || c.Limits.StockTimeout >= enqueueTimeout:
		return fmt.Errorf("config limits.stock_timeout: %v must be at least 10ms and below the %v enqueue timeout", c.Limits.StockTimeout, enqueueTimeout)
	case c.Limits.PersistYield < 0 || c.Limits.PersistYield > 8*time.Second:
		return fmt.Errorf("config limits.persist_yield: %v must be between 0 and 8s (below the stream's 10s redelivery wait)", c.Limits.PersistYield)
	case c.Notify.Provider != "" && c.Notify.Provider != "webhook" && c.Notify.Provider != "log" && c.Notify.Provider != "none":
		return fmt.Errorf("config notify.provider: %q must be webhook, log or none", c.Notify.Provider)
	case c.Notify.provider() == "webhook" && c.Notify.WebhookURL == "":
		return errors.New("config notify.webhook_url: required with notify.provider webhook")
	case c.Notify.provider() == "webhook" && c.Notify.WebhookSecret == "":
		return errors.New("config notify.webhook_secret: required with notify.webhook_url (receivers verify the X-Spike-Signature header with it)")
	case c.Notify.Workers < 1:
		return errors.New("config notify.workers: must be at least 1")
	case c.Notify.Queue < 0:
		return errors.New("config notify.queue: must not be negative")
	case c.Notify.Timeout <= 0:
		return errors.New("config notify.timeout: must be positive")
	case c.Payments.Provider != "sandbox" && c.Payments.Provider != "stripe":
		return fmt.Errorf("config payments.provider: %q must be sandbox or stripe", c.Payments.Provider)
	case c.Payments.Provider == "stripe" && (c.Payments.Stripe.APIKey == "" || c.Payments.Stripe.WebhookSecret == ""):
		return errors.New("config payments.stripe.api_key and payments.stripe.webhook_secret: required with payments.provider stripe")
	case c.Payments.DeadlineSweep < 10*time.Millisecond || c.Payments.DeadlineSweep > 4*time.Second:
		return fmt.Errorf("config payments.deadline_sweep: %v must be between 10ms and 4s (deadlines are kept within 5 s)", c.Payments.DeadlineSweep)
	case c.Payments.SettleAfter < 0:
		return errors.New("config payments.settle_after: must not be negative")
	case !rate(c.Payments.Sandbox.FailureRate) || !rate(c.Payments.Sandbox.DuplicateRate) || !rate(c.Payments.Sandbox.ReorderRate):
		return errors.New("config payments.sandbox: failure_rate, duplicate_rate and reorder_rate must be between 0 and 1")
	case c.Payments.Sandbox.Latency < 0:
		return errors.New("config payments.sandbox.latency: must not be negative")
	}
	if c.Payments.PublicURL != "" {
		u, err := url.Parse(c.Payments.PublicURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("config payments.public_url: %q must be an http:// or https:// URL", c.Payments.PublicURL)
		}
	}
	if c.Notify.WebhookURL != "" {
		u, err := url.Parse(c.Notify.WebhookURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("config notify.webhook_url: %q must be an http:// or https:// URL", redactURL(c.Notify.WebhookURL))
		}
	}
	for _, u := range c.NATS.URLs {
		if !strings.HasPrefix(u, "nats://") && !strings.HasPrefix(u, "tls://") {
			return fmt.Errorf("config nats.urls: %q must start with nats:// or tls://", u)
		}
	}
	if _, err := httpapi.ParseTrustedProxies(c.HTTP.TrustedProxies); err != nil {
		return fmt.Errorf("config http.trusted_proxies: %v", err)
	}
	for _, a := range c.Redis.Addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("config redis.addrs: %q is not host:port", a)
		}
	}
	for i, s := range c.MySQL.OrderShards {
		if s.Primary == "" {
			return fmt.Errorf("config mysql.order_shards[%d].primary: required", i)
		}
	}
	if err := c.Otel.validate(); err != nil {
		return err
	}
	if err := c.validateAuth(); err != nil {
		return err
	}
	return c.validateTransport()
}

var dsnPassword = regexp.MustCompile(`^([^:@/]*):[^@]*@`)

// redacted returns the configuration as JSON with every secret replaced.
func (c Config) redacted() string {
	red := func(dsn string) string { return dsnPassword.ReplaceAllString(dsn, "$1:REDACTED@") }
	if c.JWTSecret != "" {
		c.JWTSecret = "REDACTED"
	}
	if c.JWTSecrets != nil {
		c.JWTSecrets = slices.Repeat([]Secret{"REDACTED"}, len(c.JWTSecrets))
	}
	if c.Redis.Password != "" {
		c.Redis.Password = "REDACTED"
	}
	m := c.MySQL
	m.Primary = red(m.Primary)
	m.Replicas = append([]string(nil), m.Replicas...)
	for i := range m.Replicas {
		m.Replicas[i] = red(m.Replicas[i])
	}
	m.OrderShards = append([]ShardEntry(nil), m.OrderShards...)
	for i, s := range m.OrderShards {
		s.Primary = red(s.Primary)
		s.Replicas = append([]string(nil), s.Replicas...)
		for j := range s.Replicas {
			s.Replicas[j] = red(s.Replicas[j])
		}
		m.OrderShards[i] = s
	}
	c.MySQL = m
	if c.Notify.WebhookSecret != "" {
		c.Notify.WebhookSecret = "REDACTED"
	}
	c.Notify.WebhookURL = redactURL(c.Notify.WebhookURL)
	for _, sec := range []*Secret{&c.Payments.Sandbox.Secret, &c.Payments.Stripe.APIKey, &c.Payments.Stripe.WebhookSecret} {
		if *sec != "" {
			*sec = "REDACTED"
		}
	}
	c.wrapStream, c.tracer = nil, nil
	c.Otel.Endpoint = redactURL(c.Otel.Endpoint)
	b, _ := json.Marshal(struct {
		Addr, Data, LogFormat, Pprof string
		PprofForce                   bool
		MetricsAddr                  string
		HTTP                         HTTPConfig
		JWTSecret                    Secret
		JWTSecrets                   []Secret
		Auth                         AuthConfig
		NATS                         NATSConfig
		MySQL                        MySQLConfig
		Redis                        RedisConfig
		Limits                       LimitsConfig
		Notify                       NotifyConfig
		Payments                     PaymentsConfig
		Events                       EventsConfig
		Otel                         OtelConfig
		ConfigFile                   string
	}{c.Addr, c.Data, c.LogFormat, c.Pprof, c.PprofForce, c.MetricsAddr, c.HTTP, c.JWTSecret, c.JWTSecrets, c.Auth, c.NATS, c.MySQL, c.Redis, c.Limits, c.Notify, c.Payments, c.Events, c.Otel, c.ConfigFile})
	return string(b)
}

// redactURL hides a URL's password and query (webhook URLs often carry
// tokens there); the path is kept.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		if s == "" {
			return ""
		}
		return "REDACTED"
	}
	if u.RawQuery != "" {
		u.RawQuery = "REDACTED"
	}
	return u.Redacted()
}

const secretFile = "jwt.secret"

// secret returns the HS256 secret tokens are signed with.
func (c *Config) secret() ([]byte, error) {
	s, err := c.secrets()
	if err != nil {
		return nil, err
	}
	return s[0], nil
}

// secrets returns the accepted HS256 secrets, the signing one first:
// jwt_secrets, or jwt_secret, or the one kept in the data folder (created
// on first use so that tokens survive restarts). Each is at least
// auth.MinSecretLen bytes, whatever its source.
func (c *Config) secrets() ([][]byte, error) {
	if err := c.checkSecrets(); err != nil {
		return nil, err
	}
	switch {
	case len(c.JWTSecrets) > 0:
		out := make([][]byte, len(c.JWTSecrets))
		for i, s := range c.JWTSecrets {
			out[i] = []byte(s)
		}
		return out, nil
	case c.JWTSecret != "":
		return [][]byte{[]byte(c.JWTSecret)}, nil
	}
	s, err := c.fileSecret()
	if err != nil {
		return nil, err
	}
	return [][]byte{s}, nil
}

// checkSecrets refuses configured secrets too short to resist an offline
// search from one captured token, naming the key and its variable.
func (c *Config) checkSecrets() error {
	if c.JWTSecret != "" && len(c.JWTSecrets) > 0 {
		return errors.New("config jwt_secret and jwt_secrets: set one of them (jwt_secrets lists every accepted secret, the first signs)")
	}
	short := func(key, env string, s Secret) error {
		return fmt.Errorf("config %s (%s): the secret is %d bytes, at least %d are needed (e.g. openssl rand -hex 32)", key, env, len(s), auth.MinSecretLen)
	}
	if c.JWTSecret != "" && len(c.JWTSecret) < auth.MinSecretLen {
		return short("jwt_secret", "SPIKE_JWT_SECRET", c.JWTSecret)
	}
	for i, s := range c.JWTSecrets {
		if len(s) < auth.MinSecretLen {
			return short(fmt.Sprintf("jwt_secrets[%d]", i), "SPIKE_JWT_SECRETS", s)
		}
	}
	return nil
}

// validateAuth checks the secrets and the identity provider's keys.
func (c *Config) validateAuth() error {
	if err := c.checkSecrets(); err != nil {
		return err
	}
	o := c.Auth.OIDC
	if o.Issuer == "" {
		if o.JWKSURL != "" || o.Audience != "" || o.AdminClaim != "" || o.AdminValue != "" {
			return errors.New("config auth.oidc.issuer: required with the other auth.oidc keys")
		}
		return nil
	}
	switch {
	case o.UserClaim == "":
		return errors.New("config auth.oidc.user_claim: must not be empty")
	case o.RefreshInterval < time.Minute:
		return fmt.Errorf("config auth.oidc.refresh_interval: %v must be at least 1m", o.RefreshInterval)
	}
	if _, err := auth.NewOIDC(o.verifierConfig(nil)); err != nil {
		return fmt.Errorf("config auth.oidc.%w", err)
	}
	return nil
}

func (o AuthOIDCConfig) verifierConfig(log *slog.Logger) auth.OIDCConfig {
	return auth.OIDCConfig{Issuer: o.Issuer, JWKSURL: o.JWKSURL, Audience: o.Audience, UserClaim: o.UserClaim,
		AdminClaim: o.AdminClaim, AdminValue: o.AdminValue, RefreshInterval: o.RefreshInterval, Logger: log}
}

// verifier returns what spike serve checks tokens with: the secrets, and
// the identity provider when one is configured.
func (c *Config) verifier(secrets [][]byte, log *slog.Logger) (*auth.Verifier, error) {
	hs, err := auth.NewHS256(secrets...)
	if err != nil {
		return nil, fmt.Errorf("jwt secret: %w", err)
	}
	v := &auth.Verifier{HS256: hs}
	if c.Auth.OIDC.Issuer != "" {
		if v.OIDC, err = auth.NewOIDC(c.Auth.OIDC.verifierConfig(log.With("component", "oidc"))); err != nil {
			return nil, fmt.Errorf("config auth.oidc.%w", err)
		}
	}
	return v, nil
}

// fileSecret returns the secret kept in the data folder, creating it on
// first use. A file others may read is refused: it signs admin tokens.
func (c *Config) fileSecret() ([]byte, error) {
	path := filepath.Join(c.Data, secretFile)
	b, err := os.ReadFile(path)
	if err == nil {
		if err := checkPrivate(path); err != nil {
			return nil, err
		}
		s := strings.TrimSpace(string(b))
		if len(s) < auth.MinSecretLen {
			return nil, fmt.Errorf("%s: the secret is %d bytes, at least %d are needed (e.g. openssl rand -hex 32 > %s)", path, len(s), auth.MinSecretLen, path)
		}
		return []byte(s), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err := os.MkdirAll(c.Data, 0o700); err != nil {
		return nil, err
	}
	raw := make([]byte, 32)
	rand.Read(raw)
	s := hex.EncodeToString(raw)
	// Write aside, then link into place: if two processes race, one wins and
	// both read the winner's complete file.
	tmp, err := os.CreateTemp(c.Data, secretFile+".*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(s + "\n"); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	return c.fileSecret()
}

// checkPrivate refuses a secret file that group or others may read or
// write (not checked on Windows, whose permissions are not mode bits).
func checkPrivate(path string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s: group or others may read or write it (mode %04o); it signs admin tokens: chmod 600 %s", path, perm, path)
	}
	return nil
}

func (c *Config) logger(w io.Writer) *slog.Logger {
	if c.LogFormat == "json" {
		return slog.New(httpapi.TraceLogHandler(slog.NewJSONHandler(w, nil)))
	}
	return slog.New(httpapi.TraceLogHandler(slog.NewTextHandler(w, nil)))
}

func rate(f float64) bool { return f >= 0 && f <= 1 }

// loopbackAddr reports whether a listen address is on loopback only:
// localhost or a loopback IP (an empty host listens everywhere; another
// name may resolve anywhere).
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
