// The routing table of the HTTP front, as data plus a pure matcher: no
// sockets, so every path rule is unit-tested.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace warmstart::api {

enum class Endpoint {
  create_job,           // POST   /v1/jobs
  list_jobs,            // GET    /v1/jobs?state=&limit=
  get_job,              // GET    /v1/jobs/{id}
  job_logs,             // GET    /v1/jobs/{id}/logs
  cancel_job,           // DELETE /v1/jobs/{id}
  list_snapshots,       // GET    /v1/snapshots
  invalidate_snapshot,  // DELETE /v1/snapshots/{key...}  (keys contain '/')
  prewarm_snapshot,     // POST   /v1/snapshots/{key}/prewarm  (the key's '/' as %2F)
  list_routers,         // GET    /v1/routers  (the fleet view)
  history,              // GET    /v1/history?since=  (the dashboard's charts)
  events,               // GET    /v1/events  (SSE)
  webhook,              // POST   /v1/webhooks/{name}
  metrics,              // GET    /metrics
  healthz,              // GET    /healthz
  readyz,               // GET    /readyz
  dashboard,            // GET    /
};

const char* endpoint_name(Endpoint endpoint);

// Bearer auth applies to /v1/* except webhooks, which are authenticated by
// their signature (GitHub cannot send our token).
bool requires_bearer(Endpoint endpoint);

struct RouteMatch {
  enum class Outcome { matched, not_found, method_not_allowed, bad_request };
  Outcome outcome = Outcome::not_found;
  Endpoint endpoint = Endpoint::healthz;  // when matched
  std::string param;                      // the decoded {id} / {key...} / {name}
  std::string allow;                      // for 405: e.g. "GET, DELETE"
  std::string reason;                     // for 400
};

// `path` is the raw (still percent-encoded) path without the query, so an
// encoded '/' (%2F) inside an id never splits a segment.
RouteMatch match_route(std::string_view method, std::string_view path);

// Percent-decoding; '+' becomes a space only in query strings. nullopt on a
// malformed escape or a decoded NUL.
std::optional<std::string> url_decode(std::string_view text, bool plus_is_space = false);

struct Target {
  std::string path;                          // raw
  std::map<std::string, std::string> query;  // decoded; a repeated key keeps the last value
};
// Splits a request target; nullopt on a malformed query escape or a target
// that is not origin-form ("/...").
std::optional<Target> parse_target(std::string_view target);

}  // namespace warmstart::api
