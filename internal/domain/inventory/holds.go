package inventory

import (
	"hash/maphash"
	"math"

	"github.com/spikehq/spike"
)

// A big sale remembers one idempotency key per buyer, so its holds are
// kept compact (docs/benchmarks.md, "Memory of a 1,000,000-buyer sale"):
// fixed-size records without pointers (the garbage collector does not scan
// them) in chunks, found through an open-addressing index of 8-byte slots.
//
// A record does not keep its key, only the buyer's user id, exactly, and a
// 128-bit hash of the key under two random per-sale seeds. A lookup matches
// the user id and all 128 bits, so a collision can only join two keys of
// the same buyer, never answer another buyer's order; for a buyer who used
// k keys in the sale the odds are below k²/2¹²⁹ (about 10⁻³⁷ for k = 10,
// and under 10⁻²⁶ summed over a billion such buyers). The seeds are secret,
// so keys cannot be chosen to collide.

// keyHash is an idempotency key's 128-bit hash.
type keyHash [2]uint64

// hold is what a sale remembers of one idempotency key: 56 bytes.
type hold struct {
	key      keyHash
	user     int64
	order    [16]byte // binary order id (spike.ParseID), unless flagSpilled
	placedAt int64    // Unix microseconds
	quantity uint32   // unless flagSpilled
	flags    uint32
}

const (
	flagLive      = 1 << iota // the record is in use (not on the free list)
	flagConfirmed             // durably enqueued: a replay may be answered
	flagReturned              // its units were given back (Return): it holds none
	flagSpilled               // order id or quantity too odd for the record: see holdTable.spill
)

// spilled keeps the fields of a record that do not fit it: an order id that
// is not a spike id (restored from elsewhere) or a quantity beyond 2³²-1.
type spilled struct {
	orderID  string
	quantity int64
}

// entry is a copy of one record with its spilled fields resolved, taken
// under the sale's lock and used after it.
type entry struct {
	order     [16]byte
	spilled   bool
	orderStr  string // the order id when spilled
	quantity  int64
	placedAt  int64
	confirmed bool
}

// orderID returns the entry's order id in its string form.
func (e *entry) orderID() string {
	if e.spilled {
		return e.orderStr
	}
	return spike.FormatID(e.order)
}

const (
	chunkBits = 10
	chunkLen  = 1 << chunkBits // records per chunk: 56 KiB
	minSlots  = 16
	emptySlot = 0
)

// holdTable is the holds of one sale. It is not safe for concurrent use:
// the sale's lock guards it.
type holdTable struct {
	seed   [2]maphash.Seed
	chunks []*[chunkLen]hold
	n      uint32   // records handed out, live or free
	free   []uint32 // released records, reused first
	spill  map[uint32]spilled

	// slots is the index: emptySlot, or the low 32 bits of the record's
	// position hash (a tag that saves most reads of a record) above the
	// record's number + 1. Linear probing, at most 3/4 full; a record's
	// home slot is the top bits of its position hash.
	slots []uint64
	shift uint // 64 - log2(len(slots))
	used  int
}

func newHoldTable(capacity int) *holdTable {
	t := &holdTable{seed: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}}
	t.resize(max(minSlots, slotsFor(capacity)))
	return t
}

// slotsFor returns the index size for n records: a power of two at most
// 3/4 full.
func slotsFor(n int) int {
	size := minSlots
	for size/4*3 < n {
		size <<= 1
	}
	return size
}

// hash returns key's 128-bit hash.
func (t *holdTable) hash(key string) keyHash {
	return keyHash{maphash.String(t.seed[0], key), maphash.String(t.seed[1], key)}
}

// position returns where a buyer's key goes in the index: its top bits are
// the home slot, its low 32 bits the tag.
func position(user int64, k keyHash) uint64 {
	x := k[0] ^ uint64(user)*0x9e3779b97f4a7c15
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	return x
}

func (t *holdTable) at(i uint32) *hold { return &t.chunks[i>>chunkBits][i&(chunkLen-1)] }

// find returns the number of the record of user's key k and its index slot.
func (t *holdTable) find(user int64, k keyHash) (rec uint32, slot int, ok bool) {
	p := position(user, k)
	tag := p << 32
	mask := len(t.slots) - 1
	for i := int(p >> t.shift); ; i = (i + 1) & mask {
		s := t.slots[i]
		if s == emptySlot {
			return 0, 0, false
		}
		if s&^math.MaxUint32 == tag {
			rec := uint32(s) - 1
			if h := t.at(rec); h.user == user && h.key == k {
				return rec, i, true
			}
		}
	}
}

// get copies the record of user's key k.
func (t *holdTable) get(user int64, k keyHash) (e entry, ok bool) {
	rec, _, ok := t.find(user, k)
	if !ok {
		return entry{}, false
	}
	return t.entry(rec), true
}

func (t *holdTable) entry(rec uint32) entry {
	h := t.at(rec)
	e := entry{order: h.order, quantity: int64(h.quantity), placedAt: h.placedAt, confirmed: h.flags&flagConfirmed != 0}
	if h.flags&flagSpilled != 0 {
		sp := t.spill[rec]
		e.spilled, e.orderStr, e.quantity = true, sp.orderID, sp.quantity
	}
	return e
}

// sameOrder reports whether record rec is order orderID.
func (t *holdTable) sameOrder(rec uint32, orderID string) bool {
	h := t.at(rec)
	if h.flags&flagSpilled != 0 {
		return t.spill[rec].orderID == orderID
	}
	raw, ok := spike.ParseID(orderID)
	return ok && raw == h.order
}

// quantity returns record rec's quantity.
func (t *holdTable) quantity(rec uint32) int64 {
	h := t.at(rec)
	if h.flags&flagSpilled != 0 {
		return t.spill[rec].quantity
	}
	return int64(h.quantity)
}

// put stores a record for user's key k, replacing the record the key has,
// if any, and returns its number. The order id is raw when ok, else
// orderID.
func (t *holdTable) put(user int64, k keyHash, raw [16]byte, ok bool, orderID string, quantity, placedAt int64, flags uint32) uint32 {
	if rec, _, found := t.find(user, k); found {
		t.write(rec, user, k, raw, ok, orderID, quantity, placedAt, flags)
		return rec
	}
	return t.insert(user, k, raw, ok, orderID, quantity, placedAt, flags)
}

// insert stores a record for a key the table does not have (find said so)
// and returns its number.
func (t *holdTable) insert(user int64, k keyHash, raw [16]byte, ok bool, orderID string, quantity, placedAt int64, flags uint32) uint32 {
	if (t.used+1)*4 > len(t.slots)*3 {
		t.resize(len(t.slots) * 2) // before the new record is live: resize links every live one
	}
	rec := t.alloc()
	t.write(rec, user, k, raw, ok, orderID, quantity, placedAt, flags)
	t.link(rec)
	return rec
}

// write fills record rec, spilling what does not fit.
func (t *holdTable) write(rec uint32, user int64, k keyHash, raw [16]byte, ok bool, orderID string, quantity, placedAt int64, flags uint32) {
	delete(t.spill, rec)
	h := t.at(rec)
	*h = hold{key: k, user: user, order: raw, placedAt: placedAt, quantity: uint32(quantity), flags: flagLive | flags}
	if ok && quantity >= 0 && quantity <= math.MaxUint32 {
		return
	}
	if ok {
		orderID = spike.FormatID(raw)
	}
	h.flags |= flagSpilled
	h.order, h.quantity = [16]byte{}, 0
	if t.spill == nil {
		t.spill = make(map[uint32]spilled)
	}
	t.spill[rec] = spilled{orderID: orderID, quantity: quantity}
}

// alloc returns a free record.
func (t *holdTable) alloc() uint32 {
	if n := len(t.free); n > 0 {
		rec := t.free[n-1]
		t.free = t.free[:n-1]
		return rec
	}
	if t.n == math.MaxUint32-1 {
		panic("inventory: more than 2³²-2 holds in one sale")
	}
	if int(t.n>>chunkBits) == len(t.chunks) {
		t.chunks = append(t.chunks, new([chunkLen]hold))
	}
	t.n++
	return t.n - 1
}

// link adds record rec to the index, which has room.
func (t *holdTable) link(rec uint32) {
	h := t.at(rec)
	p := position(h.user, h.key)
	mask := len(t.slots) - 1
	i := int(p >> t.shift)
	for t.slots[i] != emptySlot {
		i = (i + 1) & mask
	}
	t.slots[i] = p<<32 | uint64(rec+1)
	t.used++
}

// resize rebuilds the index with size slots, reading the records in order.
func (t *holdTable) resize(size int) {
	t.slots = make([]uint64, size)
	t.shift = uint(64 - bitsOf(size))
	t.used = 0
	for rec := range t.n {
		if t.at(rec).flags&flagLive != 0 {
			t.link(rec)
		}
	}
}

// bitsOf returns log2 of a power of two.
func bitsOf(size int) int {
	n := 0
	for size > 1 {
		size >>= 1
		n++
	}
	return n
}

// remove forgets user's key k, found at record rec and index slot i. Later
// slots of its probe run move back (backward-shift deletion), so lookups
// need no tombstones.
func (t *holdTable) remove(rec uint32, i int) {
	mask := len(t.slots) - 1
	for j := (i + 1) & mask; t.slots[j] != emptySlot; j = (j + 1) & mask {
		h := t.at(uint32(t.slots[j]) - 1)
		home := int(position(h.user, h.key) >> t.shift)
		// The entry at j may fill the hole at i unless its home lies
		// cyclically in (i, j].
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			t.slots[i] = t.slots[j]
			i = j
		}
	}
	t.slots[i] = emptySlot
	t.used--
	*t.at(rec) = hold{}
	delete(t.spill, rec)
	t.free = append(t.free, rec)
}

// setFlags adds flags to record rec.
func (t *holdTable) setFlags(rec uint32, flags uint32) { t.at(rec).flags |= flags }

// flagsOf returns record rec's flags.
func (t *holdTable) flagsOf(rec uint32) uint32 { return t.at(rec).flags }
