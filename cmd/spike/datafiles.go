package main

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

// sqliteFile is the embedded database in the data folder.
const sqliteFile = "spike.db"

// createPrivate creates path empty and 0600 unless it exists. SQLite
// gives the -wal and -shm files it creates the database file's mode, so
// creating the database first keeps all three private whatever the umask.
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return f.Close()
}

// warnLoosePermissions warns about a data folder, or a database file in
// it, that other users may read: it holds every order (and, embedded, the
// token secret). Spike creates them 0700 and 0600; a looser mode was set
// by hand or by an older version.
func warnLoosePermissions(data string, log *slog.Logger) {
	check := func(path string, want fs.FileMode) {
		info, err := os.Stat(path)
		if err != nil {
			return // absent: created private
		}
		if mode := info.Mode().Perm(); mode&0o077 != 0 {
			log.Warn("data readable by other users: tighten it", "path", path, "mode", mode.String(), "want", want.String())
		}
	}
	check(data, 0o700)
	for _, name := range []string{sqliteFile, sqliteFile + "-wal", sqliteFile + "-shm"} {
		check(filepath.Join(data, name), 0o600)
	}
}
