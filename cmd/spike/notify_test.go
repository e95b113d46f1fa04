package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/spikehq/spike/internal/domain/notify"
)

// receiver is a webhook endpoint that checks signatures and records, for
// each notification, the order's status in the database at that moment.
type receiver struct {
	srv     *httptest.Server
	secret  []byte
	mode    atomic.Int32        // receiverOK, receiverFail or receiverHang
	lookup  atomic.Pointer[app] // set once the app runs
	release chan struct{}       // ends hanging requests

	mu       sync.Mutex
	got      map[string]notify.Notification // order id → notification
	statuses map[string]string              // order id → order status when notified
	requests int
	badSig   int
}

const (
	receiverOK = iota
	receiverFail
	receiverHang
)

func newReceiver(t *testing.T, secret string) *receiver {
	t.Helper()
	r := &receiver{secret: []byte(secret), release: make(chan struct{}),
		got: map[string]notify.Notification{}, statuses: map[string]string{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	t.Cleanup(func() { close(r.release) }) // runs first: hanging handlers return
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.requests++
	r.mu.Unlock()
	if !notify.Verify(r.secret, body, req.Header.Get(notify.SignatureHeader)) {
		r.mu.Lock()
		r.badSig++
		r.mu.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	switch r.mode.Load() {
	case receiverFail:
		w.WriteHeader(http.StatusInternalServerError)
		return
	case receiverHang:
		select {
		case <-req.Context().Done():
		case <-r.release:
		}
		return
	}
	var n notify.Notification
	if err := json.Unmarshal(body, &n); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	// The database, not the API: until the batch is acknowledged (just
	// after the notifications are queued) the API reads the order from
	// the stream, as pending.
	status := "not in the database"
	if a := r.lookup.Load(); a != nil {
		if o, err := a.store.Order(req.Context(), n.OrderID); err == nil {
			status = string(o.Status)
		}
	}
	r.mu.Lock()
	r.got[n.OrderID] = n
	r.statuses[n.OrderID] = status
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// received returns how many of ids were notified.
func (r *receiver) received(ids []string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := 0
	for _, id := range ids {
		if _, ok := r.got[id]; ok {
			k++
		}
	}
	return k
}

// startAppConfig runs an embedded Spike with cfg (Addr and Data are set here).
func startAppConfig(t *testing.T, cfg Config) *app {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	cfg.Data = t.TempDir()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	a, err := start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// placeMany places one unit for each user, 16 at a time, and returns the
// order ids; each must end in a 202.
func placeMany(t *testing.T, c *client, saleID string, users []int64, key string) []string {
	t.Helper()
	ids := make([]string, len(users))
	var g errgroup.Group
	g.SetLimit(16)
	for i, u := range users {
		g.Go(func() error {
			// As a client would: a 503 with Retry-After (the stream's limit
			// shedding on a CI machine whose CPU is shared) is retried with
			// the same key. Anything else but a 202 fails.
			for attempt := 0; ; attempt++ {
				r, p, err := c.Place(context.Background(), u, c.Token(u, false), saleID, fmt.Sprintf("%s-%d", key, u), 1)
				if err == nil && r.Status == 503 && r.Header.Get("Retry-After") != "" && attempt < 20 {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				if err != nil || r.Status != 202 {
					return fmt.Errorf("buyer %d: %v %d %s", u, err, r.Status, r.Body)
				}
				ids[i] = p.OrderID
				return nil
			}
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	return ids
}

func usersFrom(first int64, n int) []int64 {
	u := make([]int64, n)
	for i := range u {
		u[i] = first + int64(i)
	}
	return u
}

// TestNotificationsAfterPersist: every persisted order is notified by a
// signed webhook once it is created; the notifications switch stops them
// at runtime.
func TestNotificationsAfterPersist(t *testing.T) {
	rcv := newReceiver(t, "webhook-secret-1")
	cfg := DefaultConfig()
	cfg.Notify.WebhookURL = rcv.srv.URL + "/hooks/spike"
	cfg.Notify.WebhookSecret = "webhook-secret-1"
	a := startAppConfig(t, cfg)
	defer stopApp(t, a)
	c := newClient(t, a.addr, a.secret)
	rcv.lookup.Store(a)
	admin := c.Token(1, true)
	c.SetupSale("sku-notify", "notify-sale", 1000, 1)

	buyers := usersFrom(100, 30)
	ids := placeMany(t, c, "notify-sale", buyers, "on")
	waitFor(t, "every order notified", 20*time.Second, func() bool { return rcv.received(ids) == len(ids) })
	rcv.mu.Lock()
	for i, id := range ids {
		n, st := rcv.got[id], rcv.statuses[id]
		if st != "created" {
			t.Errorf("order %s was notified while %q, want created (notify after persist)", id, st)
		}
		if n.Kind != notify.KindOrderCreated || n.UserID != buyers[i] || n.ID != "order_created:"+id ||
			n.SaleID != "notify-sale" || n.Quantity != 1 || n.AmountCents != 999 || n.At.IsZero() {
			t.Errorf("notification %+v for order %s of buyer %d", n, id, buyers[i])
		}
	}
	if rcv.badSig != 0 {
		t.Errorf("%d requests with a bad signature", rcv.badSig)
	}
	rcv.mu.Unlock()
	// The sender counts a notification once the receiver's answer is back,
	// a moment after the receiver has recorded it.
	waitFor(t, "spike_notifications_sent_total to count every notification", 20*time.Second, func() bool {
		return metric(c, "spike_notifications_sent_total") >= float64(len(ids))
	})

	// Switched off through the admin API: later orders are persisted, not notified.
	var list struct {
		Switches []struct{ Name, Value, Default string } `json:"switches"`
	}
	c.Must("GET", "/v1/admin/switches", admin, nil, 200).Decode(t, &list)
	found := false
	for _, s := range list.Switches {
		if s.Name == "notifications" {
			found = s.Value == "true" && s.Default == "true"
		}
	}
	if !found {
		t.Fatalf("switch notifications not listed as on by default: %+v", list.Switches)
	}
	c.Must("PUT", "/v1/admin/switches/notifications", admin, `{"value":false}`, 200)
	off := placeMany(t, c, "notify-sale", usersFrom(200, 20), "off")
	waitFor(t, "20 notifications dropped with the switch off", 20*time.Second, func() bool {
		return metric(c, `spike_notifications_dropped_total{reason="switch_off"}`) >= float64(len(off))
	})
	c.WaitAudit(30 * time.Second) // persisted
	if k := rcv.received(off); k != 0 {
		t.Errorf("%d of %d orders were notified with the switch off", k, len(off))
	}

	// On again: notifications resume.
	c.Must("PUT", "/v1/admin/switches/notifications", admin, `{"value":true}`, 200)
	again := placeMany(t, c, "notify-sale", usersFrom(300, 3), "again")
	waitFor(t, "notified after the switch is back on", 20*time.Second, func() bool { return rcv.received(again) == len(again) })
}

// TestNotificationFailuresDoNotAffectPlacements: a webhook that fails or
// hangs costs notifications, never placements or persistence.
func TestNotificationFailuresDoNotAffectPlacements(t *testing.T) {
	if testing.Short() {
		t.Skip("fault test: a failing and a hanging webhook receiver under load")
	}
	for _, tt := range []struct {
		name string
		mode int32
	}{{"receiver answers 500", receiverFail}, {"receiver hangs", receiverHang}} {
		t.Run(tt.name, func(t *testing.T) {
			rcv := newReceiver(t, "webhook-secret-2")
			rcv.mode.Store(tt.mode)
			cfg := DefaultConfig()
			cfg.Notify.WebhookURL = rcv.srv.URL
			cfg.Notify.WebhookSecret = "webhook-secret-2"
			cfg.Notify.Workers = 2
			cfg.Notify.Queue = 8
			cfg.Notify.Timeout = 300 * time.Millisecond
			a := startAppConfig(t, cfg)
			defer stopApp(t, a)
			c := newClient(t, a.addr, a.secret)
			c.SetupSale("sku-nf", "nf-sale", 1000, 1)

			ids := placeMany(t, c, "nf-sale", usersFrom(1000, 200), "k") // each a 202, or Fatal
			if rep, _ := c.WaitAudit(30 * time.Second); !rep.OK {
				t.Fatalf("audit: %+v", rep)
			}
			for _, id := range ids[:5] {
				var o struct{ Status string }
				c.Must("GET", "/v1/orders/"+id, c.Token(1, true), nil, 200).Decode(t, &o)
				if o.Status != "created" {
					t.Errorf("order %s is %q, want created", id, o.Status)
				}
			}
			rcv.mu.Lock()
			tried := rcv.requests
			rcv.mu.Unlock()
			sent := metric(c, "spike_notifications_sent_total")
			lost := metric(c, "spike_notifications_failed_total") +
				metric(c, `spike_notifications_dropped_total{reason="pool_full"}`) +
				metric(c, `spike_notifications_dropped_total{reason="breaker_open"}`)
			if tried == 0 || sent != 0 || lost == 0 {
				t.Errorf("receiver got %d requests; metrics sent %v, failed+dropped %v; want tries, none sent, losses counted", tried, sent, lost)
			}
			t.Logf("%d placements; webhook tried %d times; %v notifications failed or dropped", len(ids), tried, lost)
		})
	}
}
