package main

import (
	"strconv"
	"sync"
	"testing"

	"github.com/spikehq/spike/internal/testkit/apitest"
)

// client is the API client of these tests (internal/apitest, shared with
// e2e).
type client = apitest.Client

func newClient(t testing.TB, addr string, secret []byte) *client {
	c := apitest.NewClient(t, addr, secret)
	openClients.Lock()
	openClients.byAddr[addr] = append(openClients.byAddr[addr], c)
	openClients.Unlock()
	return c
}

// openClients are the clients of each server address, so that stopApp can
// hang them up first.
var openClients = struct {
	sync.Mutex
	byAddr map[string][]*client
}{byAddr: map[string][]*client{}}

// hangUp closes the idle keep-alive connections of the clients of addr,
// as clients do when their load ends. Without it http.Server.Shutdown may
// wait 5 s for a connection a client dialled and never used (its request
// went out on another): the server counts it as one whose request may be
// on its way.
func hangUp(addr string) {
	openClients.Lock()
	cs := openClients.byAddr[addr]
	delete(openClients.byAddr, addr)
	openClients.Unlock()
	for _, c := range cs {
		c.HTTP.CloseIdleConnections()
	}
}

func userKey(user int64, n int) string {
	return "u" + strconv.FormatInt(user, 10) + "-k" + strconv.Itoa(n)
}
