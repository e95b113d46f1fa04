package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spikehq/spike/order"
)

// Secret is a string that never shows in logs.
type Secret string

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// Config is the effective configuration of a command: defaults, then
// SPIKE_* environment variables, then flags.
type Config struct {
	Addr       string // HTTP listen address
	Data       string // data folder of embedded mode
	ConfigFile string // backends for clustered mode
	JWTSecret  Secret // HS256 secret; if empty, embedded mode keeps one in Data
	NATSListen string // if set, the embedded NATS server also listens here
	SyncAlways bool   // fsync every stream write (survives power loss, slower)
	LogFormat  string // text or json
	PprofAddr  string // if set, net/http/pprof is served here (keep it on loopback)

	wrapStream func(order.Stream) order.Stream // tests: inject faults in front of the stream
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Addr: "127.0.0.1:8080", Data: "./spike-data", LogFormat: "text"}
}

// commonFlags registers the flags every command shares and applies the
// environment to cfg first, so flags win.
func commonFlags(name string, cfg *Config, getenv func(string) string) *flag.FlagSet {
	for _, e := range []struct {
		env string
		dst *string
	}{
		{"SPIKE_ADDR", &cfg.Addr}, {"SPIKE_DATA", &cfg.Data}, {"SPIKE_CONFIG", &cfg.ConfigFile},
		{"SPIKE_NATS_LISTEN", &cfg.NATSListen}, {"SPIKE_LOG_FORMAT", &cfg.LogFormat}, {"SPIKE_PPROF", &cfg.PprofAddr},
	} {
		if v := getenv(e.env); v != "" {
			*e.dst = v
		}
	}
	if v := getenv("SPIKE_JWT_SECRET"); v != "" {
		cfg.JWTSecret = Secret(v)
	}
	if v := getenv("SPIKE_SYNC_ALWAYS"); v == "1" || v == "true" {
		cfg.SyncAlways = true
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "HTTP listen address (env SPIKE_ADDR)")
	fs.StringVar(&cfg.Data, "data", cfg.Data, "data folder (env SPIKE_DATA)")
	fs.StringVar(&cfg.ConfigFile, "config", cfg.ConfigFile, "config file selecting clustered backends (env SPIKE_CONFIG)")
	return fs
}

// parse parses args, printing usage on -h and wrapping errors.
func parse(fs *flag.FlagSet, args []string, out io.Writer) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(out)
			fs.PrintDefaults()
			return errSilent
		}
		return fmt.Errorf("%s: %w", fs.Name(), err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	return nil
}

// Validate reports the first setting that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.ConfigFile != "":
		return fmt.Errorf("config file %s: clustered backends (MySQL, Redis, external NATS) are not in this build yet; run without --config for embedded mode", c.ConfigFile)
	case c.Addr == "":
		return errors.New("addr must not be empty")
	case c.Data == "":
		return errors.New("data must not be empty")
	case c.LogFormat != "text" && c.LogFormat != "json":
		return fmt.Errorf("log format %q: must be text or json", c.LogFormat)
	}
	return nil
}

const secretFile = "jwt.secret"

// secret returns the JWT secret: the configured one, or the one kept in the
// data folder, created on first use so that tokens survive restarts.
func (c *Config) secret() ([]byte, error) {
	if c.JWTSecret != "" {
		return []byte(c.JWTSecret), nil
	}
	path := filepath.Join(c.Data, secretFile)
	b, err := os.ReadFile(path)
	if err == nil {
		s := strings.TrimSpace(string(b))
		if len(s) < 32 {
			return nil, fmt.Errorf("%s: secret is shorter than 32 characters", path)
		}
		return []byte(s), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err := os.MkdirAll(c.Data, 0o755); err != nil {
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
	return c.secret()
}

func (c *Config) logger(w io.Writer) *slog.Logger {
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(slog.NewTextHandler(w, nil))
}
