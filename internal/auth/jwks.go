package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// publicKey is one usable key of an identity provider's JWKS.
type publicKey struct {
	kid string
	alg string // the one token alg it verifies: RS256, ES256 or EdDSA
	key crypto.PublicKey
}

// keySet is a parsed JWKS, replaced whole on each successful fetch.
type keySet struct {
	keys    []publicKey
	skipped int // keys of a kind, curve or use Spike does not verify with
}

// find returns the keys that may verify a token with this kid and alg: the
// one with the kid, or when the token names none, every key for the alg.
func (s *keySet) find(kid, alg string) []crypto.PublicKey {
	if s == nil {
		return nil
	}
	var out []crypto.PublicKey
	for _, k := range s.keys {
		if k.alg == alg && (kid == "" || k.kid == kid) {
			out = append(out, k.key)
		}
	}
	return out
}

// jwkJSON is a JSON Web Key (RFC 7517), the members Spike reads.
type jwkJSON struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Crv string `json:"crv"`
	N   string `json:"n"`
	E   string `json:"e"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// parseJWKS reads a JWKS document. Keys Spike cannot use (encryption keys,
// other curves, RSA under 2048 bits, unknown kinds) are skipped; a key that
// claims a usable kind but is malformed fails the whole document, so a
// broken rotation is noticed rather than half-applied.
func parseJWKS(b []byte) (*keySet, error) {
	var doc struct {
		Keys []jwkJSON `json:"keys"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	set := &keySet{}
	for i, j := range doc.Keys {
		k, err := j.publicKey()
		if err != nil {
			return nil, fmt.Errorf("JWKS key %d (kid %q): %w", i, j.Kid, err)
		}
		if k == nil {
			set.skipped++
			continue
		}
		set.keys = append(set.keys, *k)
	}
	if len(set.keys) == 0 {
		return nil, fmt.Errorf("JWKS: none of its %d keys is an RS256, ES256 (P-256) or EdDSA (Ed25519) signing key", len(doc.Keys))
	}
	return set, nil
}

var errSkip = errors.New("skip")

// publicKey returns the key, nil for one Spike does not use.
func (j jwkJSON) publicKey() (*publicKey, error) {
	if j.Use != "" && j.Use != "sig" {
		return nil, nil
	}
	var alg string
	var key crypto.PublicKey
	var err error
	switch j.Kty {
	case "RSA":
		alg = "RS256"
		key, err = j.rsa()
	case "EC":
		alg = "ES256"
		key, err = j.ec()
	case "OKP":
		alg = "EdDSA"
		key, err = j.okp()
	default:
		return nil, nil
	}
	if errors.Is(err, errSkip) || j.Alg != "" && j.Alg != alg {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &publicKey{kid: j.Kid, alg: alg, key: key}, nil
}

func (j jwkJSON) rsa() (crypto.PublicKey, error) {
	n, err := b64field("n", j.N)
	if err != nil {
		return nil, err
	}
	e, err := b64field("e", j.E)
	if err != nil {
		return nil, err
	}
	if len(e) > 4 {
		return nil, errors.New("RSA exponent too large")
	}
	var exp int
	for _, c := range e {
		exp = exp<<8 | int(c)
	}
	if exp < 3 || exp%2 == 0 {
		return nil, fmt.Errorf("RSA exponent %d is not an odd number above 2", exp)
	}
	k := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}
	if k.N.BitLen() < 2048 {
		return nil, errSkip // too weak to trust
	}
	return k, nil
}

func (j jwkJSON) ec() (crypto.PublicKey, error) {
	if j.Crv != "P-256" {
		return nil, errSkip
	}
	x, err := b64field("x", j.X)
	if err != nil {
		return nil, err
	}
	y, err := b64field("y", j.Y)
	if err != nil {
		return nil, err
	}
	if len(x) != 32 || len(y) != 32 {
		return nil, errors.New("P-256 coordinates must be 32 bytes each")
	}
	k, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	if err != nil {
		return nil, fmt.Errorf("P-256 key: %w", err)
	}
	return k, nil
}

func (j jwkJSON) okp() (crypto.PublicKey, error) {
	if j.Crv != "Ed25519" {
		return nil, errSkip
	}
	x, err := b64field("x", j.X)
	if err != nil {
		return nil, err
	}
	if len(x) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("Ed25519 key must be %d bytes", ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(x), nil
}

// b64field decodes a base64url member, tolerating the padding some
// providers add.
func b64field(name, s string) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("member %q missing", name)
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("member %q: %w", name, err)
	}
	return b, nil
}
