// A container created while its job's claim is on its way. claim() shows the
// entries it read before it sends their claim (queue::EntrySeen), and each
// entry names the attempt its claim would run, so for a job whose image needs
// no snapshot lookup the router sends the create at once: the engine's create
// overlaps the claim's round trip instead of following it (bench/RESULTS.md,
// "One dispatch on an idle host, hop by hop").
//
// The container is only created, never started, until the claim confirms the
// run: the run whose create asks for the same attempt and the same spec takes
// it (JobExecutor::create). Otherwise (the claim skipped or parked the entry,
// or the run asked for something else) it is removed once its create answers,
// without force, so a container something else started stays. A router that
// dies in between leaves a created, never-started container: recovery removes
// it when the claim had gone through (and requeues the job), else keeps it for
// the queued job's next claim to adopt (409), as docs/router.md says.
#pragma once
#include "common/net.hpp"
#include "container/runtime.hpp"

#include <exception>
#include <memory>
#include <optional>
#include <string>

namespace warmstart::router {

class Precreated {
 public:
  Precreated(const net::any_io_executor& ex, int attempt, container::ContainerSpec spec)
      : attempt_(attempt), spec_(std::move(spec)), answered_(ex, Clock::time_point::max()) {}

  int attempt() const { return attempt_; }
  const container::ContainerSpec& spec() const { return spec_; }

  // The create's answer, once it came: the container id, or what it threw.
  awaitable<std::string> result() {
    while (!done_) co_await answered_.async_wait(net::as_tuple(use_awaitable));
    if (error_) std::rethrow_exception(error_);
    co_return id_;
  }
  void answer(std::string id, std::exception_ptr error) {
    id_ = std::move(id);
    error_ = std::move(error);
    done_ = true;
    answered_.cancel();
  }

 private:
  int attempt_;
  container::ContainerSpec spec_;
  net::steady_timer answered_;
  bool done_ = false;
  std::string id_;
  std::exception_ptr error_;
};
using PrecreatedPtr = std::shared_ptr<Precreated>;

}  // namespace warmstart::router
