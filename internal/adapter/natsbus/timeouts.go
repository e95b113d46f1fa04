package natsbus

import (
	"sync"
	"time"
)

// timeouts hands out shared expiry channels: every wait that must end
// within the same slice of time (timeoutGrain) gets the same channel, closed
// by one timer. A placement's bounded wait for its batch's acknowledgement
// then costs a map lookup instead of a timer of its own (a context timer per
// placement was 5 % of a flash sale's CPU).
type timeouts struct {
	mu    sync.Mutex
	slots map[int64]chan struct{}
}

// timeoutGrain is how much later than asked a shared expiry may fire.
const timeoutGrain = 25 * time.Millisecond

// after returns a channel closed between d and d+timeoutGrain from now.
func (t *timeouts) after(d time.Duration) <-chan struct{} {
	at := time.Now().Add(d)
	slot := at.UnixNano()/int64(timeoutGrain) + 1
	t.mu.Lock()
	defer t.mu.Unlock()
	if ch, ok := t.slots[slot]; ok {
		return ch
	}
	if t.slots == nil {
		t.slots = make(map[int64]chan struct{})
	}
	ch := make(chan struct{})
	t.slots[slot] = ch
	time.AfterFunc(time.Until(time.Unix(0, slot*int64(timeoutGrain))), func() {
		t.mu.Lock()
		delete(t.slots, slot)
		t.mu.Unlock()
		close(ch)
	})
	return ch
}
