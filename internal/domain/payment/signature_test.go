package payment

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spikehq/spike"
)

func TestSignVerify(t *testing.T) {
	secret := []byte("whsec_test")
	body := []byte(`{"id":"evt_1","ref":"sbx_1","status":"succeeded","at":"2026-01-01T00:00:00Z"}`)
	now := time.Unix(1_800_000_000, 0)
	good := Sign(secret, now, body)
	if !strings.HasPrefix(good, "t=1800000000,v1=") || len(good) != len("t=1800000000,v1=")+64 {
		t.Fatalf("Sign = %q", good)
	}
	old := Sign([]byte("whsec_old"), now, body)
	_, oldV1, _ := strings.Cut(old, ",")
	cases := []struct {
		name, header string
		body         []byte
		now          time.Time
		ok           bool
	}{
		{"good", good, body, now, true},
		{"good, 4 min late", good, body, now.Add(4 * time.Minute), true},
		{"replayed within tolerance", good, body, now.Add(time.Minute), true},
		{"spaces", strings.ReplaceAll(good, ",", ", "), body, now, true},
		{"rotation: old secret's v1 first", "t=1800000000," + oldV1 + "," + good[len("t=1800000000,"):], body, now, true},
		{"unknown scheme ignored", good + ",v0=abc", body, now, true},
		{"missing", "", body, now, false},
		{"bad hmac", "t=1800000000,v1=" + strings.Repeat("0", 64), body, now, false},
		{"other secret", old, body, now, false},
		{"tampered body", good, append([]byte{' '}, body...), now, false},
		{"old", good, body, now.Add(5*time.Minute + time.Second), false},
		{"future", good, body, now.Add(-5*time.Minute - time.Second), false},
		{"timestamp changed", strings.Replace(good, "t=1800000000", "t=1800000001", 1), body, now, false},
		{"two timestamps", "t=1800000000," + good, body, now, false},
		{"no timestamp", good[len("t=1800000000,"):], body, now, false},
		{"no v1", "t=1800000000", body, now, false},
		{"negative timestamp", "t=-1," + good[len("t=1800000000,"):], body, now, false},
		{"garbage", "sha256=abc", body, now, false},
		{"short v1", "t=1800000000,v1=abcd", body, now, false},
	}
	for _, c := range cases {
		err := Verify(secret, c.header, c.body, c.now, 0)
		if c.ok && err != nil {
			t.Errorf("%s: Verify = %v; want ok", c.name, err)
		}
		if !c.ok && !errors.Is(err, spike.ErrUnauthenticated) {
			t.Errorf("%s: Verify = %v; want spike.ErrUnauthenticated", c.name, err)
		}
	}
	if err := Verify(secret, good, body, now.Add(time.Hour), 2*time.Hour); err != nil {
		t.Errorf("with a 2h tolerance, 1h late: %v", err)
	}
}

func FuzzParseSignature(f *testing.F) {
	secret := []byte("s")
	f.Add(Sign(secret, time.Unix(1_800_000_000, 0), []byte("{}")), []byte("{}"))
	f.Add("t=0,v1=", []byte(""))
	f.Add("t=1,t=2,v1=00", []byte("x"))
	f.Add(",,,==,v1", []byte("x"))
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		ts, sigs, err := ParseSignature(header)
		if err != nil {
			if !errors.Is(err, spike.ErrUnauthenticated) {
				t.Fatalf("error of another kind: %v", err)
			}
			return
		}
		if !validUnix(ts) || len(sigs) == 0 {
			t.Fatalf("ParseSignature(%q) accepted ts %q, %d signatures", header, ts, len(sigs))
		}
		for _, s := range sigs {
			if len(s) != 32 {
				t.Fatalf("signature of %d bytes", len(s))
			}
		}
		// Whatever it parses, Verify must not panic, and a fresh signature
		// of the same body at that time verifies.
		_ = Verify(secret, header, body, time.Now(), 0)
		var unix time.Time
		if n, ok := parseUnixForTest(ts); ok {
			unix = time.Unix(n, 0)
			if err := Verify(secret, Sign(secret, unix, body), body, unix, 0); err != nil {
				t.Fatalf("round trip at %v: %v", unix, err)
			}
		}
	})
}

func parseUnixForTest(s string) (int64, bool) {
	var n int64
	for i := 0; i < len(s); i++ {
		n = n*10 + int64(s[i]-'0')
	}
	return n, true
}
