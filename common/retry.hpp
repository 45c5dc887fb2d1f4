// Riding out transient failures: run an operation again, with backoff, while
// it fails in a way that goes away by itself (redis::is_transient), until a
// deadline. The last error is rethrown unchanged when the deadline passes or
// the failure is an answer (a reply error, a lost lease, bad input).
#pragma once
#include "common/net.hpp"
#include "common/redis.hpp"

#include <algorithm>
#include <exception>
#include <functional>
#include <type_traits>

namespace warmstart {

struct RetryPolicy {
  Duration first_delay = 100ms;  // after the first failure
  Duration max_delay = 2s;       // the backoff doubles up to this
  // Which failures are worth another try; default: redis::is_transient.
  std::function<bool(const std::exception_ptr&)> transient;
};

// `make_op()` builds a fresh awaitable per try (an awaitable runs once).
template <typename MakeOp>
auto retry_until(MakeOp make_op, Clock::time_point until, RetryPolicy policy = {})
    -> decltype(make_op()) {
  using T = typename decltype(make_op())::value_type;
  Duration delay = policy.first_delay;
  for (;;) {
    std::exception_ptr error;
    // Built outside the try: g++ 12 destroys temporaries of a throwing
    // co_await expression twice.
    auto op = make_op();
    try {
      if constexpr (std::is_void_v<T>) {
        co_await std::move(op);
        co_return;
      } else {
        co_return co_await std::move(op);
      }
    } catch (...) {
      error = std::current_exception();
    }
    const bool transient = policy.transient ? policy.transient(error) : redis::is_transient(error);
    if (!transient || Clock::now() + delay >= until) std::rethrow_exception(error);
    co_await sleep_for(delay);
    delay = std::min<Duration>(delay * 2, policy.max_delay);
  }
}

}  // namespace warmstart
