package auth_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/auth"
)

var (
	b64 = base64.RawURLEncoding
	// The fuzz targets and the table run at a fixed instant, so that their
	// seeds never expire.
	fixedNow = time.Unix(1_800_000_000, 0)
	secretA  = []byte("signing-secret-signing-secret-0001")
	secretB  = []byte("older-secret-still-accepted-000002")
	secretX  = []byte("nobody-knows-this-secret-00000003")
)

func now() time.Time { return fixedNow }

// signer says how a test token is signed.
type signer uint8

const (
	signA     signer = iota // HS256, the signing secret
	signB                   // HS256, the older accepted secret
	signWrong               // HS256, a secret not accepted
	signHS512               // HMAC-SHA512 with the signing secret
	signNone                // empty signature
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
	case signA:
		return unsigned + "." + mac(sha256.New, secretA)
	case signB:
		return unsigned + "." + mac(sha256.New, secretB)
	case signWrong:
		return unsigned + "." + mac(sha256.New, secretX)
	case signHS512:
		return unsigned + "." + mac(sha512.New, secretA)
	}
	return unsigned + "."
}

const hdr = `{"alg":"HS256","typ":"JWT"}`

var (
	in1h = strconv.FormatInt(fixedNow.Add(time.Hour).Unix(), 10)
	ago  = strconv.FormatInt(fixedNow.Add(-time.Hour).Unix(), 10)
)

func newHS256(t testing.TB) *auth.HS256 {
	h, err := auth.NewHS256(secretA, secretB)
	if err != nil {
		t.Fatal(err)
	}
	auth.SetClock(h, now)
	return h
}

func TestHS256Verify(t *testing.T) {
	h := newHS256(t)
	c := func(rest string) string { return `{"sub":"7","exp":` + in1h + rest + `}` }
	tests := []struct {
		name    string
		tok     string
		want    auth.Identity
		wantErr error
	}{
		{"buyer", makeToken(hdr, c(``), signA), auth.Identity{UserID: 7}, nil},
		{"older secret", makeToken(hdr, c(``), signB), auth.Identity{UserID: 7}, nil},
		{"admin", makeToken(hdr, c(`,"role":"admin"`), signA), auth.Identity{UserID: 7, Admin: true}, nil},
		{"role Admin is a buyer", makeToken(hdr, c(`,"role":"Admin"`), signA), auth.Identity{UserID: 7}, nil},
		{"max user id", makeToken(hdr, `{"sub":"9223372036854775807","exp":`+in1h+`}`, signA), auth.Identity{UserID: 1<<63 - 1}, nil},
		{"iss, aud, jti, iat, nbf past", makeToken(hdr, c(`,"iss":"x","aud":["a","b"],"jti":"j","iat":1,"nbf":`+ago), signA), auth.Identity{UserID: 7}, nil},
		{"nested unknown claims", makeToken(hdr, c(`,"x":{"y":[1,2.5e3,true,null,"\u00e9"]}`), signA), auth.Identity{UserID: 7}, nil},
		{"escaped sub (slow path)", makeToken(hdr, `{"sub":"\u0037","exp":`+in1h+`}`, signA), auth.Identity{UserID: 7}, nil},
		{"upper-case claim names (slow path)", makeToken(hdr, `{"SUB":"7","Exp":`+in1h+`}`, signA), auth.Identity{UserID: 7}, nil},
		{"exp as a string (slow path)", makeToken(hdr, `{"sub":"7","exp":"`+in1h+`"}`, signA), auth.Identity{UserID: 7}, nil},
		{"fractional exp (slow path)", makeToken(hdr, `{"sub":"7","exp":`+in1h+`.5}`, signA), auth.Identity{UserID: 7}, nil},
		{"whitespace", makeToken(" {\n\"alg\" : \"HS256\" } ", " { \"sub\" : \"7\" ,\t\"exp\" : "+in1h+" } ", signA), auth.Identity{UserID: 7}, nil},
		{"expired", makeToken(hdr, `{"sub":"7","exp":`+ago+`}`, signA), auth.Identity{}, auth.ErrBadToken},
		{"within leeway", makeToken(hdr, `{"sub":"7","exp":`+strconv.FormatInt(fixedNow.Unix()-4, 10)+`}`, signA), auth.Identity{UserID: 7}, nil},
		{"past leeway", makeToken(hdr, `{"sub":"7","exp":`+strconv.FormatInt(fixedNow.Unix()-5, 10)+`}`, signA), auth.Identity{}, auth.ErrBadToken},
		{"nbf ahead", makeToken(hdr, c(`,"nbf":`+in1h), signA), auth.Identity{}, auth.ErrBadToken},
		{"missing exp", makeToken(hdr, `{"sub":"7"}`, signA), auth.Identity{}, auth.ErrBadToken},
		{"exp null", makeToken(hdr, `{"sub":"7","exp":null}`, signA), auth.Identity{}, auth.ErrBadToken},
		{"exp repeated, then null", makeToken(hdr, c(`,"exp":null`), signA), auth.Identity{}, auth.ErrBadToken},
		{"wrong secret", makeToken(hdr, c(``), signWrong), auth.Identity{}, auth.ErrBadToken},
		{"HS512", makeToken(`{"alg":"HS512"}`, c(``), signHS512), auth.Identity{}, auth.ErrBadToken},
		{"alg none", makeToken(`{"alg":"none"}`, c(``), signNone), auth.Identity{}, auth.ErrBadToken},
		{"alg none, HMAC signature", makeToken(`{"alg":"none"}`, c(``), signA), auth.Identity{}, auth.ErrBadToken},
		{"alg RS256, HMAC signature", makeToken(`{"alg":"RS256"}`, c(``), signA), auth.Identity{}, auth.ErrBadToken},
		{"alg hs256", makeToken(`{"alg":"hs256"}`, c(``), signA), auth.Identity{}, auth.ErrBadToken},
		{"alg twice, none last", makeToken(`{"alg":"HS256","alg":"none"}`, c(``), signA), auth.Identity{}, auth.ErrBadToken},
		{"alg twice, HS256 last", makeToken(`{"alg":"none","alg":"HS256"}`, c(``), signA), auth.Identity{UserID: 7}, nil},
		{"no alg", makeToken(`{"typ":"JWT"}`, c(``), signA), auth.Identity{}, auth.ErrBadToken},
		{"header not an object", makeToken(`null`, c(``), signA), auth.Identity{}, auth.ErrBadToken},
		{"trailing data in claims", makeToken(hdr, c(``)+`x`, signA), auth.Identity{}, auth.ErrBadToken},
		{"claims not an object", makeToken(hdr, `[]`, signA), auth.Identity{}, auth.ErrBadToken},
		{"claims null", makeToken(hdr, `null`, signA), auth.Identity{}, auth.ErrBadToken},
		{"role not a string", makeToken(hdr, c(`,"role":1`), signA), auth.Identity{}, auth.ErrBadToken},
		{"aud a number", makeToken(hdr, c(`,"aud":1`), signA), auth.Identity{}, auth.ErrBadToken},
		{"non-numeric sub", makeToken(hdr, `{"sub":"alice","exp":`+in1h+`}`, signA), auth.Identity{}, auth.ErrBadUser},
		{"negative sub", makeToken(hdr, `{"sub":"-7","exp":`+in1h+`}`, signA), auth.Identity{}, auth.ErrBadUser},
		{"sub 0", makeToken(hdr, `{"sub":"0","exp":`+in1h+`}`, signA), auth.Identity{}, auth.ErrBadUser},
		{"sub 07", makeToken(hdr, `{"sub":"07","exp":`+in1h+`}`, signA), auth.Identity{}, auth.ErrBadUser},
		{"sub too big", makeToken(hdr, `{"sub":"9223372036854775808","exp":`+in1h+`}`, signA), auth.Identity{}, auth.ErrBadUser},
		{"missing sub", makeToken(hdr, `{"exp":`+in1h+`}`, signA), auth.Identity{}, auth.ErrBadUser},
		{"sub a number", makeToken(hdr, `{"sub":7,"exp":`+in1h+`}`, signA), auth.Identity{}, auth.ErrBadToken},
		{"padding", makeToken(hdr, c(``), signA) + "=", auth.Identity{}, auth.ErrBadToken},
		{"four segments", makeToken(hdr, c(``), signA) + ".x", auth.Identity{}, auth.ErrBadToken},
		{"two segments", b64.EncodeToString([]byte(hdr)) + "." + b64.EncodeToString([]byte(c(``))), auth.Identity{}, auth.ErrBadToken},
		{"empty", "", auth.Identity{}, auth.ErrBadToken},
		{"over 4096 bytes", makeToken(hdr, c(`,"pad":"`+strings.Repeat("x", 4096)+`"`), signA), auth.Identity{}, auth.ErrBadToken},
	}
	ref := newReference()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := h.Verify(tt.tok)
			if got != tt.want || err != tt.wantErr {
				t.Errorf("Verify() = %+v, %v; want %+v, %v", got, err, tt.want, tt.wantErr)
			}
			rid, rerr := ref.Verify(tt.tok)
			if rid != got || rerr != err {
				t.Errorf("golang-jwt says %+v, %v", rid, rerr)
			}
		})
	}
}

func TestNewHS256RefusesShortSecrets(t *testing.T) {
	if _, err := auth.NewHS256([]byte("a")); err == nil {
		t.Error("a one-byte secret was accepted")
	}
	if _, err := auth.NewHS256(secretA, []byte(strings.Repeat("x", 31))); err == nil {
		t.Error("a 31-byte second secret was accepted")
	}
	if _, err := auth.NewHS256(); err == nil {
		t.Error("no secret was accepted")
	}
}

func TestSignRoundTrip(t *testing.T) {
	h, err := auth.NewHS256(secretA, secretB)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := h.Sign(42, true, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := h.Verify(tok); err != nil || id != (auth.Identity{UserID: 42, Admin: true}) {
		t.Errorf("Verify(Sign) = %+v, %v", id, err)
	}
	// The first secret signs: a verifier of the second alone refuses it.
	only, _ := auth.NewHS256(secretB)
	if _, err := only.Verify(tok); err == nil {
		t.Error("signed with the second secret, not the first")
	}
	if _, err := auth.Sign(secretA, 0, false, time.Hour); err == nil {
		t.Error("signed for user 0")
	}
}

// reference is the verifier Spike used before the fast path: golang-jwt's
// ParseWithClaims into RegisteredClaims plus a role, every secret accepted.
type reference struct {
	parser *jwt.Parser
	keys   jwt.VerificationKeySet
}

type referenceClaims struct {
	Role string `json:"role,omitempty"`
	jwt.RegisteredClaims
}

func newReference() *reference {
	return &reference{
		parser: jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(),
			jwt.WithLeeway(auth.Leeway), jwt.WithTimeFunc(now)),
		keys: jwt.VerificationKeySet{Keys: []jwt.VerificationKey{secretA, secretB}},
	}
}

func (r *reference) Verify(tok string) (auth.Identity, error) {
	if len(tok) > auth.MaxTokenLen {
		return auth.Identity{}, auth.ErrBadToken
	}
	var c referenceClaims
	if _, err := r.parser.ParseWithClaims(tok, &c, func(*jwt.Token) (any, error) { return r.keys, nil }); err != nil {
		return auth.Identity{}, auth.ErrBadToken
	}
	uid, ok := spike.ParseUserID(c.Subject)
	if !ok {
		return auth.Identity{}, auth.ErrBadUser
	}
	return auth.Identity{UserID: uid, Admin: c.Role == "admin"}, nil
}

// differ fails t when the fast path and golang-jwt decide tok differently.
func differ(t *testing.T, h *auth.HS256, ref *reference, tok string) {
	t.Helper()
	got, err := h.Verify(tok)
	want, werr := ref.Verify(tok)
	if got != want || !errors.Is(err, werr) || !errors.Is(werr, err) {
		t.Fatalf("token %q:\nfast path  %+v, %v\ngolang-jwt %+v, %v", tok, got, err, want, werr)
	}
}

// FuzzHS256Differential: on any string, the fast path decides as
// golang-jwt does (accept or refuse, the same identity, the same error).
func FuzzHS256Differential(f *testing.F) {
	for _, s := range seedParts() {
		f.Add(makeToken(s.header, s.claims, s.signer))
	}
	for _, tok := range rawSeeds() {
		f.Add(tok)
	}
	h, ref := newHS256(f), newReference()
	f.Fuzz(func(t *testing.T, tok string) { differ(t, h, ref, tok) })
}

// FuzzHS256DifferentialParts builds tokens from fuzzed header and claims
// JSON and one of five signers, so the fuzzer gets past the signature to
// the JSON, where the fast path and golang-jwt could part ways.
func FuzzHS256DifferentialParts(f *testing.F) {
	for _, s := range seedParts() {
		f.Add(s.header, s.claims, uint8(s.signer))
	}
	h, ref := newHS256(f), newReference()
	f.Fuzz(func(t *testing.T, header, claims string, s uint8) {
		differ(t, h, ref, makeToken(header, claims, signer(s)))
	})
}

// rawSeeds are whole tokens: padding, trailing data, line breaks the
// base64 decoder skips, segments, and the size limit.
func rawSeeds() []string {
	good := makeToken(hdr, `{"sub":"42","exp":`+in1h+`}`, signA)
	return []string{
		good + "=", good + "==", good + ".", good + ".x", "=" + good,
		strings.Replace(good, ".", ".\n", 1), good[:len(good)-5] + "\r\n" + good[len(good)-5:],
		good[:len(good)-1], "", ".", "..", "a.b.c",
		good + strings.Repeat("A", auth.MaxTokenLen-len(good)),
		good + strings.Repeat("A", auth.MaxTokenLen-len(good)+1),
	}
}

type seedPart struct {
	header, claims string
	signer         signer
}

// seedParts are the fuzz seeds written in code; testdata/fuzz holds these
// and what the fuzzer found since.
func seedParts() []seedPart {
	c := func(rest string) string { return `{"sub":"42","exp":` + in1h + rest + `}` }
	return []seedPart{
		{hdr, c(``), signA},
		{hdr, c(``), signB},
		{hdr, c(`,"role":"admin"`), signA},
		{hdr, c(`,"role":"admin"`), signWrong},
		{`{"alg":"none"}`, c(`,"role":"admin"`), signNone},
		{`{"alg":"NONE"}`, c(``), signNone},
		{`{"alg":"RS256"}`, c(``), signA},
		{`{"alg":"hs256"}`, c(``), signA},
		{`{"alg":"HS512"}`, c(``), signHS512},
		{`{"alg":"HS256","alg":"none"}`, c(``), signA},
		{`{"alg":"none","alg":"HS256"}`, c(``), signA},
		{`{"\u0061lg":"HS256"}`, c(``), signA},
		{`{"alg":"HS\u003256"}`, c(``), signA},
		{`null`, c(``), signA},
		{hdr, `{"sub":"42","exp":` + ago + `}`, signA},
		{hdr, `{"sub":"42","exp":1}`, signA},
		{hdr, `{"sub":"42","exp":-1e300}`, signA},
		{hdr, `{"sub":"42","exp":1e300}`, signA},
		{hdr, `{"sub":"42","exp":"` + in1h + `"}`, signA},
		{hdr, `{"sub":"42","exp":` + in1h + `.999}`, signA},
		{hdr, `{"sub":"42"}`, signA},
		{hdr, `{"sub":"42","exp":null}`, signA},
		{hdr, c(`,"exp":null`), signA},
		{hdr, c(`,"nbf":` + in1h), signA},
		{hdr, c(`,"nbf":"x"`), signA},
		{hdr, `{"sub":"x","exp":` + in1h + `}`, signA},
		{hdr, `{"sub":"-1","exp":` + in1h + `}`, signA},
		{hdr, `{"sub":1,"exp":` + in1h + `}`, signA},
		{hdr, `{"sub":"\u0034\u0032","exp":` + in1h + `}`, signA},
		{hdr, `{"SUB":"1","EXP":` + in1h + `}`, signA},
		{hdr, `{"ſub":"1","exp":` + in1h + `}`, signA},
		{hdr, c(`,"aud":["a",1]`), signA},
		{hdr, c(`,"aud":null,"iss":null,"jti":null`), signA},
		{hdr, c(`,"role":["admin"]`), signA},
		{hdr, c(`,"role":"adm\u0069n"`), signA},
		{hdr, c(`,"x":[{"y":{}},[],-0.5e-3]`), signA},
		{hdr, c(``) + ` x`, signA},
		{hdr, c(``) + `}`, signA},
		{hdr, `[]`, signA},
		{hdr, `null`, signA},
		{hdr, c(`,"pad":"` + strings.Repeat("p", 3000) + `"`), signA},
	}
}

// TestWriteFuzzSeeds writes the seeds above into testdata/fuzz, where the
// fuzzer's finds are kept too. Run it after changing them:
// SPIKE_WRITE_FUZZ_SEEDS=1 go test -run TestWriteFuzzSeeds ./internal/auth/
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("SPIKE_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set SPIKE_WRITE_FUZZ_SEEDS=1 to rewrite the seeds in testdata/fuzz")
	}
	write := func(target, name string, values ...string) {
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		body := "go test fuzz v1\n" + strings.Join(values, "\n") + "\n"
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range seedParts() {
		name := fmt.Sprintf("seed-%02d", i)
		write("FuzzHS256DifferentialParts", name, "string("+strconv.Quote(s.header)+")", "string("+strconv.Quote(s.claims)+")",
			fmt.Sprintf("byte(%q)", byte(s.signer)))
		write("FuzzHS256Differential", name, "string("+strconv.Quote(makeToken(s.header, s.claims, s.signer))+")")
	}
	for i, tok := range rawSeeds() {
		write("FuzzHS256Differential", fmt.Sprintf("seed-raw-%02d", i), "string("+strconv.Quote(tok)+")")
	}
}
