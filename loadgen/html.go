package loadgen

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// WriteHTML writes a self-contained HTML report: tables plus inline SVG
// charts of throughput, latency percentiles and outcomes over time. It
// loads nothing from the network (no scripts, stylesheets or fonts).
func (r *Report) WriteHTML(w io.Writer) error {
	d := htmlData{R: r, Result: passFail(r.OK()), HasChecks: len(r.Checks) > 0 || r.Audit != nil || r.AuditError != ""}
	d.Sections = append(d.Sections, newSection("Run", r.Run, r.Ratios))
	if r.Baseline != nil {
		d.Sections = append(d.Sections, newSection("Baseline: trivial net/http handler, same load shape", r.Baseline, nil))
	}
	for k, v := range r.Params {
		d.Params = append(d.Params, kv{k, fmt.Sprint(v)})
	}
	for k, v := range r.Setup {
		d.Params = append(d.Params, kv{"setup." + k, fmt.Sprint(v)})
	}
	sort.Slice(d.Params, func(i, j int) bool { return d.Params[i].K < d.Params[j].K })
	return htmlTmpl.Execute(w, d)
}

type kv struct{ K, V string }

type htmlData struct {
	R         *Report
	Result    string
	HasChecks bool
	Params    []kv
	Sections  []section
}

type section struct {
	Title   string
	S       *Stats
	Ratios  *Ratios
	Rows    []latRow
	Charts  []chart
	Outcome []outcomeRow
}

type latRow struct{ Name, P50, P90, P99, P999, Max string }

type outcomeRow struct{ Name, Count, Rate, P50, P99, Ratio string }

func newSection(title string, s *Stats, ra *Ratios) section {
	sec := section{Title: title, S: s, Ratios: ra}
	row := func(name string, p Percentiles) latRow {
		return latRow{name, fmtDur(p.P50), fmtDur(p.P90), fmtDur(p.P99), fmtDur(p.P999), fmtDur(p.Max)}
	}
	sec.Rows = []latRow{row("from intended send time", s.Latency), row("service time", s.Service)}
	if s.Mode == "open" {
		sec.Rows = append(sec.Rows, row("send lag (actual − intended send)", s.SendLag))
	}
	if ra != nil {
		f := func(x float64) string { return strconv.FormatFloat(x, 'f', 2, 64) + "×" }
		sec.Rows = append(sec.Rows, latRow{"ratio to baseline", f(ra.P50), f(ra.P90), f(ra.P99), f(ra.P999), f(ra.Max)})
	}
	for _, o := range s.Outcomes {
		or := outcomeRow{Name: o.Name, Count: strconv.FormatInt(o.Count, 10), Rate: strconv.FormatFloat(o.Rate, 'f', 1, 64),
			P50: fmtDur(o.Latency.P50), P99: fmtDur(o.Latency.P99)}
		if ra != nil {
			or.Ratio = strconv.FormatFloat(ra.Outcomes[o.Name], 'f', 2, 64) + "×"
		}
		sec.Outcome = append(sec.Outcome, or)
	}
	n := len(s.Series)
	xs := make([]float64, n)
	thr := make([]float64, n)
	p50, p90, p99, pmax := make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	for i, p := range s.Series {
		xs[i] = p.T
		thr[i] = p.Throughput
		p50[i], p90[i], p99[i], pmax[i] = ms(p.Latency.P50), ms(p.Latency.P90), ms(p.Latency.P99), ms(p.Latency.Max)
	}
	sec.Charts = append(sec.Charts,
		newChart("Throughput (responses/s, per "+s.Interval.String()+" interval)", "s", xs, false, []series{{"responses/s", thr}}),
		newChart("Latency from intended send time (ms, log scale)", "s", xs, true,
			[]series{{"p50", p50}, {"p90", p90}, {"p99", p99}, {"max", pmax}}))
	var oc []series
	for _, o := range s.Outcomes {
		v := make([]float64, n)
		for i, p := range s.Series {
			v[i] = float64(p.Outcomes[o.Name])
		}
		oc = append(oc, series{o.Name, v})
	}
	sec.Charts = append(sec.Charts, newChart("Outcomes per "+s.Interval.String()+" interval", "s", xs, false, oc))
	return sec
}

type series struct {
	Name string
	Y    []float64
}

// chart is an SVG line chart laid out in Go; the template only draws it.
type chart struct {
	Title  string
	W, H   int
	Left   int
	Bottom int
	Right  int
	Top    int
	// Legend positions, right of the plot.
	LegendX, LegendTextX int
	Lines                []chartLine
	XTicks               []tick
	YTicks               []tick
	Empty                bool
}

type chartLine struct {
	Name, Color, Points  string
	LegendY, LegendRectY int
	Dots                 []dot // markers, drawn when there are few points
}

type dot struct {
	X, Y string
}

type tick struct {
	Pos   float64
	Label string
}

var palette = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"}

const (
	chartW, chartH     = 760, 260
	padL, padR         = 60, 150
	padT, padB         = 28, 30
	plotW, plotH       = chartW - padL - padR, chartH - padT - padB
	logFloor           = 0.001 // ms; log charts clamp below this
	maxLegend          = 10
	maxDots            = 40
	yTicksLinearTarget = 5
)

func newChart(title, xunit string, xs []float64, logY bool, ss []series) chart {
	c := chart{Title: title, W: chartW, H: chartH, Left: padL, Top: padT, Right: padL + plotW, Bottom: padT + plotH,
		LegendX: padL + plotW + 12, LegendTextX: padL + plotW + 30}
	if len(xs) == 0 || len(ss) == 0 {
		c.Empty = true
		return c
	}
	xmax := xs[len(xs)-1]
	if xmax < 1 {
		xmax = 1
	}
	ymin, ymax := math.Inf(1), 0.0
	for _, s := range ss {
		for _, y := range s.Y {
			if logY && y < logFloor {
				y = logFloor
			}
			ymin, ymax = math.Min(ymin, y), math.Max(ymax, y)
		}
	}
	var ty func(float64) float64
	if logY {
		lo := math.Floor(math.Log10(ymin))
		hi := math.Ceil(math.Log10(ymax))
		if hi <= lo {
			hi = lo + 1
		}
		ty = func(y float64) float64 {
			y = math.Max(y, logFloor)
			return float64(c.Bottom) - (math.Log10(y)-lo)/(hi-lo)*plotH
		}
		for e := lo; e <= hi; e++ {
			c.YTicks = append(c.YTicks, tick{ty(math.Pow(10, e)), trimFloat(math.Pow(10, e))})
		}
	} else {
		if ymax <= 0 {
			ymax = 1
		}
		step := niceStep(ymax / yTicksLinearTarget)
		top := math.Ceil(ymax/step) * step
		ty = func(y float64) float64 { return float64(c.Bottom) - y/top*plotH }
		for v := 0.0; v <= top+step/2; v += step {
			c.YTicks = append(c.YTicks, tick{ty(v), trimFloat(v)})
		}
	}
	tx := func(x float64) float64 { return float64(c.Left) + x/xmax*plotW }
	xstep := niceStep(xmax / 8)
	for v := 0.0; v <= xmax+xstep/2; v += xstep {
		c.XTicks = append(c.XTicks, tick{tx(v), trimFloat(v) + xunit})
	}
	for i, s := range ss {
		if i >= maxLegend {
			break
		}
		var pts strings.Builder
		var dots []dot
		for j, y := range s.Y {
			x, y := strconv.FormatFloat(tx(xs[j]), 'f', 1, 64), strconv.FormatFloat(ty(y), 'f', 1, 64)
			fmt.Fprintf(&pts, "%s,%s ", x, y)
			if len(s.Y) <= maxDots {
				dots = append(dots, dot{x, y})
			}
		}
		c.Lines = append(c.Lines, chartLine{Name: s.Name, Color: palette[i%len(palette)], Dots: dots,
			Points: strings.TrimSpace(pts.String()), LegendY: padT + 14 + i*18, LegendRectY: padT + 10 + i*18})
	}
	return c
}

// niceStep rounds x up to 1, 2 or 5 times a power of ten.
func niceStep(x float64) float64 {
	if x <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

func trimFloat(v float64) string { return strconv.FormatFloat(v, 'g', 4, 64) }

var htmlTmpl = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8"/>
<title>spike bench: {{.R.Scenario}}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1000px; }
table { border-collapse: collapse; margin: 0.5em 0 1em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.pass { color: #1a7f37; font-weight: bold; }
.fail { color: #cf222e; font-weight: bold; }
svg { display: block; margin: 0.5em 0 1.5em 0; }
svg text { font-size: 11px; fill: #444; }
.grid { stroke: #e5e5e5; }
.axis { stroke: #888; }
</style>
</head>
<body>
<h1>spike bench: {{.R.Scenario}}</h1>
<p>Target {{.R.Target}}, started {{.R.Started.Format "2006-01-02 15:04:05Z07:00"}}.{{if .HasChecks}} Result: <span class="{{if eq .Result "PASS"}}pass{{else}}fail{{end}}">{{.Result}}</span>{{end}}</p>
<h2>Parameters</h2>
<table>
<tr><th>parameter</th><th>value</th></tr>
{{range .Params}}<tr><td>{{.K}}</td><td>{{.V}}</td></tr>
{{end}}</table>
{{range .Sections}}
<h2>{{.Title}}</h2>
<p>{{.S.Mode}} loop{{if eq .S.Mode "open"}} at {{printf "%.0f" .S.Rate}} req/s offered, in-flight bound {{.S.Concurrency}}{{else}}, {{.S.Concurrency}} workers{{end}};
elapsed {{.S.Elapsed}}; sent {{.S.Sent}}, responses {{.S.Responses}}, dropped (client_overload) {{.S.Dropped}};
throughput <b>{{printf "%.1f" .S.Throughput}}</b> responses/s{{if .Ratios}} (<b>{{printf "%.2f" .Ratios.Throughput}}×</b> baseline){{end}}.</p>
<table>
<tr><th>latency</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>
{{range .Rows}}<tr><td>{{.Name}}</td><td>{{.P50}}</td><td>{{.P90}}</td><td>{{.P99}}</td><td>{{.P999}}</td><td>{{.Max}}</td></tr>
{{end}}</table>
<table>
<tr><th>outcome</th><th>count</th><th>rate/s</th><th>p50</th><th>p99</th>{{if .Ratios}}<th>rate ÷ baseline throughput</th>{{end}}</tr>
{{range .Outcome}}<tr><td>{{.Name}}</td><td>{{.Count}}</td><td>{{.Rate}}</td><td>{{.P50}}</td><td>{{.P99}}</td>{{if $.R.Ratios}}<td>{{.Ratio}}</td>{{end}}</tr>
{{end}}</table>
{{range .Charts}}
<h3>{{.Title}}</h3>
{{if .Empty}}<p>No data.</p>{{else}}
<svg width="{{.W}}" height="{{.H}}" viewBox="0 0 {{.W}} {{.H}}" role="img" aria-label="{{.Title}}">
{{$c := .}}{{range .YTicks}}<line class="grid" x1="{{$c.Left}}" x2="{{$c.Right}}" y1="{{printf "%.1f" .Pos}}" y2="{{printf "%.1f" .Pos}}"/><text x="{{$c.Left}}" dx="-4" y="{{printf "%.1f" .Pos}}" dy="4" text-anchor="end">{{.Label}}</text>
{{end}}{{range .XTicks}}<text x="{{printf "%.1f" .Pos}}" y="{{$c.Bottom}}" dy="16" text-anchor="middle">{{.Label}}</text>
{{end}}<line class="axis" x1="{{.Left}}" x2="{{.Right}}" y1="{{.Bottom}}" y2="{{.Bottom}}"/>
<line class="axis" x1="{{.Left}}" x2="{{.Left}}" y1="{{.Top}}" y2="{{.Bottom}}"/>
{{range .Lines}}<polyline fill="none" stroke="{{.Color}}" stroke-width="1.5" points="{{.Points}}"/>
{{$l := .}}{{range .Dots}}<circle cx="{{.X}}" cy="{{.Y}}" r="2.5" fill="{{$l.Color}}"/>{{end}}
<rect x="{{$c.LegendX}}" y="{{.LegendRectY}}" width="12" height="3" fill="{{.Color}}"/><text x="{{$c.LegendTextX}}" y="{{.LegendY}}">{{.Name}}</text>
{{end}}</svg>{{end}}
{{end}}
{{end}}
{{if .HasChecks}}<h2>Checks</h2>
<table>
<tr><th>check</th><th>result</th><th>detail</th></tr>
{{range .R.Checks}}<tr><td>client: {{.Name}}</td><td class="{{if .OK}}pass{{else}}fail{{end}}">{{if .OK}}PASS{{else}}FAIL{{end}}</td><td style="text-align:left">{{.Detail}}</td></tr>
{{end}}{{if .R.AuditError}}<tr><td>audit</td><td class="fail">FAIL</td><td style="text-align:left">could not fetch: {{.R.AuditError}}</td></tr>
{{end}}{{with .R.Audit}}{{range .Checks}}<tr><td>audit: {{.Name}}</td><td class="{{if .OK}}pass{{else}}fail{{end}}">{{if .OK}}PASS{{else}}FAIL{{end}}</td><td style="text-align:left">{{.Detail}}</td></tr>
{{end}}{{end}}</table>{{end}}
<p>Latency is measured from each request's intended send time (open loop: its slot on the schedule), so queueing in the client counts: no coordinated omission. Service time is measured from the actual send. Per-second figures are by completion time.</p>
</body>
</html>
`))
