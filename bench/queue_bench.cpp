// queue_bench [REDIS_URL] [JOBS] [CONCURRENCY] [CLAIM_BATCH]
// Throughput of RedisQueue against a real Redis: JOBS no-op jobs enqueued by
// CONCURRENCY coroutines (pipelined on one connection), then claimed in
// batches and finished by CONCURRENCY consumers. Prints one JSON object.
// Keys live under a unique prefix and are deleted at the end.
#include "bench/bench_support.hpp"
#include "common/log.hpp"
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

// CPU seconds (user + system) of this process so far.
double own_cpu_s() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  auto s = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return s(u.ru_utime) + s(u.ru_stime);
}

}  // namespace

int main(int argc, char** argv) {
  const char* env_url = std::getenv("WARMSTART_TEST_REDIS_URL");
  std::string url =
      argc > 1 ? argv[1] : (env_url != nullptr ? env_url : "redis://127.0.0.1:6379/0");
  const int jobs = argc > 2 ? std::atoi(argv[2]) : 20000;
  const int concurrency = argc > 3 ? std::atoi(argv[3]) : 50;
  const int batch = argc > 4 ? std::atoi(argv[4]) : 100;

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
        co_await bench::parallel_for(
            static_cast<std::size_t>(concurrency), static_cast<std::size_t>(concurrency),
            [&](std::size_t w) -> awaitable<void> {
              std::string consumer = "bench-" + std::to_string(w);
              while (finished < jobs) {
                auto claimed = co_await q.claim(consumer, static_cast<std::size_t>(batch), 0ms);
                if (claimed.empty()) break;  // the stream is drained
                for (auto& j : claimed) {
                  JobResult ok;
                  co_await q.finish(j.lease, ok);
                  ++finished;
                }
              }
            });
        claim_s = std::chrono::duration<double>(Clock::now() - start).count();
        client_cpu_claim = own_cpu_s() - client_cpu0;
        redis_cpu_claim = (co_await bench::redis_cpu_ms(*q.client())) / 1000 - redis_cpu1;
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
  nlohmann::json out = {{"bench", "queue"},
                        {"definitions",
                         "enqueue_per_s = jobs / wall time of `concurrency` coroutines calling "
                         "RedisQueue::enqueue (pipelined on one connection). claim_ack_per_s = "
                         "jobs / wall time of `concurrency` consumers, each claiming up to "
                         "claim_batch jobs (RedisQueue::claim: XREADGROUP + claim script, one "
                         "script while entries wait) and finishing them one "
                         "at a time (finish() calls of all consumers are group-committed: "
                         "finish_batches scripts served finish_calls calls). redis_cpu_s_* = "
                         "Redis INFO cpu (user+sys) over the phase; client_cpu_s_* = this "
                         "process (getrusage) over the phase."},
                        {"redis", o.redis.url.redacted()},
                        {"jobs", jobs},
                        {"concurrency", concurrency},
                        {"claim_batch", batch},
                        {"enqueue_s", enqueue_s},
                        {"enqueue_per_s", jobs / enqueue_s},
                        {"claim_ack_s", claim_s},
                        {"claim_ack_per_s", finished / claim_s},
                        {"finished", finished},
                        {"redis_cpu_s_enqueue", redis_cpu_enqueue},
                        {"redis_cpu_s_claim_ack", redis_cpu_claim},
                        {"client_cpu_s_enqueue", client_cpu_enqueue},
                        {"client_cpu_s_claim_ack", client_cpu_claim},
                        {"cores", std::thread::hardware_concurrency()},
                        {"finish_batches", q.finish_batcher().batches()},
                        {"finish_calls", q.finish_batcher().items()}};
  std::printf("%s\n", out.dump().c_str());
  return finished == jobs ? 0 : 1;
}
