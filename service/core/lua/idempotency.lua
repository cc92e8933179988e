-- Prelude: idempotent writes. The record of a write's result is set in the same script as
-- the write, so a crash between them cannot leave one without the other.
-- idem_check(key, hash): nil to go on with the write; {3, record JSON} when the same request
-- was made before; {4} when the key was used for another request. An empty hash: no key.
-- idem_record(key, hash, ttl_s, result): keep the result for ttl_s.
local function idem_check(key, hash)
  if hash == '' then return nil end
  local raw = redis.call('GET', key)
  if not raw then return nil end
  if cjson.decode(raw)['hash'] ~= hash then return {4} end
  return {3, raw}
end

local function idem_record(key, hash, ttl_s, result)
  if hash == '' then return end
  redis.call('SET', key, cjson.encode({hash = hash, result = result}), 'EX', ttl_s)
end
