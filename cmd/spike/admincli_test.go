package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// cli runs one spike command line against the server at addr whose data
// folder is dir, as an operator's shell would, and returns stdout.
func cli(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), args, func(k string) string { return env[k] }, &stdout, &stderr)
	return stdout.String(), err
}

func mustCLI(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	out, err := cli(t, env, args...)
	if err != nil {
		t.Fatalf("spike %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// field returns the value of a "field  value" line of the human output.
func field(out, name string) string {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == name {
			return strings.Join(f[1:], " ")
		}
	}
	return ""
}

// TestAdminCLI drives every admin command against a running server, with
// the secret found through --data as spike audit finds it.
func TestAdminCLI(t *testing.T) {
	dir := t.TempDir()
	a := startApp(t, dir)
	defer func() { stopApp(t, a) }()
	env := map[string]string{"SPIKE_DATA": dir, "SPIKE_ADDR": a.addr}

	out := mustCLI(t, env, "product", "create", "--sku", "cli-sku", "--name", "CLI thing", "--price-cents", "1999", "--stock", "50")
	if field(out, "sku") != "cli-sku" || field(out, "stock") != "50" {
		t.Errorf("product create printed %q", out)
	}
	out = mustCLI(t, env, "product", "get", "cli-sku", "--json")
	if !strings.Contains(out, `"name": "CLI thing"`) {
		t.Errorf("product get --json printed %q", out)
	}
	out = mustCLI(t, env, "sale", "create", "--id", "cli-sale", "--sku", "cli-sku", "--stock", "10", "--price-cents", "999", "--per-user-limit", "2")
	if field(out, "id") != "cli-sale" || field(out, "per_user_limit") != "2" {
		t.Errorf("sale create printed %q", out)
	}
	// Flags after the argument work too.
	if out = mustCLI(t, env, "sale", "get", "cli-sale", "--addr", a.addr); field(out, "state") != "active" {
		t.Errorf("sale get printed %q", out)
	}

	c := newClient(t, a.addr, a.secret)
	r, p, err := c.Place(context.Background(), 7, c.Token(7, false), "cli-sale", "k1", 1)
	if err != nil || r.Status != 202 {
		t.Fatalf("place: %v %d %s", err, r.Status, r.Body)
	}
	waitFor(t, "the order persisted", time.Minute, func() bool {
		out, err := cli(t, env, "order", "get", p.OrderID)
		return err == nil && field(out, "status") == "created"
	})
	if out = mustCLI(t, env, "order", "cancel", p.OrderID); field(out, "status") != "cancelled" {
		t.Errorf("order cancel printed %q", out)
	}

	out = mustCLI(t, env, "switch", "list")
	if !strings.Contains(out, "orders.accept") || !strings.HasPrefix(out, "NAME") {
		t.Errorf("switch list printed %q", out)
	}
	mustCLI(t, env, "switch", "set", "orders.accept", "false")
	if r, _, _ := c.Place(context.Background(), 8, c.Token(8, false), "cli-sale", "k1", 1); r.Status != 503 {
		t.Errorf("orders.accept false by the CLI: a placement got %d", r.Status)
	}
	mustCLI(t, env, "switch", "set", "orders.accept", "true")

	if out = mustCLI(t, env, "sale", "end", "cli-sale"); field(out, "state") != "ended" {
		t.Errorf("sale end printed %q", out)
	}

	// The API's errors, named by code, exit 1.
	if _, err := cli(t, env, "product", "get", "no-such-sku"); err == nil || !strings.Contains(err.Error(), "not_found") {
		t.Errorf("product get of an unknown SKU: %v", err)
	}
	if _, err := cli(t, env, "switch", "set", "orders.accept", "maybe"); err == nil || !strings.Contains(err.Error(), "invalid") {
		t.Errorf("switch set to a bad value: %v", err)
	}
	if _, err := cli(t, env, "product", "create", "--sku", "x"); err == nil || !strings.Contains(err.Error(), "required") {
		t.Errorf("product create without its flags: %v", err)
	}
	if _, err := cli(t, env, "sale", "get"); err == nil || !strings.Contains(err.Error(), "usage: spike sale get ID") {
		t.Errorf("sale get without an id: %v", err)
	}
	// A token that is not the server's: 401, with a hint.
	bad := map[string]string{"SPIKE_ADDR": a.addr, "SPIKE_TOKEN": "not.a.token"}
	if _, err := cli(t, bad, "switch", "list"); err == nil || !strings.Contains(err.Error(), "unauthenticated") {
		t.Errorf("switch list with a bad token: %v", err)
	}
	// --token works as well as the secret.
	good := map[string]string{"SPIKE_ADDR": a.addr}
	if _, err := cli(t, good, "switch", "list", "--token", c.Token(1, true)); err != nil {
		t.Errorf("switch list --token: %v", err)
	}

	out = mustCLI(t, env, "audit")
	if !strings.Contains(out, "all invariants hold") {
		t.Errorf("audit printed %q", out)
	}
}

// TestAdminCLIServerDown: nothing listening is said plainly.
func TestAdminCLIServerDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	env := map[string]string{"SPIKE_ADDR": addr, "SPIKE_JWT_SECRET": tokenTestSecret}
	_, err = cli(t, env, "sale", "get", "s1")
	if err == nil || !strings.Contains(err.Error(), "cannot reach spike at "+addr+": is `spike serve` running?") {
		t.Errorf("sale get with no server: %v", err)
	}
}

// TestOnlyServeCreatesSecret: token, audit and the admin commands run from
// another folder refuse and say where they looked, instead of making up a
// secret the server does not know.
func TestOnlyServeCreatesSecret(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"SPIKE_DATA": dir}
	for _, args := range [][]string{
		{"token", "--user", "1"},
		{"audit"},
		{"switch", "list"},
	} {
		_, err := cli(t, env, args...)
		if err == nil || !strings.Contains(err.Error(), "no JWT secret: looked in "+filepath.Join(dir, secretFile)) ||
			!strings.Contains(err.Error(), "SPIKE_JWT_SECRET") {
			t.Errorf("spike %s in a folder without a secret: %v", strings.Join(args, " "), err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, secretFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a command other than serve created %s (%v)", secretFile, err)
	}
	// The secret serve made is found.
	a := startApp(t, dir)
	defer stopApp(t, a)
	if out := mustCLI(t, env, "token", "--user", "1"); tokenSubjectWith(t, a.secret, strings.TrimSpace(out)) != "1" {
		t.Errorf("token after serve made the secret: %q", out)
	}
}

// TestHelpExitsZero: --help prints a usage line on stdout and succeeds,
// for every command.
func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{
		{"--help"}, {"help"},
		{"serve", "--help"}, {"token", "--help"}, {"audit", "-h"}, {"migrate", "--help"}, {"bench", "--help"},
		{"product", "--help"}, {"product", "create", "--help"}, {"sale", "end", "--help"},
		{"order", "get", "--help"}, {"switch", "set", "-h"},
	} {
		out, err := cli(t, nil, args...)
		if err != nil || !strings.HasPrefix(out, "usage:") {
			t.Errorf("spike %s: err %v, stdout %q", strings.Join(args, " "), err, out)
		}
	}
	if _, err := cli(t, nil, "product"); err == nil {
		t.Error("spike product with no subcommand succeeded")
	}
}

func TestMigrateEmbeddedSaysSo(t *testing.T) {
	_, err := cli(t, map[string]string{"SPIKE_DATA": t.TempDir()}, "migrate")
	if err == nil || !strings.Contains(err.Error(), "embedded mode SQLite migrates itself") {
		t.Errorf("migrate in embedded mode: %v", err)
	}
}

func TestSameFlagsHint(t *testing.T) {
	cfg := DefaultConfig()
	if h := sameFlagsHint(cfg, cfg.Addr); h != "" {
		t.Errorf("defaults: hint %q", h)
	}
	cfg.Data = "/srv/spike"
	if h := sameFlagsHint(cfg, cfg.Addr); !strings.Contains(h, "--data /srv/spike") {
		t.Errorf("--data: hint %q", h)
	}
	cfg.ConfigFile = "/etc/spike.yaml"
	if h := sameFlagsHint(cfg, cfg.Addr); !strings.Contains(h, "--config /etc/spike.yaml") || strings.Contains(h, "--data") || strings.Contains(h, "--addr") {
		t.Errorf("clustered: hint %q, want --config and neither --data nor --addr", h)
	}
	if h := sameFlagsHint(cfg, "127.0.0.1:9999"); !strings.Contains(h, "--addr 127.0.0.1:9999") {
		t.Errorf("listening on another port than configured: hint %q", h)
	}
}

// tokenSubjectWith verifies tok with secret and returns its sub claim.
func tokenSubjectWith(t *testing.T, secret []byte, tok string) string {
	t.Helper()
	claims := jwt.MapClaims{}
	if _, err := jwt.ParseWithClaims(tok, claims, func(*jwt.Token) (any, error) { return secret, nil },
		jwt.WithValidMethods([]string{"HS256"})); err != nil {
		t.Fatalf("token %q: %v", tok, err)
	}
	sub, _ := claims["sub"].(string)
	return sub
}
