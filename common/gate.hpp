// AsyncGate: at most `limit` coroutines hold a pass at once; the others wait
// for one in FIFO order. For a single-threaded executor (an io_context run by
// one thread, or a strand), like everything on the router's loop.
//
// The router keeps its engine's container creates and starts under one
// (docs/router.md, `start_concurrency`): 200 starts asked at once on a small
// engine took longer than the per-call deadline each, where a few at a time
// finish in turn (bench/RESULTS.md, "Load under an overloaded engine").
#pragma once
#include "common/net.hpp"

#include <cstddef>
#include <deque>
#include <memory>

namespace warmstart {

class AsyncGate {
  struct Waiter {
    explicit Waiter(const net::any_io_executor& ex) : timer(ex, Clock::time_point::max()) {}
    net::steady_timer timer;
    bool granted = false;
  };
  struct State {
    std::size_t limit;
    std::size_t holders = 0;
    std::deque<std::shared_ptr<Waiter>> waiting;

    void release() {
      if (waiting.empty()) {
        --holders;
        return;
      }
      // The pass goes straight to the first waiter: `holders` stays.
      auto next = std::move(waiting.front());
      waiting.pop_front();
      next->granted = true;
      next->timer.cancel();
    }
  };

 public:
  // Released when destroyed (or moved from and then destroyed: once).
  class Pass {
   public:
    Pass() = default;
    Pass(Pass&& other) noexcept : state_(std::move(other.state_)) {}
    Pass& operator=(Pass&& other) noexcept {
      if (this != &other) {
        reset();
        state_ = std::move(other.state_);
      }
      return *this;
    }
    Pass(const Pass&) = delete;
    Pass& operator=(const Pass&) = delete;
    ~Pass() { reset(); }
    void reset() {
      if (auto s = std::move(state_)) s->release();
    }

   private:
    friend class AsyncGate;
    explicit Pass(std::shared_ptr<State> state) : state_(std::move(state)) {}
    std::shared_ptr<State> state_;
  };

  // limit 0 is taken as 1.
  AsyncGate(net::any_io_executor ex, std::size_t limit)
      : ex_(std::move(ex)), state_(std::make_shared<State>(State{limit == 0 ? 1 : limit})) {}

  // A pass now if one is free and nobody waits, else after the waiters before
  // this one. Cancelling the waiting coroutine (its cancellation slot) throws
  // operation_aborted and leaves the queue.
  awaitable<Pass> enter() {
    auto state = state_;
    if (state->holders < state->limit && state->waiting.empty()) {
      ++state->holders;
      co_return Pass(std::move(state));
    }
    auto waiter = std::make_shared<Waiter>(ex_);
    state->waiting.push_back(waiter);
    co_await waiter->timer.async_wait(net::as_tuple(use_awaitable));
    if (!waiter->granted) {
      std::erase(state->waiting, waiter);
      throw boost::system::system_error(net::error::operation_aborted, "waiting for a pass");
    }
    co_return Pass(std::move(state));
  }

  std::size_t holders() const { return state_->holders; }
  std::size_t waiting() const { return state_->waiting.size(); }
  std::size_t limit() const { return state_->limit; }

 private:
  net::any_io_executor ex_;
  std::shared_ptr<State> state_;
};

}  // namespace warmstart
