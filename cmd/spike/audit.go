package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// auditReport is the answer of GET /v1/admin/audit.
type auditReport struct {
	OK     bool `json:"ok"`
	Checks []struct {
		Name   string `json:"name"`
		OK     bool   `json:"ok"`
		Detail string `json:"detail"`
	} `json:"checks"`
}

// stuckWorkCheck is the check that fails while the stream still holds
// acknowledged orders (or some are pending): normal for a moment after a
// restart or under traffic.
const stuckWorkCheck = "I5 no stuck work"

// draining reports whether the only failing check is I5: the record is
// sound and the server is still persisting orders from the stream.
func (r auditReport) draining() bool {
	if r.OK {
		return false
	}
	for _, c := range r.Checks {
		if !c.OK && c.Name != stuckWorkCheck {
			return false
		}
	}
	return true
}

// audit runs `spike audit`: it prints the invariant report. While the only
// failing check is I5 (orders still on the stream) it says "draining" and
// asks again, for up to --wait; then it reports what it has.
func audit(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	af := newAdminFlags("audit", synopses["audit"])
	wait := af.fs.Duration("wait", 30*time.Second, "while the stream still holds acknowledged orders, wait up to this long for it to drain")
	_, c, err := af.parse(args, 0, getenv, stdout)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(*wait)
	for said := false; ; {
		rep, body, err := fetchAudit(ctx, c)
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		if rep.draining() && time.Now().Before(deadline) {
			if !said {
				fmt.Fprintf(stdout, "audit: draining: %s; waiting up to %v\n", detailOf(rep, stuckWorkCheck), *wait)
				said = true
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		return printAudit(stdout, rep, body, *af.jsonOut)
	}
}

func fetchAudit(ctx context.Context, c *adminClient) (auditReport, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	body, err := c.do(ctx, http.MethodGet, "/v1/admin/audit", nil)
	if err != nil {
		return auditReport{}, nil, err
	}
	var rep auditReport
	if err := json.Unmarshal(body, &rep); err != nil {
		return auditReport{}, nil, fmt.Errorf("decode report: %w", err)
	}
	return rep, body, nil
}

func detailOf(rep auditReport, name string) string {
	for _, c := range rep.Checks {
		if c.Name == name {
			return c.Detail
		}
	}
	return ""
}

func printAudit(w io.Writer, rep auditReport, body []byte, asJSON bool) error {
	if asJSON {
		fmt.Fprintln(w, string(body))
	} else {
		for _, c := range rep.Checks {
			mark := "ok  "
			if !c.OK {
				mark = "FAIL"
			}
			fmt.Fprintf(w, "%s  %-20s %s\n", mark, c.Name, c.Detail)
		}
	}
	switch {
	case asJSON:
		if rep.OK {
			return nil
		}
	case rep.OK:
		if !asJSON {
			fmt.Fprintln(w, "audit: all invariants hold")
		}
		return nil
	case rep.draining():
		fmt.Fprintln(w, "audit: FAILED: still draining after --wait (orders on the stream are not being persisted: see the server's log and /readyz)")
	default:
		fmt.Fprintln(w, "audit: FAILED")
	}
	return errSilent
}
