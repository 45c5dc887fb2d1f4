// MemoryRuntime: the in-memory test double of container::Runtime, for unit
// tests of the router and the snapshot cache (no Docker engine). It answers
// like DockerClient does against a real engine: the same typed errors with
// the engine's statuses and messages (404 "No such image: x", 409 "Conflict.
// The container name ... is already in use", 304 on start/stop taken as
// success), containers that are created, running, exited, images with tags,
// labels and layers, and an events subscription that delivers on the
// executor and resumes after an outage.
//
// What a test can script:
//   - exits: containers run until exit(id_or_name, code, oom), or by
//     themselves with set_auto_exit(code, after) / set_exit_plan(fn);
//   - faults: fail_next(op, fault) for 404 / 409 / 500 / "cannot connect" /
//     a call that hangs until its deadline; slow_next(op, d); set_down(true)
//     (the engine is unreachable: every call fails to connect, events wait);
//     lose_events(true) (events happen but never reach a subscriber);
//   - speed: set_latency(op, d), the engine's own time for every call of op
//     (benchmarks: bench/fleet_bench.cpp gives create and start a real
//     engine's latency);
//   - the world: add_image(), delete_image() (a snapshot pruned by hand);
//   - inspection: calls(op), containers(), container(), spec_of(), images().
//
// Single-threaded: use it from its executor's thread. Every call suspends
// once (posted), like a request.
#pragma once
#include "common/net.hpp"
#include "container/runtime.hpp"

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace warmstart::container {

struct MemoryRuntimeOptions {
  std::string engine_id = "memory-engine";  // EngineInfo::id
  std::string api_version = "1.41";         // what ping() answers
  Duration docker_timeout = 30s;            // a hung call fails after this (TransportError
                                            // timeout) unless its caller's deadline cuts it
  int stop_exit_code = 137;                 // a stopped container's exit code (SIGKILL)
  std::function<std::int64_t()> now_ms;     // Unix ms; empty: the system clock (event times
                                            // must be comparable with the router's `since`)
};

// How a started container ends by itself (set_exit_plan).
struct ExitPlan {
  int exit_code = 0;
  Duration after = 0ms;  // 0: right after start (posted)
  bool oom = false;      // the kernel killed it for memory (an "oom" event first)
  std::string logs;      // its output
};

class MemoryRuntime final : public Runtime, public std::enable_shared_from_this<MemoryRuntime> {
 public:
  enum class Op {
    ping,
    info,
    inspect_image,
    remove_image,
    list_images,
    create_container,
    start_container,
    stop_container,
    kill_container,
    wait_container,
    inspect_container,
    container_logs,
    remove_container,
    list_containers,
    commit_container,
    export_container,
    import_image,
  };
  enum class Fault {
    image_not_found,  // ApiError 404 "No such image: <ref>"
    not_found,        // ApiError 404 "No such container: <id>"
    conflict,         // ApiError 409 "Conflict. ..."
    server_error,     // ApiError 500
    unreachable,      // TransportError connect ("cannot connect to the Docker engine")
    hang,             // never answers: the caller's deadline (with_deadline) cancels
                      // it, else TransportError timeout after docker_timeout
  };

  static std::shared_ptr<MemoryRuntime> create(net::any_io_executor executor,
                                               MemoryRuntimeOptions options = {});

  awaitable<std::string> ping() override;
  awaitable<EngineInfo> info() override;
  awaitable<ImageInfo> inspect_image(std::string ref) override;
  awaitable<void> remove_image(std::string ref, bool force) override;
  awaitable<std::vector<ImageSummary>> list_images(std::vector<std::string> labels) override;
  awaitable<std::string> create_container(ContainerSpec spec) override;
  awaitable<void> start_container(std::string id) override;
  awaitable<void> stop_container(std::string id, std::chrono::seconds grace) override;
  awaitable<void> kill_container(std::string id, std::string signal) override;
  awaitable<int> wait_container(std::string id, Duration deadline) override;
  awaitable<ContainerInfo> inspect_container(std::string id) override;
  awaitable<Logs> container_logs(std::string id, std::size_t max_bytes) override;
  awaitable<void> remove_container(std::string id, bool force) override;
  awaitable<std::vector<ContainerSummary>> list_containers(std::vector<std::string> labels,
                                                           bool all) override;
  awaitable<std::string> commit_container(std::string id, CommitOptions options) override;
  awaitable<void> export_container(std::string id, std::string path) override;
  awaitable<std::string> import_image(std::string path, std::string repo, std::string tag,
                                      std::vector<std::string> changes) override;
  awaitable<FilteredImport> export_import(std::string container_id, std::string repo,
                                          std::string tag, std::vector<std::string> changes,
                                          TarFilterOptions filter) override;
  EventSubscriptionPtr subscribe_events(EventFilter filter, std::int64_t since_unix_nano,
                                        EventHandler handler) override;

  // --- Scripting ---
  // Adds an image under `ref` ("repo:tag"; no tag = ":latest"); `info.id`
  // empty: a new "sha256:..." id. Another ref of an existing id adds a tag.
  // Returns the id.
  std::string add_image(const std::string& ref, ImageInfo info = {});
  // Deletes the image a ref names, whatever uses it (a snapshot pruned by hand).
  void delete_image(const std::string& ref);
  // A running container exits now: "oom" (when oom) and "die" events, waiters return.
  void exit(const std::string& id_or_name, int exit_code, bool oom = false);
  // Containers started from now on exit by themselves after `after`.
  void set_auto_exit(int exit_code, Duration after = 0ms);
  // Per container (nullopt: it runs until exit()); replaces set_auto_exit.
  void set_exit_plan(std::function<std::optional<ExitPlan>(const ContainerSpec&)> plan);
  void clear_auto_exit();
  void append_logs(const std::string& id_or_name, const std::string& text);
  // The next `times` calls of `op` fail with `fault` (after those already scripted).
  void fail_next(Op op, Fault fault, int times = 1);
  // The next `times` calls of `op` take `delay` before they run (cancellable).
  void slow_next(Op op, Duration delay, int times = 1);
  // Every call of `op` from now on takes `latency` (cancellable) before it
  // runs, on top of slow_next; 0 clears it.
  void set_latency(Op op, Duration latency);
  // Down: every call throws TransportError connect; subscriptions deliver
  // nothing until up again, then everything they missed, in order.
  void set_down(bool down);
  bool down() const { return down_; }
  // Losing: events from now on are recorded but never delivered (a stream
  // that dropped them), until lose_events(false).
  void lose_events(bool losing) { losing_events_ = losing; }

  // --- Inspection (synchronous, no fault applies) ---
  std::size_t calls(Op op) const;
  std::vector<ContainerInfo> containers() const;
  std::optional<ContainerInfo> container(const std::string& id_or_name) const;
  // What create_container was given.
  std::optional<ContainerSpec> spec_of(const std::string& id_or_name) const;
  std::vector<ImageInfo> images() const;
  std::optional<ImageInfo> image(const std::string& ref) const;
  // Every event so far (delivered or not), oldest first.
  const std::vector<Event>& events() const { return events_; }
  std::int64_t now_ms() const;

 private:
  struct Container;
  struct Image;
  struct Waiter;
  struct Subscription;
  class SubscriptionHandle;
  struct Scripted {
    std::optional<Fault> fault;
    Duration delay{0};
  };

  MemoryRuntime(net::any_io_executor executor, MemoryRuntimeOptions options);

  // Counter, outage and scripted faults around every call.
  awaitable<void> begin(Op op, std::string_view subject);
  [[noreturn]] void throw_fault(Op op, Fault fault, std::string_view subject);
  static const char* operation(Op op);

  // Synchronous bodies.
  std::string do_create(const ContainerSpec& spec);
  void do_start(Container& c);
  void do_remove(const std::string& id, bool force);
  void do_remove_image(const std::string& ref, bool force);
  std::string new_image(const std::string& repo, const std::string& tag, ImageConfig config,
                        std::size_t layers, std::int64_t size);
  awaitable<int> wait_for_exit(const std::string& id, Duration deadline);

  Container& container_or_404(const char* op, const std::string& id_or_name);
  Image* find_image(const std::string& ref);
  const Image* find_image(const std::string& ref) const;
  Container* find_container(const std::string& id_or_name);
  const Container* find_container(const std::string& id_or_name) const;
  ContainerInfo info_of(const Container& c) const;
  void finish_run(Container& c, int exit_code, bool oom);
  void plan_exit(Container& c);
  void emit(const std::string& type, const std::string& action, const std::string& id,
            Labels attributes);
  void deliver();
  std::string new_id(const std::string& what);

  net::any_io_executor executor_;
  MemoryRuntimeOptions options_;
  std::map<std::string, Container> containers_;  // by id
  std::map<std::string, Image> images_;          // by id
  std::map<std::string, std::string> tags_;      // "repo:tag" -> image id
  std::vector<Event> events_;
  std::vector<bool> lost_;  // per event of events_: never delivered (lose_events)
  std::vector<std::shared_ptr<Subscription>> subscriptions_;
  bool delivery_posted_ = false;
  std::function<std::optional<ExitPlan>(const ContainerSpec&)> exit_plan_;
  std::map<Op, std::size_t> calls_;
  std::map<Op, std::deque<Scripted>> scripted_;
  std::map<Op, Duration> latency_;
  bool down_ = false;
  bool losing_events_ = false;
  std::uint64_t next_id_ = 0;
  std::int64_t last_event_nano_ = 0;
};

using MemoryRuntimePtr = std::shared_ptr<MemoryRuntime>;

std::string_view to_string(MemoryRuntime::Op op);

}  // namespace warmstart::container
