package sqlitestore_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/spikehq/spike/internal/adapter/sqlitestore"
)

func TestOpenOddPath(t *testing.T) {
	for _, name := range []string{"a#b", "a?b", "a%20b", "a b"} {
		dir := filepath.Join(t.TempDir(), name)
		os.MkdirAll(dir, 0o755)
		s, err := sqlitestore.Open(context.Background(), filepath.Join(dir, "spike.db"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		s.Close()
		if _, err := os.Stat(filepath.Join(dir, "spike.db")); err != nil {
			t.Errorf("%s: database not where asked: %v", name, err)
		}
	}
}
