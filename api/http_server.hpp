// The HTTP front: a Boost.Beast HTTP/1.1 server on the caller's io_context
// (the router's event loop; one coroutine per connection on its own strand, no
// thread per connection). It translates requests into Backend calls and
// nothing else: what a job *is* lives behind the Backend port.
#pragma once
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

namespace warmstart::api {

namespace beast = boost::beast;
namespace http = beast::http;

class Metrics;

struct ServerOptions {
  std::string listen =
      "127.0.0.1:8080";               // "ip:port" ("[::1]:port" for IPv6); port 0 = any free port
  std::size_t body_limit = 1 << 20;   // request bodies above this answer 413
  Duration read_timeout = 30s;        // reading one request's headers, then its body
  Duration write_timeout = 30s;       // writing one response
  Duration keep_alive_timeout = 60s;  // an idle keep-alive connection is closed after this
  std::size_t max_connections = 512;  // past this a new connection gets 503 and is closed
  Duration backend_timeout = 10s;     // one Backend call; on expiry the request answers 503
  // Bearer token for /v1/*; nullopt = no auth. Fill it with load_api_token()
  // (env WARMSTART_API_TOKEN or a token file), never from a command-line flag.
  std::optional<std::string> api_token;
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

  std::size_t connection_count() const;
  SseHub& event_hub() { return hub_; }

 private:
  struct Connection;
  struct RouteContext {
    Target target;
    RouteMatch route;
  };
  using Request = http::request<http::string_body>;
  using Response = http::response<http::string_body>;

  awaitable<void> accept_loop();
  awaitable<void> refuse(net::ip::tcp::socket socket);
  awaitable<void> run_connection(std::shared_ptr<Connection> connection);
  awaitable<void> reply_and_close(beast::tcp_stream& stream, Response response);
  awaitable<Response> handle(const Request& request, const RouteContext& context);
  awaitable<Response> dispatch(const Request& request, const RouteContext& context);
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

  mutable std::mutex connections_mutex_;
  std::map<const Connection*, std::weak_ptr<Connection>> connections_;  // guarded
};

}  // namespace warmstart::api
