// ScriptBatcher: group commit for one per-item Lua script. A call that arrives
// while a batch is in flight waits and goes out with the next batch, so under
// load N calls cost one EVALSHA (one round trip, one script start, one prelude)
// instead of N; an idle caller still goes out at once (no timer, no added
// latency). Used for finish(), the hottest write of a router (docs/queue.md).
//
// The script receives the items' arguments concatenated (a fixed number per
// item) and must return an array with one reply per item, in order.
//
// Leader/follower: the call that finds no batch in flight sends one; when it
// returns it hands the lead to the oldest waiting call, which sends everything
// that queued up meanwhile. Nothing runs detached, so destroying the batcher
// while no call is pending is always safe. Single-threaded (one executor).
#pragma once
#include "common/net.hpp"
#include "common/redis.hpp"

#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace warmstart::queue {

class ScriptBatcher {
 public:
  using Send = std::function<awaitable<redis::Reply>(std::vector<std::string> args)>;

  ScriptBatcher(net::any_io_executor executor, std::size_t max_items, Send send)
      : executor_(std::move(executor)), max_items_(max_items), send_(std::move(send)) {}

  // Runs one item (its script arguments) in the next batch; returns its element
  // of the script's reply. Throws what sending the batch threw.
  awaitable<redis::Reply> run(std::vector<std::string> item);

  // Calls per batch so far (for tests and benchmarks).
  std::size_t batches() const { return batches_; }
  std::size_t items() const { return items_; }

 private:
  struct Call {
    explicit Call(const net::any_io_executor& ex) : wake(ex, Clock::time_point::max()) {}
    std::vector<std::string> item;
    std::optional<redis::Reply> reply;
    std::exception_ptr error;
    bool lead = false;  // woken to send the next batch
    net::steady_timer wake;
  };
  using CallPtr = std::shared_ptr<Call>;

  awaitable<void> send_batch();

  net::any_io_executor executor_;
  std::size_t max_items_;
  Send send_;
  std::deque<CallPtr> pending_;
  bool in_flight_ = false;
  std::size_t batches_ = 0;
  std::size_t items_ = 0;
};

}  // namespace warmstart::queue
