package inventory

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/spikehq/spike"
)

// TestHoldTableModel puts and removes holds at random, through several
// resizes and many backward-shift deletions, and checks every key against
// a plain map after each step.
func TestHoldTableModel(t *testing.T) {
	type id struct {
		user int64
		key  string
	}
	type want struct {
		order    string
		quantity int64
	}
	rng := rand.New(rand.NewPCG(1, 2))
	ids := spike.NewIDGenerator()
	tbl := newHoldTable(0)
	model := map[id]want{}
	var all []id
	for u := range int64(40) {
		for k := range 60 {
			all = append(all, id{u + 1, "k" + strconv.Itoa(k)})
		}
	}
	check := func(step int) {
		t.Helper()
		for _, x := range all {
			rec, _, ok := tbl.find(x.user, tbl.hash(x.key))
			w, inModel := model[x]
			if ok != inModel {
				t.Fatalf("step %d: find(%v) = %v, model has it: %v", step, x, ok, inModel)
			}
			if ok {
				e := tbl.entry(rec)
				if e.orderID() != w.order || e.quantity != w.quantity || !tbl.sameOrder(rec, w.order) {
					t.Fatalf("step %d: %v holds order %s ×%d, want %s ×%d", step, x, e.orderID(), e.quantity, w.order, w.quantity)
				}
			}
		}
		if tbl.used != len(model) {
			t.Fatalf("step %d: index holds %d, model %d", step, tbl.used, len(model))
		}
	}
	for step := range 6000 {
		x := all[rng.IntN(len(all))]
		k := tbl.hash(x.key)
		if rec, slot, ok := tbl.find(x.user, k); ok && rng.IntN(3) == 0 {
			tbl.remove(rec, slot)
			delete(model, x)
		} else {
			w := want{order: ids.New(), quantity: 1 + rng.Int64N(5)}
			switch rng.IntN(10) {
			case 0:
				w.order = "o" + strconv.Itoa(step) // not a spike id: spilled
			case 1:
				w.quantity = math.MaxUint32 + 1 + rng.Int64N(10) // too big for the record: spilled
			}
			raw, isID := spike.ParseID(w.order)
			tbl.put(x.user, k, raw, isID, w.order, w.quantity, 0, 0)
			model[x] = w
		}
		if step%97 == 0 {
			check(step)
		}
	}
	check(-1)
	if len(tbl.spill) == 0 || len(tbl.free) == 0 {
		t.Errorf("the test did not reach spilled (%d) or freed (%d) records", len(tbl.spill), len(tbl.free))
	}
}

// TestHoldTableSameKeyOtherBuyer: the same key string of two buyers names
// two records.
func TestHoldTableSameKeyOtherBuyer(t *testing.T) {
	tbl := newHoldTable(0)
	ids := spike.NewIDGenerator()
	k := tbl.hash("same")
	a, b := ids.NewRaw(), ids.NewRaw()
	tbl.put(1, k, a, true, "", 1, 0, 0)
	tbl.put(2, k, b, true, "", 2, 0, 0)
	for user, raw := range map[int64][16]byte{1: a, 2: b} {
		e, ok := tbl.get(user, k)
		if !ok || e.order != raw || e.quantity != user {
			t.Errorf("buyer %d: %+v, %v; want order %x ×%d", user, e, ok, raw, user)
		}
	}
	if _, ok := tbl.get(3, k); ok {
		t.Error("a third buyer found a record under the same key")
	}
}
