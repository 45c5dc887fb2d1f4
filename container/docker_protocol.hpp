// The socket-free half of the Docker client: API version negotiation, query and
// body encoding, response parsing, the log stream demultiplexer and the events
// stream parser/resume cursor. Pure functions and small state machines fed with
// bytes, so they are unit-tested without an engine (docker_protocol_test.cpp).
#pragma once
#include "common/json_limits.hpp"
#include "container/errors.hpp"
#include "container/runtime.hpp"

#include <curl/curl.h>
#include <nlohmann/json.hpp>

#include <array>
#include <compare>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace warmstart::container {

// "1.41" as numbers: 1.9 < 1.41 < 1.100.
struct ApiVersion {
  int major = 0;
  int minor = 0;
  auto operator<=>(const ApiVersion&) const = default;
  std::string str() const { return std::to_string(major) + "." + std::to_string(minor); }
};
std::optional<ApiVersion> parse_api_version(std::string_view text);

// The version to speak: min(engine, newest). Throws DockerError when the engine
// is older than `floor` or its version header is unreadable.
ApiVersion negotiate_api_version(std::string_view engine_header, ApiVersion floor,
                                 ApiVersion newest);

// "unix:///var/run/docker.sock" or a bare absolute path -> the socket path.
// Throws std::invalid_argument for other schemes (tcp://, ssh://): this client
// only speaks to a local engine over its unix socket.
std::string parse_docker_host(std::string_view host);

// RFC 3986 percent-encoding of a query value.
std::string url_encode(std::string_view text);
// `filters` query value for label filters: {"label":["k=v","k2"]}, or "" when empty.
std::string label_filters_json(const std::vector<std::string>& labels);
// `filters` query value of an events subscription, or "" when the filter is empty.
std::string event_filters_json(const EventFilter& filter);
// Docker's `since`/`until` form for a nanosecond timestamp: "1700000000.000000123".
std::string format_unix_nano(std::int64_t unix_nano);

// Every JSON reply of the engine is parsed within these: a local engine is
// trusted to answer, not to answer small (a container list can be megabytes).
inline const JsonLimits engine_json_limits{64 << 20, 64};

// The engine's "message" from an error body, else the body text (bounded).
std::string error_message_from_body(std::string_view body);
// How a transport failure is reported (TransportError::Kind).
TransportError::Kind transport_error_kind(CURLcode code);

// Request bodies.
nlohmann::json container_create_body(const ContainerSpec& spec);
nlohmann::json image_config_body(const ImageConfig& config);
// Dockerfile instructions for `import ... changes=` that give an image `config`.
std::vector<std::string> image_config_changes(const ImageConfig& config);

// Response bodies. Missing fields stay default; wrong types throw json errors.
ImageInfo parse_image_inspect(const nlohmann::json& j);
ImageSummary parse_image_summary(const nlohmann::json& j);
ContainerInfo parse_container_inspect(const nlohmann::json& j);
ContainerSummary parse_container_summary(const nlohmann::json& j);

// Demultiplexes the framed stream of GET /containers/{id}/logs (no TTY): each
// frame is [stream type, 0, 0, 0, big-endian uint32 size] + payload, and frames
// may be split anywhere across chunks. Keeps only the last `max_bytes` of each
// text (combined, stdout, stderr) and sets `truncated` when anything was dropped.
// A stream that does not start with a frame header (TTY container) is taken as
// raw stdout.
class LogDemuxer {
 public:
  explicit LogDemuxer(std::size_t max_bytes) : max_bytes_(max_bytes) {}
  void feed(std::string_view chunk);
  // True when the stream ended in the middle of a frame.
  bool incomplete() const { return header_len_ != 0 || remaining_ != 0; }
  Logs finish();

 private:
  void append(unsigned char stream, std::string_view payload);
  void trim(std::string& text, bool final);

  std::size_t max_bytes_;
  std::array<unsigned char, 8> header_{};
  std::size_t header_len_ = 0;
  std::uint32_t remaining_ = 0;  // payload bytes left in the current frame
  unsigned char stream_ = 1;
  bool started_ = false;
  bool raw_ = false;
  Logs logs_;
};

// Splits a stream of newline-separated JSON documents (events, pull/import
// progress) into lines, independent of chunk boundaries.
class JsonLineSplitter {
 public:
  // Lines longer than `max_line` bytes are dropped (and counted), never buffered.
  explicit JsonLineSplitter(std::size_t max_line = 1 << 20) : max_line_(max_line) {}
  void feed(std::string_view chunk, const std::function<void(std::string_view line)>& on_line);
  // The last line when the stream ended without a newline.
  std::optional<std::string> take_rest();
  std::size_t dropped_lines() const { return dropped_; }

 private:
  std::size_t max_line_;
  std::string pending_;
  bool overlong_ = false;  // inside a line past max_line_: skip to its newline
  std::size_t dropped_ = 0;
};

// One line of GET /events, or nullopt when it is not a well-formed event.
std::optional<Event> parse_event_line(std::string_view line);

// The outcome of POST /images/create?fromSrc=-: the image id, or the engine's
// error reported in the progress stream (with HTTP 200).
struct ImportOutcome {
  std::string image_id;
  std::string error;
};
ImportOutcome parse_import_progress(std::string_view body);

// Where an events subscription resumes, and which events it already delivered.
// The engine replays buffered events with timeNano >= since; it publishes events
// in nearly (not strictly) time order: an event is stamped before it is
// published, and on a loaded engine another one, stamped later, can go out
// seconds before it. So we resume `window` before the newest event seen and
// drop only what we delivered already: nothing twice, nothing missed (as long
// as the engine still buffers it: its buffer holds 256 events).
class EventCursor {
 public:
  explicit EventCursor(std::int64_t since_unix_nano, std::int64_t window_nano = 1'000'000'000)
      : since_(since_unix_nano), floor_(since_unix_nano), window_(window_nano) {}
  // True when `event` was not delivered before (and is not older than the
  // subscription). An event stamped long before the newest one is new: a
  // replay starts at resume_since(), and what it repeats is remembered.
  bool admit(const Event& event);
  // `since` for the next (re)connect.
  std::int64_t resume_since() const { return floor_; }

 private:
  std::int64_t since_;
  std::int64_t floor_;
  std::int64_t window_;
  std::int64_t newest_ = 0;
  std::set<std::pair<std::int64_t, std::string>> delivered_;  // (time_nano, fingerprint)
};

}  // namespace warmstart::container
