package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/auth"
	"github.com/spikehq/spike/resilience"
)

// testKeys are the identity provider's signing keys, made once.
var testKeys = sync.OnceValue(func() (k struct {
	rsa, rsa2 *rsa.PrivateKey
	ec        *ecdsa.PrivateKey
	ed        ed25519.PrivateKey
}) {
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if k.rsa2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		panic(err)
	}
	if _, k.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		panic(err)
	}
	return k
})

func rsaJWK(kid string, k *rsa.PublicKey) map[string]string {
	return map[string]string{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
		"n": b64.EncodeToString(k.N.Bytes()), "e": b64.EncodeToString(big.NewInt(int64(k.E)).Bytes())}
}

func ecJWK(kid string, k *ecdsa.PublicKey) map[string]string {
	b, err := k.Bytes()
	if err != nil {
		panic(err)
	}
	return map[string]string{"kty": "EC", "kid": kid, "crv": "P-256", "x": b64.EncodeToString(b[1:33]), "y": b64.EncodeToString(b[33:])}
}

func edJWK(kid string, k ed25519.PublicKey) map[string]string {
	return map[string]string{"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64.EncodeToString(k)}
}

// idp is an identity provider in the test: discovery and a JWKS the test
// can change, take down or slow, counting what it is asked.
type idp struct {
	*httptest.Server
	mu        sync.Mutex
	keys      []map[string]string
	down      bool
	hang      chan struct{} // non-nil: JWKS requests wait for it
	jwksFetch atomic.Int64
}

func newIDP(t *testing.T, keys ...map[string]string) *idp {
	p := &idp{keys: keys}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]string{"issuer": p.URL, "jwks_uri": p.URL + "/jwks"})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		p.jwksFetch.Add(1)
		p.mu.Lock()
		keys, down, hang := p.keys, p.down, p.hang
		p.mu.Unlock()
		if hang != nil {
			select {
			case <-hang:
			case <-r.Context().Done():
				return
			}
		}
		if down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"keys": keys})
	})
	p.Server = httptest.NewServer(mux)
	t.Cleanup(p.Close)
	return p
}

func (p *idp) set(f func(p *idp)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

// testClock is the verifier's clock: the rate limit of refreshes follows it.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

const gap = 10 * time.Second

func newOIDC(t *testing.T, p *idp, clock *testClock) *auth.OIDC {
	t.Helper()
	o, err := auth.NewOIDC(auth.OIDCConfig{Issuer: p.URL, Audience: "spike", AdminClaim: "realm_access.roles", AdminValue: "spike-admin",
		FetchTimeout: 2 * time.Second, MinRefreshGap: gap, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// claims are a buyer's, valid at the clock's time, changed by edit.
func claims(p *idp, clock *testClock, edit func(jwt.MapClaims)) jwt.MapClaims {
	c := jwt.MapClaims{"iss": p.URL, "aud": []string{"other-app", "spike"}, "sub": "42",
		"exp": clock.Now().Add(time.Hour).Unix(), "iat": clock.Now().Unix()}
	if edit != nil {
		edit(c)
	}
	return c
}

func sign(t *testing.T, m jwt.SigningMethod, key any, kid string, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestOIDCVerify(t *testing.T) {
	k := testKeys()
	p := newIDP(t, rsaJWK("r1", &k.rsa.PublicKey), ecJWK("e1", &k.ec.PublicKey), edJWK("d1", k.ed.Public().(ed25519.PublicKey)))
	clock := &testClock{t: time.Now()}
	o := newOIDC(t, p, clock)
	hs, err := auth.NewHS256(secretA)
	if err != nil {
		t.Fatal(err)
	}
	v := &auth.Verifier{HS256: hs, OIDC: o}
	hsTok, _ := hs.Sign(9, false, time.Hour)
	rsaPub, _ := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	edit := func(f func(jwt.MapClaims)) jwt.MapClaims { return claims(p, clock, f) }
	tests := []struct {
		name    string
		tok     string
		want    auth.Identity
		wantErr error
	}{
		{"RS256", sign(t, jwt.SigningMethodRS256, k.rsa, "r1", edit(nil)), auth.Identity{UserID: 42}, nil},
		{"ES256", sign(t, jwt.SigningMethodES256, k.ec, "e1", edit(nil)), auth.Identity{UserID: 42}, nil},
		{"EdDSA", sign(t, jwt.SigningMethodEdDSA, k.ed, "d1", edit(nil)), auth.Identity{UserID: 42}, nil},
		{"no kid: the keys for the alg", sign(t, jwt.SigningMethodEdDSA, k.ed, "", edit(nil)), auth.Identity{UserID: 42}, nil},
		{"aud a string", sign(t, jwt.SigningMethodES256, k.ec, "e1", edit(func(c jwt.MapClaims) { c["aud"] = "spike" })), auth.Identity{UserID: 42}, nil},
		{"admin role", sign(t, jwt.SigningMethodRS256, k.rsa, "r1", edit(func(c jwt.MapClaims) {
			c["realm_access"] = map[string]any{"roles": []string{"viewer", "spike-admin"}}
		})), auth.Identity{UserID: 42, Admin: true}, nil},
		{"other role", sign(t, jwt.SigningMethodRS256, k.rsa, "r1", edit(func(c jwt.MapClaims) {
			c["realm_access"] = map[string]any{"roles": []string{"spike-admins"}}
		})), auth.Identity{UserID: 42}, nil},
		{"user id as a JSON integer", sign(t, jwt.SigningMethodRS256, k.rsa, "r1", edit(func(c jwt.MapClaims) { c["sub"] = 9007199254740993 })), auth.Identity{UserID: 9007199254740993}, nil},
		{"HS256 still works", hsTok, auth.Identity{UserID: 9}, nil},
		{"wrong iss", sign(t, jwt.SigningMethodRS256, k.rsa, "r1", edit(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" })), auth.Identity{}, auth.ErrBadToken},
		{"no iss", sign(t, jwt.SigningMethodRS256, k.rsa, "r1", edit(func(c jwt.MapClaims) { delete(c, "iss") })), auth.Identity{}, auth.ErrBadToken},
		{"wrong aud", sign(t, jwt.SigningMethodRS256, k.rsa, "r1", edit(func(c jwt.MapClaims) { c["aud"] = "other-app" })), auth.Identity{}, auth.ErrBadToken},
		{"no aud", sign(t, jwt.SigningMethodRS256, k.rsa, "r1", edit(func(c jwt.MapClaims) { delete(c, "aud") })), auth.Identity{}, auth.ErrBadToken},
		{"expired", sign(t, jwt.SigningMethodRS256, k.rsa, "r1", edit(func(c jwt.MapClaims) { c["exp"] = clock.Now().Add(-time.Minute).Unix() })), auth.Identity{}, auth.ErrBadToken},
		{"no exp", sign(t, jwt.SigningMethodRS256, k.rsa, "r1", edit(func(c jwt.MapClaims) { delete(c, "exp") })), auth.Identity{}, auth.ErrBadToken},
		{"iat ahead", sign(t, jwt.SigningMethodRS256, k.rsa, "r1", edit(func(c jwt.MapClaims) { c["iat"] = clock.Now().Add(time.Hour).Unix() })), auth.Identity{}, auth.ErrBadToken},
		{"string subject", sign(t, jwt.SigningMethodRS256, k.rsa, "r1", edit(func(c jwt.MapClaims) { c["sub"] = "auth0|5f7c8ec7c33c6c004bbafe82" })), auth.Identity{}, nil},
		{"fractional subject", sign(t, jwt.SigningMethodRS256, k.rsa, "r1", edit(func(c jwt.MapClaims) { c["sub"] = 4.5 })), auth.Identity{}, nil},
		{"signed by another key", sign(t, jwt.SigningMethodRS256, k.rsa2, "r1", edit(nil)), auth.Identity{}, auth.ErrBadToken},
		{"RS256 header on the EC key's kid", sign(t, jwt.SigningMethodRS256, k.rsa, "e1", edit(nil)), auth.Identity{}, auth.ErrUnknownKey},
		{"HS256 keyed with the RSA public key", sign(t, jwt.SigningMethodHS256, rsaPub, "r1", edit(nil)), auth.Identity{}, auth.ErrBadToken},
		{"HS512 keyed with the RSA public key", sign(t, jwt.SigningMethodHS512, rsaPub, "r1", edit(nil)), auth.Identity{}, auth.ErrBadToken},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "r1", edit(nil)) + strings.Repeat("A", 86), auth.Identity{}, auth.ErrBadToken},
		{"PS256", sign(t, jwt.SigningMethodPS256, k.rsa, "r1", edit(nil)), auth.Identity{}, auth.ErrBadToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := v.Verify(context.Background(), tt.tok)
			if tt.want == (auth.Identity{}) && tt.wantErr == nil { // a subject that is no user id
				if !errors.Is(err, spike.ErrUnauthenticated) || !strings.Contains(err.Error(), `claim "sub" must be a positive integer user id`) {
					t.Errorf("Verify() = %+v, %v; want the user id refusal", got, err)
				}
				return
			}
			if got != tt.want || err != tt.wantErr {
				t.Errorf("Verify() = %+v, %v; want %+v, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestOIDCUnknownKidFetchesOnce: tokens with a kid nobody knows make one
// JWKS fetch between them, then none until the gap has passed; all are
// refused 401, never 5xx.
func TestOIDCUnknownKidFetchesOnce(t *testing.T) {
	k := testKeys()
	p := newIDP(t, edJWK("d1", k.ed.Public().(ed25519.PublicKey)))
	clock := &testClock{t: time.Now()}
	o := newOIDC(t, p, clock)
	if _, err := o.Verify(context.Background(), sign(t, jwt.SigningMethodEdDSA, k.ed, "d1", claims(p, clock, nil))); err != nil {
		t.Fatal(err)
	}
	if n := p.jwksFetch.Load(); n != 1 {
		t.Fatalf("%d JWKS fetches for the first token, want 1", n)
	}
	clock.Advance(gap)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			tok := sign(t, jwt.SigningMethodEdDSA, k.ed, "invented-"+string(rune('a'+i)), claims(p, clock, nil))
			if _, err := o.Verify(context.Background(), tok); err != auth.ErrUnknownKey {
				t.Errorf("unknown kid: %v, want ErrUnknownKey", err)
			}
		})
	}
	wg.Wait()
	if n := p.jwksFetch.Load(); n != 2 {
		t.Errorf("%d JWKS fetches after 20 unknown kids, want 2", n)
	}
	// The known key never waits for the provider.
	if _, err := o.Verify(context.Background(), sign(t, jwt.SigningMethodEdDSA, k.ed, "d1", claims(p, clock, nil))); err != nil {
		t.Error(err)
	}
	if n := p.jwksFetch.Load(); n != 2 {
		t.Errorf("%d JWKS fetches, want still 2", n)
	}
}

// TestOIDCPicksUpRotatedKey: a token with the provider's new key is
// accepted after one fetch; the retired key is refused once it is gone.
func TestOIDCPicksUpRotatedKey(t *testing.T) {
	k := testKeys()
	p := newIDP(t, rsaJWK("2024", &k.rsa.PublicKey))
	clock := &testClock{t: time.Now()}
	o := newOIDC(t, p, clock)
	oldTok := sign(t, jwt.SigningMethodRS256, k.rsa, "2024", claims(p, clock, nil))
	if _, err := o.Verify(context.Background(), oldTok); err != nil {
		t.Fatal(err)
	}
	p.set(func(p *idp) { p.keys = []map[string]string{rsaJWK("2025", &k.rsa2.PublicKey)} })
	clock.Advance(gap)
	newTok := sign(t, jwt.SigningMethodRS256, k.rsa2, "2025", claims(p, clock, nil))
	if id, err := o.Verify(context.Background(), newTok); err != nil || id.UserID != 42 {
		t.Fatalf("token of the rotated key: %+v, %v", id, err)
	}
	if _, err := o.Verify(context.Background(), oldTok); err != auth.ErrUnknownKey {
		t.Errorf("token of the retired key: %v, want ErrUnknownKey", err)
	}
	if n := p.jwksFetch.Load(); n != 2 {
		t.Errorf("%d JWKS fetches, want 2", n)
	}
}

// TestOIDCProviderDown: with the provider failing, known keys still
// verify; unknown kids are refused 401; after repeated failures the
// breaker stops asking.
func TestOIDCProviderDown(t *testing.T) {
	k := testKeys()
	p := newIDP(t, ecJWK("e1", &k.ec.PublicKey))
	clock := &testClock{t: time.Now()}
	o := newOIDC(t, p, clock)
	known := func() string { return sign(t, jwt.SigningMethodES256, k.ec, "e1", claims(p, clock, nil)) }
	if _, err := o.Verify(context.Background(), known()); err != nil {
		t.Fatal(err)
	}
	p.set(func(p *idp) { p.down = true })
	for range 4 {
		clock.Advance(gap)
		if _, err := o.Verify(context.Background(), known()); err != nil {
			t.Fatalf("known key while the provider is down: %v", err)
		}
		_, err := o.Verify(context.Background(), sign(t, jwt.SigningMethodES256, k.ec, "e2", claims(p, clock, nil)))
		if err != auth.ErrUnknownKey || !errors.Is(err, spike.ErrUnauthenticated) {
			t.Fatalf("unknown kid while the provider is down: %v", err)
		}
	}
	// One success then two failures open the breaker (3 calls, 2/3 failed):
	// the fourth attempt is refused without asking.
	if n := p.jwksFetch.Load(); n != 3 {
		t.Errorf("%d JWKS fetches, want 3 (the breaker opens after two failures)", n)
	}

	// A provider that hangs is cut by the fetch timeout; its caller gets a 401.
	q := newIDP(t, ecJWK("e1", &k.ec.PublicKey))
	slow := newOIDC(t, q, clock)
	if _, err := slow.Verify(context.Background(), sign(t, jwt.SigningMethodES256, k.ec, "e1", claims(q, clock, nil))); err != nil {
		t.Fatal(err)
	}
	release := make(chan struct{})
	defer close(release)
	q.set(func(p *idp) { p.hang = release })
	clock.Advance(gap)
	if _, err := slow.Verify(context.Background(), sign(t, jwt.SigningMethodES256, k.ec, "e9", claims(q, clock, nil))); err != auth.ErrUnknownKey {
		t.Errorf("unknown kid with a hanging provider: %v", err)
	}
}

// TestOIDCRun loads the keys at once and stops with its context.
func TestOIDCRun(t *testing.T) {
	k := testKeys()
	p := newIDP(t, edJWK("d1", k.ed.Public().(ed25519.PublicKey)))
	clock := &testClock{t: time.Now()}
	o := newOIDC(t, p, clock)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- o.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for p.jwksFetch.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	p.set(func(p *idp) { p.down = true })
	if _, err := o.Verify(context.Background(), sign(t, jwt.SigningMethodEdDSA, k.ed, "d1", claims(p, clock, nil))); err != nil {
		t.Errorf("key loaded by Run: %v", err)
	}
}

func TestNewOIDCRefusesBadConfig(t *testing.T) {
	for _, c := range []auth.OIDCConfig{
		{Issuer: "", Audience: "spike"},
		{Issuer: "http://idp.example.com", Audience: "spike"},
		{Issuer: "https://idp.example.com"},
		{Issuer: "https://idp.example.com", Audience: "spike", JWKSURL: "http://10.0.0.1/jwks"},
		{Issuer: "https://idp.example.com", Audience: "spike", AdminClaim: "roles"},
	} {
		if _, err := auth.NewOIDC(c); err == nil {
			t.Errorf("NewOIDC(%+v) accepted", c)
		}
	}
	if _, err := auth.NewOIDC(auth.OIDCConfig{Issuer: "http://127.0.0.1:9", Audience: "spike"}); err != nil {
		t.Errorf("loopback http issuer: %v", err)
	}
}

// TestJWKSKeysSpikeCannotUse: keys of other kinds, curves, uses or too
// weak are skipped; a JWKS with none left, or a malformed key, is refused
// and the keys in use stay.
func TestJWKSKeysSpikeCannotUse(t *testing.T) {
	k := testKeys()
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	p384b, _ := p384.PublicKey.Bytes()
	ed := edJWK("d1", k.ed.Public().(ed25519.PublicKey))
	enc := rsaJWK("enc", &k.rsa.PublicKey)
	enc["use"] = "enc"
	wrongAlg := rsaJWK("ps", &k.rsa.PublicKey)
	wrongAlg["alg"] = "PS256"
	skipped := []map[string]string{
		rsaJWK("weak", &weak.PublicKey), enc, wrongAlg,
		{"kty": "EC", "kid": "p384", "crv": "P-384", "x": b64.EncodeToString(p384b[1:49]), "y": b64.EncodeToString(p384b[49:])},
		{"kty": "oct", "kid": "hmac", "k": b64.EncodeToString(secretA)},
		{"kty": "OKP", "kid": "x", "crv": "X25519", "x": b64.EncodeToString(make([]byte, 32))},
	}
	p := newIDP(t, append([]map[string]string{ed}, skipped...)...)
	clock := &testClock{t: time.Now()}
	// A breaker that stays closed: each refused JWKS is fetched.
	o, err := auth.NewOIDC(auth.OIDCConfig{Issuer: p.URL, Audience: "spike", MinRefreshGap: gap, Now: clock.Now,
		Breaker: resilience.NewBreaker(resilience.BreakerConfig{WindowSize: 100, MinimumCalls: 100})})
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, jwt.SigningMethodEdDSA, k.ed, "d1", claims(p, clock, nil))
	if _, err := o.Verify(context.Background(), tok); err != nil {
		t.Fatalf("the usable key among unusable ones: %v", err)
	}
	for _, kid := range []string{"weak", "enc", "ps"} {
		if _, err := o.Verify(context.Background(), sign(t, jwt.SigningMethodRS256, k.rsa, kid, claims(p, clock, nil))); err == nil {
			t.Errorf("key %q was used", kid)
		}
	}
	for _, bad := range [][]map[string]string{
		skipped, // nothing usable
		{ed, {"kty": "EC", "kid": "e", "crv": "P-256", "x": "!!", "y": "AA"}},
		{ed, {"kty": "EC", "kid": "e", "crv": "P-256", "x": b64.EncodeToString(make([]byte, 32)), "y": b64.EncodeToString(make([]byte, 32))}}, // not on the curve
		{ed, {"kty": "RSA", "kid": "r", "n": b64.EncodeToString(k.rsa.N.Bytes()), "e": "AAE"}},                                                // exponent 1
	} {
		p.set(func(p *idp) { p.keys = bad })
		clock.Advance(gap)
		before := p.jwksFetch.Load()
		if _, err := o.Verify(context.Background(), sign(t, jwt.SigningMethodEdDSA, k.ed, "new", claims(p, clock, nil))); err != auth.ErrUnknownKey {
			t.Errorf("JWKS %v: %v", bad, err)
		}
		if p.jwksFetch.Load() == before {
			t.Errorf("JWKS %v was not fetched", bad)
		}
		if _, err := o.Verify(context.Background(), tok); err != nil {
			t.Errorf("after a refused JWKS the known key stopped working: %v", err)
		}
	}
}
