package main

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/spikehq/spike/internal/adapter/natsbus"
)

// NATS identities beyond a user and password (docs/security.md, "NATS
// users and permissions"): nkeys, .creds files, and the embedded server's
// read-only monitor user.

// NATSMonitor is the listening embedded server's read-only user
// (natsbus.MonitorPermissions): a user and password, or the public key of
// an nkey ("U…"), whose seed stays with the monitoring tool.
type NATSMonitor struct {
	User     string `yaml:"user"`
	Password Secret `yaml:"password"`
	Nkey     string `yaml:"nkey"`
}

func (m NATSMonitor) set() bool { return m != NATSMonitor{} }

// checkAuth checks the nkey, creds and monitor settings.
func (n NATSConfig) checkAuth() error {
	identities := 0
	for _, set := range []bool{n.User != "" || n.Password != "", n.Token != "", n.NkeySeedFile != "", n.CredsFile != ""} {
		if set {
			identities++
		}
	}
	switch {
	case identities > 1:
		return errors.New("config nats: set one identity: user and password, token, nkey_seed_file or creds_file")
	case n.CredsFile != "" && len(n.URLs) == 0:
		return errors.New("config nats.creds_file: applies to external NATS (nats.urls) only; the embedded server takes nats.nkey_seed_file")
	case n.Monitor.set() && (len(n.URLs) > 0 || n.Listen == ""):
		return errors.New("config nats.monitor: applies to a listening embedded NATS (nats.listen) only")
	}
	for key, path := range map[string]string{"nats.nkey_seed_file": n.NkeySeedFile, "nats.creds_file": n.CredsFile} {
		if path == "" {
			continue
		}
		if err := checkPrivateFile(key, path); err != nil {
			return err
		}
	}
	if n.NkeySeedFile != "" {
		if _, err := nats.NkeyOptionFromSeed(n.NkeySeedFile); err != nil {
			return fmt.Errorf("config nats.nkey_seed_file: %w", err)
		}
	}
	return nil
}

// checkPrivateFile refuses a file of credentials that group or others may
// read or write, as DATA/jwt.secret is refused (not checked on Windows,
// whose permissions are not mode bits).
func checkPrivateFile(key, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("config %s: %w", key, err)
	}
	if runtime.GOOS == "windows" {
		return nil
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("config %s: %s: group or others may read or write it (mode %04o); it holds NATS credentials: chmod 600 %s", key, path, perm, path)
	}
	return nil
}

// readSeed reads the nkey seed file: a bare seed, or the decorated block
// nsc writes.
func readSeed(path string) ([]byte, error) {
	if err := checkPrivateFile("nats.nkey_seed_file", path); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config nats.nkey_seed_file: %w", err)
	}
	kp, err := nkeys.ParseDecoratedNKey(b)
	if err != nil {
		return nil, fmt.Errorf("config nats.nkey_seed_file: %w", err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, fmt.Errorf("config nats.nkey_seed_file: %w", err)
	}
	return seed, nil
}

// embeddedAuth sets the nkey and monitor parts of an embedded server's
// configuration.
func (n NATSConfig) embeddedAuth(cfg *natsbus.EmbeddedConfig) error {
	if n.NkeySeedFile != "" {
		seed, err := readSeed(n.NkeySeedFile)
		if err != nil {
			return err
		}
		cfg.NkeySeed = seed
	}
	if n.Monitor.set() {
		cfg.Monitor = &natsbus.MonitorUser{User: n.Monitor.User, Password: string(n.Monitor.Password), Nkey: n.Monitor.Nkey}
	}
	return nil
}

// clientAuthOptions are the nkey or creds options of a connection to
// external NATS (nil when neither is configured).
func (n NATSConfig) clientAuthOptions() ([]nats.Option, error) {
	switch {
	case n.NkeySeedFile != "":
		if err := checkPrivateFile("nats.nkey_seed_file", n.NkeySeedFile); err != nil {
			return nil, err
		}
		opt, err := nats.NkeyOptionFromSeed(n.NkeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("config nats.nkey_seed_file: %w", err)
		}
		return []nats.Option{opt}, nil
	case n.CredsFile != "":
		if err := checkPrivateFile("nats.creds_file", n.CredsFile); err != nil {
			return nil, err
		}
		return []nats.Option{nats.UserCredentials(n.CredsFile)}, nil
	}
	return nil, nil
}

// natsAsyncError logs what the NATS server reports without failing a call:
// above all a permission violation (the server drops a publish or a
// subscription its permissions for this user do not allow).
func (a *app) natsAsyncError(_ *nats.Conn, sub *nats.Subscription, err error) {
	if sub != nil {
		a.log.Warn("nats error", "subject", sub.Subject, "err", err)
		return
	}
	a.log.Warn("nats error", "err", err)
}
