-- Add one event under an Idempotency-Key: the event and the key's record in one call.
-- KEYS[1] events stream, KEYS[2] idempotency record
-- ARGV[1] events maxlen, ARGV[2] request hash, ARGV[3] record ttl in s, ARGV[4..] the
-- event's field-value items, event_id first
-- Returns {1, entry id, event_id}, or an idempotent {3, record} / {4} (see idempotency.lua).
local replay = idem_check(KEYS[2], ARGV[2])
if replay then return replay end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 4))
local reply = {1, id, ARGV[5]}
idem_record(KEYS[2], ARGV[2], ARGV[3], reply)
return reply
