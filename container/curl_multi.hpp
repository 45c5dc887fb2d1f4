// HTTP over a unix socket on libcurl's multi-socket API, driven by an Asio
// executor: curl's sockets are Asio descriptors we own (opened and closed through
// curl's socket callbacks), curl's timer is a steady_timer, and nothing blocks
// the event loop or needs a thread. Connections stay in the multi handle's cache
// and are reused by the next request to the same socket.
//
// Knows nothing about Docker: DockerClient maps HttpResult to its errors.
// Single-threaded by design: every call and every completion happens on the
// executor passed to create() (an io_context run by one thread, or a strand).
#pragma once
#include "common/net.hpp"

#include <boost/asio/any_completion_handler.hpp>

#include <curl/curl.h>

#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace warmstart::container {

// Flow control of a streaming transfer (HttpRequest::on_body_flow and
// body_source). A transfer paused by either stays paused until resume() is
// called; resume() may be called from anywhere on the CurlMulti's executor,
// also from another transfer's callback (it posts), and is a no-op once the
// transfer has ended.
class TransferControl {
 public:
  void resume();

 private:
  friend class CurlMulti;
  std::function<void()> resume_;  // set by CurlMulti::start
  bool resume_early_ = false;     // resume() before the transfer started
};
using TransferControlPtr = std::shared_ptr<TransferControl>;

enum class Flow { proceed, pause };

struct HttpRequest {
  std::string method = "GET";        // GET | POST | DELETE | HEAD | PUT
  std::string target;                // "/v1.41/containers/json?all=1" (already URL-encoded)
  std::vector<std::string> headers;  // "Content-Type: application/json"
  std::string body;                  // request body kept in memory ...
  std::string body_file;             // ... or streamed from this file (wins when set)
  Duration timeout{0};               // whole transfer (CURLOPT_TIMEOUT_MS); 0 = none
  // Streams the response body of a 2xx answer instead of collecting it in
  // HttpResult::body. Runs inside curl's write callback: it must not call back
  // into CurlMulti. If it throws, the transfer is aborted and the exception is
  // returned in HttpResult::sink_error.
  std::function<void(std::string_view)> on_body;
  // Like on_body, with backpressure: Flow::pause leaves the chunk unconsumed
  // and stops reading from the socket; curl offers the same chunk again after
  // control->resume(). Needs `control`. Wins over on_body.
  std::function<Flow(std::string_view)> on_body_flow;
  // Streams the request body (chunked transfer encoding; wins over body and
  // body_file): fills up to `room` bytes of `buffer` and returns how many, 0 at
  // the end of the body, `source_pause` when nothing is ready yet (the upload
  // waits for control->resume()) or `source_abort` to fail the transfer. Runs
  // inside curl's read callback: it must not call back into CurlMulti.
  std::function<std::size_t(char* buffer, std::size_t room)> body_source;
  static constexpr std::size_t source_pause = CURL_READFUNC_PAUSE;
  static constexpr std::size_t source_abort = CURL_READFUNC_ABORT;
  TransferControlPtr control;  // for on_body_flow / body_source
  long buffer_bytes = 0;       // curl's receive and upload buffers; 0 = curl's default
};

struct HttpResult {
  CURLcode code = CURLE_OK;  // transport outcome; CURLE_OK = an HTTP answer arrived
  std::string error;         // curl's error text when code != CURLE_OK
  long status = 0;           // HTTP status
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;                            // whole body, or error body when on_body is set
  std::exception_ptr sink_error;               // what on_body threw
};

struct CurlMultiOptions {
  std::string socket_path = "/var/run/docker.sock";  // every request goes to this unix socket
  Duration connect_timeout = 5s;                     // per connection attempt
  std::size_t max_error_body_bytes = 64 * 1024;      // kept of a non-2xx body when streaming
  long max_cached_connections = 16;                  // CURLMOPT_MAXCONNECTS: idle keep-alive pool
  std::size_t max_idle_handles = 32;                 // finished easy handles kept for reuse
};

class CurlMulti : public std::enable_shared_from_this<CurlMulti> {
 public:
  using Signature = void(boost::system::error_code, HttpResult);

  static std::shared_ptr<CurlMulti> create(net::any_io_executor executor, CurlMultiOptions options);
  ~CurlMulti();
  CurlMulti(const CurlMulti&) = delete;
  CurlMulti& operator=(const CurlMulti&) = delete;

  // Performs one request. Completes with HttpResult for any outcome of the
  // transfer (check `code` then `status`), with net::error::operation_aborted
  // when the caller's cancellation slot fires (the easy handle is removed from
  // the multi and freed at once) or when the CurlMulti is destroyed.
  template <typename Token>
  auto async_perform(HttpRequest request, Token&& token) {
    return net::async_initiate<Token, Signature>(
        [self = shared_from_this()](auto handler, HttpRequest r) {
          self->start(std::move(r), net::any_completion_handler<Signature>(std::move(handler)));
        },
        token, std::move(request));
  }
  awaitable<HttpResult> perform(HttpRequest request) {
    return async_perform(std::move(request), use_awaitable);
  }

  const CurlMultiOptions& options() const { return options_; }
  std::size_t in_flight() const { return transfers_.size(); }
  // Sockets currently open (live or cached connections); for tests of reuse.
  std::size_t open_sockets() const { return sockets_.size(); }
  // Connections opened since creation; reuse keeps this flat.
  std::uint64_t connections_opened() const { return connections_opened_; }

 private:
  struct Transfer;
  struct Socket;

  CurlMulti(net::any_io_executor executor, CurlMultiOptions options);
  void start(HttpRequest request, net::any_completion_handler<Signature> handler);
  void cancel(CURL* easy);
  void resume(std::uint64_t id);
  void finish(CURL* easy, boost::system::error_code ec, CURLcode code);
  void check_completed();
  void on_socket_ready(curl_socket_t fd, int curl_event);
  void arm(curl_socket_t fd, const std::shared_ptr<Socket>& socket);
  CURL* take_easy();
  void recycle_easy(CURL* easy);

  static int socket_callback(CURL* easy, curl_socket_t fd, int what, void* userp, void* socketp);
  static int timer_callback(CURLM* multi, long timeout_ms, void* userp);
  static curl_socket_t open_socket(void* clientp, curlsocktype purpose, curl_sockaddr* address);
  static int close_socket(void* clientp, curl_socket_t fd);
  static std::size_t write_callback(char* data, std::size_t size, std::size_t n, void* userp);
  static std::size_t header_callback(char* data, std::size_t size, std::size_t n, void* userp);
  static std::size_t read_callback(char* buffer, std::size_t size, std::size_t n, void* userp);

  net::any_io_executor executor_;
  CurlMultiOptions options_;
  CURLM* multi_ = nullptr;
  net::steady_timer timer_;
  std::unordered_map<CURL*, std::unique_ptr<Transfer>> transfers_;
  std::unordered_map<curl_socket_t, std::shared_ptr<Socket>> sockets_;
  std::uint64_t connections_opened_ = 0;
  std::uint64_t next_transfer_id_ = 0;
  // Easy handles are reused (curl_easy_reset): a fresh one costs allocations
  // and frees that showed in the router's profile (bench/RESULTS.md).
  std::vector<CURL*> idle_easy_;
  bool kick_posted_ = false;  // a "run now" (0 ms) timeout is posted, not timed
};

using CurlMultiPtr = std::shared_ptr<CurlMulti>;

}  // namespace warmstart::container
