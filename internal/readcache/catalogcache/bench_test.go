package catalogcache_test

import (
	"fmt"
	"testing"

	"github.com/spikehq/spike/internal/domain/catalog"
	"github.com/spikehq/spike/internal/readcache/catalogcache"
)

const benchSKUs = 64

func seedBench(b *testing.B) catalog.Store {
	b.Helper()
	db := mustOpenDB(b)
	for i := range benchSKUs {
		if err := db.CreateProduct(bg, catalog.Product{SKU: fmt.Sprintf("sku-%03d", i), Name: "Product", PriceCents: 100, Stock: 1000}); err != nil {
			b.Fatal(err)
		}
	}
	return db
}

func benchSKUList() []string {
	skus := make([]string, benchSKUs)
	for i := range skus {
		skus[i] = fmt.Sprintf("sku-%03d", i)
	}
	return skus
}

// benchReads reads from s in parallel: 64 products, or only the first (one
// flash-sale product page) if hot.
func benchReads(b *testing.B, s catalog.Store, hot bool) {
	skus := benchSKUList()
	for _, sku := range skus {
		if _, err := s.Product(bg, sku); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			sku := skus[0]
			if !hot {
				sku = skus[i%benchSKUs]
				i++
			}
			if _, err := s.Product(bg, sku); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkGetHit reads cached products (L1 hits).
func BenchmarkGetHit(b *testing.B) {
	for _, hot := range []bool{false, true} {
		b.Run(fmt.Sprintf("one_key=%t", hot), func(b *testing.B) {
			s := newStore(b, seedBench(b), catalogcache.Options{})
			benchReads(b, s, hot)
		})
	}
}

// BenchmarkSQLiteProduct reads the same products from SQLite directly.
func BenchmarkSQLiteProduct(b *testing.B) {
	benchReads(b, seedBench(b), false)
}
