package main

import (
	"strconv"
	"testing"

	"github.com/spikehq/spike/internal/testkit/apitest"
)

// client is the API client of these tests (internal/apitest, shared with
// e2e).
type client = apitest.Client

func newClient(t testing.TB, addr string, secret []byte) *client {
	return apitest.NewClient(t, addr, secret)
}

func userKey(user int64, n int) string {
	return "u" + strconv.FormatInt(user, 10) + "-k" + strconv.Itoa(n)
}
