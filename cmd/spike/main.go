// Command spike is the Spike server and its tools: serve, token, audit,
// migrate, bench, the admin commands and version. This package only wires the others together.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, errSilent) {
			fmt.Fprintln(os.Stderr, "spike:", err)
		}
		os.Exit(1)
	}
}

// errSilent ends a command with status 1 after it already said why.
var errSilent = errors.New("failed")

const usage = `usage: spike <command> [flags]

commands:
  serve     run the server (embedded mode unless --config names backends)
  token     print a signed token: spike token --user 42 [--admin] [--ttl 24h]
  audit     check the invariants I1-I5 on a running server
  migrate   apply database migrations (MySQL; SQLite migrates itself)
  bench     drive load against a server and report
  product   create|get products on a running server
  sale      create|get|end sales on a running server
  order     get|cancel orders on a running server
  switch    list|set runtime switches on a running server
  version   print the version

spike <command> --help shows a command's flags.`

// run runs one command; --help anywhere prints that command's usage on
// stdout and succeeds.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	err := dispatch(ctx, args, getenv, stdout, stderr)
	var help *helpError
	if errors.As(err, &help) {
		fmt.Fprint(stdout, help.text)
		return nil
	}
	return err
}

func dispatch(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return errSilent
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], getenv, stdout, stderr)
	case "token":
		return token(args[1:], getenv, stdout)
	case "audit":
		return audit(ctx, args[1:], getenv, stdout)
	case "migrate":
		return migrate(ctx, args[1:], getenv, stdout)
	case "bench":
		return bench(ctx, args[1:], getenv, stdout)
	case "product", "sale", "order", "switch":
		return adminCommand(ctx, args[0], args[1:], getenv, stdout)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, versionString())
		return nil
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", args[0], usage)
}
