//go:build !race

// The race detector makes sync.Pool drop items at random, so allocations
// are only counted without it.

package auth_test

import (
	"testing"
)

// TestHS256VerifyAllocations: the shapes `spike token` and the load
// generator write take the fast path, which allocates nothing.
func TestHS256VerifyAllocations(t *testing.T) {
	h := newHS256(t)
	for _, tok := range []string{
		makeToken(hdr, `{"exp":`+in1h+`,"iat":1799990000,"role":"admin","sub":"42"}`, signA), // spike token
		makeToken(`{"alg":"HS256","typ":"JWT"}`, `{"exp":`+in1h+`,"sub":"42"}`, signB),       // loadgen, older secret
	} {
		if _, err := h.Verify(tok); err != nil {
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(200, func() { h.Verify(tok) }); n > 0 {
			t.Errorf("Verify allocates %v times per token, want 0", n)
		}
	}
}
