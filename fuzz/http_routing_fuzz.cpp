// HTTP request routing: raw request bytes through Beast's parser (the server's
// body limit), then what the server does before a Backend call: target
// parsing, route matching, percent-decoding and, for POST /v1/jobs, the
// bounded body parse and the job checks. No sockets: the server's connection
// loop itself is covered by api/http_server_test.cpp against a test backend.
#include "api/job_body.hpp"
#include "api/routes.hpp"
#include "common/json_limits.hpp"
#include "queue/validation.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

using namespace warmstart;
namespace http = boost::beast::http;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  http::request_parser<http::string_body> parser;
  parser.body_limit(1 << 20);
  parser.header_limit(16 * 1024);
  parser.eager(true);
  boost::beast::error_code ec;
  parser.put(boost::asio::buffer(data, size), ec);
  if (!ec && !parser.is_done()) parser.put_eof(ec);
  if (ec || !parser.is_header_done()) return 0;
  const auto& request = parser.get();

  const std::string target(request.target());
  auto parsed = api::parse_target(target);
  if (!parsed) return 0;
  const std::string method(request.method_string());
  const api::RouteMatch route = api::match_route(method, parsed->path);
  (void)api::endpoint_name(route.endpoint);
  (void)api::requires_bearer(route.endpoint);
  if (route.outcome == api::RouteMatch::Outcome::matched &&
      route.endpoint == api::Endpoint::create_job && parser.is_done()) {
    if (auto body = parse_bounded(request.body(), JsonLimits{1 << 20})) {
      if (!api::job_body_problem(*body)) (void)queue::validate_job(*body);
    }
  }
  return 0;
}
