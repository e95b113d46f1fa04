package auth_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/maypok86/otter/v2"

	"github.com/spikehq/spike/internal/auth"
)

// distinctTokens returns n tokens of n different buyers, as `spike token`
// and the load generator write them.
func distinctTokens(b *testing.B, n int) []string {
	b.Helper()
	toks := make([]string, n)
	exp := fixedNow.Add(time.Hour).Unix()
	for i := range toks {
		toks[i] = makeToken(hdr, `{"exp":`+strconv.FormatInt(exp, 10)+`,"iat":`+strconv.FormatInt(fixedNow.Unix(), 10)+
			`,"sub":"`+strconv.Itoa(100_000+i)+`"}`, signA)
	}
	return toks
}

// BenchmarkVerifyGolangJWT is the verifier before the fast path, on
// tokens it has not seen.
func BenchmarkVerifyGolangJWT(b *testing.B) {
	toks, ref := distinctTokens(b, 4096), newReference()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := ref.Verify(toks[i%len(toks)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyFast is the fast path on the same tokens.
func BenchmarkVerifyFast(b *testing.B) {
	toks, h := distinctTokens(b, 4096), newHS256(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := h.Verify(toks[i%len(toks)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyFastParallel: the hasher pool under every core.
func BenchmarkVerifyFastParallel(b *testing.B) {
	toks, h := distinctTokens(b, 4096), newHS256(b)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := h.Verify(toks[i%len(toks)]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// BenchmarkVerifyForged: a token with a wrong signature (one HMAC per
// accepted secret, no JSON).
func BenchmarkVerifyForged(b *testing.B) {
	tok, h := makeToken(hdr, `{"sub":"1","exp":`+in1h+`,"role":"admin"}`, signWrong), newHS256(b)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := h.Verify(tok); err == nil {
			b.Fatal("forged token accepted")
		}
	}
}

type cachedIdentity struct {
	id  auth.Identity
	exp time.Time
}

// BenchmarkCacheMissAndSet is what the verified-token cache adds for a
// buyer seen for the first time: a lookup that misses and an insert, with
// 150,000 distinct tokens through a cache of 100,000 (as it was).
func BenchmarkCacheMissAndSet(b *testing.B) {
	toks := distinctTokens(b, 150_000)
	c := otter.Must(&otter.Options[string, cachedIdentity]{MaximumSize: 100_000})
	v := cachedIdentity{id: auth.Identity{UserID: 1}, exp: fixedNow}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tok := toks[i%len(toks)]
		if _, ok := c.GetIfPresent(tok); !ok {
			c.Set(tok, v)
		}
	}
}

// BenchmarkCacheHit is what the cache costs when it saves a verification.
func BenchmarkCacheHit(b *testing.B) {
	toks := distinctTokens(b, 4096)
	c := otter.Must(&otter.Options[string, cachedIdentity]{MaximumSize: 100_000})
	for _, t := range toks {
		c.Set(t, cachedIdentity{exp: fixedNow})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok := c.GetIfPresent(toks[i%len(toks)]); !ok {
			b.Fatal("miss")
		}
	}
}
