-- Extends the lease of an open stream's slot (its keep-alive).
-- KEYS[1] = the user's sorted set of open streams, ARGV[1] = the stream id, ARGV[2] = lease ms
-- Returns 1 (re-adds a slot Redis lost: the stream is open, so it counts).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
if redis.call('PTTL', KEYS[1]) < lease then
    redis.call('PEXPIRE', KEYS[1], lease)
end
return 1
