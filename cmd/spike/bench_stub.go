package main

import (
	"context"
	"errors"
	"io"
)

// bench is replaced by the load generator (issue 4).
func bench(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	return errors.New("bench: not built yet")
}
