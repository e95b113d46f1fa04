package stripemock_test

import (
	"net/http"
	"os"
	"testing"

	"github.com/spikehq/spike/internal/testkit/stripemock"
)

func TestMain(m *testing.M) {
	code := m.Run()
	stripemock.Stop()
	os.Exit(code)
}

// get asks the Stripe API at base for the account's balance.
func get(t *testing.T, base string) int {
	t.Helper()
	req, err := http.NewRequest("GET", base+"/v1/balance", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer sk_test_123")
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	return r.StatusCode
}

// TestStart: a stripe-mock of its own answers the API, and is gone once
// the test that started it ends.
func TestStart(t *testing.T) {
	var base string
	t.Run("running", func(t *testing.T) {
		base = stripemock.Start(t)
		if st := get(t, base); st != 200 {
			t.Fatalf("GET /v1/balance: %d", st)
		}
	})
	if base == "" {
		t.Skip("skipped")
	}
	http.DefaultClient.CloseIdleConnections()
	if _, err := http.Get(base + "/v1/balance"); err == nil {
		t.Errorf("stripe-mock at %s still answers after its test ended", base)
	}
}

// TestShared: every caller gets the same instance until Stop.
func TestShared(t *testing.T) {
	a := stripemock.Shared(t)
	if b := stripemock.Shared(t); a != b {
		t.Errorf("Shared: %s then %s", a, b)
	}
	if st := get(t, a); st != 200 {
		t.Fatalf("GET /v1/balance: %d", st)
	}
}
