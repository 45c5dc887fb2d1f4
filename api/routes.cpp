#include "api/routes.hpp"

#include <array>
#include <vector>

namespace warmstart::api {
namespace {

struct RouteSpec {
  std::string_view method;
  std::string_view pattern;  // "{x}" one segment, "{x...}" the rest of the path
  Endpoint endpoint;
};

constexpr std::array<RouteSpec, 16> routes = {{
    {"POST", "/v1/jobs", Endpoint::create_job},
    {"GET", "/v1/jobs", Endpoint::list_jobs},
    {"GET", "/v1/jobs/{id}", Endpoint::get_job},
    {"DELETE", "/v1/jobs/{id}", Endpoint::cancel_job},
    {"GET", "/v1/jobs/{id}/logs", Endpoint::job_logs},
    {"GET", "/v1/snapshots", Endpoint::list_snapshots},
    {"DELETE", "/v1/snapshots/{key...}", Endpoint::invalidate_snapshot},
    {"POST", "/v1/snapshots/{key}/prewarm", Endpoint::prewarm_snapshot},
    {"GET", "/v1/routers", Endpoint::list_routers},
    {"GET", "/v1/history", Endpoint::history},
    {"GET", "/v1/events", Endpoint::events},
    {"POST", "/v1/webhooks/{name}", Endpoint::webhook},
    {"GET", "/metrics", Endpoint::metrics},
    {"GET", "/healthz", Endpoint::healthz},
    {"GET", "/readyz", Endpoint::readyz},
    {"GET", "/", Endpoint::dashboard},
}};

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> out;
  if (!path.empty() && path.front() == '/') path.remove_prefix(1);
  std::size_t pos = 0;
  for (;;) {
    const std::size_t slash = path.find('/', pos);
    out.push_back(path.substr(pos, slash == std::string_view::npos ? slash : slash - pos));
    if (slash == std::string_view::npos) break;
    pos = slash + 1;
  }
  return out;
}

enum class Match { no, yes, bad_escape };

// Matches raw path segments against a pattern; the captured parameter is decoded.
Match match_pattern(std::string_view pattern, std::string_view path, std::string& param) {
  const auto want = split_path(pattern);
  const auto have = split_path(path);
  std::size_t i = 0;
  for (; i < want.size(); ++i) {
    const std::string_view w = want[i];
    const bool capture = w.size() > 2 && w.front() == '{' && w.back() == '}';
    const bool rest = capture && w.ends_with("...}");
    if (rest) {
      if (i >= have.size()) return Match::no;
      // The raw remainder of the path, slashes included.
      std::size_t offset = static_cast<std::size_t>(have[i].data() - path.data());
      const std::string_view remainder = path.substr(offset);
      if (remainder.empty()) return Match::no;
      auto decoded = url_decode(remainder);
      if (!decoded) return Match::bad_escape;
      param = std::move(*decoded);
      return Match::yes;
    }
    if (i >= have.size()) return Match::no;
    if (capture) {
      if (have[i].empty()) return Match::no;
      auto decoded = url_decode(have[i]);
      if (!decoded) return Match::bad_escape;
      param = std::move(*decoded);
    } else if (w != have[i]) {
      return Match::no;
    }
  }
  return i == have.size() ? Match::yes : Match::no;
}

}  // namespace

const char* endpoint_name(Endpoint endpoint) {
  switch (endpoint) {
    case Endpoint::create_job:
      return "create_job";
    case Endpoint::list_jobs:
      return "list_jobs";
    case Endpoint::get_job:
      return "get_job";
    case Endpoint::job_logs:
      return "job_logs";
    case Endpoint::cancel_job:
      return "cancel_job";
    case Endpoint::list_snapshots:
      return "list_snapshots";
    case Endpoint::invalidate_snapshot:
      return "invalidate_snapshot";
    case Endpoint::prewarm_snapshot:
      return "prewarm_snapshot";
    case Endpoint::list_routers:
      return "list_routers";
    case Endpoint::history:
      return "history";
    case Endpoint::events:
      return "events";
    case Endpoint::webhook:
      return "webhook";
    case Endpoint::metrics:
      return "metrics";
    case Endpoint::healthz:
      return "healthz";
    case Endpoint::readyz:
      return "readyz";
    case Endpoint::dashboard:
      return "dashboard";
  }
  return "unknown";
}

bool requires_bearer(Endpoint endpoint) {
  switch (endpoint) {
    case Endpoint::create_job:
    case Endpoint::list_jobs:
    case Endpoint::get_job:
    case Endpoint::job_logs:
    case Endpoint::cancel_job:
    case Endpoint::list_snapshots:
    case Endpoint::invalidate_snapshot:
    case Endpoint::prewarm_snapshot:
    case Endpoint::list_routers:
    case Endpoint::history:
    case Endpoint::events:
      return true;
    case Endpoint::webhook:
    case Endpoint::metrics:
    case Endpoint::healthz:
    case Endpoint::readyz:
    case Endpoint::dashboard:
      return false;
  }
  return true;
}

RouteMatch match_route(std::string_view method, std::string_view path) {
  RouteMatch result;
  for (const RouteSpec& route : routes) {
    std::string param;
    switch (match_pattern(route.pattern, path, param)) {
      case Match::no:
        continue;
      case Match::bad_escape:
        result.outcome = RouteMatch::Outcome::bad_request;
        result.reason = "malformed percent-encoding in path";
        return result;
      case Match::yes:
        if (route.method == method) {
          result.outcome = RouteMatch::Outcome::matched;
          result.endpoint = route.endpoint;
          result.param = std::move(param);
          result.allow.clear();
          return result;
        }
        result.outcome = RouteMatch::Outcome::method_not_allowed;
        if (result.allow.find(route.method) == std::string::npos) {
          if (!result.allow.empty()) result.allow += ", ";
          result.allow += route.method;
        }
        break;
    }
  }
  return result;
}

std::optional<std::string> url_decode(std::string_view text, bool plus_is_space) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%') {
      if (i + 2 >= text.size()) return std::nullopt;
      const int hi = hex(text[i + 1]);
      const int lo = hex(text[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      const char decoded = static_cast<char>((hi << 4) | lo);
      if (decoded == '\0') return std::nullopt;
      out.push_back(decoded);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::optional<Target> parse_target(std::string_view target) {
  if (target.empty() || target.front() != '/') return std::nullopt;
  Target out;
  const std::size_t question = target.find('?');
  out.path = std::string(target.substr(0, question));
  if (question == std::string_view::npos) return out;
  std::string_view query = target.substr(question + 1);
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    const std::size_t eq = pair.find('=');
    auto key = url_decode(pair.substr(0, eq), true);
    auto value =
        url_decode(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1), true);
    if (!key || !value) return std::nullopt;
    out.query[*key] = std::move(*value);
  }
  return out;
}

}  // namespace warmstart::api
