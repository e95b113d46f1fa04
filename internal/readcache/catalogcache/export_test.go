package catalogcache

import "context"

// RefreshHot runs one refresh of the hot keys, as Run does every
// Options.HotRefresh.
func (s *Store) RefreshHot(ctx context.Context) { s.refreshHot(ctx) }
