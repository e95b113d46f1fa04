// Package rediscache keeps Spike data in Redis. Products is the shared L2
// product cache of package catalogcache: products as JSON under
// "spike:product:<sku>", each with a TTL.
//
//	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}})
//	...
//	cache := catalogcache.New(db, catalogcache.Options{L2: rediscache.NewProducts(client, "")})
package rediscache

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/rueidis"

	"github.com/spikehq/spike/internal/domain/catalog"
)

// DefaultPrefix is the key prefix of cached products: a product's key is
// the prefix followed by its SKU.
const DefaultPrefix = "spike:product:"

// Products caches products in Redis. It implements catalogcache.L2 and is
// safe for concurrent use.
type Products struct {
	client rueidis.Client
	prefix string
}

// NewProducts returns a product cache on client whose keys start with
// prefix. If prefix is empty, DefaultPrefix is used.
func NewProducts(client rueidis.Client, prefix string) *Products {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Products{client: client, prefix: prefix}
}

func (c *Products) key(sku string) string { return c.prefix + sku }

// Get returns the cached product with the given SKU and whether there was
// one. A value that does not decode is an error.
func (c *Products) Get(ctx context.Context, sku string) (catalog.Product, bool, error) {
	b, err := c.client.Do(ctx, c.client.B().Get().Key(c.key(sku)).Build()).AsBytes()
	if rueidis.IsRedisNil(err) {
		return catalog.Product{}, false, nil
	}
	if err != nil {
		return catalog.Product{}, false, fmt.Errorf("redis get product %s: %w", sku, err)
	}
	var p catalog.Product
	if err := json.Unmarshal(b, &p); err != nil {
		return catalog.Product{}, false, fmt.Errorf("redis decode product %s: %w", sku, err)
	}
	return p, true, nil
}

// Set caches p for ttl (rounded down to milliseconds, at least 1 ms).
func (c *Products) Set(ctx context.Context, p catalog.Product, ttl time.Duration) error {
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("redis encode product %s: %w", p.SKU, err)
	}
	ms := max(ttl.Milliseconds(), 1)
	cmd := c.client.B().Set().Key(c.key(p.SKU)).Value(rueidis.BinaryString(b)).PxMilliseconds(ms).Build()
	if err := c.client.Do(ctx, cmd).Error(); err != nil {
		return fmt.Errorf("redis set product %s: %w", p.SKU, err)
	}
	return nil
}

// Delete removes the cached product with the given SKU, if any.
func (c *Products) Delete(ctx context.Context, sku string) error {
	if err := c.client.Do(ctx, c.client.B().Del().Key(c.key(sku)).Build()).Error(); err != nil {
		return fmt.Errorf("redis delete product %s: %w", sku, err)
	}
	return nil
}
