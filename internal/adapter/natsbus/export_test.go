package natsbus

import "context"

// DeleteStream deletes the stream and everything on it (tests only).
func (b *Bus) DeleteStream(ctx context.Context) error {
	return b.js.DeleteStream(ctx, b.cfg.Stream)
}

// PublishedBeside is how many batches that were not full went out while
// another awaited its acknowledgement, and not because that took longer
// than gatherMax.
func (b *Bus) PublishedBeside() uint64 { return b.publishedBeside.Load() }
