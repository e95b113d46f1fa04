package natsbus

import (
	"testing"
	"time"
)

// TestTimeoutsShared: waits due in the same grain share one channel, which
// closes no earlier than asked; a later one gets its own.
func TestTimeoutsShared(t *testing.T) {
	var tt timeouts
	start := time.Now()
	a := tt.after(100 * time.Millisecond)
	b := tt.after(100 * time.Millisecond)
	later := tt.after(time.Second)
	if a != b {
		// Two calls a moment apart may straddle a grain boundary; a third
		// right after must share with the second.
		if c := tt.after(100 * time.Millisecond); c != b {
			t.Errorf("waits due within %v of each other got different channels", timeoutGrain)
		}
	}
	if a == later {
		t.Fatal("waits due 900 ms apart share a channel")
	}
	<-a
	if took := time.Since(start); took < 100*time.Millisecond {
		t.Errorf("closed after %v, before the 100 ms asked", took)
	}
	select {
	case <-later:
		t.Error("the 1 s wait closed with the 100 ms one")
	default:
	}
	<-later
	tt.mu.Lock()
	defer tt.mu.Unlock()
	if len(tt.slots) != 0 {
		t.Errorf("%d expired slots kept", len(tt.slots))
	}
}
