//go:build unix

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockData takes an exclusive lock on the data folder for the life of the
// process (released by unlock, or by the kernel when the process dies, even
// by kill -9): two `spike serve` on one folder would share one SQLite file
// and one embedded JetStream store, and their orders would fail.
func lockData(dir string) (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, "spike.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data folder %s is in use by another spike serve (one process per data folder)", dir)
		}
		return nil, fmt.Errorf("lock data folder %s: %w", dir, err)
	}
	return func() { f.Close() }, nil
}
