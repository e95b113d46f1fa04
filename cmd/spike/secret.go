package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// existingSecret returns the JWT secret the server verifies with, for the
// commands that talk to a running server (token, audit, the admin CLI).
// Unlike Config.secret it never creates one: only serve may, and a secret
// made up here would sign tokens the server answers with 401.
func (c *Config) existingSecret() ([]byte, error) {
	if c.JWTSecret != "" || len(c.JWTSecrets) > 0 {
		return c.secret()
	}
	path := filepath.Join(c.Data, secretFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		abs, aerr := filepath.Abs(path)
		if aerr != nil {
			abs = path
		}
		return nil, fmt.Errorf("no JWT secret: looked in %s and $SPIKE_JWT_SECRET(S); set SPIKE_JWT_SECRET or --data (the folder spike serve uses)", abs)
	}
	return c.secret()
}

// sameFlagsHint is serve's reminder of what the other commands need to
// find this server's secret and address (addr, the one it listens on);
// "" when the defaults do.
func sameFlagsHint(cfg Config, addr string) string {
	var flags []string
	switch {
	case cfg.ConfigFile != "":
		flags = append(flags, "--config "+cfg.ConfigFile)
	case cfg.Data != DefaultConfig().Data:
		flags = append(flags, "--data "+cfg.Data)
	}
	if cfg.ConfigFile == "" && addr != DefaultConfig().Addr || cfg.ConfigFile != "" && addr != cfg.Addr {
		flags = append(flags, "--addr "+addr)
	}
	if len(flags) == 0 {
		return ""
	}
	return "spike: (pass the same " + strings.Join(flags, " ") + " to spike token, audit, product, sale, order and switch)"
}
