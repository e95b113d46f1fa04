package payment

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	"github.com/spikehq/spike"
)

// SignatureHeader is the header that carries a webhook's signature, in the
// form written by Sign.
const SignatureHeader = "X-Spike-Signature"

// DefaultTolerance is how far a signature's timestamp may be from the
// receiver's clock (either way) when Verify is given no tolerance.
const DefaultTolerance = 5 * time.Minute

// maxSignatureHeader bounds the header Verify parses.
const maxSignatureHeader = 4096

// Sign returns the signature of a webhook body sent at t:
// "t=<unix>,v1=<hex HMAC-SHA256 under secret of "<unix>.<body>">".
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

var errBadSignature = &spike.Error{Kind: spike.ErrUnauthenticated, Message: "bad webhook signature"}

// ParseSignature splits a signature header into its timestamp (the decimal
// text, as signed) and its v1 signatures (several are allowed, for secret
// rotation). Elements other than t and v1 are ignored, like the v0 of a
// sender that signs with several schemes. Errors are spike.ErrUnauthenticated.
func ParseSignature(header string) (ts string, v1 [][]byte, err error) {
	if header == "" {
		return "", nil, spike.Errorf(spike.ErrUnauthenticated, "missing webhook signature")
	}
	if len(header) > maxSignatureHeader {
		return "", nil, errBadSignature
	}
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return "", nil, errBadSignature
		}
		switch k {
		case "t":
			if ts != "" || !validUnix(v) {
				return "", nil, errBadSignature
			}
			ts = v
		case "v1":
			b, err := hex.DecodeString(v)
			if err != nil || len(b) != sha256.Size {
				// A malformed v1 is not fatal: another one may match.
				continue
			}
			v1 = append(v1, b)
		}
	}
	if ts == "" || len(v1) == 0 {
		return "", nil, errBadSignature
	}
	return ts, v1, nil
}

// validUnix accepts 1–12 decimal digits (no sign, no leading zero but "0").
func validUnix(s string) bool {
	if len(s) == 0 || len(s) > 12 || (len(s) > 1 && s[0] == '0') {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Verify checks a signature header written by Sign against body: one of its
// v1 signatures must be the HMAC under secret (compared in constant time) and
// its timestamp within tolerance of now, either way (zero tolerance:
// DefaultTolerance). A valid delivery replayed within the tolerance passes:
// the Service makes replays harmless (they change nothing twice). Errors are
// spike.ErrUnauthenticated.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	ts, sigs, err := ParseSignature(header)
	if err != nil {
		return err
	}
	unix, _ := strconv.ParseInt(ts, 10, 64) // validUnix: fits
	d := now.Sub(time.Unix(unix, 0))
	if d > tolerance {
		return spike.Errorf(spike.ErrUnauthenticated, "webhook signature too old")
	}
	if d < -tolerance {
		return spike.Errorf(spike.ErrUnauthenticated, "webhook signature timestamp in the future")
	}
	want := mac(secret, ts, body)
	ok := false
	for _, s := range sigs {
		ok = hmac.Equal(s, want) || ok // check them all: no early exit on a match
	}
	if !ok {
		return errBadSignature
	}
	return nil
}
