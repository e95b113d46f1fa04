package main

import (
	"math"
	"testing"
	"time"
)

// TestOpsMetrics: the metrics the alert rules read have their resting
// values on a fresh instance, and an audit through the API is recorded.
func TestOpsMetrics(t *testing.T) {
	a := startApp(t, t.TempDir())
	defer stopApp(t, a)
	c := newClient(t, a.addr, a.secret)
	if v := metric(c, "spike_stream_backlog"); v != 0 {
		t.Errorf("spike_stream_backlog = %v, want 0 on an idle instance (NaN: the stream could not be read)", v)
	}
	if v := metric(c, "spike_orders_pending_oldest_seconds"); v != 0 {
		t.Errorf("spike_orders_pending_oldest_seconds = %v, want 0 with nothing pending", v)
	}
	if v := metric(c, "spike_audit_last_pass_timestamp_seconds"); v != 0 {
		t.Errorf("spike_audit_last_pass_timestamp_seconds = %v before any audit, want 0", v)
	}

	c.SetupSale("sku-ops", "ops", 10, 2)
	if r, _, err := c.Place(t.Context(), 7, c.Token(7, false), "ops", "k1", 1); err != nil || r.Status != 202 {
		t.Fatalf("place: %v %v", r.Status, err)
	}
	if rep, ok := c.WaitAudit(time.Minute); !ok {
		t.Fatalf("audit: %+v", rep)
	}
	if v := metric(c, `spike_audit_runs_total{result="passed"}`); v < 1 {
		t.Errorf(`spike_audit_runs_total{result="passed"} = %v after a passing audit, want >= 1`, v)
	}
	pass, fail := metric(c, "spike_audit_last_pass_timestamp_seconds"), metric(c, "spike_audit_last_failure_timestamp_seconds")
	if pass <= 0 || math.IsNaN(pass) || pass <= fail {
		t.Errorf("after a passing audit: last pass %v, last failure %v; want pass > failure (SpikeAuditFailing quiet)", pass, fail)
	}
}
