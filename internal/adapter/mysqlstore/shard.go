package mysqlstore

import (
	"fmt"
)

// NumBuckets is the number of logical buckets orders are partitioned into.
// It is fixed for the life of a deployment: a bucket is the unit that moves
// when a shard is added, so changing it would move every order.
const NumBuckets = 1024

// BucketOf returns the bucket of a user's orders, in [0, NumBuckets).
//
// It is the splitmix64 finalizer of the user id, modulo NumBuckets. It is
// part of the data format: every stored order records its bucket, and
// changing this function would strand orders on the wrong shard.
func BucketOf(userID int64) int {
	z := uint64(userID) + 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return int(z % NumBuckets)
}

// BucketRange is an inclusive range of buckets, First ≤ Last.
type BucketRange struct {
	First, Last int
}

// EvenBuckets returns the default split of the buckets over n shards: shard
// i holds [i*NumBuckets/n, (i+1)*NumBuckets/n - 1].
func EvenBuckets(n int) [][]BucketRange {
	out := make([][]BucketRange, n)
	for i := range n {
		out[i] = []BucketRange{{First: i * NumBuckets / n, Last: (i+1)*NumBuckets/n - 1}}
	}
	return out
}

// bucketMap maps each bucket to the index of its shard. ranges[i] are the
// buckets of shard i; if every shard's ranges are empty, the buckets are
// split evenly. Every bucket must belong to exactly one shard.
func bucketMap(ranges [][]BucketRange) ([NumBuckets]int, error) {
	var m [NumBuckets]int
	if len(ranges) == 0 {
		return m, fmt.Errorf("no order shards")
	}
	empty := true
	for _, r := range ranges {
		if len(r) > 0 {
			empty = false
		}
	}
	if empty {
		ranges = EvenBuckets(len(ranges))
	}
	for i := range m {
		m[i] = -1
	}
	for shard, rs := range ranges {
		for _, r := range rs {
			if r.First < 0 || r.Last >= NumBuckets || r.First > r.Last {
				return m, fmt.Errorf("order shard %d: bucket range %d-%d is not within 0-%d", shard, r.First, r.Last, NumBuckets-1)
			}
			for b := r.First; b <= r.Last; b++ {
				if m[b] != -1 {
					return m, fmt.Errorf("bucket %d is assigned to order shards %d and %d", b, m[b], shard)
				}
				m[b] = shard
			}
		}
	}
	for b, shard := range m {
		if shard == -1 {
			return m, fmt.Errorf("bucket %d is assigned to no order shard", b)
		}
	}
	return m, nil
}
