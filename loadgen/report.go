package loadgen

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// fmtDur formats a latency compactly: 850µs, 12.3ms, 1.20s.
func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

// WriteText writes a human-readable report.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "spike bench — scenario %s against %s (%s)\n", r.Scenario, r.Target, r.Started.Format(time.RFC3339))
	if len(r.Setup) > 0 {
		fmt.Fprintf(&b, "setup: %v\n", r.Setup)
	}
	writeStats(&b, "run", r.Run, r.Ratios)
	if r.Baseline != nil {
		writeStats(&b, "baseline (trivial net/http handler, same load shape)", r.Baseline, nil)
	}
	if len(r.Checks) > 0 {
		b.WriteString("\nclient checks:\n")
		for _, c := range r.Checks {
			fmt.Fprintf(&b, "  %-4s %-24s %s\n", passFail(c.OK), c.Name, c.Detail)
		}
	}
	switch {
	case r.AuditError != "":
		fmt.Fprintf(&b, "\naudit: FAIL could not fetch: %s\n", r.AuditError)
	case r.Audit != nil:
		fmt.Fprintf(&b, "\naudit: %s\n", passFail(r.Audit.OK))
		for _, c := range r.Audit.Checks {
			fmt.Fprintf(&b, "  %-4s %-24s %s\n", passFail(c.OK), c.Name, c.Detail)
		}
	}
	if len(r.Checks) > 0 || r.Audit != nil || r.AuditError != "" {
		fmt.Fprintf(&b, "\nresult: %s\n", passFail(r.OK()))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func writeStats(b *strings.Builder, title string, s *Stats, ra *Ratios) {
	if s == nil {
		return
	}
	fmt.Fprintf(b, "\n%s: %s loop", title, s.Mode)
	if s.Mode == "open" {
		fmt.Fprintf(b, " at %.0f req/s offered, in-flight bound %d", s.Rate, s.Concurrency)
	} else {
		fmt.Fprintf(b, ", %d workers", s.Concurrency)
	}
	fmt.Fprintf(b, ", %s\n", s.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(b, "  sent %d, responses %d, dropped (client_overload) %d\n", s.Sent, s.Responses, s.Dropped)
	fmt.Fprintf(b, "  throughput %.1f responses/s", s.Throughput)
	if ra != nil {
		fmt.Fprintf(b, "  (%.2f× baseline)", ra.Throughput)
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "  latency\tp50\tp90\tp99\tp99.9\tmax\t")
	row := func(name string, p Percentiles) {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t\n", name, fmtDur(p.P50), fmtDur(p.P90), fmtDur(p.P99), fmtDur(p.P999), fmtDur(p.Max))
	}
	row("from intended", s.Latency)
	row("service time", s.Service)
	if s.Mode == "open" {
		row("send lag", s.SendLag)
	}
	if ra != nil {
		fmt.Fprintf(tw, "  ×baseline\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", ra.P50, ra.P90, ra.P99, ra.P999, ra.Max)
	}
	tw.Flush()
	tw = tabwriter.NewWriter(b, 0, 0, 2, ' ', tabwriter.AlignRight)
	hdr := "  outcome\tcount\trate/s\tp50\tp99\t"
	if ra != nil {
		hdr += "rate×baseline\t"
	}
	fmt.Fprintln(tw, hdr)
	for _, o := range s.Outcomes {
		fmt.Fprintf(tw, "  %s\t%d\t%.1f\t%s\t%s\t", o.Name, o.Count, o.Rate, fmtDur(o.Latency.P50), fmtDur(o.Latency.P99))
		if ra != nil {
			fmt.Fprintf(tw, "%.2f\t", ra.Outcomes[o.Name])
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}
