// The router's one error policy at the edge: every call the executor makes
// goes through attempt(), which turns an exception into a classified Fault.
// What each Fault costs (retry the step, hand the job back, spend the
// attempt) is decided only in job_run.cpp; docs/router.md has the table.
//
//   auto created = co_await attempt(runtime->create_container(spec));
//   if (!created) return created.input();   // Input{fault, error} for JobRun
#pragma once
#include "common/net.hpp"
#include "router/job_run.hpp"

#include <exception>
#include <optional>
#include <string>
#include <type_traits>
#include <variant>

namespace warmstart::router {

// Engine errors keep their meaning (404 image / 404 container / 409), an
// engine that does not answer is `engine_down`, a lost lease is `lease_lost`,
// a transient Redis failure is `redis`; everything else is `other`.
Fault classify(const std::exception_ptr& error);
std::string describe(const std::exception_ptr& error);

template <typename T>
struct Outcome {
  using Value = std::conditional_t<std::is_void_v<T>, std::monostate, T>;
  std::optional<Value> value;
  Fault fault = Fault::none;
  std::string error;

  explicit operator bool() const { return value.has_value(); }
  // The failure as JobRun's input (Input::ok() when it succeeded).
  Input input() const { return value ? Input::ok() : Input::failed(fault, error); }
};

template <typename T>
awaitable<Outcome<T>> attempt(awaitable<T> op) {
  Outcome<T> out;
  std::exception_ptr error;
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(op);
      out.value.emplace();
    } else {
      out.value.emplace(co_await std::move(op));
    }
  } catch (...) {
    error = std::current_exception();
  }
  if (error) {
    out.fault = classify(error);
    out.error = describe(error);
  }
  co_return out;
}

}  // namespace warmstart::router
