package e2e_test

import (
	"testing"

	"github.com/spikehq/spike/internal/testkit/apitest"
)

// client is the API client of these tests (internal/apitest, shared with
// cmd/spike's).
type client = apitest.Client

// newClient returns a client that retries transient failures in Must: the
// cluster's instances come and go behind HAProxy, whose own error pages are
// not checked against api/openapi.yaml (Spike's answers are).
func newClient(t testing.TB, addr string, secret []byte) *client {
	c := apitest.NewClient(t, addr, secret)
	c.RetryTransient = true
	c.BehindProxy()
	return c
}
