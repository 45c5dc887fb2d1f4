// container::Runtime: the port through which the router and the snapshot cache
// use a container engine. DockerClient (docker_client.hpp) is the real adapter.
// Every operation has a deadline (RuntimeOptions / per-call) and throws
// ApiError or TransportError (errors.hpp).
#pragma once
#include "common/net.hpp"
#include "container/errors.hpp"
#include "container/tar_filter.hpp"

#include <charconv>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace warmstart::container {

using Labels = std::map<std::string, std::string>;

struct EngineInfo {
  std::string id;              // engine ID from /info: namespaces per-host state
  std::string server_version;  // "20.10.24+dfsg1"
  std::string api_version;     // negotiated, e.g. "1.41"
  std::string storage_driver;
};

// The parts of an image config that a snapshot must carry over from its base.
struct ImageConfig {
  std::vector<std::string> env;  // "K=V"
  std::vector<std::string> cmd;
  std::vector<std::string> entrypoint;
  std::string user;
  std::string working_dir;
  Labels labels;
};

struct ImageInfo {
  std::string id;  // "sha256:..."
  std::vector<std::string> repo_tags;
  std::int64_t size_bytes = 0;
  std::size_t layer_count = 0;  // RootFS.Layers
  std::int64_t created_unix = 0;
  ImageConfig config;
};

struct ImageSummary {
  std::string id;
  std::vector<std::string> repo_tags;
  std::int64_t size_bytes = 0;
  std::int64_t created_unix = 0;
  Labels labels;
};

struct Resources {
  std::int64_t memory_bytes = 0;       // 0 = engine default (unlimited)
  std::int64_t nano_cpus = 0;          // 1.5 CPUs = 1'500'000'000
  std::int64_t pids_limit = 0;         // 0 = engine default
  std::int64_t memory_swap_bytes = 0;  // memory + swap; = memory_bytes: no swap; 0 = default
  bool operator==(const Resources&) const = default;
};

// HostConfig.LogConfig: where the engine keeps the container's output.
struct LogConfig {
  std::string type;                            // "" = the engine's default driver
  std::map<std::string, std::string> options;  // json-file: "max-size", "max-file"
  bool operator==(const LogConfig&) const = default;
};

// HostConfig.Ulimits entry, e.g. {"nofile", 1024, 1024}.
struct Ulimit {
  std::string name;
  std::int64_t soft = 0;
  std::int64_t hard = 0;
  bool operator==(const Ulimit&) const = default;
};

struct ContainerSpec {
  std::string name;  // optional; unique per engine
  std::string image;
  std::vector<std::string> cmd;
  std::vector<std::string> env;  // "K=V"
  Labels labels;
  Resources resources;
  std::string network_mode = "none";
  std::vector<std::string> cap_drop = {"ALL"};
  std::vector<std::string> security_opt = {"no-new-privileges"};
  std::string user;         // empty = image default
  std::string working_dir;  // empty = image default
  LogConfig log;            // empty type = engine default (unbounded json-file)
  std::vector<Ulimit> ulimits;
  bool operator==(const ContainerSpec&) const = default;
};

struct ContainerState {
  std::string status;  // created | running | paused | restarting | removing | exited | dead
  bool running = false;
  bool oom_killed = false;
  int exit_code = 0;
  int pid = 0;
  std::string error;
  std::string started_at;  // RFC 3339 from the engine
  std::string finished_at;
};

struct ContainerInfo {
  std::string id;
  std::string name;
  std::string image_id;  // "sha256:..." the container runs
  std::string image;     // as requested (Config.Image)
  Labels labels;
  ContainerState state;
};

struct ContainerSummary {
  std::string id;
  std::vector<std::string> names;
  std::string image;
  std::string image_id;
  std::string state;   // "running", "exited", ...
  std::string status;  // human text, "Exited (0) 3 seconds ago"
  std::int64_t created_unix = 0;
  Labels labels;
};

struct CommitOptions {
  std::string repo;  // "warmstart-snapshot/abc"
  std::string tag;   // "g42"
  std::string comment;
  bool pause = true;
  // The config of the new image. Set it to the base image's config so the job's
  // env and secrets never end up in the image.
  std::optional<ImageConfig> config;
  // With `config`: build the image by export + import so that nothing of the
  // container's own config (the job's env and secrets) is recorded. POST /commit
  // always records it: in ContainerConfig, and its Env merged into Config. The
  // price: the image is flattened to one layer (no sharing with its base).
  // false = POST /commit with `config` as the override (keeps layers, leaks env).
  bool scrub_container_config = true;
};

// What export_import made and what its filter did.
struct FilteredImport {
  std::string image_id;         // the new image
  TarFilterStats filter;        // entries dropped, .git/config files rewritten
  std::uint64_t bytes_in = 0;   // tar bytes the engine exported
  std::uint64_t bytes_out = 0;  // tar bytes it imported
};

// Demultiplexed log tail.
struct Logs {
  std::string stdout_text;
  std::string stderr_text;
  std::string combined;  // both streams in arrival order
  bool truncated = false;
};

// One engine event (type "container" or "image").
struct Event {
  std::string type;    // "container"
  std::string action;  // "start", "die", "oom", "destroy", ...
  std::string id;      // container or image id
  Labels attributes;   // Actor.Attributes: labels, "exitCode", "image", "name"
  std::int64_t time_nano = 0;
};

// The exit code a "die" event carries (attribute "exitCode"); nullopt when
// absent or not a number.
inline std::optional<int> exit_code_of(const Event& event) {
  auto it = event.attributes.find("exitCode");
  if (it == event.attributes.end()) return std::nullopt;
  const std::string& text = it->second;
  int code = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), code);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return code;
}

struct EventFilter {
  std::vector<std::string> types;   // e.g. {"container"}
  std::vector<std::string> labels;  // "warmstart.managed=true"
  std::vector<std::string> events;  // e.g. {"die", "start"}; empty = all
};

// A running events subscription; destroying or stop()ping it ends the stream.
class EventSubscription {
 public:
  virtual ~EventSubscription() = default;
  virtual void stop() = 0;
};
using EventSubscriptionPtr = std::unique_ptr<EventSubscription>;
using EventHandler = std::function<void(const Event&)>;

class Runtime {
 public:
  virtual ~Runtime() = default;

  // Pings the engine and negotiates the API version (floor 1.41).
  virtual awaitable<std::string> ping() = 0;
  virtual awaitable<EngineInfo> info() = 0;

  virtual awaitable<ImageInfo> inspect_image(std::string ref) = 0;
  virtual awaitable<void> remove_image(std::string ref, bool force) = 0;
  // Images carrying all the given labels ("k=v" or "k").
  virtual awaitable<std::vector<ImageSummary>> list_images(std::vector<std::string> labels) = 0;

  // Returns the new container id.
  virtual awaitable<std::string> create_container(ContainerSpec spec) = 0;
  virtual awaitable<void> start_container(std::string id) = 0;
  // SIGTERM, then SIGKILL after `grace`.
  virtual awaitable<void> stop_container(std::string id, std::chrono::seconds grace) = 0;
  virtual awaitable<void> kill_container(std::string id, std::string signal) = 0;
  // Blocks (asynchronously) until the container exits; returns its exit code.
  // `deadline` bounds the wait.
  virtual awaitable<int> wait_container(std::string id, Duration deadline) = 0;
  virtual awaitable<ContainerInfo> inspect_container(std::string id) = 0;
  // The last `max_bytes` of stdout+stderr, demultiplexed.
  virtual awaitable<Logs> container_logs(std::string id, std::size_t max_bytes) = 0;
  virtual awaitable<void> remove_container(std::string id, bool force) = 0;
  // One call: containers (running or not when `all`) carrying all the labels.
  virtual awaitable<std::vector<ContainerSummary>> list_containers(std::vector<std::string> labels,
                                                                   bool all) = 0;

  // Returns the new image id.
  virtual awaitable<std::string> commit_container(std::string id, CommitOptions options) = 0;
  // Streams the container's filesystem as a tar into `path`.
  virtual awaitable<void> export_container(std::string id, std::string path) = 0;
  // Imports a tar file as image repo:tag with Dockerfile `changes` ("ENV A=b",
  // "CMD [\"sh\"]", "LABEL k=v", ...). Returns the new image id.
  virtual awaitable<std::string> import_image(std::string path, std::string repo, std::string tag,
                                              std::vector<std::string> changes) = 0;

  // Streams the container's filesystem (GET /containers/{id}/export) through
  // a TarFilter built from `filter` straight into a new image repo:tag
  // (POST /images/create?fromSrc=-, with Dockerfile `changes` as in
  // import_image): no tar file on disk, and the engine's export is read only
  // as fast as the import takes it. A malformed archive (TarFormatError) or a
  // failure of either side fails the whole operation and imports nothing.
  virtual awaitable<FilteredImport> export_import(std::string container_id, std::string repo,
                                                  std::string tag, std::vector<std::string> changes,
                                                  TarFilterOptions filter) = 0;

  // Subscribes to engine events matching `filter`, from `since_unix_nano` on
  // (0 = now). The subscription reconnects by itself and resumes from the last
  // event seen, so no event is lost across a reconnect. `handler` runs on the
  // client's executor.
  virtual EventSubscriptionPtr subscribe_events(EventFilter filter, std::int64_t since_unix_nano,
                                                EventHandler handler) = 0;
};

using RuntimePtr = std::shared_ptr<Runtime>;

}  // namespace warmstart::container
