package natsbus

import "context"

// DeleteStream deletes the stream and everything on it (tests only).
func (b *Bus) DeleteStream(ctx context.Context) error {
	return b.js.DeleteStream(ctx, b.cfg.Stream)
}
