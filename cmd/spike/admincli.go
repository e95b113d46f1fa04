package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/spikehq/spike/internal/httpapi"
)

// The admin commands (spike product|sale|order|switch) call a running
// server's admin API with a token minted from the secret the server uses
// (found as spike audit finds it) or given by --token / SPIKE_TOKEN.

// adminClient calls one server's API as an admin.
type adminClient struct {
	addr  string
	token string
	http  *http.Client
}

// apiError is an error answer of the API: its code and message.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s (HTTP %d): %s", e.Code, e.Status, e.Message)
}

// adminFlags adds the flags every admin command takes to fs.
type adminFlags struct {
	token    *string
	jsonOut  *bool
	fs       *flagSet
	synopsis string
}

func newAdminFlags(name, synopsis string) *adminFlags {
	fs := newFlagSet(name)
	return &adminFlags{
		fs:       fs,
		synopsis: synopsis,
		token:    fs.String("token", "", "admin `TOKEN` to call with (env SPIKE_TOKEN; default: one signed with the server's secret)"),
		jsonOut:  fs.Bool("json", false, "print the server's JSON answer (for scripts)"),
	}
}

// parse parses args, flags before or after the positional arguments, and
// returns the positional ones (exactly want of them) and a client.
func (af *adminFlags) parse(args []string, want int, getenv func(string) string, stdout io.Writer) ([]string, *adminClient, error) {
	var pos []string
	for {
		if err := af.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, nil, helpWith(af.fs.FlagSet, af.synopsis)
			}
			return nil, nil, fmt.Errorf("%s: %w\nusage: spike %s", af.fs.Name(), err, af.synopsis)
		}
		if af.fs.NArg() == 0 {
			break
		}
		pos = append(pos, af.fs.Arg(0))
		args = af.fs.Args()[1:]
	}
	if len(pos) != want {
		return nil, nil, fmt.Errorf("%s: want %d argument(s), got %d %q\nusage: spike %s", af.fs.Name(), want, len(pos), pos, af.synopsis)
	}
	cfg, err := af.fs.load(nil, getenv, stdout) // the flags parsed above
	if err != nil {
		return nil, nil, err
	}
	c, err := newAdminClient(&cfg, *af.token, getenv)
	return pos, c, err
}

// newAdminClient returns a client of the server cfg points at, with token
// or SPIKE_TOKEN, else an admin token signed with the server's secret.
func newAdminClient(cfg *Config, token string, getenv func(string) string) (*adminClient, error) {
	if token == "" {
		token = getenv("SPIKE_TOKEN")
	}
	if token == "" {
		secret, err := cfg.existingSecret()
		if err != nil {
			return nil, err
		}
		if token, err = httpapi.Sign(secret, 1, true, 5*time.Minute); err != nil {
			return nil, err
		}
	}
	return &adminClient{addr: cfg.Addr, token: token, http: &http.Client{Timeout: 60 * time.Second}}, nil
}

// do sends body (JSON-encoded unless nil) and returns the answer's body;
// an error answer is an *apiError.
func (c *adminClient) do(ctx context.Context, method, path string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.addr+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("cannot reach spike at %s: is `spike serve` running? (--addr, SPIKE_ADDR or the config file's addr name it)", c.addr)
		}
		return nil, fmt.Errorf("cannot reach spike at %s: %w", c.addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("read the answer of %s: %w", c.addr, err)
	}
	if resp.StatusCode >= 300 {
		return nil, decodeAPIError(resp.StatusCode, b)
	}
	return b, nil
}

func decodeAPIError(status int, body []byte) error {
	var e struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error.Code == "" {
		return &apiError{Status: status, Code: http.StatusText(status), Message: strings.TrimSpace(string(body))}
	}
	msg := e.Error.Message
	if status == http.StatusUnauthorized {
		msg += " (the token is not one this server accepts: is --data, --config or SPIKE_JWT_SECRET the server's?)"
	}
	return &apiError{Status: status, Code: e.Error.Code, Message: msg}
}

// adminCommand runs spike product|sale|order|switch SUBCOMMAND.
func adminCommand(ctx context.Context, noun string, args []string, getenv func(string) string, stdout io.Writer) error {
	verbs := adminVerbs[noun]
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		text := "usage:\n"
		for _, v := range sortedVerbs(verbs) {
			text += "  spike " + verbs[v].synopsis + "\n"
		}
		text += "\nspike " + noun + " <subcommand> --help shows its flags.\n"
		if len(args) == 0 {
			return errors.New(strings.TrimSuffix(text, "\n"))
		}
		return &helpError{text: text}
	}
	v, ok := verbs[args[0]]
	if !ok {
		return fmt.Errorf("%s: unknown subcommand %q (one of %s)", noun, args[0], strings.Join(sortedVerbs(verbs), ", "))
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return v.run(ctx, newAdminFlags(noun+" "+args[0], v.synopsis), args[1:], getenv, stdout)
}

type adminVerb struct {
	synopsis string
	run      func(ctx context.Context, af *adminFlags, args []string, getenv func(string) string, stdout io.Writer) error
}

func sortedVerbs(m map[string]adminVerb) []string {
	var names []string
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

var adminVerbs = map[string]map[string]adminVerb{
	"product": {
		"create": {"product create --sku SKU --name NAME --price-cents N --stock N [flags]", productCreate},
		"get":    {"product get SKU [flags]", getOne("/v1/products/", productFields)},
	},
	"sale": {
		"create": {"sale create --id ID --sku SKU --stock N --price-cents N [--per-user-limit N] [--starts-at T] [--ends-at T] [--payment-window 15m] [flags]", saleCreate},
		"get":    {"sale get ID [flags]", getOne("/v1/sales/", saleFields)},
		"end":    {"sale end ID [flags]", postOne("/v1/sales/", "/end", saleFields)},
	},
	"order": {
		"get":    {"order get ID [flags]", getOne("/v1/orders/", orderFields)},
		"cancel": {"order cancel ID [flags]", postOne("/v1/orders/", "/cancel", orderFields)},
	},
	"switch": {
		"list": {"switch list [flags]", switchList},
		"set":  {"switch set NAME VALUE [flags]", switchSet},
	},
}

// The fields shown first, in this order, by the human-readable output.
var (
	productFields = []string{"sku", "name", "price_cents", "stock"}
	saleFields    = []string{"id", "sku", "state", "stock", "remaining", "sold", "price_cents", "per_user_limit", "starts_at", "ends_at"}
	orderFields   = []string{"order_id", "status", "sale_id", "sku", "user_id", "quantity", "price_cents", "amount_cents", "created_at"}
)

func getOne(prefix string, fields []string) func(context.Context, *adminFlags, []string, func(string) string, io.Writer) error {
	return func(ctx context.Context, af *adminFlags, args []string, getenv func(string) string, stdout io.Writer) error {
		pos, c, err := af.parse(args, 1, getenv, stdout)
		if err != nil {
			return err
		}
		b, err := c.do(ctx, http.MethodGet, prefix+url.PathEscape(pos[0]), nil)
		return af.print(stdout, b, fields, err)
	}
}

func postOne(prefix, suffix string, fields []string) func(context.Context, *adminFlags, []string, func(string) string, io.Writer) error {
	return func(ctx context.Context, af *adminFlags, args []string, getenv func(string) string, stdout io.Writer) error {
		pos, c, err := af.parse(args, 1, getenv, stdout)
		if err != nil {
			return err
		}
		b, err := c.do(ctx, http.MethodPost, prefix+url.PathEscape(pos[0])+suffix, nil)
		return af.print(stdout, b, fields, err)
	}
}

func productCreate(ctx context.Context, af *adminFlags, args []string, getenv func(string) string, stdout io.Writer) error {
	sku := af.fs.String("sku", "", "the product's SKU (required)")
	name := af.fs.String("name", "", "the product's name (required)")
	price := af.fs.Int64("price-cents", -1, "unit price in cents (required)")
	stock := af.fs.Int64("stock", -1, "units in stock (required)")
	_, c, err := af.parse(args, 0, getenv, stdout)
	if err != nil {
		return err
	}
	if *sku == "" || *name == "" || *price < 0 || *stock < 0 {
		return fmt.Errorf("product create: --sku, --name, --price-cents and --stock are required\nusage: spike %s", af.synopsis)
	}
	b, err := c.do(ctx, http.MethodPost, "/v1/products", map[string]any{"sku": *sku, "name": *name, "price_cents": *price, "stock": *stock})
	return af.print(stdout, b, productFields, err)
}

func saleCreate(ctx context.Context, af *adminFlags, args []string, getenv func(string) string, stdout io.Writer) error {
	id := af.fs.String("id", "", "the sale's id (required)")
	sku := af.fs.String("sku", "", "the product on sale (required)")
	stock := af.fs.Int64("stock", 0, "units taken from the product for the sale (required)")
	price := af.fs.Int64("price-cents", -1, "sale unit price in cents (required)")
	perUser := af.fs.Int64("per-user-limit", 0, "units one buyer may hold (default: the server's, 1)")
	startsAt := af.fs.String("starts-at", "", "RFC 3339 start time (default: now)")
	endsAt := af.fs.String("ends-at", "", "RFC 3339 end time (default: open until sold out)")
	window := af.fs.Duration("payment-window", 0, "time a buyer has to pay, e.g. 15m (default: the server's)")
	_, c, err := af.parse(args, 0, getenv, stdout)
	if err != nil {
		return err
	}
	if *id == "" || *sku == "" || *stock <= 0 || *price < 0 {
		return fmt.Errorf("sale create: --id, --sku, --stock (> 0) and --price-cents are required\nusage: spike %s", af.synopsis)
	}
	body := map[string]any{"id": *id, "sku": *sku, "stock": *stock, "price_cents": *price}
	if *perUser != 0 {
		body["per_user_limit"] = *perUser
	}
	for key, t := range map[string]string{"starts_at": *startsAt, "ends_at": *endsAt} {
		if t == "" {
			continue
		}
		if _, err := time.Parse(time.RFC3339, t); err != nil {
			return fmt.Errorf("sale create: --%s %q is not an RFC 3339 time like 2026-12-24T18:00:00Z", strings.ReplaceAll(key, "_", "-"), t)
		}
		body[key] = t
	}
	if *window != 0 {
		if *window < time.Second || *window%time.Second != 0 {
			return fmt.Errorf("sale create: --payment-window %v must be whole seconds", *window)
		}
		body["payment_window"] = int64(*window / time.Second)
	}
	b, err := c.do(ctx, http.MethodPost, "/v1/sales", body)
	return af.print(stdout, b, saleFields, err)
}

func switchList(ctx context.Context, af *adminFlags, args []string, getenv func(string) string, stdout io.Writer) error {
	_, c, err := af.parse(args, 0, getenv, stdout)
	if err != nil {
		return err
	}
	b, err := c.do(ctx, http.MethodGet, "/v1/admin/switches", nil)
	if err != nil || *af.jsonOut {
		return af.print(stdout, b, nil, err)
	}
	var list struct {
		Switches []map[string]any `json:"switches"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("switch list: decode the answer: %w", err)
	}
	fmt.Fprintf(stdout, "%-32s %-12s %s\n", "NAME", "VALUE", "DEFAULT")
	for _, s := range list.Switches {
		fmt.Fprintf(stdout, "%-32s %-12s %s\n", text(s["name"]), text(s["value"]), text(s["default"]))
	}
	return nil
}

func switchSet(ctx context.Context, af *adminFlags, args []string, getenv func(string) string, stdout io.Writer) error {
	pos, c, err := af.parse(args, 2, getenv, stdout)
	if err != nil {
		return err
	}
	b, err := c.do(ctx, http.MethodPut, "/v1/admin/switches/"+url.PathEscape(pos[0]), map[string]any{"value": switchValue(pos[1])})
	return af.print(stdout, b, []string{"name", "value", "default"}, err)
}

// switchValue is VALUE as JSON: true, false and numbers as such, anything
// else as a string.
func switchValue(s string) any {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err == nil {
		switch v.(type) {
		case bool, float64:
			return json.RawMessage(s)
		}
	}
	return s
}

// print writes an answer: as JSON with --json, else one "field  value" a
// line, fields first in their order. err is passed through.
func (af *adminFlags) print(w io.Writer, body []byte, fields []string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", af.fs.Name(), err)
	}
	if *af.jsonOut {
		var buf bytes.Buffer
		if json.Indent(&buf, body, "", "  ") != nil {
			buf.Reset()
			buf.Write(body)
		}
		fmt.Fprintln(w, strings.TrimSpace(buf.String()))
		return nil
	}
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // ids and cents print as sent
	if err := dec.Decode(&obj); err != nil {
		fmt.Fprintln(w, strings.TrimSpace(string(body)))
		return nil
	}
	shown := map[string]bool{}
	var keys []string
	for _, f := range fields {
		if _, ok := obj[f]; ok {
			keys, shown[f] = append(keys, f), true
		}
	}
	var rest []string
	for k := range obj {
		if !shown[k] {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	for _, k := range append(keys, rest...) {
		fmt.Fprintf(w, "%-16s %s\n", k, text(obj[k]))
	}
	return nil
}

// text shows a JSON value: strings and numbers bare,
// null as "-", anything else as JSON.
func text(v any) string {
	switch v := v.(type) {
	case nil:
		return "-"
	case string:
		return v
	case json.Number:
		return v.String()
	case float64:
		return fmt.Sprint(v)
	}
	b, _ := json.Marshal(v)
	return string(b)
}
