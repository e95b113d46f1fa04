package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Outcome names that are not API error codes. Any other outcome is the
// "code" of an API error body, or "http_<status>" when a non-2xx response has
// no parseable error body.
const (
	OutcomeAccepted        = "accepted"              // 202
	OutcomeOK              = "ok"                    // any other 2xx
	OutcomeTimeout         = "timeout"               // no response before the per-request timeout
	OutcomeTransport       = "transport_error"       // connection refused, reset, ...
	OutcomeClientOverload  = "client_overload"       // open loop: no free in-flight slot, request not sent
	OutcomeIdempotencyFail = "idempotency_violation" // a retried key got a different answer
)

// Classify maps an HTTP response to an outcome: "accepted" for 202, "ok" for
// other 2xx, otherwise the code of the {"error":{"code":...}} body, or
// "http_<status>" when the body has none.
func Classify(status int, body []byte) string {
	switch {
	case status == http.StatusAccepted:
		return OutcomeAccepted
	case status >= 200 && status < 300:
		return OutcomeOK
	}
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error.Code != "" && len(e.Error.Code) <= 64 {
		return e.Error.Code
	}
	return "http_" + strconv.Itoa(status)
}

// classifyErr maps a transport error to an outcome.
func classifyErr(err error) string {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return OutcomeTimeout
	}
	return OutcomeTransport
}

// IsTransport reports whether outcome means no HTTP response was received.
func IsTransport(outcome string) bool {
	return outcome == OutcomeTimeout || outcome == OutcomeTransport || outcome == OutcomeClientOverload
}

// Client sends requests to one Spike base URL over a keep-alive transport
// sized for the given concurrency. A Client is safe for concurrent use.
type Client struct {
	base    string
	hc      *http.Client
	timeout time.Duration

	noRetryAfter atomic.Int64 // 429 and 503 answers without Retry-After
	status5xx    atomic.Int64 // 5xx answers
}

// ServerErrors returns how many answers so far had a 5xx status.
func (c *Client) ServerErrors() int64 { return c.status5xx.Load() }

// MissingRetryAfter returns how many 429 or 503 answers lacked the
// Retry-After header that API.md requires.
func (c *Client) MissingRetryAfter() int64 { return c.noRetryAfter.Load() }

// NewClient returns a client for base (such as "http://127.0.0.1:8080").
// concurrency sizes the idle connection pool; timeout bounds each request
// (if zero, 10 s is used).
func NewClient(base string, concurrency int, timeout time.Duration) *Client {
	if concurrency < 1 {
		concurrency = 1
	}
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	tr := &http.Transport{
		Proxy:               nil, // never route benchmark traffic through a proxy
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        concurrency * 2,
		MaxIdleConnsPerHost: concurrency,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &Client{base: base, hc: &http.Client{Transport: tr}, timeout: timeout}
}

// Close closes idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// Response is a received response: status, body and its outcome.
type Response struct {
	Status  int
	Body    []byte
	Outcome string
}

// Do sends one request. auth is the full Authorization header value (or
// ""), idemKey the Idempotency-Key (or ""), body the JSON body (or nil).
// A transport failure returns an error and a Response whose Outcome says
// which kind of failure it was.
func (c *Client) Do(ctx context.Context, method, path, auth, idemKey string, body []byte) (Response, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return Response{Outcome: OutcomeTransport}, err
	}
	if body != nil {
		req.Header["Content-Type"] = []string{"application/json"}
	}
	if auth != "" {
		req.Header["Authorization"] = []string{auth}
	}
	if idemKey != "" {
		req.Header["Idempotency-Key"] = []string{idemKey}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return Response{Outcome: classifyErr(err)}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 500 {
		c.status5xx.Add(1)
	}
	if (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable) &&
		resp.Header.Get("Retry-After") == "" {
		c.noRetryAfter.Add(1)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Response{Status: resp.StatusCode, Outcome: classifyErr(err)}, err
	}
	return Response{Status: resp.StatusCode, Body: b, Outcome: Classify(resp.StatusCode, b)}, nil
}

// JSON sends a request with v encoded as the body (nil: no body) and
// decodes a 2xx body into out (if out is non-nil). A 429 is sent again
// after a second, for up to a minute; another non-2xx answer returns an
// error naming the status and outcome.
func (c *Client) JSON(ctx context.Context, method, path, auth string, v, out any) (Response, error) {
	var body []byte
	if v != nil {
		var err error
		if body, err = json.Marshal(v); err != nil {
			return Response{}, err
		}
	}
	r, err := c.Do(ctx, method, path, auth, "", body)
	// A 429 did nothing: wait for the limit (setup creates products by the
	// thousand with one admin token) for up to a minute.
	for tries := 0; err == nil && r.Status == 429 && tries < 60; tries++ {
		select {
		case <-ctx.Done():
			return r, fmt.Errorf("%s %s: %w", method, path, ctx.Err())
		case <-time.After(time.Second):
		}
		r, err = c.Do(ctx, method, path, auth, "", body)
	}
	if err != nil {
		return r, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if r.Status < 200 || r.Status >= 300 {
		return r, fmt.Errorf("%s %s: status %d (%s)", method, path, r.Status, r.Outcome)
	}
	if out != nil {
		if err := json.Unmarshal(r.Body, out); err != nil {
			return r, fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return r, nil
}

// Token returns an HS256 JWT for userID signed with secret: claims sub (the
// decimal user id as a string), exp (now + ttl) and, when admin is true,
// role "admin".
func Token(secret []byte, userID int64, admin bool, ttl time.Duration) (string, error) {
	claims := jwt.MapClaims{
		"sub": strconv.FormatInt(userID, 10),
		"exp": time.Now().Add(ttl).Unix(),
	}
	if admin {
		claims["role"] = "admin"
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}
