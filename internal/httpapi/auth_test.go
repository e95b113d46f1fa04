package httpapi_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"hash"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/httpapi"
)

var b64 = base64.RawURLEncoding

// signer says how a test token is signed.
type signer uint8

const (
	signHS256      signer = iota // with the server's secret
	signHS256Wrong               // with another secret
	signHS512                    // HMAC-SHA512 with the server's secret
	signNone                     // empty signature
	numSigners
)

// makeToken assembles a JWT from raw header and claims JSON.
func makeToken(header, claims string, s signer) string {
	unsigned := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString([]byte(claims))
	mac := func(h func() hash.Hash, key []byte) string {
		m := hmac.New(h, key)
		m.Write([]byte(unsigned))
		return b64.EncodeToString(m.Sum(nil))
	}
	switch s % numSigners {
	case signHS256:
		return unsigned + "." + mac(sha256.New, testSecret)
	case signHS256Wrong:
		return unsigned + "." + mac(sha256.New, []byte("not-the-secret-not-the-secret-00"))
	case signHS512:
		return unsigned + "." + mac(sha512.New, testSecret)
	}
	return unsigned + "."
}

func claimsJSON(sub any, exp any, role string) string {
	m := map[string]any{}
	if sub != nil {
		m["sub"] = sub
	}
	if exp != nil {
		m["exp"] = exp
	}
	if role != "" {
		m["role"] = role
	}
	b, _ := json.Marshal(m)
	return string(b)
}

const (
	hdrHS256 = `{"alg":"HS256","typ":"JWT"}`
	hdrHS512 = `{"alg":"HS512","typ":"JWT"}`
	hdrRS256 = `{"alg":"RS256","typ":"JWT"}`
	hdrNone  = `{"alg":"none","typ":"JWT"}`
)

func inAnHour() int64 { return time.Now().Add(time.Hour).Unix() }

func TestVerify(t *testing.T) {
	a := httpapi.NewAuthenticator(testSecret)
	signed, err := httpapi.Sign(testSecret, 42, false, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	admin, _ := httpapi.Sign(testSecret, 1, true, time.Hour)
	other, _ := httpapi.Sign([]byte("another-secret-another-secret-00"), 42, true, time.Hour)
	expired, _ := httpapi.Sign(testSecret, 42, false, -time.Minute)
	tests := []struct {
		name    string
		tok     string
		want    httpapi.Identity
		wantErr bool
	}{
		{"Sign buyer", signed, httpapi.Identity{UserID: 42}, false},
		{"Sign admin", admin, httpapi.Identity{UserID: 1, Admin: true}, false},
		{"hand-made HS256", makeToken(hdrHS256, claimsJSON("7", inAnHour(), ""), signHS256), httpapi.Identity{UserID: 7}, false},
		{"max user id", makeToken(hdrHS256, claimsJSON("9223372036854775807", inAnHour(), ""), signHS256), httpapi.Identity{UserID: 9223372036854775807}, false},
		{"role other than admin is a buyer", makeToken(hdrHS256, claimsJSON("7", inAnHour(), "Admin"), signHS256), httpapi.Identity{UserID: 7}, false},
		{"other secret", other, httpapi.Identity{}, true},
		{"wrong secret", makeToken(hdrHS256, claimsJSON("7", inAnHour(), "admin"), signHS256Wrong), httpapi.Identity{}, true},
		{"expired", expired, httpapi.Identity{}, true},
		{"expired long ago", makeToken(hdrHS256, claimsJSON("7", 1, ""), signHS256), httpapi.Identity{}, true},
		{"missing exp", makeToken(hdrHS256, claimsJSON("7", nil, ""), signHS256), httpapi.Identity{}, true},
		{"exp null", makeToken(hdrHS256, `{"sub":"7","exp":null}`, signHS256), httpapi.Identity{}, true},
		{"exp string", makeToken(hdrHS256, `{"sub":"7","exp":"soon"}`, signHS256), httpapi.Identity{}, true},
		{"alg none", makeToken(hdrNone, claimsJSON("7", inAnHour(), "admin"), signNone), httpapi.Identity{}, true},
		{"alg none, HS256 signature", makeToken(hdrNone, claimsJSON("7", inAnHour(), "admin"), signHS256), httpapi.Identity{}, true},
		{"alg None", makeToken(`{"alg":"None"}`, claimsJSON("7", inAnHour(), ""), signNone), httpapi.Identity{}, true},
		{"HS512", makeToken(hdrHS512, claimsJSON("7", inAnHour(), ""), signHS512), httpapi.Identity{}, true},
		{"RS256 header, HMAC signature", makeToken(hdrRS256, claimsJSON("7", inAnHour(), ""), signHS256), httpapi.Identity{}, true},
		{"no alg", makeToken(`{"typ":"JWT"}`, claimsJSON("7", inAnHour(), ""), signHS256), httpapi.Identity{}, true},
		{"lower-case alg", makeToken(`{"alg":"hs256"}`, claimsJSON("7", inAnHour(), ""), signHS256), httpapi.Identity{}, true},
		{"empty signature", makeToken(hdrHS256, claimsJSON("7", inAnHour(), ""), signNone), httpapi.Identity{}, true},
		{"non-numeric sub", makeToken(hdrHS256, claimsJSON("alice", inAnHour(), ""), signHS256), httpapi.Identity{}, true},
		{"negative sub", makeToken(hdrHS256, claimsJSON("-7", inAnHour(), ""), signHS256), httpapi.Identity{}, true},
		{"zero sub", makeToken(hdrHS256, claimsJSON("0", inAnHour(), ""), signHS256), httpapi.Identity{}, true},
		{"sub with leading zero", makeToken(hdrHS256, claimsJSON("07", inAnHour(), ""), signHS256), httpapi.Identity{}, true},
		{"sub too big", makeToken(hdrHS256, claimsJSON("9223372036854775808", inAnHour(), ""), signHS256), httpapi.Identity{}, true},
		{"sub as a number", makeToken(hdrHS256, claimsJSON(7, inAnHour(), ""), signHS256), httpapi.Identity{}, true},
		{"missing sub", makeToken(hdrHS256, claimsJSON(nil, inAnHour(), ""), signHS256), httpapi.Identity{}, true},
		{"nbf in the future", makeToken(hdrHS256, `{"sub":"7","exp":`+strconv.FormatInt(inAnHour(), 10)+`,"nbf":`+strconv.FormatInt(inAnHour(), 10)+`}`, signHS256), httpapi.Identity{}, true},
		{"two segments", strings.Join(strings.Split(signed, ".")[:2], "."), httpapi.Identity{}, true},
		{"four segments", signed + ".x", httpapi.Identity{}, true},
		{"tampered claims", tamper(signed), httpapi.Identity{}, true},
		{"empty", "", httpapi.Identity{}, true},
		{"garbage", "not a token", httpapi.Identity{}, true},
		{"over 4096 bytes", makeToken(hdrHS256, `{"sub":"7","exp":`+strconv.FormatInt(inAnHour(), 10)+`,"pad":"`+strings.Repeat("x", 4096)+`"}`, signHS256), httpapi.Identity{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := a.Verify(tt.tok)
			if tt.wantErr {
				if !errors.Is(err, spike.ErrUnauthenticated) {
					t.Fatalf("Verify() = %+v, %v; want ErrUnauthenticated", got, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify() = %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Verify() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// tamper makes the token claim user 1 as admin, keeping the signature.
func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	parts[1] = b64.EncodeToString([]byte(claimsJSON("1", inAnHour(), "admin")))
	return strings.Join(parts, ".")
}

func TestAuthenticateHeader(t *testing.T) {
	a := httpapi.NewAuthenticator(testSecret)
	tok, _ := httpapi.Sign(testSecret, 42, false, time.Hour)
	tests := []struct {
		name   string
		header string
		ok     bool
	}{
		{"bearer", "Bearer " + tok, true},
		{"no header", "", false},
		{"no scheme", tok, false},
		{"basic", "Basic " + tok, false},
		{"bearer, no token", "Bearer ", false},
		{"bearer, two spaces", "Bearer  " + tok, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			id, err := a.Authenticate(r)
			if tt.ok != (err == nil) {
				t.Fatalf("Authenticate() = %+v, %v; want ok %v", id, err, tt.ok)
			}
			if err != nil && !errors.Is(err, spike.ErrUnauthenticated) {
				t.Errorf("Authenticate() = %v, want ErrUnauthenticated", err)
			}
		})
	}
}

// checkAccepted is the oracle for an accepted token: it must be three
// segments, say alg HS256, carry a valid HMAC-SHA256 of the first two
// segments under the secret, an unexpired exp and a positive decimal sub,
// and the identity must be what the claims say.
func checkAccepted(t *testing.T, tok string, id httpapi.Identity) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("accepted %q: %d segments", tok, len(parts))
	}
	hb, err := b64.DecodeString(parts[0])
	if err != nil {
		t.Fatalf("accepted %q: header not base64: %v", tok, err)
	}
	var hdr map[string]any
	if err := json.Unmarshal(hb, &hdr); err != nil || hdr["alg"] != "HS256" {
		t.Fatalf("accepted %q: header %s is not alg HS256 (%v)", tok, hb, err)
	}
	sig, err := b64.DecodeString(parts[2])
	m := hmac.New(sha256.New, testSecret)
	m.Write([]byte(parts[0] + "." + parts[1]))
	if err != nil || !hmac.Equal(sig, m.Sum(nil)) {
		t.Fatalf("accepted %q without a valid HS256 signature", tok)
	}
	cb, err := b64.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("accepted %q: claims not base64", tok)
	}
	var c struct {
		Sub  any `json:"sub"`
		Exp  any `json:"exp"`
		Role any `json:"role"`
	}
	if err := json.Unmarshal(cb, &c); err != nil {
		t.Fatalf("accepted %q: claims %s: %v", tok, cb, err)
	}
	var exp float64
	switch v := c.Exp.(type) {
	case float64:
		exp = v
	case string:
		exp, err = strconv.ParseFloat(v, 64)
		if err != nil {
			t.Fatalf("accepted %q: exp %q", tok, v)
		}
	default:
		t.Fatalf("accepted %q: exp %v (%T) missing or not a number", tok, c.Exp, c.Exp)
	}
	if exp < float64(time.Now().Add(-10*time.Second).Unix()) {
		t.Fatalf("accepted %q: expired at %v", tok, exp)
	}
	sub, _ := c.Sub.(string)
	uid, ok := spike.ParseUserID(sub)
	if !ok || uid != id.UserID {
		t.Fatalf("accepted %q: sub %v, identity %+v", tok, c.Sub, id)
	}
	if id.Admin != (c.Role == "admin") {
		t.Fatalf("accepted %q: role %v, identity %+v", tok, c.Role, id)
	}
}

// FuzzVerifyToken: an arbitrary string never authenticates unless it is a
// valid HS256 token signed with the secret (see checkAccepted).
func FuzzVerifyToken(f *testing.F) {
	good, _ := httpapi.Sign(testSecret, 42, false, 24*time.Hour)
	admin, _ := httpapi.Sign(testSecret, 1, true, 24*time.Hour)
	expired, _ := httpapi.Sign(testSecret, 42, false, -time.Hour)
	f.Add(good)
	f.Add(admin)
	f.Add(expired)
	f.Add(tamper(good))
	f.Add(good + "=")
	f.Add(strings.Replace(good, ".", ".\n", 1))
	f.Add(makeToken(hdrNone, claimsJSON("1", inAnHour(), "admin"), signNone))
	f.Add(makeToken(hdrHS512, claimsJSON("1", inAnHour(), "admin"), signHS512))
	f.Add(makeToken(hdrRS256, claimsJSON("1", inAnHour(), "admin"), signHS256))
	f.Add(makeToken(hdrHS256, claimsJSON("1", nil, "admin"), signHS256))
	f.Add(makeToken(hdrHS256, claimsJSON("abc", inAnHour(), ""), signHS256))
	f.Add(makeToken(hdrHS256, claimsJSON("-1", inAnHour(), ""), signHS256))
	f.Add("")
	f.Add("..")
	f.Add("a.b.c")
	a := httpapi.NewAuthenticator(testSecret)
	f.Fuzz(func(t *testing.T, tok string) {
		id, err := a.Verify(tok)
		if err != nil {
			if !errors.Is(err, spike.ErrUnauthenticated) {
				t.Fatalf("Verify(%q) = %v, want ErrUnauthenticated", tok, err)
			}
			return
		}
		checkAccepted(t, tok, id)
	})
}

// FuzzVerifyTokenParts builds tokens from fuzzed header and claims JSON and
// one of four signers, so that the fuzzer reaches past the signature check:
// only HS256 with the secret, alg HS256, an unexpired exp and a valid sub
// may authenticate.
func FuzzVerifyTokenParts(f *testing.F) {
	exp := strconv.FormatInt(time.Now().Add(24*time.Hour).Unix(), 10)
	for _, c := range []struct {
		h, c string
		s    signer
	}{
		{hdrHS256, `{"sub":"42","exp":` + exp + `}`, signHS256},
		{hdrHS256, `{"sub":"1","exp":` + exp + `,"role":"admin"}`, signHS256},
		{hdrHS256, `{"sub":"1","exp":` + exp + `,"role":"admin"}`, signHS256Wrong},
		{hdrNone, `{"sub":"1","exp":` + exp + `,"role":"admin"}`, signNone},
		{`{"alg":"NONE"}`, `{"sub":"1","exp":` + exp + `}`, signNone},
		{hdrHS512, `{"sub":"1","exp":` + exp + `}`, signHS512},
		{hdrHS512, `{"sub":"1","exp":` + exp + `}`, signHS256},
		{hdrRS256, `{"sub":"1","exp":` + exp + `}`, signHS256},
		{`{"alg":"HS256","alg":"none"}`, `{"sub":"1","exp":` + exp + `}`, signNone},
		{`{"alg":"none","alg":"HS256"}`, `{"sub":"1","exp":` + exp + `}`, signHS256},
		{hdrHS256, `{"sub":"1","exp":1}`, signHS256},
		{hdrHS256, `{"sub":"1","exp":-1e300}`, signHS256},
		{hdrHS256, `{"sub":"1","exp":1e300}`, signHS256},
		{hdrHS256, `{"sub":"1","exp":"` + exp + `"}`, signHS256},
		{hdrHS256, `{"sub":"1"}`, signHS256},
		{hdrHS256, `{"sub":"x","exp":` + exp + `}`, signHS256},
		{hdrHS256, `{"sub":"-1","exp":` + exp + `}`, signHS256},
		{hdrHS256, `{"sub":1,"exp":` + exp + `}`, signHS256},
		{hdrHS256, `{"sub":"1","exp":` + exp + `,"nbf":` + exp + `}`, signHS256},
		{hdrHS256, `{"SUB":"1","EXP":` + exp + `}`, signHS256},
		{hdrHS256, `[]`, signHS256},
		{`null`, `{"sub":"1","exp":` + exp + `}`, signHS256},
	} {
		f.Add(c.h, c.c, uint8(c.s))
	}
	a := httpapi.NewAuthenticator(testSecret)
	f.Fuzz(func(t *testing.T, header, claims string, s uint8) {
		tok := makeToken(header, claims, signer(s))
		id, err := a.Verify(tok)
		if err != nil {
			if !errors.Is(err, spike.ErrUnauthenticated) {
				t.Fatalf("Verify() = %v, want ErrUnauthenticated", err)
			}
			return
		}
		if signer(s)%numSigners != signHS256 {
			t.Fatalf("header %q claims %q signed with signer %d authenticated as %+v", header, claims, s%uint8(numSigners), id)
		}
		checkAccepted(t, tok, id)
	})
}
