package redislimit

import "github.com/redis/rueidis"

// Each script touches exactly one key (so it runs unchanged on Redis Cluster),
// reads the clock with TIME on the server (so instances need no synchronised
// clocks), and replies {ok, wait, remaining}:
//
//	ok         1 if the events were allowed (and, unless peeking, consumed)
//	wait       µs until the call could succeed if ok is 0 (-1: never, n is
//	           over the capacity); for the leaky bucket with ok 1, how long
//	           the caller must wait for its slot
//	remaining  events still allowed now (an estimate for the counters)
//
// ARGV[1] is n, ARGV[2] is "1" to peek (decide without consuming); the rest
// are per algorithm. Times are integer microseconds, exact in Lua's doubles
// until the year 2255, and are written with %d so they never turn into
// exponent notation. Every write sets a TTL no longer than the state is
// meaningful, so idle keys disappear on their own.
const prelude = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local peek = ARGV[2] == '1'
`

// gcraScript is the token bucket as GCRA: the key holds the theoretical
// arrival time (tat) of the next event; an event is allowed if it would not
// push tat more than burst intervals past now.
// ARGV[3]: interval µs per token, ARGV[4]: burst.
var gcraScript = rueidis.NewLuaScript(prelude + `
local T, burst = tonumber(ARGV[3]), tonumber(ARGV[4])
local tau = T * burst
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if n > burst then return {0, -1, math.max(0, math.floor((tau - (tat - now)) / T))} end
local new = tat + n * T
local ahead = new - now
if ahead > tau then
  return {0, ahead - tau, math.max(0, math.floor((tau - (tat - now)) / T))}
end
if not peek then
  redis.call('SET', KEYS[1], string.format('%d', new), 'PX', math.ceil(ahead / 1000) + 1)
end
return {1, 0, math.floor((tau - ahead) / T)}
`)

// leakyScript is the leaky bucket as a pacer: the key holds the earliest time
// the next event may leave. A call books the next free slot if it is at most
// maxAhead µs away and reports how long until it (Allow passes maxAhead 0).
// ARGV[3]: interval µs per event, ARGV[4]: maxAhead µs.
var leakyScript = rueidis.NewLuaScript(prelude + `
local T, maxAhead = tonumber(ARGV[3]), tonumber(ARGV[4])
local start = tonumber(redis.call('GET', KEYS[1]) or '0')
if start < now then start = now end
local delay = start - now
if delay > maxAhead then return {0, delay - maxAhead, 0} end
if not peek then
  local nxt = start + n * T
  redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1)
end
return {1, delay, math.floor((maxAhead - delay) / T)}
`)

// fixedScript is the fixed-window counter: INCRBY and, on the window's first
// event, PEXPIRE; the window starts at the first event and ends with the
// key's TTL (server time). Rejected calls do not count.
// ARGV[3]: limit, ARGV[4]: window ms.
var fixedScript = rueidis.NewLuaScript(prelude + `
local limit, W = tonumber(ARGV[3]), tonumber(ARGV[4])
local c = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > limit then return {0, -1, math.max(0, limit - c)} end
if c + n > limit then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then
    redis.call('PEXPIRE', KEYS[1], W)
    ttl = W
  end
  return {0, ttl * 1000, math.max(0, limit - c)}
end
if not peek then
  if redis.call('INCRBY', KEYS[1], n) == n then redis.call('PEXPIRE', KEYS[1], W) end
end
return {1, 0, limit - c - n}
`)

// slidingScript is the sliding-window counter: a hash with the index w of the
// current epoch-aligned window and the counts of it (c) and of the one before
// (p); p is weighted by how much of it the sliding window still covers.
// ARGV[3]: limit, ARGV[4]: window µs.
var slidingScript = rueidis.NewLuaScript(prelude + `
local limit, W = tonumber(ARGV[3]), tonumber(ARGV[4])
local idx = math.floor(now / W)
local h = redis.call('HMGET', KEYS[1], 'w', 'p', 'c')
local w, p, c = tonumber(h[1]) or idx, tonumber(h[2]) or 0, tonumber(h[3]) or 0
if w == idx - 1 then p, c = c, 0 elseif w < idx - 1 then p, c = 0, 0 end
local elapsed = now - idx * W
local weighted = p * (W - elapsed) / W
if n > limit then return {0, -1, math.max(0, math.floor(limit - weighted - c))} end
if weighted + c + n <= limit then
  if not peek then
    redis.call('HSET', KEYS[1], 'w', string.format('%d', idx), 'p', tostring(p), 'c', tostring(c + n))
    redis.call('PEXPIRE', KEYS[1], math.ceil(2 * W / 1000) + 1)
  end
  return {1, 0, math.floor(limit - weighted - c - n)}
end
local free = limit - c - n
if free >= 0 then
  return {0, math.ceil(W * (1 - free / p)) - elapsed, 0}
end
return {0, W - elapsed + math.ceil(W * (1 - (limit - n) / c)), 0}
`)

// logScript is the sliding-window log: a sorted set of event times. Events
// older than the window are removed first; at most limit events are ever
// added, so the set stays bounded by limit.
// ARGV[3]: limit, ARGV[4]: window µs, ARGV[5]: a nonce unique per call.
var logScript = rueidis.NewLuaScript(prelude + `
local limit, W = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now - W))
local c = redis.call('ZCARD', KEYS[1])
if n > limit then return {0, -1, math.max(0, limit - c)} end
if c + n > limit then
  local i = c + n - limit - 1
  local e = redis.call('ZRANGE', KEYS[1], i, i, 'WITHSCORES')
  return {0, math.max(1, tonumber(e[2]) + W - now), 0}
end
if not peek then
  local s = string.format('%d', now)
  for j = 1, n do redis.call('ZADD', KEYS[1], s, ARGV[5] .. ':' .. j) end
  redis.call('PEXPIRE', KEYS[1], math.ceil(W / 1000) + 1)
end
return {1, 0, limit - c - n}
`)
