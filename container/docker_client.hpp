// DockerClient: the Runtime adapter for a local Docker Engine, over its unix
// socket, on the caller's executor. Plain calls (a request, an answer: create,
// start, wait, logs, remove, inspect, ...) and the event feed go through
// UnixHttp (unix_http.hpp), a keep-alive connection pool; the transfers that
// stream with backpressure or from a file (export, import) through CurlMulti
// (curl_multi.hpp). Request/response mapping
// is docker_protocol.hpp. The API version is negotiated
// on the first call (GET /_ping, floor 1.41) and every later path is prefixed
// with /v<version>.
//
// Use from one thread: the executor's (an io_context run by one thread or a
// strand). Keep it in a shared_ptr (create()): operations and event streams hold
// a reference while they run.
#pragma once
#include "common/net.hpp"
#include "container/curl_multi.hpp"
#include "container/docker_protocol.hpp"
#include "container/runtime.hpp"
#include "container/unix_http.hpp"

#include <memory>
#include <string>

namespace warmstart::container {

struct DockerClientOptions {
  std::string socket_path =
      "/var/run/docker.sock";           // the engine (parse_docker_host for --docker-host)
  Duration request_timeout = 30s;       // deadline of one API call unless stated below
  Duration connect_timeout = 5s;        // connecting to the socket
  Duration transfer_timeout = 30min;    // commit, export, import: they scale with image size
  ApiVersion min_api_version{1, 41};    // floor (Docker 20.10); older engines are refused
  ApiVersion max_api_version{1, 43};    // newest this client was written against
  Duration events_min_backoff = 100ms;  // first reconnect delay of an events stream
  Duration events_max_backoff = 5s;     // reconnect delay cap
  Duration events_resume_window = 1s;   // replayed before the newest event on reconnect (deduped)
  long max_cached_connections = 16;     // idle keep-alive connections to the engine
};

class DockerClient : public Runtime, public std::enable_shared_from_this<DockerClient> {
 public:
  static std::shared_ptr<DockerClient> create(net::any_io_executor executor,
                                              DockerClientOptions options);

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

  // The raw JSON of GET /images/{ref}/json (for audits and tests: it shows
  // everything the engine stores about an image, e.g. ContainerConfig).
  awaitable<nlohmann::json> inspect_image_raw(std::string ref);
  // The raw JSON of GET /containers/{id}/json (HostConfig as the engine applied it).
  awaitable<nlohmann::json> inspect_container_raw(std::string id);
  // "1.41" once negotiated, else empty.
  const std::string& api_version() const { return api_version_; }
  const DockerClientOptions& options() const { return options_; }
  // The plain calls' transport and the streaming one (for tests of reuse).
  const UnixHttp& transport() const { return *http_; }
  const CurlMulti& stream_transport() const { return *multi_; }

 private:
  friend class DockerEventStream;
  DockerClient(net::any_io_executor executor, DockerClientOptions options);

  // Sends a request to the versioned API (negotiating first if needed). Throws
  // TransportError when no answer arrived, ApiError for a status >= 400.
  awaitable<HttpResult> call(const char* operation, HttpRequest request);
  awaitable<nlohmann::json> call_json(const char* operation, HttpRequest request);
  awaitable<void> ensure_version();
  HttpResult check(const char* operation, HttpResult result, Duration timeout) const;
  // One HTTP request on the transport that serves it (UnixHttp::handles).
  awaitable<HttpResult> perform(HttpRequest request);

  net::any_io_executor executor_;
  DockerClientOptions options_;
  UnixHttpPtr http_;
  CurlMultiPtr multi_;
  std::string api_version_;
  std::string version_prefix_;  // "/v1.41"
};

using DockerClientPtr = std::shared_ptr<DockerClient>;

}  // namespace warmstart::container
