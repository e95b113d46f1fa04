package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/resilience"
)

// ErrUnknownKey refuses a token whose signing key the identity provider
// does not list (or could not be asked about).
var ErrUnknownKey = &spike.Error{Kind: spike.ErrUnauthenticated, Message: "token signing key is not one the identity provider lists"}

// OIDCConfig configures tokens from an OpenID Connect identity provider.
type OIDCConfig struct {
	// Issuer is the provider's issuer URL: tokens' iss must equal it, and
	// discovery reads Issuer/.well-known/openid-configuration.
	Issuer string
	// JWKSURL is where the signing keys are; empty: discovered.
	JWKSURL string
	// Audience must be one of the tokens' aud.
	Audience string
	// UserClaim holds the user id: a positive int64, as a decimal string or
	// a JSON integer. A dotted path reaches into nested objects when no
	// claim has the whole name. Default "sub".
	UserClaim string
	// AdminClaim, if set, makes a token admin when that claim equals
	// AdminValue or is an array containing it (e.g. roles, spike-admin).
	AdminClaim string
	AdminValue string

	Client          *http.Client        // default: a plain client
	FetchTimeout    time.Duration       // bounds one discovery and JWKS fetch; default 5s
	RefreshInterval time.Duration       // Run refreshes the keys this often; default 1h
	MinRefreshGap   time.Duration       // an unknown kid fetches at most once per gap; default 10s
	Breaker         *resilience.Breaker // default: opens for a minute when 60% of the last 5 fetches (3 at least) failed
	Logger          *slog.Logger
	Now             func() time.Time
}

// OIDC verifies RS256, ES256 and EdDSA tokens against an identity
// provider's JWKS. Keys are kept in memory and replaced whole by each
// successful fetch; a token with a kid not among them triggers one fetch
// (shared by everyone waiting, at most one per MinRefreshGap, through a
// circuit breaker), so an outage of the provider never stalls requests
// whose keys are known, and a flood of invented kids cannot hammer it.
type OIDC struct {
	cfg     OIDCConfig
	parser  *jwt.Parser
	badUser *spike.Error
	keys    atomic.Pointer[keySet]

	mu       sync.Mutex
	jwksURL  string // configured or discovered
	lastTry  time.Time
	inflight *fetchCall
}

type fetchCall struct {
	done chan struct{}
	err  error
}

// NewOIDC checks cfg and returns a verifier with no keys yet: Run (or the
// first token) fetches them.
func NewOIDC(cfg OIDCConfig) (*OIDC, error) {
	if err := CheckProviderURL(cfg.Issuer); err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	if cfg.JWKSURL != "" {
		if err := CheckProviderURL(cfg.JWKSURL); err != nil {
			return nil, fmt.Errorf("jwks_url: %w", err)
		}
	}
	if cfg.Audience == "" {
		return nil, errors.New("audience: required")
	}
	if (cfg.AdminClaim == "") != (cfg.AdminValue == "") {
		return nil, errors.New("admin_claim and admin_value: set both or neither")
	}
	if cfg.UserClaim == "" {
		cfg.UserClaim = "sub"
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = 5 * time.Second
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = time.Hour
	}
	if cfg.MinRefreshGap <= 0 {
		cfg.MinRefreshGap = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Breaker == nil {
		log := cfg.Logger
		cfg.Breaker = resilience.NewBreaker(resilience.BreakerConfig{Name: "oidc_jwks",
			WindowSize: 5, MinimumCalls: 3, FailureRateThreshold: 0.6, OpenTimeout: time.Minute, HalfOpenCalls: 1,
			OnStateChange: func(name string, from, to resilience.State) {
				log.Warn("identity provider breaker", "breaker", name, "from", from.String(), "to", to.String())
			}})
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	o := &OIDC{cfg: cfg, jwksURL: cfg.JWKSURL,
		badUser: &spike.Error{Kind: spike.ErrUnauthenticated,
			Message: fmt.Sprintf("token claim %q must be a positive integer user id", cfg.UserClaim)}}
	o.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{"RS256", "ES256", "EdDSA"}),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(Leeway),
		jwt.WithJSONNumber(),
		jwt.WithTimeFunc(cfg.Now),
	)
	return o, nil
}

// CheckProviderURL accepts https URLs, and http ones on a loopback host
// only (a test or a sidecar): keys fetched in clear could be anyone's.
func CheckProviderURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not a URL", s)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
			return nil
		}
		return fmt.Errorf("%q must be https (http only on a loopback host)", s)
	}
	return fmt.Errorf("%q must be an https URL", s)
}

// Verify checks an identity provider's token.
func (o *OIDC) Verify(ctx context.Context, tok string) (Identity, error) {
	if len(tok) > MaxTokenLen {
		return Identity{}, ErrBadToken
	}
	claims := jwt.MapClaims{}
	if _, err := o.parser.ParseWithClaims(tok, claims, func(t *jwt.Token) (any, error) {
		return o.keyFor(ctx, t)
	}); err != nil {
		if errors.Is(err, ErrUnknownKey) {
			return Identity{}, ErrUnknownKey
		}
		return Identity{}, ErrBadToken
	}
	uid, ok := userID(claimAt(claims, o.cfg.UserClaim))
	if !ok {
		return Identity{}, o.badUser
	}
	return Identity{UserID: uid, Admin: o.isAdmin(claims)}, nil
}

// keyFor returns the keys that may have signed t, fetching the JWKS once
// when none is known.
func (o *OIDC) keyFor(ctx context.Context, t *jwt.Token) (any, error) {
	kid, ok := t.Header["kid"].(string)
	if !ok && t.Header["kid"] != nil {
		return nil, errors.New("kid is not a string")
	}
	alg := t.Method.Alg()
	keys := o.keys.Load().find(kid, alg)
	if len(keys) == 0 {
		if err := o.refresh(ctx, true); err != nil && !errors.Is(err, errTooSoon) {
			o.cfg.Logger.Warn("identity provider keys: fetch for an unknown key failed", "kid", kid, "err", err)
		}
		keys = o.keys.Load().find(kid, alg)
	}
	switch len(keys) {
	case 0:
		return nil, ErrUnknownKey
	case 1:
		return keys[0], nil
	}
	set := jwt.VerificationKeySet{}
	for _, k := range keys {
		set.Keys = append(set.Keys, k)
	}
	return set, nil
}

var errTooSoon = errors.New("identity provider keys were fetched moments ago")

// refresh fetches the keys, or waits for a fetch already under way. For an
// unknown key (rateLimited) it fetches at most once per MinRefreshGap.
func (o *OIDC) refresh(ctx context.Context, rateLimited bool) error {
	o.mu.Lock()
	if c := o.inflight; c != nil {
		o.mu.Unlock()
		select {
		case <-c.done:
			return c.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	now := o.cfg.Now()
	if rateLimited && !o.lastTry.IsZero() && now.Sub(o.lastTry) < o.cfg.MinRefreshGap {
		o.mu.Unlock()
		return errTooSoon
	}
	o.lastTry = now
	c := &fetchCall{done: make(chan struct{})}
	o.inflight = c
	o.mu.Unlock()

	// The fetch serves every waiter, so one caller going away does not
	// cancel it; FetchTimeout bounds it.
	c.err = o.fetch(context.WithoutCancel(ctx))
	o.mu.Lock()
	o.inflight = nil
	o.mu.Unlock()
	close(c.done)
	return c.err
}

// Run loads the keys now and every RefreshInterval until ctx ends.
func (o *OIDC) Run(ctx context.Context) error {
	t := time.NewTicker(o.cfg.RefreshInterval)
	defer t.Stop()
	for {
		if err := o.refresh(ctx, false); err != nil && ctx.Err() == nil {
			o.cfg.Logger.Warn("identity provider keys: refresh failed; the known keys stay in use", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (o *OIDC) fetch(ctx context.Context) error {
	p, err := o.cfg.Breaker.Acquire()
	if err != nil {
		return fmt.Errorf("identity provider: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, o.cfg.FetchTimeout)
	defer cancel()
	set, err := o.load(ctx)
	p.Record(err)
	if err != nil {
		return err
	}
	old := o.keys.Swap(set)
	if old == nil || len(old.keys) != len(set.keys) {
		o.cfg.Logger.Info("identity provider keys loaded", "keys", len(set.keys), "skipped", set.skipped)
	}
	return nil
}

func (o *OIDC) load(ctx context.Context) (*keySet, error) {
	o.mu.Lock()
	jwksURL := o.jwksURL
	o.mu.Unlock()
	if jwksURL == "" {
		u, err := o.discover(ctx)
		if err != nil {
			return nil, err
		}
		o.mu.Lock()
		o.jwksURL, jwksURL = u, u
		o.mu.Unlock()
	}
	b, err := o.get(ctx, jwksURL)
	if err != nil {
		return nil, err
	}
	return parseJWKS(b)
}

// discover reads jwks_uri from the provider's OpenID configuration.
func (o *OIDC) discover(ctx context.Context) (string, error) {
	b, err := o.get(ctx, strings.TrimSuffix(o.cfg.Issuer, "/")+"/.well-known/openid-configuration")
	if err != nil {
		return "", err
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return "", fmt.Errorf("openid-configuration: %w", err)
	}
	if doc.Issuer != o.cfg.Issuer {
		return "", fmt.Errorf("openid-configuration: issuer %q, configured %q", doc.Issuer, o.cfg.Issuer)
	}
	if err := CheckProviderURL(doc.JWKSURI); err != nil {
		return "", fmt.Errorf("openid-configuration jwks_uri: %w", err)
	}
	return doc.JWKSURI, nil
}

const maxProviderDoc = 1 << 20

func (o *OIDC) get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := o.cfg.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxProviderDoc+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if len(b) > maxProviderDoc {
		return nil, fmt.Errorf("GET %s: larger than %d bytes", u, maxProviderDoc)
	}
	return b, nil
}

// claimAt returns the claim named name, or, when there is none, the one a
// dotted path names in nested objects (realm_access.roles).
func claimAt(c map[string]any, name string) any {
	if v, ok := c[name]; ok {
		return v
	}
	var v any = c
	for part := range strings.SplitSeq(name, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[part]
	}
	return v
}

// userID takes a positive int64 as a decimal string or a JSON integer.
func userID(v any) (int64, bool) {
	switch x := v.(type) {
	case string:
		return spike.ParseUserID(x)
	case json.Number:
		return spike.ParseUserID(x.String())
	}
	return 0, false
}

func (o *OIDC) isAdmin(c jwt.MapClaims) bool {
	if o.cfg.AdminClaim == "" {
		return false
	}
	switch x := claimAt(c, o.cfg.AdminClaim).(type) {
	case string:
		return x == o.cfg.AdminValue
	case bool:
		return x && o.cfg.AdminValue == "true"
	case []any:
		for _, e := range x {
			if s, ok := e.(string); ok && s == o.cfg.AdminValue {
				return true
			}
		}
	}
	return false
}
