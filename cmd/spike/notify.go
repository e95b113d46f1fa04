package main

import (
	"context"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spikehq/spike/internal/adapter/natsbus"
	"github.com/spikehq/spike/internal/depguard"
	"github.com/spikehq/spike/internal/domain/notify"
	"github.com/spikehq/spike/internal/domain/order"
	"github.com/spikehq/spike/internal/switches"
)

// newNotifier builds the notifier the config asks for, obeying the
// notifications switch, and exports its metrics (its breaker, from
// depguard's table, with m). It returns nil for
// provider none.
func newNotifier(cfg NotifyConfig, board *switches.Board, reg prometheus.Registerer, m *depguard.Metrics, log *slog.Logger) *notify.Notifier {
	var p notify.Provider
	switch cfg.provider() {
	case "none":
		log.Info("notifications off (notify.provider none)")
		return nil
	case "webhook":
		p = notify.NewWebhook(notify.WebhookConfig{URL: cfg.WebhookURL, Secret: []byte(cfg.WebhookSecret)})
		log.Info("notifications by webhook", "url", redactURL(cfg.WebhookURL))
	default:
		p = notify.NewLog(log)
	}
	queue := cfg.Queue
	if queue == 0 {
		queue = -1 // notify.queue 0: send only when a worker is idle (notify.Config's 0 is its default)
	}
	n := notify.New(depguard.TraceNotifications(p), notify.Config{
		Workers: cfg.Workers,
		Queue:   queue,
		Timeout: cfg.Timeout,
		Enabled: func() bool { return board.On(switches.Notifications) },
		Breaker: depguard.BreakerConfig(depguard.Notifications, m),
		Logger:  log,
	})
	registerNotifyMetrics(reg, n)
	m.Watch(depguard.Notifications, n.Breaker())
	return n
}

func registerNotifyMetrics(reg prometheus.Registerer, n *notify.Notifier) {
	counter := func(name, help string, labels prometheus.Labels, f func(notify.Stats) uint64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "spike_notifications_" + name + "_total", Help: help, ConstLabels: labels},
			func() float64 { return float64(f(n.Stats())) }))
	}
	counter("sent", "Notifications delivered.", nil, func(s notify.Stats) uint64 { return s.Sent })
	counter("failed", "Notifications whose sending failed, after any retries.", nil, func(s notify.Stats) uint64 { return s.Failed })
	counter("retries", "Retried attempts to send a notification.", nil, func(s notify.Stats) uint64 { return s.Retries })
	for _, r := range notify.Reasons {
		counter("dropped", "Notifications dropped without being sent, by reason (pool_full, switch_off, breaker_open, shutdown).",
			prometheus.Labels{"reason": r.String()}, func(s notify.Stats) uint64 { return s.DroppedFor(r) })
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "spike_notifications_queued", Help: "Notifications waiting for a worker.",
	}, func() float64 { return float64(n.Stats().Queued) }))
}

// notifyPersisted runs persist and then queues an order_created
// notification for each order of the batch, without waiting for it:
// Notify never blocks, so notifications cannot slow persistence.
//
// At most once per persisted batch: a notification dropped or failed is
// not sent again. A batch persisted but not acknowledged (a crash, a lost
// ack) is delivered again, its inserts are no-ops, and its orders are
// notified again; receivers deduplicate by the notification id, which is
// "order_created:" + the order id.
func notifyPersisted(persist natsbus.PersistFunc, n *notify.Notifier) natsbus.PersistFunc {
	return func(ctx context.Context, events []order.Placed) error {
		if err := persist(ctx, events); err != nil {
			return err
		}
		for i := range events {
			n.Notify(orderCreated(&events[i])) // an error is a drop, counted in n.Stats
		}
		return nil
	}
}

// orderCreated is the notification for a persisted order.
func orderCreated(e *order.Placed) notify.Notification {
	o := e.Order()
	return notify.Notification{
		Kind:        notify.KindOrderCreated,
		OrderID:     e.OrderID,
		UserID:      e.UserID,
		SaleID:      e.SaleID,
		SKU:         e.SKU,
		Quantity:    e.Quantity,
		AmountCents: o.AmountCents(),
		At:          e.PlacedAt,
	}
}
