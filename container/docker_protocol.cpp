#include "container/docker_protocol.hpp"

#include "common/json_limits.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <ctime>
#include <stdexcept>

namespace warmstart::container {
namespace {

using nlohmann::json;

std::string string_or(const json& j, const char* key, std::string fallback = {}) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return fallback;
  return it->get<std::string>();
}

// Engine numbers are integers; a float (or an integer past int64) is not
// converted (that would be undefined behaviour), the fallback stands.
std::int64_t int_or(const json& j, const char* key, std::int64_t fallback = 0) {
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  if (it->is_number_unsigned()) {
    const auto n = it->get<std::uint64_t>();
    return n <= static_cast<std::uint64_t>(INT64_MAX) ? static_cast<std::int64_t>(n) : fallback;
  }
  if (it->is_number_integer()) return it->get<std::int64_t>();
  return fallback;
}

bool bool_or(const json& j, const char* key, bool fallback = false) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() ? it->get<bool>() : fallback;
}

std::vector<std::string> strings_or_empty(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_array()) return {};
  std::vector<std::string> out;
  for (const auto& v : *it) {
    if (v.is_string()) out.push_back(v.get<std::string>());
  }
  return out;
}

Labels labels_or_empty(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_object()) return {};
  Labels out;
  for (const auto& [k, v] : it->items()) {
    if (v.is_string()) out[k] = v.get<std::string>();
  }
  return out;
}

int to_int32(std::int64_t n) {
  return n >= INT32_MIN && n <= INT32_MAX ? static_cast<int>(n) : -1;
}

const json& object_or_empty(const json& j, const char* key) {
  static const json empty = json::object();
  auto it = j.find(key);
  return it != j.end() && it->is_object() ? *it : empty;
}

// Dockerfile double-quoted word: the shell lexer of `changes` expands $VAR and
// treats backslash as escape inside double quotes.
std::string dockerfile_quote(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\' || c == '$') out += '\\';
    out += c;
  }
  return out + "\"";
}

}  // namespace

std::optional<ApiVersion> parse_api_version(std::string_view text) {
  auto dot = text.find('.');
  if (dot == std::string_view::npos || dot == 0 || dot + 1 == text.size()) return std::nullopt;
  ApiVersion v;
  auto parse = [](std::string_view part, int& out) {
    auto [ptr, ec] = std::from_chars(part.data(), part.data() + part.size(), out);
    return ec == std::errc() && ptr == part.data() + part.size() && out >= 0;
  };
  if (!parse(text.substr(0, dot), v.major) || !parse(text.substr(dot + 1), v.minor)) {
    return std::nullopt;
  }
  return v;
}

ApiVersion negotiate_api_version(std::string_view engine_header, ApiVersion floor,
                                 ApiVersion newest) {
  auto engine = parse_api_version(engine_header);
  if (!engine) {
    throw DockerError("ping", "ping: engine sent no readable API-Version header (got \"" +
                                  std::string(engine_header) + "\")");
  }
  if (*engine < floor) {
    throw DockerError("ping", "ping: the Docker engine speaks API " + engine->str() +
                                  ", older than " + floor.str() +
                                  " which warmstart needs (Docker 20.10 or newer)");
  }
  return std::min(*engine, newest);
}

std::string parse_docker_host(std::string_view host) {
  constexpr std::string_view unix_scheme = "unix://";
  std::string_view path = host;
  if (host.rfind(unix_scheme, 0) == 0) {
    path = host.substr(unix_scheme.size());
  } else if (host.find("://") != std::string_view::npos) {
    throw std::invalid_argument("docker host " + std::string(host) +
                                ": only unix:///path/to/docker.sock is supported");
  }
  if (path.empty() || path.front() != '/') {
    throw std::invalid_argument(
        "docker host " + std::string(host) +
        ": expected an absolute socket path, e.g. unix:///var/run/docker.sock");
  }
  return std::string(path);
}

std::string url_encode(std::string_view text) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size() * 3);
  for (unsigned char c : text) {
    if (std::isalnum(c) != 0 || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 0xF];
    }
  }
  return out;
}

std::string label_filters_json(const std::vector<std::string>& labels) {
  if (labels.empty()) return {};
  return json{{"label", labels}}.dump();
}

std::string event_filters_json(const EventFilter& filter) {
  json f = json::object();
  if (!filter.types.empty()) f["type"] = filter.types;
  if (!filter.labels.empty()) f["label"] = filter.labels;
  if (!filter.events.empty()) f["event"] = filter.events;
  return f.empty() ? std::string() : f.dump();
}

std::string format_unix_nano(std::int64_t unix_nano) {
  if (unix_nano < 0) unix_nano = 0;
  std::string frac = std::to_string(unix_nano % 1'000'000'000);
  return std::to_string(unix_nano / 1'000'000'000) + "." + std::string(9 - frac.size(), '0') + frac;
}

std::string error_message_from_body(std::string_view body) {
  auto parsed = parse_bounded(body, engine_json_limits).value_or(nullptr);
  if (parsed.is_object()) {
    if (auto it = parsed.find("message"); it != parsed.end() && it->is_string()) {
      return it->get<std::string>();
    }
  }
  std::string text(body.substr(0, 1024));
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text.empty() ? "(empty body)" : text;
}

TransportError::Kind transport_error_kind(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
      return TransportError::Kind::connect;
    case CURLE_OPERATION_TIMEDOUT:
      return TransportError::Kind::timeout;
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_HTTP2:
      return TransportError::Kind::protocol;
    default:
      return TransportError::Kind::io;
  }
}

json container_create_body(const ContainerSpec& spec) {
  json host = {
      {"NetworkMode", spec.network_mode},
      {"CapDrop", spec.cap_drop},
      {"SecurityOpt", spec.security_opt},
      // Stated, not defaulted: the router never runs privileged or with host mounts.
      {"Privileged", false},
      {"Binds", json::array()},
  };
  if (spec.resources.memory_bytes > 0) host["Memory"] = spec.resources.memory_bytes;
  if (spec.resources.memory_swap_bytes > 0) host["MemorySwap"] = spec.resources.memory_swap_bytes;
  if (!spec.log.type.empty()) {
    host["LogConfig"] = {{"Type", spec.log.type}, {"Config", spec.log.options}};
  }
  if (!spec.ulimits.empty()) {
    json ulimits = json::array();
    for (const Ulimit& u : spec.ulimits) {
      ulimits.push_back({{"Name", u.name}, {"Soft", u.soft}, {"Hard", u.hard}});
    }
    host["Ulimits"] = std::move(ulimits);
  }
  if (spec.resources.nano_cpus > 0) host["NanoCpus"] = spec.resources.nano_cpus;
  if (spec.resources.pids_limit > 0) host["PidsLimit"] = spec.resources.pids_limit;
  json body = {
      {"Image", spec.image},  {"Labels", spec.labels}, {"Env", spec.env},
      {"AttachStdin", false}, {"AttachStdout", false}, {"AttachStderr", false},
      {"Tty", false},         {"OpenStdin", false},    {"HostConfig", std::move(host)},
  };
  if (!spec.cmd.empty()) body["Cmd"] = spec.cmd;
  if (!spec.user.empty()) body["User"] = spec.user;
  if (!spec.working_dir.empty()) body["WorkingDir"] = spec.working_dir;
  return body;
}

json image_config_body(const ImageConfig& config) {
  json body = {
      {"Env", config.env},       {"Cmd", config.cmd},
      {"User", config.user},     {"WorkingDir", config.working_dir},
      {"Labels", config.labels},
  };
  body["Entrypoint"] = config.entrypoint.empty() ? json(nullptr) : json(config.entrypoint);
  return body;
}

std::vector<std::string> image_config_changes(const ImageConfig& config) {
  std::vector<std::string> changes;
  for (const auto& kv : config.env) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) continue;
    changes.push_back("ENV " + kv.substr(0, eq) + "=" + dockerfile_quote(kv.substr(eq + 1)));
  }
  if (!config.entrypoint.empty()) changes.push_back("ENTRYPOINT " + json(config.entrypoint).dump());
  if (!config.cmd.empty()) changes.push_back("CMD " + json(config.cmd).dump());
  if (!config.user.empty()) changes.push_back("USER " + config.user);
  if (!config.working_dir.empty()) changes.push_back("WORKDIR " + config.working_dir);
  for (const auto& [k, v] : config.labels) {
    changes.push_back("LABEL " + dockerfile_quote(k) + "=" + dockerfile_quote(v));
  }
  return changes;
}

ImageInfo parse_image_inspect(const json& j) {
  ImageInfo info;
  info.id = string_or(j, "Id");
  info.repo_tags = strings_or_empty(j, "RepoTags");
  info.size_bytes = int_or(j, "Size");
  const json& rootfs = object_or_empty(j, "RootFS");
  if (auto it = rootfs.find("Layers"); it != rootfs.end() && it->is_array()) {
    info.layer_count = it->size();
  }
  // Created is RFC 3339 text here; the seconds are enough for eviction order.
  std::string created = string_or(j, "Created");
  if (created.size() >= 19) {
    std::tm tm{};
    if (strptime(created.substr(0, 19).c_str(), "%Y-%m-%dT%H:%M:%S", &tm) != nullptr) {
      info.created_unix = timegm(&tm);
    }
  }
  const json& config = object_or_empty(j, "Config");
  info.config.env = strings_or_empty(config, "Env");
  info.config.cmd = strings_or_empty(config, "Cmd");
  info.config.entrypoint = strings_or_empty(config, "Entrypoint");
  info.config.user = string_or(config, "User");
  info.config.working_dir = string_or(config, "WorkingDir");
  info.config.labels = labels_or_empty(config, "Labels");
  return info;
}

ImageSummary parse_image_summary(const json& j) {
  ImageSummary s;
  s.id = string_or(j, "Id");
  s.repo_tags = strings_or_empty(j, "RepoTags");
  s.size_bytes = int_or(j, "Size");
  s.created_unix = int_or(j, "Created");
  s.labels = labels_or_empty(j, "Labels");
  return s;
}

ContainerInfo parse_container_inspect(const json& j) {
  ContainerInfo info;
  info.id = string_or(j, "Id");
  info.name = string_or(j, "Name");
  if (!info.name.empty() && info.name.front() == '/') info.name.erase(0, 1);
  info.image_id = string_or(j, "Image");
  const json& config = object_or_empty(j, "Config");
  info.image = string_or(config, "Image");
  info.labels = labels_or_empty(config, "Labels");
  const json& state = object_or_empty(j, "State");
  info.state.status = string_or(state, "Status");
  info.state.running = bool_or(state, "Running");
  info.state.oom_killed = bool_or(state, "OOMKilled");
  info.state.exit_code = to_int32(int_or(state, "ExitCode"));
  info.state.pid = to_int32(int_or(state, "Pid"));
  info.state.error = string_or(state, "Error");
  info.state.started_at = string_or(state, "StartedAt");
  info.state.finished_at = string_or(state, "FinishedAt");
  return info;
}

ContainerSummary parse_container_summary(const json& j) {
  ContainerSummary s;
  s.id = string_or(j, "Id");
  s.names = strings_or_empty(j, "Names");
  s.image = string_or(j, "Image");
  s.image_id = string_or(j, "ImageID");
  s.state = string_or(j, "State");
  s.status = string_or(j, "Status");
  s.created_unix = int_or(j, "Created");
  s.labels = labels_or_empty(j, "Labels");
  return s;
}

void LogDemuxer::feed(std::string_view chunk) {
  if (!started_ && !chunk.empty()) {
    started_ = true;
    raw_ = static_cast<unsigned char>(chunk.front()) > 2;
  }
  if (raw_) {
    append(1, chunk);
    return;
  }
  while (!chunk.empty()) {
    if (remaining_ == 0) {
      std::size_t take = std::min(chunk.size(), header_.size() - header_len_);
      std::copy_n(chunk.begin(), take, header_.begin() + static_cast<std::ptrdiff_t>(header_len_));
      header_len_ += take;
      chunk.remove_prefix(take);
      if (header_len_ < header_.size()) return;
      header_len_ = 0;
      stream_ = header_[0];
      remaining_ = (std::uint32_t{header_[4]} << 24) | (std::uint32_t{header_[5]} << 16) |
                   (std::uint32_t{header_[6]} << 8) | std::uint32_t{header_[7]};
      continue;
    }
    std::size_t take = std::min<std::size_t>(chunk.size(), remaining_);
    append(stream_, chunk.substr(0, take));
    remaining_ -= static_cast<std::uint32_t>(take);
    chunk.remove_prefix(take);
  }
}

void LogDemuxer::append(unsigned char stream, std::string_view payload) {
  logs_.combined.append(payload);
  (stream == 2 ? logs_.stderr_text : logs_.stdout_text).append(payload);
  trim(logs_.combined, false);
  trim(logs_.stdout_text, false);
  trim(logs_.stderr_text, false);
}

void LogDemuxer::trim(std::string& text, bool final) {
  // Amortized: cut only when well over the bound, exactly at the end.
  std::size_t slack = final ? 0 : max_bytes_ + 4096;
  if (text.size() > max_bytes_ + slack) {
    text.erase(0, text.size() - max_bytes_);
    logs_.truncated = true;
  }
}

Logs LogDemuxer::finish() {
  trim(logs_.combined, true);
  trim(logs_.stdout_text, true);
  trim(logs_.stderr_text, true);
  return std::move(logs_);
}

void JsonLineSplitter::feed(std::string_view chunk,
                            const std::function<void(std::string_view)>& on_line) {
  while (!chunk.empty()) {
    auto nl = chunk.find('\n');
    const std::string_view part = chunk.substr(0, nl);
    if (!overlong_) {
      if (pending_.size() + part.size() > max_line_) {
        // A line past the bound is dropped whole (up to its newline), never buffered.
        overlong_ = true;
        ++dropped_;
        pending_.clear();
      } else {
        pending_.append(part);
      }
    }
    if (nl == std::string_view::npos) return;
    chunk.remove_prefix(nl + 1);
    const bool complete = !overlong_;
    overlong_ = false;
    std::string line = std::move(pending_);
    pending_.clear();
    if (!complete) continue;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) on_line(line);
  }
}

std::optional<std::string> JsonLineSplitter::take_rest() {
  if (overlong_) {
    overlong_ = false;
    pending_.clear();
    return std::nullopt;
  }
  if (pending_.empty()) return std::nullopt;
  std::string rest = std::move(pending_);
  pending_.clear();
  return rest;
}

std::optional<Event> parse_event_line(std::string_view line) {
  auto j = parse_bounded(line, engine_json_limits).value_or(nullptr);
  if (!j.is_object()) return std::nullopt;
  Event e;
  e.type = string_or(j, "Type");
  e.action = string_or(j, "Action", string_or(j, "status"));
  const json& actor = object_or_empty(j, "Actor");
  e.id = string_or(actor, "ID", string_or(j, "id"));
  e.attributes = labels_or_empty(actor, "Attributes");
  // "time" is seconds; past year 2262 it would not fit in nanoseconds.
  const std::int64_t seconds = int_or(j, "time");
  const std::int64_t fallback_nano =
      seconds > 0 && seconds < INT64_MAX / 1'000'000'000 ? seconds * 1'000'000'000 : 0;
  e.time_nano = int_or(j, "timeNano", fallback_nano);
  if (e.type.empty() || e.action.empty() || e.time_nano <= 0) return std::nullopt;
  return e;
}

ImportOutcome parse_import_progress(std::string_view body) {
  ImportOutcome out;
  JsonLineSplitter lines;
  auto on_line = [&](std::string_view line) {
    auto j = parse_bounded(line, engine_json_limits).value_or(nullptr);
    if (!j.is_object()) return;
    if (auto it = j.find("error"); it != j.end() && it->is_string()) {
      out.error = it->get<std::string>();
    } else if (const json& detail = object_or_empty(j, "errorDetail"); detail.contains("message")) {
      out.error = string_or(detail, "message");
    }
    std::string status = string_or(j, "status");
    if (status.rfind("sha256:", 0) == 0) out.image_id = status;
  };
  lines.feed(body, on_line);
  if (auto rest = lines.take_rest()) on_line(*rest);
  return out;
}

bool EventCursor::admit(const Event& event) {
  if (event.time_nano < since_) return false;
  std::string fingerprint = event.type + '\n' + event.action + '\n' + event.id;
  if (!delivered_.emplace(event.time_nano, std::move(fingerprint)).second) return false;
  newest_ = std::max(newest_, event.time_nano);
  floor_ = std::max(floor_, newest_ - window_);
  // A replay starts at most `window` before the newest event and comes in
  // nearly time order: what it could repeat is remembered, with room for the
  // engine's out-of-order publishing; older fingerprints are dead weight.
  constexpr std::int64_t out_of_order_ns = 30'000'000'000;
  delivered_.erase(delivered_.begin(),
                   delivered_.lower_bound({floor_ - out_of_order_ns, std::string()}));
  return true;
}

}  // namespace warmstart::container
