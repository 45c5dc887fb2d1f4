// Plain HTTP/1.1 requests over a unix socket, on Asio and Beast's parser, with
// a pool of keep-alive connections: the engine calls of every job (create,
// start, wait, logs, remove, inspect) and the event feed go through here.
// CurlMulti keeps the transfers that stream with backpressure or from a file
// (export, import, a body from a file):
// curl's multi machinery cost about a third of the router's user CPU per job
// (bench/RESULTS.md, profile), most of it bookkeeping a request/response on a
// local socket does not need.
//
// Speaks the same HttpRequest / HttpResult as CurlMulti, and reports transport
// failures as the CURLcode curl would have given (CURLE_COULDNT_CONNECT,
// CURLE_OPERATION_TIMEDOUT, CURLE_WEIRD_SERVER_REPLY, ...), so DockerClient
// maps both transports to its errors in one place.
//
// Single-threaded by design, like CurlMulti: every call runs on the executor
// passed to create().
#pragma once
#include "container/curl_multi.hpp"

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/flat_buffer.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace warmstart::container {

namespace beast = boost::beast;

struct UnixHttpOptions {
  std::string socket_path = "/var/run/docker.sock";
  Duration connect_timeout = 5s;                 // per connection attempt
  std::size_t max_idle_connections = 16;         // keep-alive pool
  std::size_t max_body_bytes = 256 << 20;        // a collected answer past this fails
  std::size_t max_error_body_bytes = 64 * 1024;  // kept of a non-2xx body when streaming
};

class UnixHttp : public std::enable_shared_from_this<UnixHttp> {
 public:
  static std::shared_ptr<UnixHttp> create(net::any_io_executor executor, UnixHttpOptions options);
  UnixHttp(const UnixHttp&) = delete;
  UnixHttp& operator=(const UnixHttp&) = delete;

  // True for the requests this transport serves: a body in memory (or none),
  // the answer collected or passed to on_body. Not body_file, body_source or
  // on_body_flow (CurlMulti's).
  static bool handles(const HttpRequest& request);

  // Performs one request (handles(request) must hold). Returns an HttpResult
  // for every outcome of the exchange (check `code`, then `status`); throws
  // boost::system::system_error(operation_aborted) when the caller's
  // cancellation slot fires (the connection is closed, never reused).
  // `timeout` bounds the whole exchange, connect included.
  awaitable<HttpResult> perform(HttpRequest request);

  const UnixHttpOptions& options() const { return options_; }
  std::size_t in_flight() const { return in_flight_; }
  std::size_t idle_connections() const { return idle_.size(); }
  // Connections opened since creation; reuse keeps this flat.
  std::uint64_t connections_opened() const { return connections_opened_; }

 private:
  struct Connection {
    explicit Connection(const net::any_io_executor& ex) : socket(ex) {}
    net::local::stream_protocol::socket socket;
    beast::flat_buffer buffer;  // read-ahead, kept across the requests of the connection
  };
  using ConnectionPtr = std::shared_ptr<Connection>;
  struct Exchange;
  // How one request/answer on a connection went (the answer is in HttpResult).
  struct Outcome {
    boost::system::error_code ec;  // transport failure (HttpResult::code not set yet)
    bool answered = false;         // some of an answer arrived: the request cannot go again
    bool keep = false;             // the connection may serve another request
  };

  UnixHttp(net::any_io_executor executor, UnixHttpOptions options);
  awaitable<Outcome> exchange(Connection& c, const std::string& head, const HttpRequest& r,
                              HttpResult& out);
  void release(ConnectionPtr c);

  net::any_io_executor executor_;
  UnixHttpOptions options_;
  std::vector<ConnectionPtr> idle_;  // most recently used last
  std::size_t in_flight_ = 0;
  std::uint64_t connections_opened_ = 0;
};

using UnixHttpPtr = std::shared_ptr<UnixHttp>;

}  // namespace warmstart::container
