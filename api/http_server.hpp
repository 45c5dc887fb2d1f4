// The HTTP front: a Boost.Beast HTTP/1.1 server on the caller's io_context
// (the router's event loop; one coroutine per connection on its own strand, no
// thread per connection). It translates requests into Backend calls and
// nothing else: what a job *is* lives behind the Backend port.
#pragma once
#include "api/access.hpp"
#include "api/backend.hpp"
#include "api/routes.hpp"
#include "api/sse.hpp"
#include "api/webhook.hpp"
#include "common/net.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <atomic>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace warmstart::api {

namespace beast = boost::beast;
namespace http = beast::http;

class Metrics;

enum class AuthMode { token, none };

// A bearer token and what its holder may do.
struct ApiToken {
  std::string name;                            // for logs; never the secret
  std::string secret;                          // compared in constant time; never logged
  std::optional<std::string> snapshot_prefix;  // nullopt: every key; else keys must start with it
};

struct ServerOptions;
// Throws std::invalid_argument when the options cannot be served safely:
// auth "none" on a listener that is not loopback, auth "token" without a
// token, an empty or duplicate token, a malformed allowed host or origin.
void validate_server_options(const ServerOptions& options);

struct ServerOptions {
  std::string listen =
      "127.0.0.1:8080";               // "ip:port" ("[::1]:port" for IPv6); port 0 = any free port
  std::size_t body_limit = 1 << 20;   // request bodies above this answer 413
  Duration read_timeout = 30s;        // reading one request's headers, then its body
  Duration write_timeout = 30s;       // writing one response
  Duration keep_alive_timeout = 60s;  // an idle keep-alive connection is closed after this
  std::size_t max_connections = 512;  // HTTP connections; past this: 503 and close
  std::size_t max_connections_per_client = 64;    // per remote address; past this: 429 and close
  std::size_t max_event_streams = 256;            // open GET /v1/events streams (their own pool)
  std::size_t max_event_streams_per_client = 16;  // per remote address
  Duration backend_timeout = 10s;  // one Backend call; on expiry the request answers 503
  // token: every /v1 route but webhooks needs a bearer token from `tokens`.
  // none: no bearer auth; refused (validate_server_options) unless `listen`
  // is loopback. Host, Origin and Content-Type checks apply either way.
  AuthMode auth = AuthMode::token;
  // The accepted tokens (never from a command-line flag): the main one from
  // WARMSTART_API_TOKEN, [api] token_file or the state directory
  // (ensure_api_token), then [[api.tokens]].
  std::vector<ApiToken> tokens;
  std::vector<std::string> allowed_hosts;         // Host names besides the listen address
  std::vector<std::string> allowed_origins;       // exact origins besides the same origin
  Duration webhook_dedup_ttl = 24h;               // a delivery id seen within this is not run again
  std::map<std::string, WebhookConfig> webhooks;  // POST /v1/webhooks/{name}
  SseOptions sse;                                 // GET /v1/events
};

class HttpServer {
 public:
  // `backend` and `metrics` must outlive the server; the server must outlive
  // the io_context's run (connections refer to it).
  HttpServer(net::io_context& io, Backend& backend, Metrics& metrics, ServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and starts accepting. Throws std::invalid_argument on a malformed
  // listen address, boost::system::system_error when the bind fails.
  void start();
  // The bound port (useful with port 0). Valid after start().
  unsigned short port() const { return port_; }

  // Graceful stop, callable from any thread: stops accepting, closes idle
  // keep-alive connections, lets in-flight requests finish (then closes them)
  // and ends every event stream. The io_context runs out of server work once
  // the last response is written.
  void stop();

  // Open connections, event streams included.
  std::size_t connection_count() const;
  std::size_t event_stream_count() const;
  SseHub& event_hub() { return hub_; }

 private:
  struct Connection;
  // Who is calling: the token that authenticated the request.
  struct Caller {
    std::string name = "anonymous";
    std::optional<std::string> snapshot_prefix;
  };
  struct RouteContext {
    Target target;
    RouteMatch route;
    Caller caller;
  };
  using Request = http::request<http::string_body>;
  using Response = http::response<http::string_body>;

  awaitable<void> accept_loop();
  awaitable<void> refuse(net::ip::tcp::socket socket, std::string client, Response response);
  awaitable<void> run_connection(std::shared_ptr<Connection> connection);
  awaitable<void> reply_and_close(beast::tcp_stream& stream, Response response);
  awaitable<Response> handle(const Request& request, RouteContext& context);
  awaitable<Response> dispatch(const Request& request, RouteContext& context);
  // The Host / Origin / Content-Type / bearer checks; a refusal or nullopt.
  std::optional<Response> admit(const Request& request, RouteContext& context) const;
  // Moves a connection from the HTTP pool to the event-stream pool; a refusal
  // when that pool (or the client's share of it) is full.
  std::optional<Response> begin_stream(Connection& connection);
  void release(const Connection& connection);
  awaitable<Response> handle_webhook(const Request& request, const std::string& name);

  template <typename T>
  awaitable<T> call_backend(awaitable<T> op, const char* what);

  net::io_context& io_;
  Backend& backend_;
  Metrics& metrics_;
  const ServerOptions options_;
  SseHub hub_;
  net::ip::tcp::acceptor acceptor_;
  unsigned short port_ = 0;
  std::atomic<bool> stopping_{false};

  std::optional<FrontDoor> front_door_;  // built by start() from `listen`

  mutable std::mutex connections_mutex_;
  std::map<const Connection*, std::weak_ptr<Connection>> connections_;  // guarded
  std::size_t http_connections_ = 0;                                    // guarded
  std::size_t event_streams_ = 0;                                       // guarded
  std::map<std::string, std::size_t> http_per_client_;                  // guarded
  std::map<std::string, std::size_t> streams_per_client_;               // guarded
};

}  // namespace warmstart::api
