#include "api/http_server.hpp"

#include "api/auth.hpp"
#include "api/dashboard.hpp"
#include "api/job_body.hpp"
#include "api/metrics.hpp"
#include "common/json_limits.hpp"
#include "common/log.hpp"
#include "common/redis.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>

#include <array>
#include <charconv>
#include <set>
#include <stdexcept>

namespace warmstart::api {

using net::ip::tcp;
using nlohmann::json;

struct HttpServer::Connection {
  Connection(tcp::socket socket, std::string peer)
      : stream(std::move(socket)), client(std::move(peer)) {}
  beast::tcp_stream stream;
  const std::string client;  // the remote address: the unit of the per-client caps
  bool idle = true;          // waiting for a request; only touched on the stream's strand
  bool streaming = false;    // counted in the event-stream pool (guarded by connections_mutex_)
};

void validate_server_options(const ServerOptions& options) {
  if (options.auth == AuthMode::none) {
    if (!is_loopback_listen(options.listen)) {
      throw std::invalid_argument(
          "api.auth = \"none\" is only allowed on a loopback listener, not on " + options.listen);
    }
  } else if (options.tokens.empty()) {
    throw std::invalid_argument("api: auth is on but no token is configured");
  }
  std::set<std::string> names;
  for (const auto& token : options.tokens) {
    if (token.secret.empty()) throw std::invalid_argument("api: token " + token.name + " is empty");
    if (!names.insert(token.name).second) {
      throw std::invalid_argument("api.tokens: the name " + token.name + " is used twice");
    }
    if (token.snapshot_prefix && token.snapshot_prefix->empty()) {
      throw std::invalid_argument("api.tokens: snapshot_prefix of " + token.name +
                                  " must not be empty (leave it out for every key)");
    }
  }
  for (std::size_t i = 0; i < options.tokens.size(); ++i) {
    for (std::size_t j = i + 1; j < options.tokens.size(); ++j) {
      if (secrets_equal(options.tokens[i].secret, options.tokens[j].secret)) {
        throw std::invalid_argument("api: tokens " + options.tokens[i].name + " and " +
                                    options.tokens[j].name + " are the same secret");
      }
    }
  }
  FrontDoor check({options.listen, options.allowed_hosts, options.allowed_origins});
  (void)check;
}

namespace {

using Response = http::response<http::string_body>;

constexpr std::array<std::string_view, 7> job_states = {
    "queued", "scheduled", "running", "succeeded", "failed", "timed_out", "cancelled"};

Response make_response(http::status status, std::string body, std::string_view content_type) {
  Response res{status, 11};
  res.set(http::field::server, "warmstart");
  res.set(http::field::content_type, content_type);
  res.set(http::field::cache_control, "no-store");
  res.set("X-Content-Type-Options", "nosniff");
  res.body() = std::move(body);
  return res;
}

Response json_response(http::status status, const json& body) {
  return make_response(status, body.dump(-1, ' ', false, json::error_handler_t::replace) + "\n",
                       "application/json");
}

Response json_error(int status, std::string_view message) {
  return json_response(static_cast<http::status>(status), json{{"error", message}});
}

// "127.0.0.1:8080", "[::1]:0", "localhost:8080". Only IP literals (and
// localhost): the listen address never goes through a resolver.
tcp::endpoint parse_listen(const std::string& listen) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos || colon + 1 == listen.size()) {
    throw std::invalid_argument("listen address must be ip:port, got \"" + listen + "\"");
  }
  std::string host = listen.substr(0, colon);
  const std::string port_text = listen.substr(colon + 1);
  unsigned port = 0;
  auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || p != port_text.data() + port_text.size() || port > 65535) {
    throw std::invalid_argument("listen address has a bad port: \"" + listen + "\"");
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (host == "localhost") host = "127.0.0.1";
  boost::system::error_code bad;
  const auto address = net::ip::make_address(host, bad);
  if (bad) throw std::invalid_argument("listen address must be an IP literal: \"" + listen + "\"");
  return {address, static_cast<unsigned short>(port)};
}

std::optional<std::string> header(const http::request<http::string_body>& req,
                                  std::string_view name) {
  const auto it = req.find(beast::string_view(name.data(), name.size()));
  if (it == req.end()) return std::nullopt;
  return std::string(it->value());
}

}  // namespace

HttpServer::HttpServer(net::io_context& io, Backend& backend, Metrics& metrics,
                       ServerOptions options)
    : io_(io),
      backend_(backend),
      metrics_(metrics),
      options_(std::move(options)),
      hub_(backend, options_.sse, &metrics),
      acceptor_(net::make_strand(io)) {}

HttpServer::~HttpServer() = default;

void HttpServer::start() {
  validate_server_options(options_);
  front_door_.emplace(
      FrontDoorOptions{options_.listen, options_.allowed_hosts, options_.allowed_origins});
  const tcp::endpoint endpoint = parse_listen(options_.listen);
  acceptor_.open(endpoint.protocol());
  acceptor_.set_option(net::socket_base::reuse_address(true));
  acceptor_.bind(endpoint);
  acceptor_.listen(net::socket_base::max_listen_connections);
  port_ = acceptor_.local_endpoint().port();
  log::info("http listening", {{"address", endpoint.address().to_string()},
                               {"port", port_},
                               {"auth", options_.auth == AuthMode::token ? "token" : "none"},
                               {"tokens", options_.tokens.size()},
                               {"webhooks", options_.webhooks.size()}});
  net::co_spawn(acceptor_.get_executor(), accept_loop(), [](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      log::error("http accept loop failed", {{"error", ex.what()}});
    }
  });
}

void HttpServer::stop() {
  if (stopping_.exchange(true)) return;
  log::info("http stopping", {{"connections", connection_count()}});
  net::post(acceptor_.get_executor(), [this] {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
  });
  hub_.stop();
  std::vector<std::shared_ptr<Connection>> open;
  {
    std::lock_guard lock(connections_mutex_);
    for (const auto& [ptr, weak] : connections_) {
      if (auto connection = weak.lock()) open.push_back(std::move(connection));
    }
  }
  // Busy connections see stopping_ after their response and close themselves.
  for (auto& connection : open) {
    net::post(connection->stream.get_executor(), [connection] {
      if (connection->idle) connection->stream.socket().close();
    });
  }
}

std::size_t HttpServer::connection_count() const {
  std::lock_guard lock(connections_mutex_);
  return connections_.size();
}

std::size_t HttpServer::event_stream_count() const {
  std::lock_guard lock(connections_mutex_);
  return event_streams_;
}

std::optional<HttpServer::Response> HttpServer::begin_stream(Connection& connection) {
  std::lock_guard lock(connections_mutex_);
  if (event_streams_ >= options_.max_event_streams) {
    return json_error(503, "too many event streams");
  }
  if (streams_per_client_[connection.client] >= options_.max_event_streams_per_client) {
    return json_error(429, "too many event streams from this address");
  }
  connection.streaming = true;
  --http_connections_;
  if (--http_per_client_[connection.client] == 0) http_per_client_.erase(connection.client);
  ++event_streams_;
  ++streams_per_client_[connection.client];
  return std::nullopt;
}

// Called with connections_mutex_ held.
void HttpServer::release(const Connection& connection) {
  auto& pool = connection.streaming ? streams_per_client_ : http_per_client_;
  auto& total = connection.streaming ? event_streams_ : http_connections_;
  --total;
  if (auto it = pool.find(connection.client); it != pool.end() && --it->second == 0) pool.erase(it);
}

awaitable<void> HttpServer::accept_loop() {
  for (;;) {
    auto [ec, socket] =
        co_await acceptor_.async_accept(net::make_strand(io_), net::as_tuple(use_awaitable));
    if (stopping_ || ec == net::error::operation_aborted) break;
    if (ec) {
      // Typically EMFILE: back off instead of spinning; existing connections go on.
      log::warn("http accept failed", {{"error", ec.message()}});
      co_await sleep_for(100ms);
      continue;
    }
    boost::system::error_code peer_error;
    const auto peer = socket.remote_endpoint(peer_error);
    std::string client = peer_error ? std::string("?") : peer.address().to_string();
    std::optional<Response> refusal;
    std::shared_ptr<Connection> connection;
    {
      std::lock_guard lock(connections_mutex_);
      if (http_connections_ >= options_.max_connections) {
        refusal = json_error(503, "too many connections");
      } else if (http_per_client_[client] >= options_.max_connections_per_client) {
        refusal = json_error(429, "too many connections from this address");
      } else {
        connection = std::make_shared<Connection>(std::move(socket), client);
        connections_.emplace(connection.get(), connection);
        ++http_connections_;
        ++http_per_client_[client];
      }
      if (http_per_client_[client] == 0) http_per_client_.erase(client);
    }
    if (refusal) {
      auto executor = socket.get_executor();
      net::co_spawn(executor, refuse(std::move(socket), std::move(client), std::move(*refusal)),
                    net::detached);
      continue;
    }
    net::co_spawn(connection->stream.get_executor(), run_connection(connection),
                  // Holds the connection until it is counted out of its pool.
                  [this, connection](std::exception_ptr e) {
                    if (e) {
                      try {
                        std::rethrow_exception(e);
                      } catch (const std::exception& ex) {
                        log::error("http connection failed", {{"error", ex.what()}});
                      }
                    }
                    std::lock_guard lock(connections_mutex_);
                    release(*connection);
                    connections_.erase(connection.get());
                  });
  }
}

awaitable<void> HttpServer::refuse(tcp::socket socket, std::string client, Response response) {
  beast::tcp_stream stream(std::move(socket));
  log::warn("http connection refused",
            {{"client", client},
             {"status", response.result_int()},
             {"max_connections", options_.max_connections},
             {"max_connections_per_client", options_.max_connections_per_client}});
  co_await reply_and_close(stream, std::move(response));
}

// Answers and closes without reading the rest of the request. The send side is
// shut first and what the client is still sending is drained briefly, so the
// close does not reset the connection before the client has read the answer.
awaitable<void> HttpServer::reply_and_close(beast::tcp_stream& stream, Response response) {
  const int status = static_cast<int>(response.result_int());
  metrics_.http_requests("OTHER", status).Increment();
  log::info("http request rejected", {{"status", status}});
  response.keep_alive(false);
  response.prepare_payload();
  stream.expires_after(options_.write_timeout);
  auto [ec, n] = co_await http::async_write(stream, response, net::as_tuple(use_awaitable));
  if (ec) co_return;
  boost::system::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  std::array<char, 16 * 1024> discard;
  std::size_t drained = 0;
  constexpr std::size_t drain_limit = 16 << 20;
  stream.expires_after(2s);
  while (drained < drain_limit) {
    auto [rec, got] =
        co_await stream.async_read_some(net::buffer(discard), net::as_tuple(use_awaitable));
    if (rec) break;
    drained += got;
  }
  stream.socket().close(ignored);
}

awaitable<void> HttpServer::run_connection(std::shared_ptr<Connection> connection) {
  beast::tcp_stream& stream = connection->stream;
  beast::flat_buffer buffer;
  bool first = true;
  for (;;) {
    if (stopping_) break;
    http::request_parser<http::string_body> parser;
    parser.body_limit(options_.body_limit);
    connection->idle = true;
    stream.expires_after(first ? options_.read_timeout : options_.keep_alive_timeout);
    auto [ec, n] =
        co_await http::async_read_header(stream, buffer, parser, net::as_tuple(use_awaitable));
    connection->idle = false;
    first = false;
    if (ec == http::error::body_limit) {
      co_await reply_and_close(
          stream, json_error(413, "request body exceeds " + std::to_string(options_.body_limit) +
                                      " bytes"));
      co_return;
    }
    if (ec && ec.category() == http::make_error_code(http::error::bad_target).category() &&
        ec != http::error::end_of_stream && ec != http::error::partial_message) {
      co_await reply_and_close(stream, json_error(400, "malformed request: " + ec.message()));
      co_return;
    }
    if (ec) break;  // closed, timed out, reset, or stopped while idle

    const auto started = Clock::now();
    if (beast::iequals(parser.get()[http::field::expect], "100-continue")) {
      http::response<http::empty_body> go_on{http::status::continue_, 11};
      stream.expires_after(options_.write_timeout);
      auto [wec, wn] = co_await http::async_write(stream, go_on, net::as_tuple(use_awaitable));
      if (wec) break;
    }
    if (!parser.is_done()) {
      stream.expires_after(options_.read_timeout);
      auto [bec, bn] =
          co_await http::async_read(stream, buffer, parser, net::as_tuple(use_awaitable));
      if (bec == http::error::body_limit) {
        co_await reply_and_close(
            stream, json_error(413, "request body exceeds " + std::to_string(options_.body_limit) +
                                        " bytes"));
        co_return;
      }
      if (bec) break;
    }
    Request request = parser.release();
    const std::string method(request.method_string());

    RouteContext context;
    Response response;
    bool routed = false;
    if (auto target = parse_target(request.target())) {
      context.target = std::move(*target);
      context.route = match_route(method, context.target.path);
      routed = true;
    } else {
      response = json_error(400, "malformed request target");
    }

    const bool is_events = routed && context.route.outcome == RouteMatch::Outcome::matched &&
                           context.route.endpoint == Endpoint::events;
    if (routed) response = co_await handle(request, context);
    if (is_events && response.result() == http::status::ok) {
      if (auto refusal = begin_stream(*connection)) response = std::move(*refusal);
    }

    const std::string_view endpoint =
        routed && context.route.outcome == RouteMatch::Outcome::matched
            ? endpoint_name(context.route.endpoint)
            : "none";
    const int status = static_cast<int>(response.result_int());
    metrics_.http_requests(method, status).Increment();
    // No query string, no bodies, no headers: nothing a caller sent is logged.
    json access = {{"method", method},
                   {"path", routed ? context.target.path : std::string("?")},
                   {"endpoint", endpoint},
                   {"status", status},
                   {"client", connection->client},
                   {"caller", context.caller.name},
                   {"bytes_in", request.body().size()}};

    // An accepted event stream leaves the HTTP loop: the hub owns the socket now.
    if (is_events && status == 200) {
      access["duration_ms"] = 0;
      log::info("http request", access);
      stream.expires_never();
      std::optional<std::string> last_event_id = header(request, "Last-Event-ID");
      if (!last_event_id) {
        if (auto it = context.target.query.find("last_event_id");
            it != context.target.query.end()) {
          last_event_id = it->second;
        }
      }
      co_await hub_.serve(stream.release_socket(), std::move(last_event_id));
      co_return;
    }

    response.version(request.version());
    response.keep_alive(request.keep_alive() && !stopping_);
    response.prepare_payload();
    stream.expires_after(options_.write_timeout);
    auto [wec, wn] = co_await http::async_write(stream, response, net::as_tuple(use_awaitable));
    access["bytes_out"] = wn;
    access["duration_ms"] =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count();
    log::info("http request", access);
    if (wec || !response.keep_alive()) break;
  }
  boost::system::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  stream.socket().close(ignored);
}

template <typename T>
awaitable<T> HttpServer::call_backend(awaitable<T> op, const char* what) {
  co_return co_await with_deadline(std::move(op), options_.backend_timeout,
                                   std::string("backend ") + what);
}

awaitable<HttpServer::Response> HttpServer::handle(const Request& request, RouteContext& context) {
  std::optional<Response> failure;
  try {
    co_return co_await dispatch(request, context);
  } catch (const BackendError& e) {
    json body = {{"error", e.what()}};
    if (e.details.is_object()) body.update(e.details);
    failure = json_response(static_cast<http::status>(e.status), body);
  } catch (const DeadlineExceeded& e) {
    log::warn("backend call timed out", {{"error", e.what()}});
    failure = json_error(503, "backend did not answer in time");
  } catch (const std::exception& e) {
    if (redis::is_transient(e)) {
      // Redis unreachable, loading or failing over: the client retries (an
      // enqueue is idempotent by id).
      log::warn("request failed: redis unavailable",
                {{"path", context.target.path}, {"error", e.what()}});
      failure = json_error(503, std::string("queue unavailable, retry: ") + e.what());
    } else {
      log::error("request failed", {{"path", context.target.path}, {"error", e.what()}});
      failure = json_error(500, "internal error");
    }
  }
  co_return std::move(*failure);
}

std::optional<HttpServer::Response> HttpServer::admit(const Request& request,
                                                      RouteContext& context) const {
  const Endpoint endpoint = context.route.endpoint;
  // Probes stay open whatever they are called by (load balancers, kubelets).
  if (endpoint == Endpoint::healthz || endpoint == Endpoint::readyz) return std::nullopt;

  // DNS rebinding: a page on evil.example whose name now resolves to us sends
  // "Host: evil.example". Only the listen address and configured names pass.
  const std::string host = header(request, "Host").value_or("");
  if (!front_door_->host_allowed(host)) {
    log::warn("http request refused: host not allowed",
              {{"host", host.substr(0, 256)}, {"path", context.target.path}});
    return json_error(403, "host \"" + host.substr(0, 256) +
                               "\" is not a name of this server (see [api] allowed_hosts)");
  }

  const auto method = request.method();
  const bool mutating =
      method != http::verb::get && method != http::verb::head && method != http::verb::options;
  if (mutating) {
    // A cross-site page may POST with a "simple" request (no preflight);
    // browsers always say where it came from.
    if (auto origin = header(request, "Origin");
        origin && !front_door_->origin_allowed(*origin, host)) {
      log::warn("http request refused: foreign origin",
                {{"origin", origin->substr(0, 256)}, {"path", context.target.path}});
      return json_error(403,
                        "origin \"" + origin->substr(0, 256) + "\" may not change anything here");
    }
    // text/plain and form bodies are what a browser sends cross-site without
    // asking first: only JSON is ever parsed.
    if (method == http::verb::post || method == http::verb::put || !request.body().empty()) {
      const std::string type = header(request, "Content-Type").value_or("");
      if (!is_json_media_type(type)) {
        return json_error(
            415, "Content-Type must be application/json, got \"" + type.substr(0, 128) + "\"");
      }
    }
  }

  if (options_.auth == AuthMode::token && requires_bearer(endpoint)) {
    std::optional<std::string> presented;
    if (auto auth = header(request, "Authorization")) presented = bearer_token(*auth);
    const ApiToken* matched = nullptr;
    if (presented) {
      // Every token is compared, so timing does not tell which one matched.
      for (const auto& token : options_.tokens) {
        if (secrets_equal(token.secret, *presented) && matched == nullptr) matched = &token;
      }
    }
    if (matched == nullptr) {
      Response res = json_error(401, presented ? "invalid token" : "missing bearer token");
      res.set(http::field::www_authenticate, "Bearer realm=\"warmstart\"");
      return res;
    }
    context.caller.name = matched->name;
    context.caller.snapshot_prefix = matched->snapshot_prefix;
  }
  return std::nullopt;
}

awaitable<HttpServer::Response> HttpServer::dispatch(const Request& request,
                                                     RouteContext& context) {
  const RouteMatch& route = context.route;
  switch (route.outcome) {
    case RouteMatch::Outcome::not_found:
      co_return json_error(404, "no route for " + context.target.path);
    case RouteMatch::Outcome::bad_request:
      co_return json_error(400, route.reason);
    case RouteMatch::Outcome::method_not_allowed: {
      Response res = json_error(405, "method not allowed; allowed: " + route.allow);
      res.set(http::field::allow, route.allow);
      co_return res;
    }
    case RouteMatch::Outcome::matched:
      break;
  }

  if (auto refusal = admit(request, context)) co_return std::move(*refusal);
  const Caller& caller = context.caller;

  switch (route.endpoint) {
    case Endpoint::create_job: {
      std::string reason;
      auto body = parse_bounded(request.body(), JsonLimits{options_.body_limit}, &reason);
      if (!body) co_return json_error(400, "body " + reason);
      if (auto problem = job_body_problem(*body)) co_return json_error(400, *problem);
      if (auto problem = snapshot_key_problem(*body, caller.snapshot_prefix)) {
        co_return json_error(403, *problem);
      }
      EnqueueResult result = co_await call_backend(backend_.enqueue(std::move(*body)), "enqueue");
      co_return json_response(result.created ? http::status::created : http::status::ok,
                              result.job);
    }
    case Endpoint::prewarm_snapshot: {
      // The body is a job (cmd, image, env, ...); the key is the path's, and
      // the job is a prewarm of it: commit on, a failed commit fails it.
      std::string reason;
      auto body = parse_bounded(request.body(), JsonLimits{options_.body_limit}, &reason);
      if (!body) co_return json_error(400, "body " + reason);
      if (!body->is_object()) co_return json_error(400, "body must be a JSON object (a job)");
      bool reuse = true;
      if (auto snapshot = body->find("snapshot"); snapshot != body->end()) {
        const auto given = snapshot->is_object() ? snapshot->find("reuse") : snapshot->end();
        if (!snapshot->is_object() || snapshot->size() > 1 ||
            (snapshot->size() == 1 && (given == snapshot->end() || !given->is_boolean()))) {
          co_return json_error(
              400, "a prewarm's snapshot is the path's key; the body may only set snapshot.reuse");
        }
        if (given != snapshot->end()) reuse = given->get<bool>();
      }
      (*body)["snapshot"] = {
          {"key", route.param}, {"reuse", reuse}, {"commit", true}, {"prewarm", true}};
      if (auto problem = job_body_problem(*body)) co_return json_error(400, *problem);
      if (auto problem = snapshot_key_problem(*body, caller.snapshot_prefix)) {
        co_return json_error(403, *problem);
      }
      EnqueueResult result = co_await call_backend(backend_.enqueue(std::move(*body)), "enqueue");
      const std::string id = result.job.value("id", "");
      co_return json_response(
          result.created ? http::status::created : http::status::ok,
          json{{"id", id}, {"coalesced", result.coalesced}, {"job", std::move(result.job)}});
    }
    case Endpoint::list_jobs: {
      std::optional<std::string> state;
      std::size_t limit = 100;
      const auto& query = context.target.query;
      if (auto it = query.find("state"); it != query.end() && !it->second.empty()) {
        if (std::find(job_states.begin(), job_states.end(), it->second) == job_states.end()) {
          co_return json_error(400, "unknown state \"" + it->second + "\"");
        }
        state = it->second;
      }
      if (auto it = query.find("limit"); it != query.end()) {
        const std::string& text = it->second;
        auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), limit);
        if (ec != std::errc() || p != text.data() + text.size() || limit < 1 || limit > 1000) {
          co_return json_error(400, "limit must be an integer from 1 to 1000");
        }
      }
      auto jobs = co_await call_backend(backend_.list_jobs(state, limit), "list_jobs");
      // Summaries: a list never carries env values or log tails.
      json listed = json::array();
      for (const auto& job : jobs) listed.push_back(job_summary(job));
      co_return json_response(http::status::ok, json{{"jobs", std::move(listed)}});
    }
    case Endpoint::get_job: {
      json record = co_await call_backend(backend_.get_job(route.param), "get_job");
      if (auto view = context.target.query.find("view");
          view != context.target.query.end() && view->second == "summary") {
        record = job_summary(record);
      }
      co_return json_response(http::status::ok, record);
    }
    case Endpoint::job_logs:
      co_return make_response(http::status::ok,
                              co_await call_backend(backend_.job_logs(route.param), "job_logs"),
                              "text/plain; charset=utf-8");
    case Endpoint::cancel_job:
      co_return json_response(
          http::status::ok, co_await call_backend(backend_.cancel_job(route.param), "cancel_job"));
    case Endpoint::list_snapshots: {
      auto snapshots = co_await call_backend(backend_.list_snapshots(), "list_snapshots");
      // A scoped caller sees its own namespace only.
      json listed = json::array();
      for (auto& snapshot : snapshots) {
        const std::string key = snapshot.value("key", "");
        if (!caller.snapshot_prefix || key.rfind(*caller.snapshot_prefix, 0) == 0) {
          listed.push_back(std::move(snapshot));
        }
      }
      co_return json_response(http::status::ok, json{{"snapshots", std::move(listed)}});
    }
    case Endpoint::list_routers: {
      auto routers = co_await call_backend(backend_.list_routers(), "list_routers");
      co_return json_response(http::status::ok, json{{"routers", std::move(routers)}});
    }
    case Endpoint::history: {
      std::int64_t since = 0;
      if (auto it = context.target.query.find("since"); it != context.target.query.end()) {
        const std::string& text = it->second;
        auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), since);
        if (ec != std::errc() || p != text.data() + text.size() || since < 0) {
          co_return json_error(400, "since must be a Unix time in milliseconds");
        }
      }
      co_return json_response(http::status::ok, metrics_.history().to_json(since));
    }
    case Endpoint::invalidate_snapshot:
      if (caller.snapshot_prefix && route.param.rfind(*caller.snapshot_prefix, 0) != 0) {
        co_return json_error(
            403, "snapshot key \"" + route.param + "\" is outside this caller's namespace");
      }
      co_return json_response(
          http::status::ok,
          co_await call_backend(backend_.invalidate_snapshot(route.param), "invalidate_snapshot"));
    case Endpoint::events:
      if (stopping_) co_return json_error(503, "server is stopping");
      // 200 tells run_connection to hand the socket to the hub; this body is never sent.
      co_return make_response(http::status::ok, "", "text/event-stream");
    case Endpoint::webhook:
      co_return co_await handle_webhook(request, route.param);
    case Endpoint::metrics:
      co_return make_response(http::status::ok, metrics_.serialize(),
                              std::string(metrics_content_type));
    case Endpoint::healthz:
      co_return json_response(http::status::ok, json{{"status", "ok"}});
    case Endpoint::readyz: {
      ReadyStatus ready;
      std::string failure;
      try {
        ready = co_await call_backend(backend_.check_ready(), "check_ready");
      } catch (const std::exception& e) {
        failure = e.what();
      }
      json reasons = json::array();
      if (!failure.empty()) reasons.push_back("readiness check failed: " + failure);
      if (failure.empty() && !ready.redis_ok) reasons.push_back("redis unreachable");
      if (failure.empty() && !ready.docker_ok) reasons.push_back("docker unreachable");
      if (ready.draining) reasons.push_back("draining");
      if (stopping_) reasons.push_back("http server stopping");
      const bool ok = reasons.empty();
      co_return json_response(ok ? http::status::ok : http::status::service_unavailable,
                              json{{"ready", ok},
                                   {"redis", ready.redis_ok},
                                   {"docker", ready.docker_ok},
                                   {"draining", ready.draining},
                                   {"reasons", reasons}});
    }
    case Endpoint::dashboard: {
      Response res = make_response(http::status::ok, std::string(dashboard_html()),
                                   "text/html; charset=utf-8");
      // The page is self-contained: nothing may load from elsewhere.
      res.set("Content-Security-Policy",
              "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
              "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
              "frame-ancestors 'none'");
      res.set("Referrer-Policy", "no-referrer");
      co_return res;
    }
  }
  co_return json_error(404, "no route");
}

awaitable<HttpServer::Response> HttpServer::handle_webhook(const Request& request,
                                                           const std::string& name) {
  const auto config = options_.webhooks.find(name);
  if (config == options_.webhooks.end()) co_return json_error(404, "no webhook named " + name);

  const WebhookDecision decision = evaluate_webhook(
      config->second, [&request](std::string_view field) { return header(request, field); },
      request.body());
  using Action = WebhookDecision::Action;
  switch (decision.action) {
    case Action::unauthorized:
      log::warn("webhook rejected", {{"webhook", name}, {"reason", decision.reason}});
      co_return json_error(401, decision.reason);
    case Action::ignored:
      co_return json_response(http::status::accepted, json{{"ignored", decision.reason}});
    case Action::bad_request:
      co_return json_error(400, decision.reason);
    case Action::enqueue:
      break;
  }

  // Both keys are marked, so a later replay under yet another delivery id
  // still matches the body.
  const WebhookDedupKeys keys = webhook_dedup_keys(name, decision);
  bool delivery_seen = false;
  bool body_seen = false;
  if (!keys.delivery.empty()) {
    auto mark = call_backend(backend_.webhook_seen(keys.delivery, options_.webhook_dedup_ttl),
                             "webhook_seen");
    delivery_seen = co_await std::move(mark);
  }
  if (!keys.body.empty()) {
    auto mark =
        call_backend(backend_.webhook_seen(keys.body, options_.webhook_dedup_ttl), "webhook_seen");
    body_seen = co_await std::move(mark);
  }
  if (delivery_seen && decision.job.contains("id")) {
    // A redelivery: answer with the job the first delivery created. If that
    // one never made it (enqueue failed after the mark), enqueue now: enqueue
    // is idempotent on the id, so this cannot run the job twice.
    std::optional<json> existing;
    try {
      existing =
          co_await call_backend(backend_.get_job(decision.job["id"].get<std::string>()), "get_job");
    } catch (const BackendError& e) {
      if (e.status != 404) throw;
    }
    if (existing) {
      log::info(
          "webhook duplicate delivery",
          {{"webhook", name}, {"delivery", decision.delivery_id}, {"job", (*existing)["id"]}});
      co_return json_response(http::status::ok,
                              json{{"duplicate", true}, {"job", job_summary(*existing)}});
    }
  } else if (delivery_seen || body_seen) {
    // A replay of a body already delivered, under a new or no delivery id.
    log::info("webhook duplicate body",
              {{"webhook", name}, {"delivery", decision.delivery_id}, {"body_seen", body_seen}});
    co_return json_response(http::status::ok, json{{"duplicate", true}});
  }

  if (auto problem = job_body_problem(decision.job)) co_return json_error(400, *problem);
  if (auto problem = snapshot_key_problem(decision.job, config->second.snapshot_prefix)) {
    log::warn("webhook rejected", {{"webhook", name}, {"reason", *problem}});
    co_return json_error(403, *problem);
  }
  EnqueueResult result = co_await call_backend(backend_.enqueue(decision.job), "enqueue");
  log::info("webhook enqueued", {{"webhook", name},
                                 {"delivery", decision.delivery_id},
                                 {"job", result.job.value("id", "")},
                                 {"created", result.created},
                                 {"coalesced", result.coalesced}});
  // A summary: the sender (GitHub's delivery log) never sees env values, which
  // may hold secrets from the webhook's config.
  co_return json_response(result.created ? http::status::created : http::status::ok,
                          json{{"duplicate", !result.created}, {"job", job_summary(result.job)}});
}

}  // namespace warmstart::api
