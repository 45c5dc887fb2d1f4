// queue_bench [REDIS_URL] [JOBS] [CONCURRENCY] [CLAIM_BATCH] [queue|floor]
// Throughput of RedisQueue against a real Redis: JOBS no-op jobs enqueued by
// CONCURRENCY coroutines (pipelined on one connection), then claimed in
// batches and finished by CONCURRENCY consumers. Prints one JSON object.
// Keys live under a unique prefix and are deleted at the end.
//
// Mode `floor` (the queue's physical limit in this Redis): the same enqueue,
// then claim+ack by two bare scripts that make only the writes the contract
// asks of a claim and a finish (docs/queue.md: the record's fields, the state
// indexes, the event, the expiry, the ack) and nothing else: no lease or state
// check, no state machine, the event's JSON built by concatenation, a whole
// claimed batch finished in one call. Not a queue (it would finish a job it
// lost); the least Redis work any queue keeping this contract can do.
#include "bench/bench_support.hpp"
#include "common/log.hpp"
#include "common/time.hpp"
#include "queue/redis_queue.hpp"

#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>

using namespace warmstart;
using namespace warmstart::queue;
using warmstart::bench::delete_prefix;

namespace {

// Floor mode's claim. ARGV: key prefix, group, consumer, COUNT, now (ms),
// queue. Reads up to COUNT new entries and writes what RedisQueue's claim
// writes per job (take(): the record's run fields; the state indexes moved
// once per batch). Returns {id, entry, ...}.
constexpr const char* kFloorClaim = R"lua(
local P, group, consumer, now, queue = ARGV[1], ARGV[2], ARGV[3], ARGV[5], ARGV[6]
local r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', ARGV[4], 'STREAMS',
                     P .. 'stream:' .. queue, '>')
local out, ids, adds = {}, {}, {}
if not r or #r[1][2] == 0 then return out end
for _, e in ipairs(r[1][2]) do
  local fields, id = e[2], nil
  for j = 1, #fields - 1, 2 do
    if fields[j] == 'id' then id = fields[j + 1] end
  end
  redis.call('HSET', P .. 'job:' .. id, 'state', 'running', 'attempts', 1, 'entry', e[1],
             'consumer', consumer, 'router_id', consumer, 'on', '')
  ids[#ids + 1] = id
  adds[#adds + 1] = now
  adds[#adds + 1] = id
  out[#out + 1] = id
  out[#out + 1] = e[1]
end
redis.call('ZREM', P .. 'state:queued', unpack(ids))
redis.call('ZADD', P .. 'state:running', unpack(adds))
return out
)lua";

// Floor mode's finish. ARGV: key prefix, group, now (ms), now (RFC 3339),
// queue, events MAXLEN, retention (ms), then pairs id, entry. Writes what
// RedisQueue's finish writes per job (the record's result fields, the
// job.succeeded event, the expiry) and per batch (ack, delete, the state
// indexes, the retention sweep).
constexpr const char* kFloorFinish = R"lua(
local P, group, now, ts, queue, max, retention =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local entries, ids, adds = {}, {}, {}
for i = 8, #ARGV, 2 do
  local id, entry = ARGV[i], ARGV[i + 1]
  local k = P .. 'job:' .. id
  redis.call('HSET', k, 'state', 'succeeded', 'finished_at', now, 'exit_code', '0', 'error', '',
             'snapshot_error', '')
  redis.call('XADD', P .. 'events', 'MAXLEN', '~', max, '*', 'e',
             '{"type":"job.succeeded","job":"' .. id .. '","exit_code":0,"ts":"' .. ts .. '"}')
  redis.call('PEXPIRE', k, retention)
  entries[#entries + 1] = entry
  ids[#ids + 1] = id
  adds[#adds + 1] = now
  adds[#adds + 1] = id
end
local s = P .. 'stream:' .. queue
redis.call('XACK', s, group, unpack(entries))
redis.call('XDEL', s, unpack(entries))
redis.call('ZREM', P .. 'state:running', unpack(ids))
redis.call('ZADD', P .. 'state:succeeded', unpack(adds))
redis.call('ZREMRANGEBYSCORE', P .. 'state:succeeded', '-inf', '(' .. (tonumber(now) - retention))
return #ids
)lua";

// CPU seconds (user + system) of this process so far.
double own_cpu_s() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return s(u.ru_utime) + s(u.ru_stime);
}

// What the claim+ack phase left, read through RedisQueue: '' when every job
// (`succeeded` of them) ended succeeded and job b-0's record is a finished
// first attempt, else what is wrong.
std::string verify(const QueueCounts& counts, const std::optional<JobRecord>& first,
                   const std::vector<QueueEvent>& events, std::int64_t succeeded) {
  const auto n = [&](JobState s) {
    auto it = counts.by_state.find(s);
    return it == counts.by_state.end() ? std::int64_t{0} : it->second;
  };
  if (n(JobState::succeeded) != succeeded || n(JobState::queued) != 0 ||
      n(JobState::running) != 0) {
    return "state counts: succeeded " + std::to_string(n(JobState::succeeded)) + " of " +
           std::to_string(succeeded) + ", queued " + std::to_string(n(JobState::queued)) +
           ", running " + std::to_string(n(JobState::running));
  }
  for (const auto& [queue, depth] : counts.depth) {
    if (depth != 0) return "queue " + queue + " has " + std::to_string(depth) + " entries left";
  }
  if (!first) return "job b-0 has no record";
  if (first->state != JobState::succeeded || first->exit_code != 0 || first->attempts != 1) {
    return "job b-0 ended " + std::string(to_string(first->state)) + " with exit code " +
           (first->exit_code ? std::to_string(*first->exit_code) : std::string("none")) +
           " after " + std::to_string(first->attempts) + " attempt(s)";
  }
  // The newest event is a job's end, as the event reader parses it.
  if (events.empty()) return "no events";
  const auto& last = events.back().body;
  if (last.value("type", "") != "job.succeeded" || !last.contains("job") || !last.contains("ts")) {
    return "the last event reads " + last.dump();
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  const char* env_url = std::getenv("WARMSTART_TEST_REDIS_URL");
  std::string url =
      argc > 1 ? argv[1] : (env_url != nullptr ? env_url : "redis://127.0.0.1:6379/0");
  const int jobs = argc > 2 ? std::atoi(argv[2]) : 20000;
  const int concurrency = argc > 3 ? std::atoi(argv[3]) : 50;
  const int batch = argc > 4 ? std::atoi(argv[4]) : 100;
  const std::string mode = argc > 5 ? argv[5] : "queue";
  if (mode != "queue" && mode != "floor") {
    std::fprintf(stderr, "queue_bench: mode must be queue or floor, not %s\n", mode.c_str());
    return 2;
  }
  const bool floor = mode == "floor";
  const std::string floor_claim = kFloorClaim;
  const std::string floor_finish = kFloorFinish;
  const std::vector<std::string> no_keys;

  net::io_context io;
  RedisQueueOptions o;
  o.redis.url = redis::Url::parse(url);
  o.redis.client_name = "warmstart-bench";
  o.key_prefix = "bench:" + std::to_string(std::random_device{}()) + ":";
  o.events_max = 10000;
  RedisQueue q(io.get_executor(), o);

  double enqueue_s = 0;
  double claim_s = 0;
  double redis_cpu_enqueue = 0;
  double redis_cpu_claim = 0;
  double client_cpu_enqueue = 0;
  double client_cpu_claim = 0;
  int finished = 0;
  std::size_t floor_finish_calls = 0;
  std::string check_error;
  std::exception_ptr failure;
  net::co_spawn(
      io,
      [&]() -> awaitable<void> {
        // Warm up: connect, create the group, load the scripts.
        JobSpec warm;
        warm.id = "warm";
        warm.cmd = {"true"};
        co_await q.enqueue(warm);
        auto warm_jobs = co_await q.claim("bench-0", 1, 0ms);
        for (auto& j : warm_jobs) {
          JobResult ok;
          co_await q.finish(j.lease, ok);
        }

        // Phase 1: enqueue.
        double redis_cpu0 = (co_await bench::redis_cpu_ms(*q.client())) / 1000;
        double client_cpu0 = own_cpu_s();
        auto start = Clock::now();
        co_await bench::parallel_for(static_cast<std::size_t>(jobs),
                                     static_cast<std::size_t>(concurrency),
                                     [&](std::size_t i) -> awaitable<void> {
                                       JobSpec s;
                                       s.id = "b-" + std::to_string(i);
                                       s.cmd = {"true"};
                                       co_await q.enqueue(std::move(s));
                                     });
        enqueue_s = std::chrono::duration<double>(Clock::now() - start).count();
        client_cpu_enqueue = own_cpu_s() - client_cpu0;
        double redis_cpu1 = (co_await bench::redis_cpu_ms(*q.client())) / 1000;
        redis_cpu_enqueue = redis_cpu1 - redis_cpu0;
        client_cpu0 = own_cpu_s();

        // Phase 2: claim in batches and finish each job.
        start = Clock::now();
        if (floor) {
          const std::int64_t now = unix_ms_now();
          const std::string now_ms = std::to_string(now);
          const std::string now_ts = rfc3339(now);
          const std::string retention = std::to_string(
              std::chrono::duration_cast<std::chrono::milliseconds>(o.retention).count());
          co_await bench::parallel_for(
              static_cast<std::size_t>(concurrency), static_cast<std::size_t>(concurrency),
              [&](std::size_t w) -> awaitable<void> {
                std::string consumer = "bench-" + std::to_string(w);
                for (;;) {
                  auto claim_args =
                      redis::make_args(o.key_prefix, o.group, consumer, batch, now_ms, "default");
                  auto claim = q.client()->eval(floor_claim, no_keys, std::move(claim_args));
                  redis::Reply r = co_await std::move(claim);
                  const auto& got = r.as_array();
                  if (got.empty()) break;  // the stream is drained
                  auto finish_args = redis::make_args(o.key_prefix, o.group, now_ms, now_ts,
                                                      "default", o.events_max, retention);
                  for (const auto& v : got) finish_args.push_back(v.as_string());
                  auto finish = q.client()->eval(floor_finish, no_keys, std::move(finish_args));
                  redis::Reply n = co_await std::move(finish);
                  finished += static_cast<int>(n.as_integer());
                  ++floor_finish_calls;
                }
              });
        } else {
          co_await bench::parallel_for(
              static_cast<std::size_t>(concurrency), static_cast<std::size_t>(concurrency),
              [&](std::size_t w) -> awaitable<void> {
                std::string consumer = "bench-" + std::to_string(w);
                while (finished < jobs) {
                  auto claimed = co_await q.claim(consumer, static_cast<std::size_t>(batch), 0ms);
                  if (claimed.empty()) break;  // the stream is drained
                  for (auto& j : claimed) {
                    JobResult ok;
                    ok.exit_code = 0;  // what a router reports for `true`
                    co_await q.finish(j.lease, ok);
                    ++finished;
                  }
                }
              });
        }
        claim_s = std::chrono::duration<double>(Clock::now() - start).count();
        client_cpu_claim = own_cpu_s() - client_cpu0;
        redis_cpu_claim = (co_await bench::redis_cpu_ms(*q.client())) / 1000 - redis_cpu1;
        // Read back through RedisQueue's own readers (both modes): every job
        // ended succeeded, nothing is left queued, running or on the stream,
        // the records say what finish() writes. A floor whose scripts drifted
        // from the layout those readers know fails here instead of measuring
        // something else.
        auto counts = co_await q.counts();
        auto first = co_await q.get("b-0");
        auto events = co_await q.read_events("", o.events_max + 1000);
        check_error = verify(counts, first, events, jobs + 1);  // + the warm-up job
        co_await delete_prefix(*q.client(), o.key_prefix);
        q.close();  // open connections would keep io.run() going
      },
      [&](std::exception_ptr e) {
        if (e && !failure) failure = e;
      });
  io.run();
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "queue_bench: %s\n", e.what());
    }
    return 1;
  }
  nlohmann::json out = {
      {"bench", "queue"},
      {"mode", mode},
      {"definitions",
       "enqueue_per_s = jobs / wall time of `concurrency` coroutines calling "
       "RedisQueue::enqueue (pipelined on one connection). claim_ack_per_s = "
       "jobs / wall time of `concurrency` consumers, each claiming up to "
       "claim_batch jobs (RedisQueue::claim: XREADGROUP + claim script, one "
       "script while entries wait) and finishing them one "
       "at a time (finish() calls of all consumers are group-committed: "
       "finish_batches scripts served finish_calls calls). redis_cpu_s_* = "
       "Redis INFO cpu (user+sys) over the phase; client_cpu_s_* = this "
       "process (getrusage) over the phase. mode floor: claim+ack by two "
       "bare scripts making only the contract's writes (a claimed batch "
       "finished in one call: finish_batches calls), no checks: the least "
       "Redis work per job of any queue keeping the contract. readback = ok when, "
       "read back through RedisQueue after the phase (not timed), every job is "
       "succeeded, nothing is queued, running or left on the stream, job b-0 "
       "is a finished first attempt and the newest event a job.succeeded; "
       "else what is wrong (exit status 1)."},
      {"redis", o.redis.url.redacted()},
      {"jobs", jobs},
      {"concurrency", concurrency},
      {"claim_batch", batch},
      {"enqueue_s", enqueue_s},
      {"enqueue_per_s", jobs / enqueue_s},
      {"claim_ack_s", claim_s},
      {"claim_ack_per_s", finished / claim_s},
      {"finished", finished},
      {"readback", check_error.empty() ? std::string("ok") : check_error},
      {"redis_cpu_s_enqueue", redis_cpu_enqueue},
      {"redis_cpu_s_claim_ack", redis_cpu_claim},
      {"client_cpu_s_enqueue", client_cpu_enqueue},
      {"client_cpu_s_claim_ack", client_cpu_claim},
      {"cores", std::thread::hardware_concurrency()},
      {"finish_batches", floor ? floor_finish_calls : q.finish_batcher().batches()},
      {"finish_calls", floor ? static_cast<std::size_t>(finished) : q.finish_batcher().items()}};
  std::printf("%s\n", out.dump().c_str());
  if (!check_error.empty()) std::fprintf(stderr, "queue_bench: %s\n", check_error.c_str());
  return finished == jobs && check_error.empty() ? 0 : 1;
}
