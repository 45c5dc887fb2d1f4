#include "container/docker_client.hpp"

#include "common/log.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>

namespace warmstart::container {
namespace {

using nlohmann::json;

// Image refs ("repo/name:tag", "sha256:...") and container ids stay readable;
// anything else in a path segment is percent-encoded.
std::string path_part(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '/' || c == ':' || c == '@') {
      out += c;
    } else {
      out += url_encode(std::string_view(&c, 1));
    }
  }
  return out;
}

HttpRequest request(std::string method, std::string target) {
  HttpRequest r;
  r.method = std::move(method);
  r.target = std::move(target);
  return r;
}

HttpRequest json_request(std::string method, std::string target, const json& body) {
  HttpRequest r = request(std::move(method), std::move(target));
  r.headers.emplace_back("Content-Type: application/json");
  r.body = body.dump();
  return r;
}

std::string short_id(std::string_view id) {
  return std::string(id.substr(0, 12));
}

// The bytes between the export (producer) and the import (consumer) of
// export_import: the export's body goes through the TarFilter into `buffer_`,
// the import's body source drains it. Bounded: past `high` the export is
// paused until the import has taken the buffer down to `low`.
class FilterPipe {
 public:
  FilterPipe(TarFilterOptions options, TransferControlPtr producer, TransferControlPtr consumer)
      : filter_(std::move(options)),
        producer_(std::move(producer)),
        consumer_(std::move(consumer)) {}

  static constexpr std::size_t high = 4 << 20;
  static constexpr std::size_t low = 1 << 20;

  // The export's on_body_flow.
  Flow push(std::string_view chunk) {
    if (buffered() >= high) {
      producer_paused_ = true;
      return Flow::pause;
    }
    bytes_in_ += chunk.size();
    const std::size_t before = buffer_.size();
    filter_.feed(chunk, buffer_);  // throws TarFormatError: the export fails
    if (buffer_.size() > before) wake_consumer();
    return Flow::proceed;
  }

  // The export ended well: whatever the filter still holds, then the end.
  void finish() {
    filter_.finish(buffer_);
    finished_ = true;
    wake_consumer();
  }

  // The import's body_source.
  std::size_t pull(char* out, std::size_t room) {
    if (buffered() == 0) {
      if (finished_) return 0;
      consumer_paused_ = true;
      return HttpRequest::source_pause;
    }
    const std::size_t n = std::min(room, buffered());
    std::memcpy(out, buffer_.data() + read_pos_, n);
    read_pos_ += n;
    bytes_out_ += n;
    if (read_pos_ == buffer_.size()) {
      buffer_.clear();  // keeps its capacity: no allocation in steady state
      read_pos_ = 0;
    } else if (read_pos_ >= buffer_.size() / 2) {
      // Moves at most as many bytes as were consumed: amortized O(1) per byte.
      buffer_.erase(0, read_pos_);
      read_pos_ = 0;
    }
    if (producer_paused_ && buffered() <= low) {
      producer_paused_ = false;
      producer_->resume();
    }
    return n;
  }

  const TarFilterStats& stats() const { return filter_.stats(); }
  std::uint64_t bytes_in() const { return bytes_in_; }
  std::uint64_t bytes_out() const { return bytes_out_; }

 private:
  std::size_t buffered() const { return buffer_.size() - read_pos_; }
  void wake_consumer() {
    if (!consumer_paused_) return;
    consumer_paused_ = false;
    consumer_->resume();
  }

  TarFilter filter_;
  TransferControlPtr producer_;
  TransferControlPtr consumer_;
  std::string buffer_;
  std::size_t read_pos_ = 0;
  bool finished_ = false;
  bool producer_paused_ = false;
  bool consumer_paused_ = false;
  std::uint64_t bytes_in_ = 0;
  std::uint64_t bytes_out_ = 0;
};

// Large transfers read and write in bigger pieces than curl's 16 KiB default.
constexpr long stream_buffer_bytes = 256 * 1024;

}  // namespace

// One events subscription: a long-lived GET /events (on UnixHttp, no deadline)
// that reconnects with backoff and resumes from its EventCursor. Events parsed
// inside the transport's body callback are queued and delivered by a posted
// drain, so the handler never runs inside the transfer and may stop or destroy
// the subscription.
class DockerEventStream : public std::enable_shared_from_this<DockerEventStream> {
 public:
  DockerEventStream(DockerClientPtr client, EventFilter filter, std::int64_t since_unix_nano,
                    EventHandler handler)
      : client_(std::move(client)),
        filters_(event_filters_json(filter)),
        cursor_(since_unix_nano, client_->options().events_resume_window.count() * 1'000'000),
        handler_(std::move(handler)) {}

  void start() {
    net::co_spawn(client_->executor_, run(),
                  net::bind_cancellation_slot(cancel_.slot(), net::detached));
  }

  void stop() {
    if (stopped_) return;
    stopped_ = true;
    pending_.clear();
    cancel_.emit(net::cancellation_type::terminal);
  }

 private:
  awaitable<void> run() {
    auto self = shared_from_this();
    Duration backoff = client_->options().events_min_backoff;
    while (!stopped_) {
      std::string problem;
      try {
        co_await client_->ensure_version();
        HttpRequest r = request("GET", client_->version_prefix_ + "/events?since=" +
                                           format_unix_nano(cursor_.resume_since()));
        if (!filters_.empty()) r.target += "&filters=" + url_encode(filters_);
        splitter_ = JsonLineSplitter();  // a partial line of a dropped stream is garbage
        r.on_body = [this](std::string_view chunk) { on_chunk(chunk); };
        HttpResult result = co_await client_->perform(std::move(r));
        if (stopped_) break;
        if (result.code == CURLE_OK && result.status == 200) {
          problem = "stream ended by the engine";
        } else if (result.code != CURLE_OK) {
          problem = result.error;
        } else {
          problem =
              "HTTP " + std::to_string(result.status) + ": " + error_message_from_body(result.body);
        }
        // The stream was up: the engine is fine, reconnect quickly.
        if (result.status == 200) backoff = client_->options().events_min_backoff;
      } catch (const boost::system::system_error& e) {
        if (e.code() == net::error::operation_aborted) break;
        problem = e.what();
      } catch (const std::exception& e) {
        problem = e.what();
      }
      if (stopped_) break;
      log::warn("docker events stream lost; resuming",
                {{"error", problem},
                 {"retry_ms", backoff.count()},
                 {"since", format_unix_nano(cursor_.resume_since())}});
      try {
        co_await sleep_for(backoff);
      } catch (const boost::system::system_error&) {
        break;  // stopped while waiting
      }
      backoff = std::min(backoff * 2, client_->options().events_max_backoff);
    }
  }

  void on_chunk(std::string_view chunk) {
    splitter_.feed(chunk, [this](std::string_view line) {
      auto event = parse_event_line(line);
      if (!event) {
        log::warn("docker events: unreadable line skipped",
                  {{"line", std::string(line.substr(0, 200))}});
        return;
      }
      if (cursor_.admit(*event)) pending_.push_back(std::move(*event));
    });
    if (!pending_.empty() && !drain_posted_) {
      drain_posted_ = true;
      net::post(client_->executor_, [self = shared_from_this()] { self->drain(); });
    }
  }

  void drain() {
    drain_posted_ = false;
    while (!stopped_ && !pending_.empty()) {
      Event event = std::move(pending_.front());
      pending_.pop_front();
      try {
        handler_(event);
      } catch (const std::exception& e) {
        log::error("docker events handler threw", {{"error", e.what()}, {"action", event.action}});
      }
    }
  }

  DockerClientPtr client_;
  std::string filters_;
  EventCursor cursor_;
  EventHandler handler_;
  JsonLineSplitter splitter_;
  std::deque<Event> pending_;
  bool drain_posted_ = false;
  bool stopped_ = false;
  net::cancellation_signal cancel_;
};

namespace {

class DockerEventSubscription : public EventSubscription {
 public:
  explicit DockerEventSubscription(std::shared_ptr<DockerEventStream> stream)
      : stream_(std::move(stream)) {}
  ~DockerEventSubscription() override { stop(); }
  void stop() override { stream_->stop(); }

 private:
  std::shared_ptr<DockerEventStream> stream_;
};

}  // namespace

std::shared_ptr<DockerClient> DockerClient::create(net::any_io_executor executor,
                                                   DockerClientOptions options) {
  return std::shared_ptr<DockerClient>(new DockerClient(std::move(executor), std::move(options)));
}

DockerClient::DockerClient(net::any_io_executor executor, DockerClientOptions options)
    : executor_(std::move(executor)), options_(std::move(options)) {
  CurlMultiOptions transport;
  transport.socket_path = options_.socket_path;
  transport.connect_timeout = options_.connect_timeout;
  transport.max_cached_connections = options_.max_cached_connections;
  multi_ = CurlMulti::create(executor_, std::move(transport));
  UnixHttpOptions plain;
  plain.socket_path = options_.socket_path;
  plain.connect_timeout = options_.connect_timeout;
  plain.max_idle_connections =
      static_cast<std::size_t>(std::max(0L, options_.max_cached_connections));
  http_ = UnixHttp::create(executor_, std::move(plain));
}

awaitable<HttpResult> DockerClient::perform(HttpRequest r) {
  if (UnixHttp::handles(r)) co_return co_await http_->perform(std::move(r));
  co_return co_await multi_->perform(std::move(r));
}

HttpResult DockerClient::check(const char* operation, HttpResult result, Duration timeout) const {
  if (result.sink_error) std::rethrow_exception(result.sink_error);
  if (result.code != CURLE_OK) {
    auto kind = transport_error_kind(result.code);
    std::string detail = result.error;
    if (kind == TransportError::Kind::timeout) {
      detail = "deadline of " + std::to_string(timeout.count()) + " ms exceeded (" + detail + ")";
    } else if (kind == TransportError::Kind::connect) {
      detail = "cannot connect to the Docker engine at unix://" + options_.socket_path + " (" +
               detail + ")";
    }
    throw TransportError(operation, kind, detail);
  }
  if (result.status >= 400) {
    throw ApiError(operation, static_cast<int>(result.status),
                   error_message_from_body(result.body));
  }
  return result;
}

awaitable<void> DockerClient::ensure_version() {
  if (version_prefix_.empty()) co_await ping();
}

awaitable<HttpResult> DockerClient::call(const char* operation, HttpRequest r) {
  auto self = shared_from_this();  // alive until the operation ends
  co_await ensure_version();
  r.target = version_prefix_ + r.target;
  if (r.timeout.count() == 0) r.timeout = options_.request_timeout;
  Duration timeout = r.timeout;
  co_return check(operation, co_await perform(std::move(r)), timeout);
}

awaitable<json> DockerClient::call_json(const char* operation, HttpRequest r) {
  auto self = shared_from_this();  // alive until the operation ends
  HttpResult result = co_await call(operation, std::move(r));
  std::string reason;
  auto parsed = parse_bounded(result.body, engine_json_limits, &reason);
  if (!parsed) {
    throw TransportError(operation, TransportError::Kind::protocol,
                         "the engine's answer " + reason + ": " + result.body.substr(0, 200));
  }
  co_return std::move(*parsed);
}

awaitable<std::string> DockerClient::ping() {
  auto self = shared_from_this();  // alive until the operation ends
  HttpRequest r = request("GET", "/_ping");
  r.timeout = options_.request_timeout;
  HttpResult result = check("ping", co_await perform(std::move(r)), options_.request_timeout);
  auto it = result.headers.find("api-version");
  ApiVersion version = negotiate_api_version(it == result.headers.end() ? "" : it->second,
                                             options_.min_api_version, options_.max_api_version);
  api_version_ = version.str();
  version_prefix_ = "/v" + api_version_;
  co_return api_version_;
}

awaitable<EngineInfo> DockerClient::info() {
  auto self = shared_from_this();  // alive until the operation ends
  json j = co_await call_json("info", request("GET", "/info"));
  EngineInfo info;
  info.id = j.value("ID", "");
  info.server_version = j.value("ServerVersion", "");
  info.storage_driver = j.value("Driver", "");
  info.api_version = api_version_;
  co_return info;
}

awaitable<json> DockerClient::inspect_image_raw(std::string ref) {
  auto self = shared_from_this();  // alive until the operation ends
  co_return co_await call_json("image inspect",
                               request("GET", "/images/" + path_part(ref) + "/json"));
}

awaitable<ImageInfo> DockerClient::inspect_image(std::string ref) {
  auto self = shared_from_this();  // alive until the operation ends
  co_return parse_image_inspect(co_await inspect_image_raw(std::move(ref)));
}

awaitable<void> DockerClient::remove_image(std::string ref, bool force) {
  auto self = shared_from_this();  // alive until the operation ends
  co_await call("image remove",
                request("DELETE", "/images/" + path_part(ref) + "?force=" + (force ? "1" : "0")));
}

awaitable<std::vector<ImageSummary>> DockerClient::list_images(std::vector<std::string> labels) {
  auto self = shared_from_this();  // alive until the operation ends
  std::string target = "/images/json";
  if (auto f = label_filters_json(labels); !f.empty()) target += "?filters=" + url_encode(f);
  json j = co_await call_json("image list", request("GET", target));
  std::vector<ImageSummary> out;
  for (const auto& item : j) out.push_back(parse_image_summary(item));
  co_return out;
}

awaitable<std::string> DockerClient::create_container(ContainerSpec spec) {
  auto self = shared_from_this();  // alive until the operation ends
  std::string target = "/containers/create";
  if (!spec.name.empty()) target += "?name=" + url_encode(spec.name);
  json j = co_await call_json("container create",
                              json_request("POST", target, container_create_body(spec)));
  for (const auto& warning : j.value("Warnings", json::array())) {
    if (warning.is_string()) {
      log::warn("docker: container create warning", {{"warning", warning.get<std::string>()}});
    }
  }
  co_return j.value("Id", "");
}

awaitable<void> DockerClient::start_container(std::string id) {
  auto self = shared_from_this();  // alive until the operation ends
  // 304 (already started) is not an error: start is idempotent for the router.
  co_await call("container start", request("POST", "/containers/" + path_part(id) + "/start"));
}

awaitable<void> DockerClient::stop_container(std::string id, std::chrono::seconds grace) {
  auto self = shared_from_this();  // alive until the operation ends
  HttpRequest r =
      request("POST", "/containers/" + path_part(id) + "/stop?t=" + std::to_string(grace.count()));
  // The engine answers after the grace period at worst.
  r.timeout = options_.request_timeout + std::chrono::duration_cast<Duration>(grace);
  co_await call("container stop", std::move(r));
}

awaitable<void> DockerClient::kill_container(std::string id, std::string signal) {
  auto self = shared_from_this();  // alive until the operation ends
  co_await call("container kill", request("POST", "/containers/" + path_part(id) +
                                                      "/kill?signal=" + url_encode(signal)));
}

awaitable<int> DockerClient::wait_container(std::string id, Duration deadline) {
  auto self = shared_from_this();  // alive until the operation ends
  HttpRequest r = request("POST", "/containers/" + path_part(id) + "/wait");
  r.timeout = deadline;
  json j = co_await call_json("container wait", std::move(r));
  if (const auto& error = j.value("Error", json()); error.is_object()) {
    std::string message = error.value("Message", "");
    if (!message.empty()) {
      log::warn("docker: container wait reported an error",
                {{"container", short_id(id)}, {"error", message}});
    }
  }
  co_return j.value("StatusCode", -1);
}

awaitable<json> DockerClient::inspect_container_raw(std::string id) {
  auto self = shared_from_this();  // alive until the operation ends
  co_return co_await call_json("container inspect",
                               request("GET", "/containers/" + path_part(id) + "/json"));
}

awaitable<ContainerInfo> DockerClient::inspect_container(std::string id) {
  auto self = shared_from_this();  // alive until the operation ends
  co_return parse_container_inspect(co_await inspect_container_raw(std::move(id)));
}

awaitable<Logs> DockerClient::container_logs(std::string id, std::size_t max_bytes) {
  auto self = shared_from_this();  // alive until the operation ends
  // Every line has at least one byte, so max_bytes + 1 lines hold more than
  // max_bytes whenever the engine cut lines off: `truncated` stays exact.
  HttpRequest r = request("GET", "/containers/" + path_part(id) + "/logs?stdout=1&stderr=1&tail=" +
                                     std::to_string(max_bytes + 1));
  auto demuxer = std::make_shared<LogDemuxer>(max_bytes);
  r.on_body = [demuxer](std::string_view chunk) { demuxer->feed(chunk); };
  co_await call("container logs", std::move(r));
  co_return demuxer->finish();
}

awaitable<void> DockerClient::remove_container(std::string id, bool force) {
  auto self = shared_from_this();  // alive until the operation ends
  co_await call("container remove", request("DELETE", "/containers/" + path_part(id) +
                                                          "?v=1&force=" + (force ? "1" : "0")));
}

awaitable<std::vector<ContainerSummary>> DockerClient::list_containers(
    std::vector<std::string> labels, bool all) {
  auto self = shared_from_this();  // alive until the operation ends
  std::string target = std::string("/containers/json?all=") + (all ? "1" : "0");
  if (auto f = label_filters_json(labels); !f.empty()) target += "&filters=" + url_encode(f);
  json j = co_await call_json("container list", request("GET", target));
  std::vector<ContainerSummary> out;
  for (const auto& item : j) out.push_back(parse_container_summary(item));
  co_return out;
}

awaitable<std::string> DockerClient::commit_container(std::string id, CommitOptions options) {
  auto self = shared_from_this();  // alive until the operation ends
  if (options.config && options.scrub_container_config) {
    // Export + import: the new image's config is exactly `config`, and no
    // ContainerConfig (with the job's env) is ever written; see CommitOptions.
    bool paused = false;
    if (options.pause) {
      ContainerInfo info = co_await inspect_container(id);
      if (info.state.running) {
        co_await call("container pause",
                      request("POST", "/containers/" + path_part(id) + "/pause"));
        paused = true;
      }
    }
    TarFilterOptions unfiltered;
    unfiltered.strip_git_credentials = false;
    std::exception_ptr error;
    std::string image_id;
    try {
      FilteredImport made = co_await export_import(
          id, options.repo, options.tag, image_config_changes(*options.config), unfiltered);
      image_id = std::move(made.image_id);
    } catch (...) {
      error = std::current_exception();
    }
    if (paused) {
      co_await call("container unpause",
                    request("POST", "/containers/" + path_part(id) + "/unpause"));
    }
    if (error) std::rethrow_exception(error);
    co_return image_id;
  }

  std::string target = "/commit?container=" + url_encode(id) + "&repo=" + url_encode(options.repo) +
                       "&tag=" + url_encode(options.tag) + "&pause=" + (options.pause ? "1" : "0");
  if (!options.comment.empty()) target += "&comment=" + url_encode(options.comment);
  // Always a JSON body ("{}": no override): the engine refuses a bodiless
  // POST /commit, whose Content-Type curl makes form-urlencoded.
  // (No ?: with class operands in coroutines: g++ 12 miscompiles them.)
  HttpRequest r = json_request("POST", target, json::object());
  if (options.config) r = json_request("POST", target, image_config_body(*options.config));
  r.timeout = options_.transfer_timeout;
  json j = co_await call_json("container commit", std::move(r));
  co_return j.value("Id", "");
}

awaitable<void> DockerClient::export_container(std::string id, std::string path) {
  auto self = shared_from_this();  // alive until the operation ends
  auto out = std::make_shared<std::ofstream>(path, std::ios::binary | std::ios::trunc);
  if (!*out) {
    throw DockerError("container export", "container export: cannot write " + path);
  }
  HttpRequest r = request("GET", "/containers/" + path_part(id) + "/export");
  r.timeout = options_.transfer_timeout;
  r.on_body = [out, path](std::string_view chunk) {
    out->write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    if (!*out)
      throw DockerError("container export", "container export: write to " + path + " failed");
  };
  std::exception_ptr error;
  try {
    co_await call("container export", std::move(r));
    out->close();
    if (!*out)
      throw DockerError("container export", "container export: closing " + path + " failed");
  } catch (...) {
    error = std::current_exception();
  }
  if (error) {
    out->close();
    ::unlink(path.c_str());  // never leave a partial tar that looks complete
    std::rethrow_exception(error);
  }
}

awaitable<std::string> DockerClient::import_image(std::string path, std::string repo,
                                                  std::string tag,
                                                  std::vector<std::string> changes) {
  auto self = shared_from_this();  // alive until the operation ends
  std::string target = "/images/create?fromSrc=-&repo=" + url_encode(repo);
  if (!tag.empty()) target += "&tag=" + url_encode(tag);
  for (const auto& change : changes) target += "&changes=" + url_encode(change);
  HttpRequest r = request("POST", target);
  r.body_file = std::move(path);
  r.headers.emplace_back("Content-Type: application/x-tar");
  r.timeout = options_.transfer_timeout;
  HttpResult result = co_await call("image import", std::move(r));
  ImportOutcome outcome = parse_import_progress(result.body);
  // The engine reports failures inside a 200 progress stream.
  if (!outcome.error.empty()) {
    throw ApiError("image import", static_cast<int>(result.status), outcome.error);
  }
  if (outcome.image_id.empty()) {
    throw TransportError("image import", TransportError::Kind::protocol,
                         "no image id in the progress stream: " + result.body.substr(0, 200));
  }
  co_return outcome.image_id;
}

awaitable<FilteredImport> DockerClient::export_import(std::string container_id, std::string repo,
                                                      std::string tag,
                                                      std::vector<std::string> changes,
                                                      TarFilterOptions filter) {
  using namespace net::experimental::awaitable_operators;
  auto self = shared_from_this();  // alive until the operation ends
  auto producer = std::make_shared<TransferControl>();
  auto consumer = std::make_shared<TransferControl>();
  auto pipe = std::make_shared<FilterPipe>(std::move(filter), producer, consumer);

  HttpRequest out = request("GET", "/containers/" + path_part(container_id) + "/export");
  out.timeout = options_.transfer_timeout;
  out.control = producer;
  out.buffer_bytes = stream_buffer_bytes;
  out.on_body_flow = [pipe](std::string_view chunk) { return pipe->push(chunk); };

  std::string target = "/images/create?fromSrc=-&repo=" + url_encode(repo);
  if (!tag.empty()) target += "&tag=" + url_encode(tag);
  for (const auto& change : changes) target += "&changes=" + url_encode(change);
  HttpRequest in = request("POST", target);
  in.headers.emplace_back("Content-Type: application/x-tar");
  in.timeout = options_.transfer_timeout;
  in.control = consumer;
  in.buffer_bytes = stream_buffer_bytes;
  in.body_source = [pipe](char* buffer, std::size_t room) { return pipe->pull(buffer, room); };

  // Both transfers run at once; the first to fail cancels the other (the
  // engine drops an import whose body was cut off). That first failure is the
  // one reported, not the cancellation it caused on the other side.
  auto failure = std::make_shared<std::exception_ptr>();
  auto export_side = [](DockerClient* client, HttpRequest r, std::shared_ptr<FilterPipe> p,
                        std::shared_ptr<std::exception_ptr> first) -> awaitable<void> {
    try {
      co_await client->call("container export", std::move(r));
      p->finish();  // throws when the archive ended inside an entry
    } catch (...) {
      if (!*first) *first = std::current_exception();
      throw;
    }
  };
  auto import_side = [](DockerClient* client, HttpRequest r,
                        std::shared_ptr<std::exception_ptr> first) -> awaitable<HttpResult> {
    try {
      co_return co_await client->call("image import", std::move(r));
    } catch (...) {
      if (!*first) *first = std::current_exception();
      throw;
    }
  };
  awaitable<void> exporting = export_side(this, std::move(out), pipe, failure);
  awaitable<HttpResult> importing = import_side(this, std::move(in), failure);
  HttpResult result;
  std::exception_ptr error;
  try {
    result = co_await (std::move(exporting) && std::move(importing));
  } catch (...) {
    error = *failure ? *failure : std::current_exception();
  }
  if (error) std::rethrow_exception(error);
  ImportOutcome outcome = parse_import_progress(result.body);
  if (!outcome.error.empty()) {
    throw ApiError("image import", static_cast<int>(result.status), outcome.error);
  }
  if (outcome.image_id.empty()) {
    throw TransportError("image import", TransportError::Kind::protocol,
                         "no image id in the progress stream: " + result.body.substr(0, 200));
  }
  FilteredImport made;
  made.image_id = std::move(outcome.image_id);
  made.filter = pipe->stats();
  made.bytes_in = pipe->bytes_in();
  made.bytes_out = pipe->bytes_out();
  co_return made;
}

EventSubscriptionPtr DockerClient::subscribe_events(EventFilter filter,
                                                    std::int64_t since_unix_nano,
                                                    EventHandler handler) {
  if (since_unix_nano == 0) {
    // "Now", pinned at subscribe time: a reconnect before the first event must
    // still replay what happened since then. The engine is local: same clock.
    since_unix_nano = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  }
  auto stream = std::make_shared<DockerEventStream>(shared_from_this(), std::move(filter),
                                                    since_unix_nano, std::move(handler));
  stream->start();
  return std::make_unique<DockerEventSubscription>(std::move(stream));
}

}  // namespace warmstart::container
