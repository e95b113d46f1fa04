package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/spikehq/spike/internal/httpapi"
)

const (
	goodSecret  = "0123456789abcdef0123456789abcdef-new"
	olderSecret = "0123456789abcdef0123456789abcdef-old"
)

// TestServeRefusesShortSecrets: a JWT secret under 32 bytes stops spike
// serve with one line naming where it came from, whatever the source.
func TestServeRefusesShortSecrets(t *testing.T) {
	tests := []struct {
		name   string
		env    map[string]string
		config string // YAML, if any
		file   string // DATA/jwt.secret, if any
		want   string
	}{
		{"env SPIKE_JWT_SECRET", map[string]string{"SPIKE_JWT_SECRET": "a"}, "", "", "SPIKE_JWT_SECRET): the secret is 1 bytes, at least 32"},
		{"env SPIKE_JWT_SECRETS", map[string]string{"SPIKE_JWT_SECRETS": goodSecret + ",short"}, "", "", "jwt_secrets[1] (SPIKE_JWT_SECRETS): the secret is 5 bytes"},
		{"config jwt_secret", nil, "jwt_secret: 0123456789abcdef0123456789abcde\n", "", "config jwt_secret (SPIKE_JWT_SECRET): the secret is 31 bytes"},
		{"config jwt_secrets", nil, "jwt_secrets: [tiny]\n", "", "config jwt_secrets[0]"},
		{"file", nil, "", "short-secret\n", "jwt.secret: the secret is 12 bytes, at least 32"},
		{"both keys", map[string]string{"SPIKE_JWT_SECRET": goodSecret, "SPIKE_JWT_SECRETS": olderSecret}, "", "", "set one of them"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			vars := map[string]string{"SPIKE_DATA": dir, "SPIKE_ADDR": "127.0.0.1:0"}
			for k, v := range tt.env {
				vars[k] = v
			}
			if tt.config != "" {
				vars["SPIKE_CONFIG"] = writeConfig(t, tt.config)
			}
			if tt.file != "" {
				if err := os.WriteFile(filepath.Join(dir, secretFile), []byte(tt.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var stdout, stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err := run(ctx, []string{"serve"}, env(vars), &stdout, &stderr)
			if err == nil {
				t.Fatal("spike serve started with a short secret")
			}
			if msg := err.Error(); !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
				t.Errorf("error %q, want one line containing %q", msg, tt.want)
			}
		})
	}
}

// TestSecretFileMustBePrivate: a jwt.secret that group or others may read
// is refused (it signs admin tokens); the generated one is 0600.
func TestSecretFileMustBePrivate(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Data = t.TempDir()
	s, err := cfg.secret()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(cfg.Data, secretFile)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("generated %s: %v, %v", path, fi.Mode(), err)
	}
	if len(s) < 32 {
		t.Errorf("generated secret is %d bytes", len(s))
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = cfg.secret()
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("0644 jwt.secret: %v, want a refusal saying chmod 600", err)
	}
}

// TestSecretRotation: with jwt_secrets every secret is accepted and the
// first signs, for spike serve and spike token alike.
func TestSecretRotation(t *testing.T) {
	cfg := DefaultConfig()
	cfg.JWTSecrets = []Secret{goodSecret, olderSecret}
	a := startAppConfig(t, cfg)
	defer stopApp(t, a)

	var out bytes.Buffer
	if err := run(context.Background(), []string{"token", "--user", "42"}, env(map[string]string{
		"SPIKE_JWT_SECRETS": goodSecret + "," + olderSecret, "SPIKE_DATA": t.TempDir()}), &out, &out); err != nil {
		t.Fatal(err)
	}
	newTok := strings.TrimSpace(out.String())
	oldTok, _ := httpapi.Sign([]byte(olderSecret), 43, false, time.Hour)
	otherTok, _ := httpapi.Sign([]byte("some-other-secret-some-other-secret"), 44, false, time.Hour)
	for _, c := range []struct {
		name, tok string
		status    int
	}{{"signed by spike token", newTok, 200}, {"older secret", oldTok, 200}, {"other secret", otherTok, 401}} {
		if got := getOrders(t, a.addr, c.tok); got != c.status {
			t.Errorf("%s: GET /v1/orders = %d, want %d", c.name, got, c.status)
		}
	}
	// spike token signs with the first secret only.
	first := httpapi.NewAuthenticator([]byte(goodSecret))
	if _, err := first.Verify(newTok); err != nil {
		t.Errorf("spike token did not sign with the first secret: %v", err)
	}
}

// getOrders answers GET /v1/orders with tok's status.
func getOrders(t *testing.T, addr, tok string) int {
	t.Helper()
	return getStatus(t, "http://"+addr+"/v1/orders", tok)
}

// getStatus answers GET url with tok's status, retrying what the server
// sheds under load.
func getStatus(t *testing.T, url, tok string) int {
	t.Helper()
	for try := 0; ; try++ {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if (resp.StatusCode != 429 && resp.StatusCode != 503) || try == 50 {
			return resp.StatusCode
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestServeAcceptsIdentityProviderTokens: with auth.oidc set, spike serve
// loads the provider's keys (discovered from its issuer) and takes its
// EdDSA tokens beside its own; a subject that is no user id is a 401.
func TestServeAcceptsIdentityProviderTokens(t *testing.T) {
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	idp := httptest.NewServer(mux)
	defer idp.Close()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"issuer":%q,"jwks_uri":%q}`, idp.URL, idp.URL+"/keys")
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":%q}]}`, base64.RawURLEncoding.EncodeToString(pub))
	})
	cfg := DefaultConfig()
	cfg.Auth.OIDC = AuthOIDCConfig{Issuer: idp.URL, Audience: "spike", UserClaim: "uid", AdminClaim: "roles", AdminValue: "spike-admin", RefreshInterval: time.Hour}
	a := startAppConfig(t, cfg)
	defer stopApp(t, a)

	tok := func(uid any, roles ...string) string {
		c := jwt.MapClaims{"iss": idp.URL, "aud": "spike", "sub": "auth0|abc", "uid": uid, "roles": roles, "exp": time.Now().Add(time.Hour).Unix()}
		j := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
		j.Header["kid"] = "k1"
		s, err := j.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if got := getOrders(t, a.addr, tok("42")); got != 200 {
		t.Errorf("buyer token of the provider: %d, want 200", got)
	}
	if got := getSwitches(t, a.addr, tok(7, "spike-admin")); got != 200 {
		t.Errorf("admin token of the provider on an admin route: %d, want 200", got)
	}
	if got := getSwitches(t, a.addr, tok(7, "viewer")); got != 403 {
		t.Errorf("buyer token of the provider on an admin route: %d, want 403", got)
	}
	if got := getOrders(t, a.addr, tok("alice")); got != 401 {
		t.Errorf("string user id: %d, want 401", got)
	}
	own, _ := httpapi.Sign(a.secret, 5, false, time.Hour)
	if got := getOrders(t, a.addr, own); got != 200 {
		t.Errorf("spike's own token beside the provider's: %d, want 200", got)
	}
}

func getSwitches(t *testing.T, addr, tok string) int {
	t.Helper()
	return getStatus(t, "http://"+addr+"/v1/admin/switches", tok)
}

// TestJWTSecretsRedacted: the rotation list never shows in the logged
// configuration.
func TestJWTSecretsRedacted(t *testing.T) {
	cfg, err := newFlagSet("serve").load(nil, env(map[string]string{"SPIKE_JWT_SECRETS": goodSecret + ", " + olderSecret}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.JWTSecrets) != 2 || cfg.JWTSecrets[1] != olderSecret {
		t.Fatalf("SPIKE_JWT_SECRETS read as %d secrets", len(cfg.JWTSecrets))
	}
	if red := cfg.redacted(); strings.Contains(red, "0123456789abcdef") {
		t.Errorf("a secret shows in the logged config: %s", red)
	}
}
