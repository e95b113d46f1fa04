// Package notify is Spike's notification domain: messages to buyers about
// their orders (today: order_created, sent once an order is persisted).
//
// Notifications are non-core work. A [Notifier] queues each one, in a
// bounded queue drained by the small pool of workers of [Notifier.Run], and
// returns at once; when the pool is full the
// notification is dropped and counted, so notifications can never slow or
// fail placements or persistence. Each send goes through a retry (full
// jitter, retryable errors only, a retry budget shared by all sends), a
// circuit breaker and a per-attempt timeout, and is skipped while the
// notifications switch is off.
//
// Delivery is at most once per call to [Notifier.Notify], and callers may
// call it more than once for the same order (Spike's order workers do when a
// persisted batch is delivered again), so receivers deduplicate by
// [Notification.ID] (kind and order id).
//
//	n := notify.New(notify.NewWebhook(notify.WebhookConfig{URL: url, Secret: secret}), notify.Config{
//		Enabled: func() bool { return board.On(switches.Notifications) },
//	})
//	var wg sync.WaitGroup
//	wg.Go(func() { n.Run(ctx) }) // the workers: the caller owns them
//	defer wg.Wait()
//	defer n.Close(drainCtx) // send what is queued (until drainCtx is done); Run then returns
//	n.Notify(notify.Notification{Kind: notify.KindOrderCreated, OrderID: id, UserID: buyer, At: placedAt})
//
// Providers: [Webhook] (HTTP POST of JSON, signed with HMAC-SHA256) and
// [Log] (writes to a *slog.Logger).
package notify
