package sqlitestore_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/spikehq/spike/internal/adapter/sqlitestore"
	"github.com/spikehq/spike/internal/testkit/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Stores {
		s, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "spike.db"))
		if err != nil {
			t.Fatalf("Open() = %v", err)
		}
		t.Cleanup(func() { s.Close() })
		return storetest.Stores{Catalog: s, Sales: s, Orders: s, Lifecycle: s, Payments: s, Stock: s, Ender: s}
	})
}
