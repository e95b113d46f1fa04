package httpapi

import (
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spikehq/spike"
	"github.com/spikehq/spike/internal/switches"
	"github.com/spikehq/spike/resilience"
)

// Route limits: every route other than placement (which has its own
// per-buyer and per-sale limits, Guards) is limited per caller, from the
// switches:
//
//   - anonymous routes (product and sale reads, /readyz, /metrics) and
//     requests whose token is refused, per client IP (IPv6 per /64);
//   - a buyer's other requests (order, listing, payment and history
//     reads, cancel, pay), per buyer;
//   - an admin's requests, per admin.
//
// /healthz (free, the load balancer's check) and the payment webhooks
// (signed, from a provider's few addresses for every buyer at once) are
// not limited.
type routeLimits struct {
	board    *switches.Board
	trusted  []netip.Prefix
	onReject func(guard string) // counts a refusal by guard name

	ip    atomic.Pointer[resilience.KeyedBuckets] // nil: unlimited
	buyer atomic.Pointer[resilience.KeyedBuckets]
	admin atomic.Pointer[resilience.KeyedBuckets]
}

// Most keys each limit remembers; past it a new caller makes room by
// forgetting the fullest of a few sampled buckets (a full bucket is the
// same as a forgotten one).
const (
	maxIPKeys    = 1 << 17
	maxUserKeys  = 1 << 20
	maxAdminKeys = 1 << 10
)

// Errors of the route limits.
var (
	errIPRate    = &spike.Error{Kind: spike.ErrRateLimited, Message: "too many requests from this address; slow down"}
	errBuyerRate = &spike.Error{Kind: spike.ErrRateLimited, Message: "too many requests from this buyer; slow down"}
	errAdminRate = &spike.Error{Kind: spike.ErrRateLimited, Message: "too many requests from this admin; slow down"}
)

// newRouteLimits returns the limits following board's switches; nil
// board: no limits.
func newRouteLimits(board *switches.Board, trusted []netip.Prefix, onReject func(string)) *routeLimits {
	l := &routeLimits{board: board, trusted: trusted, onReject: onReject}
	if board == nil {
		return l
	}
	l.rebuild()
	board.OnChange(func(name, _ string) {
		switch name {
		case switches.IPRate, switches.IPBurst, switches.BuyerRate, switches.BuyerBurst, switches.AdminRate, switches.AdminBurst:
			l.rebuild()
		}
	})
	return l
}

func (l *routeLimits) rebuild() {
	b := l.board
	l.ip.Store(buckets(b.Number(switches.IPRate), b.Number(switches.IPBurst), maxIPKeys))
	l.buyer.Store(buckets(b.Number(switches.BuyerRate), b.Number(switches.BuyerBurst), maxUserKeys))
	l.admin.Store(buckets(b.Number(switches.AdminRate), b.Number(switches.AdminBurst), maxAdminKeys))
}

// buckets returns a token bucket per key, or nil for unlimited (rate 0).
func buckets(rate, burst float64, maxKeys int) *resilience.KeyedBuckets {
	if rate <= 0 {
		return nil
	}
	return resilience.NewKeyedBuckets(resilience.KeyedBucketsConfig{Rate: rate, Burst: int(burst), MaxKeys: maxKeys})
}

// allowIP takes one request of r's client address; a refusal is a 429
// error carrying its Retry-After.
func (l *routeLimits) allowIP(w http.ResponseWriter, r *http.Request) error {
	k := l.ip.Load()
	if k == nil {
		return nil // no address parsing when unlimited
	}
	return l.take(w, k, ipKey(clientIP(r, l.trusted)), "ip_rate", errIPRate)
}

// allowCaller takes one request of an authenticated caller: admins on the
// admin limit, buyers on the buyer limit.
func (l *routeLimits) allowCaller(w http.ResponseWriter, id Identity) error {
	if id.Admin {
		return l.take(w, l.admin.Load(), uint64(id.UserID), "admin_rate", errAdminRate)
	}
	return l.take(w, l.buyer.Load(), uint64(id.UserID), "buyer_rate", errBuyerRate)
}

// limitGuards are the guard names of the route limits in
// spike_guard_rejections_total.
var limitGuards = []string{"ip_rate", "buyer_rate", "admin_rate"}

// take spends one token of key's bucket in k (nil: unlimited), or sets
// Retry-After to when the next one comes and returns refusal.
func (l *routeLimits) take(w http.ResponseWriter, k *resilience.KeyedBuckets, key uint64, guard string, refusal error) error {
	if k == nil || k.Allow(key) {
		return nil
	}
	if l.onReject != nil {
		l.onReject(guard)
	}
	w.Header()["Retry-After"] = []string{retryAfterSeconds(k.Delay(key))}
	return refusal
}

// retryAfterSeconds is d rounded up to whole seconds, at least 1 (a
// negative d, "never", is also 1: the limit may change at runtime).
func retryAfterSeconds(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}

// clientIP is the address a request came from: the peer, or when the peer
// is a trusted proxy the last address in X-Forwarded-For that is not one
// (proxies append; what a client wrote itself comes first and is never
// believed past an untrusted hop).
func clientIP(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{} // not a TCP peer (tests): one shared key
	}
	addr := peer.Addr().Unmap()
	if !isTrusted(addr, trusted) {
		return addr
	}
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			hop, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return addr // a malformed hop: trust nothing before it
			}
			addr = hop.Unmap()
			if !isTrusted(addr, trusted) {
				return addr
			}
		}
	}
	return addr
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ipKey is the limit's key of an address: an IPv4 address as a number
// below 2^32; IPv6 per /64 (the block one subscriber usually holds whole),
// its first 64 bits (which for every global unicast address, 2000::/3, are
// at or above 2^32).
func ipKey(a netip.Addr) uint64 {
	b := a.As16()
	if a.Is4() {
		return uint64(b[12])<<24 | uint64(b[13])<<16 | uint64(b[14])<<8 | uint64(b[15])
	}
	var k uint64
	for _, c := range b[:8] {
		k = k<<8 | uint64(c)
	}
	return k
}

// ParseTrustedProxies parses addresses and CIDR prefixes (10.0.0.0/8,
// 127.0.0.1, ::1) into prefixes.
func ParseTrustedProxies(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, spike.Errorf(spike.ErrInvalid, "%q is neither an IP address nor a CIDR prefix", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// anonymousRoutes are the routes served without a token, limited per IP.
var anonymousRoutes = map[string]bool{"get_product": true, "get_sale": true, "readyz": true, "metrics": true, "dashboard_page": true}

// limitAnonymous puts route's handler behind the per-IP limit if the
// route is anonymous.
func (s *Server) limitAnonymous(route string, h handlerFunc) handlerFunc {
	if !anonymousRoutes[route] {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := s.limits.allowIP(w, r); err != nil {
			return err
		}
		return h(w, r)
	}
}

// anonymous is limitAnonymous for a statusHandler.
func (s *Server) anonymous(h statusHandler) statusHandler {
	return func(w http.ResponseWriter, r *http.Request, id string) (int, error) {
		if err := s.limits.allowIP(w, r); err != nil {
			return 0, err
		}
		return h(w, r, id)
	}
}
