package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spikehq/spike/loadgen"
)

// startEmbedded, when set by serve wiring, starts an in-process Spike on a loopback port and returns its base URL, the JWT secret and a stop func.
var startEmbedded func(ctx context.Context, dataDir string) (baseURL string, secret []byte, stop func() error, err error)

// errBenchChecksFailed is returned, after the report is written, when a
// client-side check or the server's audit failed.
var errBenchChecksFailed = errors.New("bench: checks failed")

// bench runs `spike bench`: it drives a Spike server (or an embedded one)
// with one scenario and writes a text or JSON report to stdout, and an HTML
// report to a file when asked. It returns an error, after the report, when
// a check or the audit failed.
func bench(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // --help and errors are returned to run
	var (
		cfg      loadgen.Config
		secret   = fs.String("secret", "", "JWT `secret` the server verifies tokens with (default $SPIKE_JWT_SECRET, else DIR/jwt.secret of --data)")
		dataDir  = fs.String("data", "", "server data `DIR` to read jwt.secret from when no secret is given (env SPIKE_DATA)")
		cfgFile  = fs.String("config", "", "the server's YAML config `FILE`: its secret and, without --target, its addr (env SPIKE_CONFIG)")
		embedded = fs.Bool("embedded", false, "start an in-process Spike with a temporary data folder and drive it")
		jsonOut  = fs.Bool("json", false, "write the report as JSON")
		htmlFile = fs.String("html", "", "also write a self-contained HTML report to `FILE`")
	)
	fs.StringVar(&cfg.Scenario, "scenario", loadgen.ScenarioFlashSale, "flash-sale, orders, reads, mixed or sale-page")
	fs.StringVar(&cfg.Target, "target", "http://127.0.0.1:8080", "base `URL` of the server")
	fs.Float64Var(&cfg.Rate, "rate", 0, "open loop: offered requests per second; 0 = closed loop")
	fs.IntVar(&cfg.Concurrency, "concurrency", 64, "closed-loop workers, or open-loop bound on requests in flight (excess counted as client_overload)")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "run length for orders, reads, mixed and sale-page (flash-sale runs until every buyer has been sent)")
	fs.IntVar(&cfg.Buyers, "buyers", loadgen.DefaultBuyers, "distinct buyers (flash-sale: one arrival each; orders, mixed: round-robin)")
	fs.IntVar(&cfg.Stock, "stock", 0, "sale stock (0 = 100 for flash-sale, 10000000 for orders and mixed)")
	fs.IntVar(&cfg.PerUserLimit, "per-user-limit", 0, "sale per-user limit (0 = 1 for flash-sale, 1000000 for orders and mixed)")
	fs.Float64Var(&cfg.RepeatFraction, "repeat-fraction", 0.1, "flash-sale: fraction of buyers who order again with a new idempotency key")
	fs.Float64Var(&cfg.RetryFraction, "retry-fraction", 0.1, "flash-sale: fraction of buyers who resend with the same key (must get the same order id)")
	fs.IntVar(&cfg.SKUs, "skus", 1000, "reads, mixed: products created in setup")
	fs.Float64Var(&cfg.ZipfS, "zipf-s", 1.1, "reads, mixed: Zipf exponent of SKU popularity (> 1; larger = hotter hot set)")
	fs.Float64Var(&cfg.ReadFraction, "read-fraction", 0.9, "mixed: fraction of requests that are product reads")
	fs.BoolVar(&cfg.Baseline, "baseline", false, "also drive an in-process trivial net/http handler with the same load and report ratios to it")
	fs.DurationVar(&cfg.Timeout, "timeout", 10*time.Second, "per-request timeout")
	fs.IntVar(&cfg.VerifyOrders, "verify-orders", 0, "flash-sale: accepted orders to read back (0 = all, negative = none)")
	fs.DurationVar(&cfg.DrainTimeout, "drain-timeout", 30*time.Second, "flash-sale: how long to wait for the audit to pass after the spike")
	fs.DurationVar(&cfg.Interval, "interval", 0, "width of each time-series point in reports (0 = 100ms for flash-sale, 1s otherwise)")
	fs.Float64Var(&cfg.MaxErrorRate, "max-error-rate", loadgen.DefaultMaxErrorRate, "the run FAILs when more than this share of its requests got no answer, were never sent, or were answered 5xx (each on its own); ≥ 1 turns these checks off")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed for Zipf draws and shuffles (0 = time-based)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return helpFor(fs)
		}
		return fmt.Errorf("bench: %w", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench: unexpected arguments %q", fs.Args())
	}
	if cfg.ReadFraction == 0 {
		cfg.ReadFraction = -1 // loadgen treats 0 as "default"; the flag's 0 means no reads
	}
	if cfg.MaxErrorRate == 0 {
		cfg.MaxErrorRate = -1 // the flag's 0 means none tolerated
	} else if cfg.MaxErrorRate < 0 {
		return fmt.Errorf("bench: --max-error-rate must be ≥ 0, got %v", cfg.MaxErrorRate)
	}

	cfg.Secret = []byte(*secret)
	if len(cfg.Secret) == 0 {
		cfg.Secret = []byte(getenv("SPIKE_JWT_SECRET")) // not the flag's default: -h would print it
	}
	if *embedded {
		if startEmbedded == nil {
			return errors.New("bench --embedded: this build has no embedded server (startEmbedded is not wired)")
		}
		dir, err := os.MkdirTemp("", "spike-bench-*")
		if err != nil {
			return fmt.Errorf("bench --embedded: %w", err)
		}
		defer os.RemoveAll(dir)
		url, sec, stop, err := startEmbedded(ctx, dir)
		if err != nil {
			return fmt.Errorf("bench --embedded: start: %w", err)
		}
		defer func() {
			if err := stop(); err != nil {
				fmt.Fprintln(stdout, "bench --embedded: stop:", err)
			}
		}()
		cfg.Target = url
		if len(sec) > 0 {
			cfg.Secret = sec
		}
	}
	if !*embedded {
		if err := benchServer(fs, &cfg, *dataDir, *cfgFile, getenv); err != nil {
			return err
		}
	}

	tty := benchIsTerminal(stdout)
	if !*jsonOut || tty {
		cfg.Progress, cfg.TTY = stdout, tty
	}
	rep, runErr := loadgen.Bench(ctx, cfg)
	if rep == nil {
		return fmt.Errorf("bench: %w", runErr)
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else if err := rep.WriteText(stdout); err != nil {
		return err
	}
	if *htmlFile != "" {
		if err := benchWriteHTML(*htmlFile, rep); err != nil {
			return err
		}
		if !*jsonOut {
			fmt.Fprintf(stdout, "HTML report: %s\n", *htmlFile)
		}
	}
	if runErr != nil {
		return fmt.Errorf("bench: %w", runErr)
	}
	if !rep.OK() {
		return errBenchChecksFailed
	}
	return nil
}

func benchWriteHTML(name string, rep *loadgen.Report) error {
	f, err := os.Create(name)
	if err != nil {
		return fmt.Errorf("bench --html: %w", err)
	}
	if err := rep.WriteHTML(f); err != nil {
		f.Close()
		return fmt.Errorf("bench --html: %w", err)
	}
	return f.Close()
}

// benchIsTerminal reports whether w is a character device (a terminal), where a
// progress line can be rewritten in place.
func benchIsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// benchServer fills in what --secret and --target leave unset the way
// spike token and spike audit find a server: --data, --config and the
// SPIKE_* environment.
func benchServer(fs *flag.FlagSet, cfg *loadgen.Config, dataDir, cfgFile string, getenv func(string) string) error {
	targetSet := false
	fs.Visit(func(f *flag.Flag) { targetSet = targetSet || f.Name == "target" })
	if len(cfg.Secret) > 0 && targetSet {
		return nil
	}
	var args []string
	if dataDir != "" {
		args = append(args, "--data", dataDir)
	}
	if cfgFile != "" {
		args = append(args, "--config", cfgFile)
	}
	server, err := newFlagSet("bench").load(args, getenv, io.Discard)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if !targetSet && (cfgFile != "" || getenv("SPIKE_CONFIG") != "" || getenv("SPIKE_ADDR") != "") {
		cfg.Target = "http://" + server.Addr
	}
	if len(cfg.Secret) == 0 {
		if cfg.Secret, err = server.existingSecret(); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	return nil
}
