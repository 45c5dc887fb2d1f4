// Asio names used across warmstart.
#pragma once
#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>

#include <chrono>
#include <exception>
#include <optional>
#include <variant>

namespace warmstart {

namespace net = boost::asio;
using namespace std::chrono_literals;

template <typename T = void>
using awaitable = net::awaitable<T>;
using net::use_awaitable;
using Clock = std::chrono::steady_clock;
using Duration = std::chrono::milliseconds;

// Thrown by with_deadline() when the deadline fires first.
struct DeadlineExceeded : std::runtime_error {
  explicit DeadlineExceeded(const std::string& what) : std::runtime_error(what) {}
};

// Runs `op` with a deadline. When the timer wins, the operation is cancelled
// (per-operation cancellation through awaitable operators) and DeadlineExceeded
// is thrown, naming `what`.
template <typename T>
awaitable<T> with_deadline(awaitable<T> op, Duration deadline, std::string what) {
  using namespace net::experimental::awaitable_operators;
  // `||` completes on the first *successful* branch: an `op` that throws would
  // wait out the timer and surface as DeadlineExceeded. Capturing its outcome
  // makes a failure a result, so typed errors arrive at once and unchanged.
  // (A struct, not a variant: `||` flattens variant results.)
  using Value = std::conditional_t<std::is_void_v<T>, std::monostate, T>;
  struct Outcome {
    std::optional<Value> value;
    std::exception_ptr error;
  };
  auto capture = [](awaitable<T> inner) -> awaitable<Outcome> {
    Outcome outcome;
    try {
      if constexpr (std::is_void_v<T>) {
        co_await std::move(inner);
        outcome.value.emplace();
      } else {
        outcome.value.emplace(co_await std::move(inner));
      }
    } catch (...) {
      outcome.error = std::current_exception();
    }
    co_return outcome;
  };
  net::steady_timer timer(co_await net::this_coro::executor, deadline);
  auto result = co_await (capture(std::move(op)) || timer.async_wait(use_awaitable));
  if (result.index() == 1)
    throw DeadlineExceeded(what + ": deadline of " + std::to_string(deadline.count()) +
                           " ms exceeded");
  Outcome& outcome = std::get<0>(result);
  if (outcome.error) std::rethrow_exception(outcome.error);
  if constexpr (std::is_void_v<T>) {
    co_return;
  } else {
    co_return std::move(*outcome.value);
  }
}

// Sleeps on the current executor.
inline awaitable<void> sleep_for(Duration d) {
  net::steady_timer timer(co_await net::this_coro::executor, d);
  co_await timer.async_wait(use_awaitable);
}

}  // namespace warmstart
