// Lua scripts of RedisQueue (one per state change, each atomic). Every script
// is prefixed with the prelude below, which embeds state_machine.hpp's
// transition table: a transition the C++ table forbids, Lua forbids too. The
// body runs as a function, followed by flush_deferred() (RedisQueue's script()).
//
// Common ARGV of every script (see RedisQueue::run_script):
//   1 key prefix, 2 now (Unix ms), 3 now (RFC 3339), 4 events MAXLEN,
//   5 retention (ms), 6 consumer group, 7 lease timeout (ms), 8 concurrency
//   key limit; script arguments start at ARGV[9].
// Keys are derived from the prefix inside the scripts (docs/queue.md): fine
// for a standalone Redis, not for Redis Cluster.
#pragma once

namespace warmstart::queue::scripts {

inline constexpr const char* kPrelude = R"lua(
local P = ARGV[1]
local NOW_S = ARGV[2]
local NOW = tonumber(NOW_S)
local TS = ARGV[3]
local EVENTS_MAX = ARGV[4]
local RETENTION_MS = tonumber(ARGV[5])
local GROUP = ARGV[6]
local LEASE_MS = tonumber(ARGV[7])
local KEY_LIMIT = tonumber(ARGV[8])
local TERMINAL = {succeeded = true, failed = true, timed_out = true, cancelled = true}
local function next_state(from, event)
  local row = TRANSITIONS[from]
  if row == nil then return nil end
  return row[event]
end
local function jk(id) return P .. 'job:' .. id end
local function emit(ev)
  ev.ts = TS
  redis.call('XADD', P .. 'events', 'MAXLEN', '~', EVENTS_MAX, '*', 'e', cjson.encode(ev))
end
-- The state indexes, acks and the retention sweep are written once per key at
-- the end of the script (flush_deferred, called by the wrapper every script
-- runs in, RedisQueue's script()): a batched script then issues one
-- ZREM/ZADD/XACK/XDEL per key rather than per job.
local DEFER = {rem = {}, add = {}, ack = {}, retire = {}}
local function push(t, key, v)
  local l = t[key]
  if not l then l = {}; t[key] = l end
  l[#l + 1] = v
end
local function move_state(id, from, to)
  if from then push(DEFER.rem, from, id) end
  push(DEFER.add, to, NOW_S)
  push(DEFER.add, to, id)
end
local function ack(queue, entry) push(DEFER.ack, queue, entry) end
-- Finished records live for the retention period; the state index forgets
-- members older than that, so it never points at expired records for long.
local function retire(id, state)
  redis.call('PEXPIRE', jk(id), RETENTION_MS)
  DEFER.retire[state] = true
end
-- unpack() has a stack limit: long lists go out in chunks.
local function call_chunked(cmd, key, pre, list, step)
  for i = 1, #list, step do
    local args = {cmd, key}
    for _, a in ipairs(pre) do args[#args + 1] = a end
    for j = i, math.min(i + step - 1, #list) do args[#args + 1] = list[j] end
    redis.call(unpack(args))
  end
end
-- Concurrency keys, fleet-wide (docs/queue.md): `ckey:<key>` holds the jobs
-- running with the key (score = lease expiry, renewed with the lease, so a
-- dead router's hold runs out), `ckwait:<key>` the jobs waiting for it (FIFO,
-- off the stream, no claim), `ckwaiting` the keys that have waiters.
local function ck(key) return P .. 'ckey:' .. key end
local function room(key)
  redis.call('ZREMRANGEBYSCORE', ck(key), '-inf', '(' .. NOW_S)
  return KEY_LIMIT - redis.call('ZCARD', ck(key))
end
local function hold_key(id, key)
  redis.call('ZADD', ck(key), NOW + LEASE_MS, id)
  redis.call('HSET', jk(id), 'ckey', key)
end
-- Appends job `id`'s entry to stream `on`: its spec, the attempt its claim
-- will run (the record's attempts + 1: a router can prepare the container
-- while it claims) and its id (a claim finds the record without parsing the
-- spec: kClaimNext). Returns the entry id.
local function add_entry(on, id, spec, attempts)
  return redis.call('XADD', P .. 'stream:' .. on, '*', 'job', spec, 'attempt',
                    (tonumber(attempts) or 0) + 1, 'id', id)
end
-- Wakes up to `n` waiters of `key`: each gets the key reserved (so no newer
-- job overtakes it) and goes back onto its stream.
local function wake_waiters(key, n)
  local wl = P .. 'ckwait:' .. key
  while n > 0 do
    local wid = redis.call('LPOP', wl)
    if not wid then break end
    local f = redis.call('HMGET', jk(wid), 'state', 'queue', 'spec', 'parked', 'attempts')
    if f[1] == 'queued' and f[4] == key then
      hold_key(wid, key)
      local entry = add_entry(f[2], wid, f[3], f[5])
      redis.call('HSET', jk(wid), 'entry', entry, 'parked', '')
      n = n - 1
    end
  end
  if redis.call('LLEN', wl) == 0 then redis.call('SREM', P .. 'ckwaiting', key) end
end
-- The job no longer runs (finished, retried later, handed back, cancelled):
-- its key goes to the next waiter. `key`: the record's `ckey` when the caller
-- read it already (false/nil: read here).
local function release_key(id, key)
  if key == nil then key = redis.call('HGET', jk(id), 'ckey') end
  if not key or key == '' then return end
  redis.call('HSET', jk(id), 'ckey', '')
  redis.call('ZREM', ck(key), id)
  local free = room(key)
  if free > 0 then wake_waiters(key, free) end
end
-- Takes the key for a job about to run, or parks the job behind the key's
-- waiters (FIFO: a newcomer never overtakes them). True when it may run.
local function admit(id, key, queue, entry)
  if key == '' then return true end
  if redis.call('ZSCORE', ck(key), id) then
    hold_key(id, key)  -- reserved when it was woken, or held across a reclaim
    return true
  end
  local free = room(key)
  local wl = P .. 'ckwait:' .. key
  if free > 0 and redis.call('LLEN', wl) == 0 then
    hold_key(id, key)
    return true
  end
  redis.call('RPUSH', wl, id)
  redis.call('SADD', P .. 'ckwaiting', key)
  -- Off every stream now: woken, it goes to its queue's shared stream.
  redis.call('HSET', jk(id), 'parked', key, 'on', '')
  ack(queue, entry)
  if free > 0 then wake_waiters(key, free) end
  return false
end
-- Claims queued job `id` from stream entry `entry` for `consumer`; `indexed`
-- names the state index it is in (nil: none yet). A retry's previous run
-- fields are cleared. Returns its new state and attempt count.
local function take(id, entry, consumer, attempts, indexed)
  local to = next_state('queued', 'claimed')
  attempts = attempts + 1
  if attempts == 1 then
    redis.call('HSET', jk(id), 'state', to, 'attempts', attempts, 'entry', entry,
               'consumer', consumer, 'router_id', consumer, 'on', '')
  else
    redis.call('HSET', jk(id), 'state', to, 'attempts', attempts, 'entry', entry,
               'consumer', consumer, 'router_id', consumer, 'on', '', 'image', '',
               'container_id', '',
               'exit_code', '', 'from_snapshot', '0', 'snapshot_fallback', '0',
               'started_at', '', 'due_at', '', 'snapseen', '', 'snapbuild_ms', '')
  end
  move_state(id, indexed, to)
  return to, attempts
end
-- A claim's hint for the next one: true when stream `on` holds an entry
-- after `last`, the last one a full read (COUNT entries) took from it. An
-- entry another router holds counts too: the hint can be wrong, never unsafe.
local function more_after(on, last)
  local newest = redis.call('XREVRANGE', P .. 'stream:' .. on, '+', '-', 'COUNT', 1)[1]
  return newest ~= nil and newest[1] ~= last
end
-- Puts job `id` onto its queue's stream, or onto `host`'s own stream when a
-- router of that host is live (snapshot affinity: it waits there until
-- promote_due's affinity wait ends). Returns the host it went to ('' none).
-- `attempts`: the record's (add_entry).
local function to_stream(id, queue, spec, host, attempts)
  local on = queue
  if host ~= '' and redis.call('EXISTS', P .. 'hostlive:' .. host) == 1 then
    on = queue .. '@' .. host
    redis.call('ZADD', P .. 'affq:' .. host, NOW, id)
    redis.call('SADD', P .. 'affhosts', host)
    redis.call('SADD', P .. 'hoststreams', on)
  else
    host = ''
  end
  local entry = add_entry(on, id, spec, attempts)
  redis.call('HSET', jk(id), 'entry', entry)
  if host ~= '' then redis.call('HSET', jk(id), 'on', on, 'affhost', host) end
  return host
end
-- A claimed job goes back to `scheduled`, due at `due`, without spending its
-- attempt (the next claim runs, and names its container, as the same attempt).
-- The caller acked its entry and released its key. False: not allowed from `state`.
local function give_back(id, state, attempts, due)
  local to = next_state(state, 'handed_back')
  if not to then return false end
  redis.call('HSET', jk(id), 'state', to, 'attempts', math.max(0, (tonumber(attempts) or 1) - 1),
             'due_at', due, 'consumer', '', 'container_id', '')
  redis.call('ZADD', P .. 'scheduled', due, id)
  move_state(id, state, to)
  return true
end
-- A report on a claimed job: its hash fields 'state', 'entry', 'consumer' and
-- the ones named after `queue`, while this claim (stream entry and consumer)
-- still holds it. Else nil and the reply: {'missing'} (the record is gone: the
-- entry is acked) or {'lost'} (another claim holds it now).
local function held(id, entry, consumer, queue, ...)
  local f = redis.call('HMGET', jk(id), 'state', 'entry', 'consumer', ...)
  if not f[1] then
    ack(queue, entry)
    return nil, {'missing'}
  end
  if f[2] ~= entry or f[3] ~= consumer then return nil, {'lost'} end
  return f
end
-- Single-flight cold starts: `build:<key>` names the key's builder job
-- (lease-backed), `buildwait:<key>` the jobs waiting for it, `builds` the keys.
local function bk(key) return P .. 'build:' .. key end
-- Fleet: `router:<id>` is a router's record, `routers` the ids (docs/fleet.md).
local function rk(id) return P .. 'router:' .. id end
-- {member, value, ...} of the set `s` whose string key_of(member) still
-- exists; the members whose key expired are taken out of the set.
local function live_members(s, key_of)
  local out = {}
  for _, m in ipairs(redis.call('SMEMBERS', s)) do
    local value = redis.call('GET', key_of(m))
    if value then
      out[#out + 1] = m
      out[#out + 1] = value
    else
      redis.call('SREM', s, m)
    end
  end
  return out
end
local function flush_deferred()
  for queue, entries in pairs(DEFER.ack) do
    local s = P .. 'stream:' .. queue
    call_chunked('XACK', s, {GROUP}, entries, 1000)
    call_chunked('XDEL', s, {}, entries, 1000)
  end
  for state, ids in pairs(DEFER.rem) do call_chunked('ZREM', P .. 'state:' .. state, {}, ids, 1000) end
  for state, pairs_ in pairs(DEFER.add) do
    call_chunked('ZADD', P .. 'state:' .. state, {}, pairs_, 1000)
  end
  for state in pairs(DEFER.retire) do
    redis.call('ZREMRANGEBYSCORE', P .. 'state:' .. state, '-inf', '(' .. (NOW - RETENTION_MS))
  end
end
)lua";

// ARGV[9..15]: id, queue, spec JSON, max_attempts, spec fingerprint, snapshot
// key whose affinity routes the job ('' none: the job does not reuse one),
// the spec's concurrency key ('' none; kept as `ckspec` for kClaimNext).
// A job whose key's snapshot is held by a live host goes to that host's own
// stream `<queue>@<host>` (field `on`), noted in `affq:<host>` for
// promote_due's wait. Returns 1 when created, {'conflict', stored fingerprint} when the id exists
// with another spec, else the existing record (HGETALL).
inline constexpr const char* kEnqueue = R"lua(
local id, queue, spec, max, hash, akey = ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14]
local ckey = ARGV[15]
local k = jk(id)
if redis.call('EXISTS', k) == 1 then
  local stored = redis.call('HGET', k, 'spec_hash')
  if stored and stored ~= '' and stored ~= hash then return {'conflict', stored} end
  return redis.call('HGETALL', k)
end
local host = ''
if akey ~= '' then host = redis.call('HGET', P .. 'affinity', akey) or '' end
host = to_stream(id, queue, spec, host, 0)
redis.call('HSET', k, 'id', id, 'state', 'queued', 'attempts', 0, 'max_attempts', max,
           'queue', queue, 'created_at', NOW_S, 'spec', spec, 'spec_hash', hash, 'ckspec', ckey)
move_state(id, nil, 'queued')
redis.call('SADD', P .. 'queues', queue)
if host ~= '' then
  emit({type = 'job.queued', job = id, queue = queue, host = host})
else
  emit({type = 'job.queued', job = id, queue = queue})
end
return 1
)lua";

// ARGV[9] consumer, ARGV[10] '1' when reclaiming, ARGV[11] max reclaims,
// ARGV[12] the COUNT the entries were read with (0: reclaimed, no hint), then
// per entry 6 values: stream ('<queue>' or a host's '<queue>@<host>'), entry
// id, 'ok' | 'bad', job id, spec JSON | reason, concurrency key ('' none).
// Returns {items, more}: `more` is 1 when a stream read in full holds more
// entries (more_after: the next claim reads with kClaimNext), and per entry
// an item {entry, outcome, id, ...}:
//   claimed:   {entry, 'claimed', id, state, attempts, created_at, affinity
//              host} (the caller has the spec it sent: no record round trip
//              on the hot path)
//   reclaimed: {entry, 'reclaimed', id, record (HGETALL)}
//   rejected:  {entry, 'rejected', id, reason}
//   skipped:   {entry, 'skipped', id, state}
//   parked:    {entry, 'parked', id, key} (waits off the stream for its key)
inline constexpr const char* kClaim = R"lua(
local consumer, reclaim, max_reclaims = ARGV[9], ARGV[10] == '1', tonumber(ARGV[11])
local count = tonumber(ARGV[12])
local out = {}
local read = {}  -- stream -> {entries, last entry}
for i = 13, #ARGV, 6 do
  local queue, entry, mode, id, data, key =
    ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  -- `queue` names the stream (acks go there); a host stream's queue is its prefix.
  local real_queue = queue:match('^([^@]*)')
  local host_stream = real_queue ~= queue
  if mode == 'bad' then
    local own = id ~= '' and redis.call('HMGET', jk(id), 'state', 'entry') or {}
    if own[1] == 'queued' and own[2] == entry then
      -- The job queued on this very entry, whose spec this router refuses
      -- (ceilings lower than its enqueuer's): that job fails, never to wait on.
      redis.call('HSET', jk(id), 'state', next_state('queued', 'failed'), 'finished_at', NOW_S,
                 'error', data)
      move_state(id, 'queued', 'failed')
      release_key(id)  -- a woken waiter holds its key's reservation
    else
      -- A malformed entry never touches another record, whatever id it claims.
      if id == '' or redis.call('EXISTS', jk(id)) == 1 then id = 'raw-' .. queue .. '-' .. entry end
      redis.call('HSET', jk(id), 'id', id, 'state', 'failed', 'attempts', 0, 'max_attempts', 1,
                 'queue', real_queue, 'created_at', NOW_S, 'finished_at', NOW_S, 'error', data,
                 'entry', entry)
      move_state(id, nil, 'failed')
    end
    emit({type = 'job.failed', job = id, error = data})
    retire(id, 'failed')
    ack(queue, entry)
    out[#out + 1] = {entry, 'rejected', id, data}
  else
    local k = jk(id)
    local f = redis.call('HMGET', k, 'state', 'entry', 'consumer', 'attempts', 'created_at', 'on',
                         'affhost')
    local state, indexed, attempts, created = f[1], f[1], tonumber(f[4]) or 0, f[5]
    -- A queued job's current entry is the one its record names, on the stream
    -- it names: another is a stale copy (promote_due moved it off a host's stream).
    local stale = state == 'queued' and ((f[2] and f[2] ~= entry) or
                                         (f[6] or '') ~= (host_stream and queue or ''))
    if not state then
      -- A valid job another producer XADDed directly: adopt it (it goes
      -- straight to its claimed state in the index below).
      local spec = cjson.decode(data)
      redis.call('HSET', k, 'id', id, 'max_attempts', spec.max_attempts or 1, 'queue', real_queue,
                 'created_at', NOW_S, 'spec', data, 'ckspec', key)
      if host_stream then redis.call('HSET', k, 'on', queue) end
      redis.call('SADD', P .. 'queues', real_queue)
      emit({type = 'job.queued', job = id, queue = real_queue})
      state, indexed, created = 'queued', nil, NOW_S
    end
    local to_claim = next_state(state, 'claimed')
    if state == 'queued' and to_claim and not stale and not admit(id, key, queue, entry) then
      if not indexed then
        redis.call('HSET', k, 'state', 'queued')
        move_state(id, nil, 'queued')
      end
      out[#out + 1] = {entry, 'parked', id, key}
    elseif state == 'queued' and to_claim and not stale then
      local to
      to, attempts = take(id, entry, consumer, attempts, indexed)
      out[#out + 1] = {entry, 'claimed', id, to, attempts, created, f[7] or ''}
    elseif reclaim and f[2] == entry and next_state(state, 'reclaimed') then
      local n = redis.call('HINCRBY', k, 'reclaims', 1)
      if n > max_reclaims then
        local reason = 'lease expired ' .. n .. ' times: routers lost the job'
        local to = next_state(state, 'failed')
        redis.call('HSET', k, 'state', to, 'error', reason, 'finished_at', NOW_S)
        move_state(id, state, to)
        emit({type = 'job.failed', job = id, error = reason})
        retire(id, to)
        ack(queue, entry)
        release_key(id)
        out[#out + 1] = {entry, 'rejected', id, reason}
      else
        -- It ran already: it keeps its key whatever the limit says now.
        if key ~= '' then hold_key(id, key) end
        redis.call('HSET', k, 'consumer', consumer, 'router_id', consumer)
        out[#out + 1] = {entry, 'reclaimed', id, redis.call('HGETALL', k)}
      end
    else
      -- Cancelled, finished, scheduled, or a stale duplicate: nothing to run.
      ack(queue, entry)
      out[#out + 1] = {entry, 'skipped', id, state}
    end
  end
  local r = read[queue] or {0}
  r[1], r[2] = r[1] + 1, entry
  read[queue] = r
end
local more = 0
for on, r in pairs(read) do
  if count > 0 and r[1] >= count and more_after(on, r[2]) then more = 1 end
end
return {out, more}
)lua";

// The claim of a router that entries wait for (the last claim's `more`):
// the read and the claim in one round trip. ARGV[9] consumer, ARGV[10]
// COUNT, ARGV[11..] the streams ('<queue>' or '<queue>@<host>'). Reads up to
// COUNT new entries per stream (XREADGROUP, never blocking) and claims each
// one warmstart wrote itself (add_entry): the entry names the job, whose
// record is queued on this very entry and stream and holds the spec's
// concurrency key (`ckspec`, written at enqueue). The spec was validated at
// enqueue; the caller checks it again against its own limits. Returns
// {items, more} (kClaim's `more`), per entry an item:
//   {stream, entry, 'claimed', id, state, attempts, created_at, affinity host, spec}
//   {stream, entry, 'parked', id, key}
//   {stream, entry, 'unchecked', fields}: any other entry (a producer's own
//     XADD, a stale copy, a cancelled job, an older version's entry), now
//     pending for the consumer: the caller validates it and sends it through
//     kClaim, as if its own XREADGROUP had read it.
inline constexpr const char* kClaimNext = R"lua(
local consumer, count = ARGV[9], tonumber(ARGV[10])
local read = {'XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', count, 'STREAMS'}
for i = 11, #ARGV do read[#read + 1] = P .. 'stream:' .. ARGV[i] end
for i = 11, #ARGV do read[#read + 1] = '>' end
local streams = redis.call(unpack(read))
local out, more = {}, 0
if not streams then return {out, more} end
local skip = #P + #'stream:'
for _, s in ipairs(streams) do
  local on = string.sub(s[1], skip + 1)
  local host_stream = on:find('@', 1, true) ~= nil
  local last
  for _, e in ipairs(s[2]) do
    local entry, fields = e[1], e[2]
    last = entry
    local id
    for j = 1, #fields - 1, 2 do
      if fields[j] == 'id' then id = fields[j + 1] end
    end
    local f = id and redis.call('HMGET', jk(id), 'state', 'entry', 'on', 'attempts', 'created_at',
                                'affhost', 'spec', 'ckspec')
    if f and f[1] == 'queued' and f[2] == entry and (f[3] or '') == (host_stream and on or '')
        and f[7] and f[8] then
      if admit(id, f[8], on, entry) then
        local to, attempts = take(id, entry, consumer, tonumber(f[4]) or 0, 'queued')
        out[#out + 1] = {on, entry, 'claimed', id, to, attempts, f[5] or '', f[6] or '', f[7]}
      else
        out[#out + 1] = {on, entry, 'parked', id, f[8]}
      end
    else
      out[#out + 1] = {on, entry, 'unchecked', fields}
    end
  end
  if last and #s[2] >= count and more_after(on, last) then more = 1 end
end
return {out, more}
)lua";

// ARGV[9] consumer, then triples: queue, entry, id. Returns {lost ids,
// cancelled ids}: one round trip renews the leases and reports the cancels
// whose message may have been lost.
inline constexpr const char* kRenew = R"lua(
local consumer = ARGV[9]
local lost, cancelled = {}, {}
for i = 10, #ARGV, 3 do
  local queue, entry, id = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local f = redis.call('HMGET', jk(id), 'consumer', 'entry', 'state', 'ckey', 'building')
  local held = f[1] == consumer and f[2] == entry and (f[3] == 'running' or f[3] == 'cancelled')
  if held then
    -- JUSTID: resets the idle time without counting a delivery.
    local r = redis.call('XCLAIM', P .. 'stream:' .. queue, GROUP, consumer, 0, entry, 'JUSTID')
    held = #r == 1
  end
  if not held then
    lost[#lost + 1] = id
  else
    -- Not XX: a hold that ran out while renewals were late (and was trimmed)
    -- is taken back, else the key's limit would no longer count this job.
    if f[4] and f[4] ~= '' then redis.call('ZADD', ck(f[4]), NOW + LEASE_MS, id) end
    if f[5] and f[5] ~= '' and redis.call('GET', bk(f[5])) == id then
      redis.call('PEXPIRE', bk(f[5]), LEASE_MS)
    end
    if f[3] == 'cancelled' then cancelled[#cancelled + 1] = id end
  end
end
return {lost, cancelled}
)lua";

// ARGV[9..19]: id, entry, consumer, image, from_snapshot, snapshot_fallback,
// container id, router id, host id, the snapshot image the lookup saw and the
// build ms it started from (both '' for a job without a snapshot key: not
// written). Returns {'ok', state} (running, or cancelled when a
// cancel won the race) | {'lost'} | {'illegal', state}.
inline constexpr const char* kMarkRunning = R"lua(
local id, entry, consumer = ARGV[9], ARGV[10], ARGV[11]
local k = jk(id)
local f = redis.call('HMGET', k, 'state', 'entry', 'consumer')
if not f[1] or f[2] ~= entry or f[3] ~= consumer then return {'lost'} end
if f[1] == 'cancelled' then return {'ok', 'cancelled'} end
local to = next_state(f[1], 'started')
if not to then return {'illegal', f[1]} end
local router = ARGV[16] ~= '' and ARGV[16] or consumer
local run = {'state', to, 'image', ARGV[12], 'from_snapshot', ARGV[13], 'snapshot_fallback',
             ARGV[14], 'container_id', ARGV[15], 'router_id', router, 'started_at', NOW_S,
             'host', ARGV[17]}
if ARGV[19] ~= '' then
  -- A job with a snapshot key: what a re-attaching router commits against.
  for _, v in ipairs({'snapseen', ARGV[18], 'snapbuild_ms', ARGV[19]}) do run[#run + 1] = v end
end
redis.call('HSET', k, unpack(run))
move_state(id, f[1], to)
local g = redis.call('HMGET', k, 'attempts', 'affhost')
local ev = {type = 'job.started', job = id, image = ARGV[12], from_snapshot = ARGV[13] == '1',
            container = ARGV[15], router = router, attempt = tonumber(g[1])}
if ARGV[17] ~= '' then ev.host = ARGV[17] end
if g[2] and g[2] ~= '' and ARGV[17] ~= '' then
  ev.affinity = (g[2] == ARGV[17]) and 'hit' or 'miss'
end
emit(ev)
return {'ok', to}
)lua";

// Batched (queue/script_batcher.hpp): ARGV[9..] holds items of 9 values: id,
// entry, consumer, queue, result state, exit code ('' none), error, snapshot
// error ('' none), log tail ('' none). Returns one
// reply per item: {'ok', state, finished_at, exit_code, error} | {'lost'} |
// {'missing'} | {'illegal', state}. (Not the record: reading it back cost a
// fifth of the script's time, and the router does not need it.)
inline constexpr const char* kFinish = R"lua(
local function stored(k)
  local f = redis.call('HMGET', k, 'state', 'finished_at', 'exit_code', 'error')
  return {'ok', f[1], f[2] or '', f[3] or '', f[4] or ''}
end
-- Per job: one HMGET (the lease and the key held), one HSET, the event, the
-- expiry; the indexes and acks are deferred (one command per key per batch).
local function finish(id, entry, consumer, queue, result, code, err, snap_err, tail)
  local k = jk(id)
  local f, refused = held(id, entry, consumer, queue, 'ckey')
  if not f then return refused end
  local event = result
  if result == 'cancelled' then event = 'cancel' end
  local to = next_state(f[1], event)
  if not to then
    if tail ~= '' then redis.call('HSET', k, 'log_tail', tail) end
    -- Cancelled while running: the router's report only releases the entry.
    if TERMINAL[f[1]] then
      ack(queue, entry)
      release_key(id, f[4])
      if snap_err ~= '' then redis.call('HSET', k, 'snapshot_error', snap_err) end
      return stored(k)
    end
    return {'illegal', f[1]}
  end
  local fields = {'state', to, 'finished_at', NOW_S, 'exit_code', code, 'error', err,
                  'snapshot_error', snap_err}
  if tail ~= '' then
    fields[#fields + 1] = 'log_tail'
    fields[#fields + 1] = tail
  end
  redis.call('HSET', k, unpack(fields))
  move_state(id, f[1], to)
  local ev = {type = 'job.' .. to, job = id}
  if code ~= '' then ev.exit_code = tonumber(code) end
  if err ~= '' then ev.error = err end
  if snap_err ~= '' then ev.snapshot_error = snap_err end
  emit(ev)
  ack(queue, entry)
  retire(id, to)
  release_key(id, f[4])
  return {'ok', to, NOW_S, code, err}
end
local out = {}
for i = 9, #ARGV, 9 do
  out[#out + 1] = finish(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4],
                         ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], ARGV[i + 8])
end
return out
)lua";

// ARGV[9..15]: id, entry, consumer, queue, reason, retryable '1'/'0', delay ms.
inline constexpr const char* kFailAttempt = R"lua(
local id, entry, consumer, queue, reason, retryable, delay =
  ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], ARGV[14] == '1', tonumber(ARGV[15])
local k = jk(id)
local f, refused = held(id, entry, consumer, queue, 'attempts', 'max_attempts')
if not f then return refused end
if TERMINAL[f[1]] then
  ack(queue, entry)
  release_key(id)
  return {'ok', redis.call('HGETALL', k)}
end
release_key(id)
local attempts, max = tonumber(f[4]), tonumber(f[5])
if retryable and attempts < max then
  local to = next_state(f[1], 'retry_scheduled')
  if not to then return {'illegal', f[1]} end
  local due = NOW + delay
  redis.call('HSET', k, 'state', to, 'error', reason, 'due_at', due)
  redis.call('ZADD', P .. 'scheduled', due, id)
  move_state(id, f[1], to)
  ack(queue, entry)
  emit({type = 'job.retry_scheduled', job = id, attempt = attempts, delay_s = delay / 1000,
        error = reason})
else
  local to = next_state(f[1], 'failed')
  if not to then return {'illegal', f[1]} end
  local err = reason
  if retryable then err = reason .. ' (attempts exhausted: ' .. attempts .. '/' .. max .. ')' end
  redis.call('HSET', k, 'state', to, 'error', err, 'finished_at', NOW_S)
  move_state(id, f[1], to)
  emit({type = 'job.failed', job = id, error = err})
  ack(queue, entry)
  retire(id, to)
end
return {'ok', redis.call('HGETALL', k)}
)lua";

// ARGV[9..14]: id, entry, consumer, queue, reason, delay ms. The attempt is
// not spent: `attempts` goes back down, so the next claim runs (and names its
// container) as the same attempt. Returns {'ok'} | {'lost'} | {'missing'}.
inline constexpr const char* kHandBack = R"lua(
local id, entry, consumer, queue, reason, delay =
  ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13], tonumber(ARGV[14])
local f, refused = held(id, entry, consumer, queue, 'attempts')
if not f then return refused end
ack(queue, entry)
release_key(id)
if TERMINAL[f[1]] then return {'ok'} end
if not give_back(id, f[1], f[4], NOW + delay) then return {'illegal', f[1]} end
emit({type = 'job.deferred', job = id, reason = reason, delay_s = delay / 1000})
return {'ok'}
)lua";

// ARGV[9] limit. Returns {promoted, next due (Unix ms) or -1}. Also wakes the
// waiters of concurrency keys whose holders' leases ran out.
inline constexpr const char* kPromote = R"lua(
local LIMIT, WAIT = tonumber(ARGV[9]), tonumber(ARGV[10])
local ids = redis.call('ZRANGEBYSCORE', P .. 'scheduled', '-inf', NOW_S, 'LIMIT', 0, LIMIT)
local n = 0
for _, id in ipairs(ids) do
  redis.call('ZREM', P .. 'scheduled', id)
  local k = jk(id)
  local f = redis.call('HMGET', k, 'state', 'queue', 'spec', 'attempts')
  local to = f[1] and next_state(f[1], 'retry_due')
  if to then
    to_stream(id, f[2], f[3], '', f[4])
    redis.call('HSET', k, 'state', to, 'due_at', '', 'buildwait', '')
    move_state(id, f[1], to)
    n = n + 1
  end
end
for _, key in ipairs(redis.call('SMEMBERS', P .. 'ckwaiting')) do
  local free = room(key)
  if free > 0 then wake_waiters(key, free) end
end
local nxt = tonumber(redis.call('ZRANGE', P .. 'scheduled', 0, 0, 'WITHSCORES')[2] or '-1')
-- Snapshot affinity: a job leaves its host's stream for the shared one once
-- it waited WAIT ms, or at once when no router of the host is live.
for _, h in ipairs(redis.call('SMEMBERS', P .. 'affhosts')) do
  local z = P .. 'affq:' .. h
  local live = redis.call('EXISTS', P .. 'hostlive:' .. h) == 1
  local upto = '+inf'
  if live then upto = '(' .. (NOW - WAIT) end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', z, '-inf', upto, 'LIMIT', 0, LIMIT)) do
    redis.call('ZREM', z, id)
    local f = redis.call('HMGET', jk(id), 'state', 'queue', 'spec', 'entry', 'on', 'parked',
                         'attempts')
    if f[1] == 'queued' and f[5] and f[5] ~= '' and (f[6] or '') == '' then
      redis.call('XDEL', P .. 'stream:' .. f[5], f[4])
      local entry = add_entry(f[2], id, f[3], f[7])
      redis.call('HSET', jk(id), 'entry', entry, 'on', '')
      emit({type = 'job.affinity_released', job = id, host = h,
            reason = live and 'waited' or 'host lost'})
      n = n + 1
    end
  end
  local first = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
  if not first[2] then
    redis.call('SREM', P .. 'affhosts', h)
  elseif live then
    local due = tonumber(first[2]) + WAIT + 1
    if nxt < 0 or due < nxt then nxt = due end
  end
end
return {n, tostring(nxt)}
)lua";

// ARGV[9] id. Returns {outcome, previous state}.
inline constexpr const char* kCancel = R"lua(
local id = ARGV[9]
local k = jk(id)
local f = redis.call('HMGET', k, 'state', 'queue', 'entry', 'router_id', 'parked', 'on')
if not f[1] then return {'not_found'} end
local to = next_state(f[1], 'cancel')
if not to then return {'already_finished', f[1]} end
local outcome = 'cancelled'
if f[1] == 'queued' then
  -- Not delivered yet: it never will be. Delivered but not claimed: the
  -- claim script sees `cancelled` and acknowledges it.
  local on = f[2]
  if f[6] and f[6] ~= '' then on = f[6] end  -- on a host's stream (snapshot affinity)
  redis.call('XDEL', P .. 'stream:' .. on, f[3])
  if f[5] and f[5] ~= '' then
    redis.call('LREM', P .. 'ckwait:' .. f[5], 0, id)
    redis.call('HSET', k, 'parked', '')
  end
  release_key(id)  -- a woken waiter's reservation
elseif f[1] == 'scheduled' then
  redis.call('ZREM', P .. 'scheduled', id)
elseif f[1] == 'running' then
  redis.call('PUBLISH', P .. 'cancel', cjson.encode({job = id, router = f[4]}))
  outcome = 'router_notified'
end
redis.call('HSET', k, 'state', to, 'finished_at', NOW_S)
move_state(id, f[1], to)
emit({type = 'job.cancelled', job = id, previous_state = f[1]})
retire(id, to)
return {outcome, f[1]}
)lua";

// ARGV[9] state, ARGV[10] limit. Records newest first (missing ones skipped).
inline constexpr const char* kList = R"lua(
local ids = redis.call('ZREVRANGE', P .. 'state:' .. ARGV[9], 0, tonumber(ARGV[10]) - 1)
local out = {}
for _, id in ipairs(ids) do
  local r = redis.call('HGETALL', jk(id))
  if #r > 0 then out[#out + 1] = r end
end
return out
)lua";

// ARGV[9..]: state names. Returns {per-state counts..., {queue, depth}..., due}.
inline constexpr const char* kCounts = R"lua(
local out = {}
for i = 9, #ARGV do out[#out + 1] = redis.call('ZCARD', P .. 'state:' .. ARGV[i]) end
local depth = {}
local by_queue = {}
for _, q in ipairs(redis.call('SMEMBERS', P .. 'queues')) do
  by_queue[q] = redis.call('XLEN', P .. 'stream:' .. q)
end
-- Jobs waiting on a host's own stream (snapshot affinity) count for their queue.
for _, s in ipairs(redis.call('SMEMBERS', P .. 'hoststreams')) do
  local q = s:match('^([^@]*)@')
  if q and by_queue[q] then by_queue[q] = by_queue[q] + redis.call('XLEN', P .. 'stream:' .. s) end
end
for q, n in pairs(by_queue) do
  depth[#depth + 1] = q
  depth[#depth + 1] = n
end
out[#out + 1] = depth
out[#out + 1] = redis.call('ZCOUNT', P .. 'scheduled', '-inf', NOW_S)
return out
)lua";

// ARGV[9] id, ARGV[10] tail. 1 when stored, 0 when the job does not exist.
inline constexpr const char* kSetLogTail = R"lua(
if redis.call('EXISTS', jk(ARGV[9])) == 0 then return 0 end
redis.call('HSET', jk(ARGV[9]), 'log_tail', ARGV[10])
return 1
)lua";

// ARGV[9] snapshot key, ARGV[10] host: forgets the key's affinity if it
// still names that host.
inline constexpr const char* kDropAffinity = R"lua(
if redis.call('HGET', P .. 'affinity', ARGV[9]) == ARGV[10] then
  redis.call('HDEL', P .. 'affinity', ARGV[9])
  return 1
end
return 0
)lua";

// ARGV[9..11]: snapshot key, job id, '1' to take. Returns the builder ('' none).
inline constexpr const char* kBeginBuild = R"lua(
local key, id, take = ARGV[9], ARGV[10], ARGV[11] == '1'
local holder = redis.call('GET', bk(key))
if holder then
  if holder == id then redis.call('PEXPIRE', bk(key), LEASE_MS) end
  return holder
end
if not take or redis.call('EXISTS', jk(id)) == 0 then return '' end
redis.call('SET', bk(key), id, 'PX', LEASE_MS)
redis.call('SADD', P .. 'builds', key)
redis.call('HSET', jk(id), 'building', key)
emit({type = 'snapshot.build_started', key = key, job = id})
return id
)lua";

// ARGV[9..16]: id, entry, consumer, queue, snapshot key, builder, poll ms,
// max wait ms. Returns {'ok'} | {'over'} | {'gone'} | {'lost'} | {'missing'} |
// {'illegal', state}.
inline constexpr const char* kWaitForBuild = R"lua(
local id, entry, consumer, queue, key, builder = ARGV[9], ARGV[10], ARGV[11], ARGV[12], ARGV[13],
                                                 ARGV[14]
local poll, max_wait = tonumber(ARGV[15]), tonumber(ARGV[16])
local k = jk(id)
local f, refused = held(id, entry, consumer, queue, 'attempts', 'buildsince')
if not f then return refused end
local since = tonumber(f[5]) or NOW
if NOW - since >= max_wait then return {'over'} end
if redis.call('GET', bk(key)) ~= builder then return {'gone'} end
ack(queue, entry)
release_key(id)
if TERMINAL[f[1]] then return {'ok'} end
if not give_back(id, f[1], f[4], NOW + math.min(poll, since + max_wait - NOW)) then
  return {'illegal', f[1]}
end
local w = P .. 'buildwait:' .. key
redis.call('HSET', k, 'buildwait', key, 'buildsince', since)
redis.call('SADD', w, id)
redis.call('PEXPIRE', w, max_wait + LEASE_MS)
emit({type = 'snapshot.build_waiters', key = key, builder = builder, job = id,
      waiters = redis.call('SCARD', w)})
return {'ok'}
)lua";

// ARGV[9..11]: snapshot key, job id, host ('' none). Returns how many woke.
inline constexpr const char* kEndBuild = R"lua(
local key, id, host = ARGV[9], ARGV[10], ARGV[11]
if redis.call('GET', bk(key)) == id then
  redis.call('DEL', bk(key))
  redis.call('SREM', P .. 'builds', key)
end
if redis.call('HGET', jk(id), 'building') == key then redis.call('HSET', jk(id), 'building', '') end
local w = P .. 'buildwait:' .. key
local n = 0
for _, wid in ipairs(redis.call('SMEMBERS', w)) do
  local f = redis.call('HMGET', jk(wid), 'state', 'queue', 'spec', 'buildwait', 'attempts')
  local to = f[1] and next_state(f[1], 'retry_due')
  if f[1] == 'scheduled' and f[4] == key and to then
    redis.call('ZREM', P .. 'scheduled', wid)
    to_stream(wid, f[2], f[3], host, f[5])
    redis.call('HSET', jk(wid), 'state', to, 'due_at', '', 'buildwait', '')
    move_state(wid, f[1], to)
    n = n + 1
  end
end
redis.call('DEL', w)
emit({type = 'snapshot.build_ended', key = key, job = id, woken = n})
return n
)lua";

// Returns {key, builder, ...} of every key being built.
inline constexpr const char* kBuilds = R"lua(
return live_members(P .. 'builds', bk)
)lua";

// ARGV[9] router id, [10] its record (JSON), [11] how long the record is kept
// (ms), [12] host id ('' for none), [13] '1' while the router drains, [14] its
// lease (ms). One key per router with its own expiry (a hash field cannot
// expire on Redis 7.0) and a set of ids to list them (kRouters prunes). The
// host is live for snapshot affinity (enqueue routes jobs to it) for one lease
// after each heartbeat, and not at all while its router drains.
inline constexpr const char* kHeartbeat = R"lua(
local id, host = ARGV[9], ARGV[12]
redis.call('SET', rk(id), ARGV[10], 'PX', ARGV[11])
redis.call('SADD', P .. 'routers', id)
if host ~= '' then
  if ARGV[13] == '1' then
    redis.call('DEL', P .. 'hostlive:' .. host)
  else
    redis.call('SET', P .. 'hostlive:' .. host, id, 'PX', ARGV[14])
  end
end
return 1
)lua";

// Returns {id, record, ...} of every router whose record has not expired,
// forgetting the ids of those that have.
inline constexpr const char* kRouters = R"lua(
return live_members(P .. 'routers', rk)
)lua";

}  // namespace warmstart::queue::scripts
