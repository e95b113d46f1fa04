package notify

import (
	"context"
	"log/slog"
)

// Log is a [Provider] that writes each notification to a logger at info
// level instead of delivering it: the default when no real provider is
// configured, so notifications are visible in development.
type Log struct {
	log *slog.Logger
}

// NewLog returns a Log provider writing to l.
func NewLog(l *slog.Logger) *Log { return &Log{log: l} }

// Send implements [Provider]; it never fails.
func (p *Log) Send(ctx context.Context, n Notification) error {
	p.log.InfoContext(ctx, "notification", "id", n.ID, "kind", string(n.Kind),
		"order_id", n.OrderID, "user_id", n.UserID, "sale_id", n.SaleID, "quantity", n.Quantity)
	return nil
}
