// The front door's rules as pure functions (no sockets, unit-tested in
// access_test.cpp): which Host names the server answers to (DNS rebinding),
// which Origins may send a mutating request (CSRF), which media type a body
// must have, and which snapshot keys a caller may use.
#pragma once
#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace warmstart::api {

struct FrontDoorOptions {
  // The listen address ("127.0.0.1:8080", "[::]:8080"): its IP literal is
  // always an allowed Host; a loopback listener also answers to "localhost"
  // and every loopback literal; an unspecified one (0.0.0.0, ::) to every IP
  // literal.
  std::string listen;
  std::vector<std::string> allowed_hosts;    // extra names, e.g. "warmstart.example.com"
  std::vector<std::string> allowed_origins;  // extra exact origins, e.g. "https://ops.example.com"
};

class FrontDoor {
 public:
  // Throws std::invalid_argument on a malformed listen address or name.
  explicit FrontDoor(FrontDoorOptions options);

  // `host` is the Host header ("name", "name:port", "[v6]:port"); the port is
  // not compared (a rebinding attack changes the name, not the port).
  bool host_allowed(std::string_view host) const;
  // An Origin header on a mutating request: allowed when it is the origin the
  // browser addressed (its host[:port] equals `host`, an allowed Host) or one
  // of allowed_origins. "null" and anything else are refused.
  bool origin_allowed(std::string_view origin, std::string_view host) const;

  bool loopback_listener() const { return loopback_; }

 private:
  FrontDoorOptions options_;
  std::string listen_ip_;  // canonical text of the listen address
  bool loopback_ = false;
  bool unspecified_ = false;
};

// True when the listen address ("ip:port") is a loopback literal (or
// "localhost"). Throws std::invalid_argument when it is malformed.
bool is_loopback_listen(const std::string& listen);

// "application/json" or "application/json; charset=utf-8" (case-insensitive).
bool is_json_media_type(std::string_view content_type);

// A job body may only name a snapshot key under `prefix` (nullopt = any key).
// Returns the reason when it does not.
std::optional<std::string> snapshot_key_problem(const nlohmann::json& job,
                                                const std::optional<std::string>& prefix);

// For list endpoints: the job record without the log tail and with the spec's
// env reduced to its names ("env_keys"), so no env value is ever listed.
nlohmann::json job_summary(const nlohmann::json& record);

}  // namespace warmstart::api
