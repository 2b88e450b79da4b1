-- Takes one of a user's open-stream slots, if the user has fewer than the cap.
-- KEYS[1] = the user's sorted set of open streams "<prefix>:inbox:streams:<project>:<user>"
--           (member: a stream id; score: when its lease ends, ms on Redis's clock)
-- ARGV[1] = the cap, ARGV[2] = the stream id, ARGV[3] = lease ms
-- Returns 1 when taken, 0 at the cap. Expired leases (a process that died) are dropped first.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
    return 0
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[2])
redis.call('PEXPIRE', KEYS[1], lease)
return 1
