// Shared fixture for integration tests: where the real services started by
// ./scripts/test live, and a helper to drive a coroutine to completion.
#pragma once
#include "common/net.hpp"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <future>
#include <stdexcept>
#include <string>

namespace warmstart::testing {

// Reads a required WARMSTART_TEST_* variable. Integration tests fail (never skip)
// when the services are missing: run them through ./scripts/test.
inline std::string required_env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') {
    throw std::runtime_error(std::string(name) +
                             " is not set: run integration tests through ./scripts/test");
  }
  return v;
}

// redis://127.0.0.1:<port>/0 of the private redis-server.
inline std::string redis_url() {
  return required_env("WARMSTART_TEST_REDIS_URL");
}
// Path of the private dockerd's unix socket.
inline std::string docker_socket() {
  return required_env("WARMSTART_TEST_DOCKER_SOCKET");
}
// Path of the run's second private dockerd (its own engine ID), for fleet tests.
inline std::string docker_socket_2() {
  return required_env("WARMSTART_TEST_DOCKER_SOCKET_2");
}
// The worker base image (busybox-static, imported by the scripts).
inline std::string base_image() {
  return required_env("WARMSTART_TEST_BASE_IMAGE");
}
// The built warmstart binary.
inline std::string warmstart_binary() {
  return required_env("WARMSTART_TEST_BINARY");
}
// Scratch directory of the run (removed by the scripts).
inline std::string run_dir() {
  return required_env("WARMSTART_TEST_RUN_DIR");
}

// Runs `make()`'s coroutine on a fresh io_context until it completes, rethrowing
// its exception. Fails the test if it does not finish within `limit`.
template <typename F>
auto run_coro(F make, std::chrono::milliseconds limit = std::chrono::seconds(60)) {
  net::io_context io;
  using T = typename decltype(make())::value_type;
  std::exception_ptr error;
  std::optional<std::conditional_t<std::is_void_v<T>, bool, T>> result;
  net::co_spawn(io, make(), [&](std::exception_ptr e, auto... value) {
    error = e;
    if constexpr (std::is_void_v<T>) {
      result = true;
    } else {
      if (!e) result = std::move(value...);
    }
  });
  io.run_for(limit);
  if (!result && !error) FAIL("coroutine did not finish within " << limit.count() << " ms");
  if (error) std::rethrow_exception(error);
  if constexpr (!std::is_void_v<T>) return std::move(*result);
}

}  // namespace warmstart::testing
