package order

import "context"

// PersistOverdue runs one overdue scan of the deadline sweep.
func (l *Lifecycle) PersistOverdue(ctx context.Context) { l.persistOverdue(ctx) }
