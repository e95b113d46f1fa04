package sandboxpay

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
)

const (
	refPrefix = "sbx_"
	// MaxPaymentID bounds the payment ids Create accepts, so that a ref
	// stays within MaxRef.
	MaxPaymentID = 64
	// MaxRef bounds a ref: "sbx_" + base64 of at most 64+1+19+1+20 bytes
	// (140) + "." + 22 = 167 characters, under 200.
	MaxRef = 200
	macLen = 16 // bytes of HMAC-SHA256 kept: 128 bits
	// refDomain keeps the refs' MACs apart from the webhook signatures
	// made with the same secret ("<unix>.<body>": starts with a digit).
	refDomain = "spike sandboxpay ref v1\x00"
)

var b64 = base64.RawURLEncoding

// refInfo is what a ref says of its payment.
type refInfo struct {
	paymentID   string
	amountCents int64
	created     int64 // Unix seconds; 0 when the payment had no CreatedAt
}

func (g *Gateway) refMAC(enc string) []byte {
	m := hmac.New(sha256.New, g.cfg.Secret)
	m.Write([]byte(refDomain))
	m.Write([]byte(enc))
	return m.Sum(nil)[:macLen]
}

// makeRef returns the signed ref of a payment: a function of its fields and
// the secret only, so every instance makes the same one.
func (g *Gateway) makeRef(in refInfo) string {
	payload := in.paymentID + "|" + strconv.FormatInt(in.amountCents, 10) + "|" + strconv.FormatInt(in.created, 10)
	enc := b64.EncodeToString([]byte(payload))
	return refPrefix + enc + "." + b64.EncodeToString(g.refMAC(enc))
}

// parseRef verifies ref's MAC and decodes it; ok=false for anything this
// gateway's secret did not sign. The MAC covers the exact base64 text and
// the MAC's own encoding is decoded strictly, so a ref that verifies is
// byte for byte the one makeRef made (Spike finds the payment by it).
func (g *Gateway) parseRef(ref string) (refInfo, bool) {
	if len(ref) > MaxRef || !strings.HasPrefix(ref, refPrefix) {
		return refInfo{}, false
	}
	enc, sig, ok := strings.Cut(ref[len(refPrefix):], ".")
	if !ok {
		return refInfo{}, false
	}
	mac, err := b64.Strict().DecodeString(sig)
	if err != nil || !hmac.Equal(mac, g.refMAC(enc)) {
		return refInfo{}, false
	}
	raw, err := b64.Strict().DecodeString(enc)
	if err != nil {
		return refInfo{}, false
	}
	s := string(raw)
	i := strings.LastIndexByte(s, '|')
	if i < 0 {
		return refInfo{}, false
	}
	created, err1 := strconv.ParseInt(s[i+1:], 10, 64)
	s = s[:i]
	j := strings.LastIndexByte(s, '|')
	if j < 0 || err1 != nil {
		return refInfo{}, false
	}
	amount, err := strconv.ParseInt(s[j+1:], 10, 64)
	if err != nil || j == 0 {
		return refInfo{}, false
	}
	return refInfo{paymentID: s[:j], amountCents: amount, created: created}, true
}
