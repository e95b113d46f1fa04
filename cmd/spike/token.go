package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/spikehq/spike/internal/httpapi"
)

func token(args []string, getenv func(string) string, stdout io.Writer) error {
	fs := newFlagSet("token")
	user := fs.String("user", "", "user id: a positive integer (this or --users is required)")
	users := fs.String("users", "", "a range `FIRST-LAST` of user ids: one token per user, one a line (load generators)")
	out := fs.String("out", "", "write the tokens to `FILE` instead of stdout")
	admin := fs.Bool("admin", false, "give the token the admin role")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token is valid")
	cfg, err := fs.load(args, getenv, stdout)
	if err != nil {
		return err
	}
	first, last, err := tokenUsers(*user, *users)
	if err != nil {
		return err
	}
	if *ttl <= 0 {
		return fmt.Errorf("token: --ttl must be positive")
	}
	secret, err := cfg.existingSecret()
	if err != nil {
		return err
	}
	sign := func(uid int64) (string, error) { return httpapi.Sign(secret, uid, *admin, *ttl) }
	if *out == "" {
		return writeTokens(stdout, first, last, sign)
	}
	f, err := os.Create(*out)
	if err != nil {
		return fmt.Errorf("token: %w", err)
	}
	if err := writeTokens(f, first, last, sign); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// maxTokenUsers bounds --users: a typo must not sign for an hour.
const maxTokenUsers = 10_000_000

// tokenUsers returns the range of user ids of --user or --users.
func tokenUsers(user, users string) (first, last int64, err error) {
	switch {
	case user != "" && users != "":
		return 0, 0, errors.New("token: pass --user or --users, not both")
	case user != "":
		uid, err := strconv.ParseInt(user, 10, 64)
		if err != nil || uid <= 0 {
			return 0, 0, fmt.Errorf("token: --user must be a positive integer, got %q", user)
		}
		return uid, uid, nil
	case users != "":
		a, b, ok := strings.Cut(users, "-")
		first, err1 := strconv.ParseInt(a, 10, 64)
		last, err2 := strconv.ParseInt(b, 10, 64)
		if !ok || err1 != nil || err2 != nil || first <= 0 || last < first {
			return 0, 0, fmt.Errorf("token: --users must be FIRST-LAST, positive with FIRST ≤ LAST, got %q", users)
		}
		if last-first >= maxTokenUsers {
			return 0, 0, fmt.Errorf("token: --users %q: at most %d users at once", users, maxTokenUsers)
		}
		return first, last, nil
	}
	return 0, 0, fmt.Errorf("token: --user must be a positive integer, got %q", user)
}

// writeTokens writes sign(uid) for uid in [first, last], one a line, in
// order, signing on every core: a load generator wants 150 000 at once.
func writeTokens(w io.Writer, first, last int64, sign func(int64) (string, error)) error {
	const chunk = 4096
	bw := bufio.NewWriterSize(w, 1<<16)
	workers := runtime.GOMAXPROCS(0)
	toks := make([]string, chunk)
	for lo := first; lo <= last; lo += chunk {
		n := min(int64(chunk), last-lo+1)
		var g errgroup.Group
		for wk := range workers {
			g.Go(func() error {
				for i := int64(wk); i < n; i += int64(workers) {
					tok, err := sign(lo + i)
					if err != nil {
						return err
					}
					toks[i] = tok
				}
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return fmt.Errorf("token: %w", err)
		}
		for _, tok := range toks[:n] {
			bw.WriteString(tok)
			bw.WriteByte('\n')
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("token: %w", err)
	}
	return nil
}
