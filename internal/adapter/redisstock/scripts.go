package redisstock

import "github.com/redis/rueidis"

// Every script works on the keys of one sale, which share one hash tag, so
// it runs unchanged on Redis Cluster. Replies are arrays of strings whose
// first element is a tag:
//
//	F <meta epoch>        fenced: the counters are missing, incomplete or unmarked
//	E <meta epoch>        healthy, but under another epoch than the caller's
//	R <hold>              replay: the key already holds "orderid|qty|placedµs|state"
//	                      (state 0 reserved, 1 confirmed, 2 returned)
//	I <limit>             quantity out of range
//	N                     sale not active
//	L                     per-user limit exceeded
//	S <remaining> <sv>    not enough stock
//	OK <remaining> <placedµs> <sv>
//
// sv is the stock version, kept in the keys hash as "_sv" (so that the
// sold-out path reads it with the hold in one HMGET): it is incremented at
// every change between "remaining ≤ 0" and "remaining > 0", so it is odd
// exactly when the sale is sold out, and a higher (epoch, sv) is newer news
// about the sold-out flag.

// health is the fence check shared by the scripts. A sale's counters are
// usable only when the meta hash carries an epoch AND the stock key exists
// AND both hashes carry the same epoch in their "_e" field: losing any one
// key (flush, restart, failover to an empty replica, eviction) is detected.
const health = `
local e = redis.call('HGET', KEYS[1], 'epoch')
if not e then return {'F', '0'} end
if redis.call('EXISTS', KEYS[2]) == 0
  or redis.call('HGET', KEYS[3], '_e') ~= e
  or redis.call('HGET', KEYS[4], '_e') ~= e then
  return {'F', e}
end
`

// reserveScript is the whole reserve step. It makes the fence check of
// health with the reads it needs anyway (8 commands for a placement where
// health plus separate reads took 13): Redis runs every placement's script
// on its one thread, so each command counts.
// KEYS: meta stock users keys
// ARGV: epoch user field qty orderid channel saleid
var reserveScript = rueidis.NewLuaScript(`
local m = redis.call('HMGET', KEYS[1], 'epoch', 'limit', 'starts', 'ends')
local e = m[1]
if not e then return {'F', '0'} end
local stock = redis.call('GET', KEYS[2])
local u = redis.call('HMGET', KEYS[3], '_e', ARGV[2])
local k = redis.call('HMGET', KEYS[4], '_e', ARGV[3], '_sv')
if not stock or u[1] ~= e or k[1] ~= e then return {'F', e} end
if e ~= ARGV[1] then return {'E', e} end
if k[2] then return {'R', k[2]} end
local qty = tonumber(ARGV[4])
local limit = tonumber(m[2])
if qty < 1 or qty > limit then return {'I', m[2]} end
stock = tonumber(stock)
-- Sold out answers before the window and the limit, as the sold-out fast
-- path of every instance does.
if stock <= 0 then return {'S', tostring(stock), k[3]} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ends = tonumber(m[4])
if now < tonumber(m[3]) or (ends > 0 and now >= ends) then return {'N'} end
local held = tonumber(u[2] or '0')
if held + qty > limit then return {'L'} end
if stock < qty then return {'S', tostring(stock), k[3]} end
stock = redis.call('DECRBY', KEYS[2], qty)
redis.call('HINCRBY', KEYS[3], ARGV[2], qty)
local placed = t[1] .. string.format('%06d', tonumber(t[2]))
redis.call('HSET', KEYS[4], ARGV[3], ARGV[5] .. '|' .. ARGV[4] .. '|' .. placed .. '|0')
local sv = k[3]
if stock <= 0 then
  sv = tostring(redis.call('HINCRBY', KEYS[4], '_sv', 1))
  redis.call('PUBLISH', ARGV[6], ARGV[7] .. ' ' .. e .. ' ' .. sv)
end
return {'OK', tostring(stock), placed, sv}
`)

// confirmScript marks a hold confirmed if the key still maps to the order.
// KEYS: keys
// ARGV: field orderid
var confirmScript = rueidis.NewLuaScript(`
local h = redis.call('HGET', KEYS[1], ARGV[1])
if h and string.sub(h, 1, #ARGV[2] + 1) == ARGV[2] .. '|' and string.sub(h, -1) == '0' then
  redis.call('HSET', KEYS[1], ARGV[1], string.sub(h, 1, -2) .. '1')
  return 1
end
return 0
`)

// releaseScript gives a hold's units back if the key still maps to the
// order and the order was not returned. On fenced counters it changes nothing: the rebuild recomputes them
// from the record, which never holds a released order.
// KEYS: meta stock users keys
// ARGV: field orderid user channel saleid
var releaseScript = rueidis.NewLuaScript(health + `
local h = redis.call('HGET', KEYS[4], ARGV[1])
if not h or string.sub(h, 1, #ARGV[2] + 1) ~= ARGV[2] .. '|' or string.sub(h, -1) == '2' then return {'X'} end
local qty = tonumber(string.match(h, '^[^|]*|(%d+)|'))
redis.call('HDEL', KEYS[4], ARGV[1])
if redis.call('HINCRBY', KEYS[3], ARGV[3], -qty) <= 0 then
  redis.call('HDEL', KEYS[3], ARGV[3])
end
local stock = redis.call('INCRBY', KEYS[2], qty)
local sv = redis.call('HGET', KEYS[4], '_sv')
if stock > 0 and stock - qty <= 0 then
  sv = tostring(redis.call('HINCRBY', KEYS[4], '_sv', 1))
  redis.call('PUBLISH', ARGV[4], ARGV[5] .. ' ' .. e .. ' ' .. sv)
end
return {'OK', tostring(stock), sv}
`)

// returnScript gives a recorded order's units back once: it marks the hold
// returned (the key still replays it), records the order id in the sale's
// returned set (which lives as long as the meta hash) and restocks.
// KEYS: meta stock users keys returned
// ARGV: field orderid qty user channel saleid
// Reply: F <epoch> | D (returned before) | N (the sale has ended) | X (no such hold) | OK <epoch> <remaining> <sv>
var returnScript = rueidis.NewLuaScript(health + `
if redis.call('SISMEMBER', KEYS[5], ARGV[2]) == 1 then return {'D'} end
-- After the sale's end its remaining units are frozen (settled to the
-- product): a return goes to the product instead. Same clock as reserve.
local ends = tonumber(redis.call('HGET', KEYS[1], 'ends') or '0')
if ends > 0 then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) >= ends then return {'N'} end
end
local h = redis.call('HGET', KEYS[4], ARGV[1])
if not h or string.sub(h, 1, #ARGV[2] + 1) ~= ARGV[2] .. '|' then return {'X'} end
local qty = tonumber(string.match(h, '^[^|]*|(%d+)|'))
if qty ~= tonumber(ARGV[3]) then return {'X'} end
if string.sub(h, -1) == '2' then return {'D'} end
redis.call('HSET', KEYS[4], ARGV[1], string.sub(h, 1, -2) .. '2')
redis.call('SADD', KEYS[5], ARGV[2])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[5], ttl) end
if redis.call('HINCRBY', KEYS[3], ARGV[4], -qty) <= 0 then
  redis.call('HDEL', KEYS[3], ARGV[4])
end
local stock = redis.call('INCRBY', KEYS[2], qty)
local sv = redis.call('HGET', KEYS[4], '_sv')
if stock > 0 and stock - qty <= 0 then
  sv = tostring(redis.call('HINCRBY', KEYS[4], '_sv', 1))
  redis.call('PUBLISH', ARGV[5], ARGV[6] .. ' ' .. e .. ' ' .. sv)
end
return {'OK', e, tostring(stock), sv}
`)

// stateScript reports a sale's counters for Remaining, Stats and Rebuild.
// KEYS: meta stock users keys
// Reply: F <epoch> | OK <epoch> <remaining> <sv> <held> <buyers> <maxPerBuyer> <allocated>
var stateScript = rueidis.NewLuaScriptReadOnly(health + `
local held, buyers, maxb = 0, 0, 0
local flat = redis.call('HGETALL', KEYS[3])
for i = 1, #flat, 2 do
  if flat[i] ~= '_e' then
    local n = tonumber(flat[i + 1])
    held = held + n
    buyers = buyers + 1
    if n > maxb then maxb = n end
  end
end
return {'OK', e, redis.call('GET', KEYS[2]), redis.call('HGET', KEYS[4], '_sv'), tostring(held), tostring(buyers), tostring(maxb), redis.call('HGET', KEYS[1], 'alloc')}
`)

// openScript creates a new sale's counters unless its meta hash exists.
// KEYS: meta stock users keys returned
// ARGV: epoch sku price limit alloc starts ends expireat
// Reply: the epoch in effect.
var openScript = rueidis.NewLuaScript(`
local e = redis.call('HGET', KEYS[1], 'epoch')
if e then return e end
if redis.call('EXISTS', KEYS[1]) == 1 then return '0' end
redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'sku', ARGV[2], 'price', ARGV[3], 'limit', ARGV[4],
  'alloc', ARGV[5], 'starts', ARGV[6], 'ends', ARGV[7])
redis.call('SET', KEYS[2], ARGV[5])
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
redis.call('HSET', KEYS[3], '_e', ARGV[1])
redis.call('HSET', KEYS[4], '_e', ARGV[1], '_sv', '0')
if tonumber(ARGV[8]) > 0 then
  for i = 1, 4 do redis.call('PEXPIREAT', KEYS[i], ARGV[8]) end
end
return ARGV[1]
`)

// fenceScript deletes the stock key, which fences the sale everywhere.
// KEYS: lock stock
// ARGV: token
var fenceScript = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
return 1
`)

// unlockScript releases the rebuild lock if the caller still holds it.
// KEYS: lock
// ARGV: token
var unlockScript = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// commitScript switches a sale to counters staged under a new epoch, all at
// once, if the caller still holds the rebuild lock.
// KEYS: meta stock users keys lock stagedUsers stagedKeys returned stagedReturned
// ARGV: token epoch sku price limit alloc starts ends expireat remaining sv channel saleid
// (the staged keys hash already holds _sv)
// Reply: 1 done, 0 lock lost, -1 staging incomplete.
var commitScript = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[5]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[6], '_e') ~= ARGV[2] or redis.call('HGET', KEYS[7], '_e') ~= ARGV[2] then return -1 end
redis.call('RENAME', KEYS[6], KEYS[3])
redis.call('RENAME', KEYS[7], KEYS[4])
if redis.call('EXISTS', KEYS[9]) == 1 then
  redis.call('RENAME', KEYS[9], KEYS[8])
else
  redis.call('DEL', KEYS[8])
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'epoch', ARGV[2], 'sku', ARGV[3], 'price', ARGV[4], 'limit', ARGV[5],
  'alloc', ARGV[6], 'starts', ARGV[7], 'ends', ARGV[8])
redis.call('SET', KEYS[2], ARGV[10])
for _, i in ipairs({1, 2, 3, 4, 8}) do
  if tonumber(ARGV[9]) > 0 then redis.call('PEXPIREAT', KEYS[i], ARGV[9]) else redis.call('PERSIST', KEYS[i]) end
end
redis.call('PUBLISH', ARGV[12], ARGV[13] .. ' ' .. ARGV[2] .. ' ' .. ARGV[11])
return 1
`)

// endScript moves a sale's end to ARGV[1] (Unix ms) unless it already ends
// by then. Every instance's reservations read the window from the meta
// hash, so the end holds everywhere at once.
// KEYS: meta stock users keys
// ARGV: ends
// Reply: F <epoch> | OK <ends>
var endScript = rueidis.NewLuaScript(health + `
local ends = tonumber(redis.call('HGET', KEYS[1], 'ends') or '0')
local at = tonumber(ARGV[1])
if ends == 0 or at < ends then
  redis.call('HSET', KEYS[1], 'ends', ARGV[1])
  ends = at
end
return {'OK', tostring(ends)}
`)
