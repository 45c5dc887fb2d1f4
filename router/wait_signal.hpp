// A wait on one of the dispatcher's signal timers, bounded by `limit`.
#pragma once
#include "common/net.hpp"

namespace warmstart::router {

// The signal timers stay at time_point::max() and are cancelled to wake their
// loop; the bound keeps every loop re-checking its conditions even if a wake-up
// were missed.
inline awaitable<void> wait_signal(net::steady_timer& signal, Duration limit) {
  net::steady_timer bound(co_await net::this_coro::executor, limit);
  using namespace net::experimental::awaitable_operators;
  co_await (signal.async_wait(net::as_tuple(use_awaitable)) ||
            bound.async_wait(net::as_tuple(use_awaitable)));
}

}  // namespace warmstart::router
