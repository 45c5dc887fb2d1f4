// queue_test_consumer REDIS_URL PREFIX QUEUE CONSUMER LEASE_MS
// Claims one job, marks it running, prints "CLAIMED <id>" and then holds it,
// heartbeating every lease/3, until killed. Used by the reclaim test, which
// SIGKILLs this process to simulate a router that dies holding a job.
#include "common/log.hpp"
#include "queue/redis_queue.hpp"

#include <cstdio>
#include <iostream>

using namespace warmstart;

int main(int argc, char** argv) {
  if (argc != 6) {
    std::cerr << "usage: queue_test_consumer REDIS_URL PREFIX QUEUE CONSUMER LEASE_MS\n";
    return 2;
  }
  net::io_context io;
  queue::RedisQueueOptions o;
  o.redis.url = redis::Url::parse(argv[1]);
  o.key_prefix = argv[2];
  o.queues = {argv[3]};
  o.lease_timeout = Duration(std::stoll(argv[5]));
  std::string consumer = argv[4];
  auto q = std::make_shared<queue::RedisQueue>(io.get_executor(), o);
  int rc = 1;
  net::co_spawn(
      io,
      [&]() -> awaitable<void> {
        std::vector<queue::ClaimedJob> jobs;
        for (int i = 0; i < 20 && jobs.empty(); ++i) jobs = co_await q->claim(consumer, 1, 500ms);
        if (jobs.empty()) co_return;
        queue::RunInfo info{"busybox", false, false, "c-1", consumer};
        co_await q->mark_running(jobs[0].lease, info);
        std::printf("CLAIMED %s\n", jobs[0].record.id.c_str());
        std::fflush(stdout);
        for (;;) {
          co_await sleep_for(o.lease_timeout / 3);
          std::vector<queue::LeaseHandle> held{jobs[0].lease};
          co_await q->renew_leases(consumer, held);
        }
      },
      [&](std::exception_ptr e) {
        if (e) {
          try {
            std::rethrow_exception(e);
          } catch (const std::exception& ex) {
            log::error("queue_test_consumer failed", {{"error", ex.what()}});
          }
        }
        rc = 1;
      });
  io.run();
  return rc;
}
