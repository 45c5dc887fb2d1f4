#include "common/gate.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace warmstart;

TEST_CASE("gate: at most `limit` holders, the others in arrival order", "[unit][gate]") {
  net::io_context io;
  AsyncGate gate(io.get_executor(), 2);
  std::size_t max_holders = 0;
  std::vector<int> entered;
  for (int i = 0; i < 5; ++i) {
    net::co_spawn(
        io,
        [&, i]() -> awaitable<void> {
          auto pass = co_await gate.enter();
          entered.push_back(i);
          max_holders = std::max(max_holders, gate.holders());
          net::steady_timer hold(io, 5ms);
          co_await hold.async_wait(use_awaitable);
        },
        net::detached);
  }
  io.run();
  CHECK(max_holders == 2);
  CHECK(entered == std::vector<int>{0, 1, 2, 3, 4});
  CHECK(gate.holders() == 0);
  CHECK(gate.waiting() == 0);
}

TEST_CASE("gate: a cancelled waiter leaves the queue, the pass goes to the next", "[unit][gate]") {
  net::io_context io;
  AsyncGate gate(io.get_executor(), 1);
  std::vector<std::string> log;
  net::cancellation_signal cancel_second;
  auto holder = [&](std::string name) -> awaitable<void> {
    try {
      auto pass = co_await gate.enter();
      log.push_back(name + " in");
      net::steady_timer hold(io, 20ms);
      co_await hold.async_wait(use_awaitable);
    } catch (const boost::system::system_error& e) {
      CHECK(e.code() == net::error::operation_aborted);
      log.push_back(name + " cancelled");
    }
  };
  net::co_spawn(io, holder("first"), net::detached);
  net::co_spawn(io, holder("second"),
                net::bind_cancellation_slot(cancel_second.slot(), net::detached));
  net::co_spawn(io, holder("third"), net::detached);
  net::steady_timer later(io, 5ms);
  later.async_wait([&](boost::system::error_code) {
    CHECK(gate.waiting() == 2);
    cancel_second.emit(net::cancellation_type::all);
  });
  io.run();
  CHECK(log == std::vector<std::string>{"first in", "second cancelled", "third in"});
  CHECK(gate.holders() == 0);
  CHECK(gate.waiting() == 0);
}

TEST_CASE("gate: a pass moved away is released once", "[unit][gate]") {
  net::io_context io;
  AsyncGate gate(io.get_executor(), 1);
  net::co_spawn(
      io,
      [&]() -> awaitable<void> {
        AsyncGate::Pass kept;
        {
          auto pass = co_await gate.enter();
          kept = std::move(pass);
        }
        CHECK(gate.holders() == 1);
        kept.reset();
        CHECK(gate.holders() == 0);
        kept.reset();
        CHECK(gate.holders() == 0);
      },
      net::detached);
  io.run();
}
