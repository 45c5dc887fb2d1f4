// Test support for the HTTP integration tests: a server fixture (the server on
// its own io_context thread, as the router would run it) and small Beast
// clients whose every wait is bounded. 127.0.0.1 only.
#pragma once
#include "api/http_server.hpp"
#include "api/metrics.hpp"
#include "api/testing_backend.hpp"
#include "common/log.hpp"
#include "support/test_env.hpp"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <dirent.h>
#include <sys/socket.h>

#include <chrono>
#include <future>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace warmstart::api::testing {

using net::ip::tcp;

// Open file descriptors of this process.
inline std::size_t open_fd_count() {
  std::size_t n = 0;
  if (DIR* dir = ::opendir("/proc/self/fd")) {
    while (::readdir(dir) != nullptr) ++n;
    ::closedir(dir);
  }
  return n;  // includes ".", ".." and the DIR's own fd: constant overhead
}

// Polls `condition` every 10 ms until it holds or `limit` passes.
template <typename F>
bool eventually(F condition, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

struct ServerFixture {
  explicit ServerFixture(ServerOptions options = {}) {
    log::init(log::Level::warn);  // access logs of hundreds of requests drown test output
    options.listen = "127.0.0.1:0";
    // Most tests are about something else than the token: without one given,
    // the fixture serves loopback without auth (as [api] auth = "none" does).
    if (options.auth == AuthMode::token && options.tokens.empty()) options.auth = AuthMode::none;
    server = std::make_unique<HttpServer>(io, backend, metrics, std::move(options));
    server->start();
    port = server->port();
    thread = std::thread([this] {
      io.run();
      finished.set_value();
    });
  }
  ~ServerFixture() { stop(); }

  // Graceful stop; true when the io_context ran out of work (every connection
  // and stream ended) within `limit`. Forces the loop down otherwise.
  bool stop(std::chrono::milliseconds limit = std::chrono::seconds(5)) {
    if (!thread.joinable()) return stopped_cleanly;
    server->stop();
    stopped_cleanly = finished_future.wait_for(limit) == std::future_status::ready;
    if (!stopped_cleanly) io.stop();
    thread.join();
    return stopped_cleanly;
  }

  TestingBackend backend;
  Metrics metrics;
  net::io_context io;
  std::unique_ptr<HttpServer> server;
  unsigned short port = 0;
  std::promise<void> finished;
  std::future<void> finished_future = finished.get_future();
  std::thread thread;
  bool stopped_cleanly = false;
};

struct HttpResult {
  int status = 0;
  std::map<std::string, std::string> headers;  // lowercase names
  std::string body;
  nlohmann::json json() const { return nlohmann::json::parse(body); }
};

using Headers = std::map<std::string, std::string>;

inline awaitable<HttpResult> http_call_async(unsigned short port, beast::http::verb method,
                                             std::string target, std::string body,
                                             Headers headers) {
  namespace http = beast::http;
  beast::tcp_stream stream(co_await net::this_coro::executor);
  co_await stream.async_connect(tcp::endpoint(net::ip::address_v4::loopback(), port),
                                use_awaitable);
  http::request<http::string_body> req{method, target, 11};
  req.set(http::field::host, "127.0.0.1:" + std::to_string(port));
  // A JSON body says so unless the test sends another type on purpose.
  if (method == http::verb::post && !headers.count("Content-Type")) {
    req.set(http::field::content_type, "application/json");
  }
  for (const auto& [k, v] : headers) req.set(k, v);
  if (!body.empty() || method == http::verb::post) {
    req.body() = std::move(body);
    req.prepare_payload();
  }
  co_await http::async_write(stream, req, use_awaitable);
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 20);
  co_await http::async_read(stream, buffer, parser, use_awaitable);
  HttpResult out;
  out.status = static_cast<int>(parser.get().result_int());
  for (const auto& field : parser.get()) {
    std::string name(field.name_string());
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out.headers[name] = std::string(field.value());
  }
  out.body = parser.get().body();
  co_return out;
}

// One request on a fresh connection; fails the test past 10 s.
inline HttpResult http_call(unsigned short port, beast::http::verb method, std::string target,
                            std::string body = {}, Headers headers = {}) {
  return warmstart::testing::run_coro(
      [&] { return http_call_async(port, method, target, body, headers); },
      std::chrono::seconds(10));
}

struct SseMessage {
  std::string id;
  std::string event;
  std::string data;
};

// A raw event-stream client on its own io_context; every read is bounded.
class SseClient {
 public:
  SseClient(unsigned short port, std::string target, Headers headers = {},
            std::optional<int> receive_buffer = std::nullopt)
      : socket_(io_) {
    socket_.open(tcp::v4());
    if (receive_buffer) socket_.set_option(net::socket_base::receive_buffer_size(*receive_buffer));
    socket_.connect(tcp::endpoint(net::ip::address_v4::loopback(), port));
    std::string request = "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
                          "\r\nAccept: text/event-stream\r\n";
    for (const auto& [k, v] : headers) request += k + ": " + v + "\r\n";
    request += "\r\n";
    net::write(socket_, net::buffer(request));
  }

  // Reads the response head; returns the status code (0 on timeout).
  int read_status(std::chrono::milliseconds limit = std::chrono::seconds(5)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (buffer_.find("\r\n\r\n") == std::string::npos) {
      if (!read_more(deadline)) return 0;
    }
    const auto end = buffer_.find("\r\n\r\n");
    head_ = buffer_.substr(0, end);
    buffer_.erase(0, end + 4);
    return std::stoi(head_.substr(9, 3));
  }
  const std::string& head() const { return head_; }

  // Reads until `count` messages with data have arrived in total (or the limit).
  const std::vector<SseMessage>& read_messages(
      std::size_t count, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    parse();
    while (messages_.size() < count && read_more(deadline)) parse();
    return messages_;
  }
  // Reads until a ": keepalive" comment arrived.
  bool read_keepalive(std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    parse();
    while (keepalives_ == 0 && read_more(deadline)) parse();
    return keepalives_ > 0;
  }
  // True once the server closed the stream (EOF or reset) within the limit.
  bool wait_closed(std::chrono::milliseconds limit = std::chrono::seconds(5)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!closed_) {
      if (!read_more(deadline) && !closed_) return false;
    }
    parse();
    return true;
  }
  const std::vector<SseMessage>& messages() const { return messages_; }
  std::vector<std::string> ids() const {
    std::vector<std::string> out;
    for (const auto& m : messages_) out.push_back(m.id);
    return out;
  }
  void close() {
    boost::system::error_code ignored;
    socket_.close(ignored);
  }

 private:
  // One bounded read; false on timeout or close.
  bool read_more(std::chrono::steady_clock::time_point deadline) {
    if (closed_) return false;
    bool done = false;
    boost::system::error_code error;
    std::size_t got = 0;
    socket_.async_read_some(net::buffer(chunk_), [&](boost::system::error_code ec, std::size_t n) {
      done = true;
      error = ec;
      got = n;
    });
    io_.restart();
    io_.run_until(deadline);
    if (!done) {
      socket_.cancel();
      io_.restart();
      io_.run();
      return false;
    }
    buffer_.append(chunk_.data(), got);
    if (error) closed_ = true;
    return !error;
  }
  void parse() {
    std::size_t end;
    while ((end = buffer_.find("\n\n")) != std::string::npos) {
      const std::string block = buffer_.substr(0, end);
      buffer_.erase(0, end + 2);
      SseMessage message;
      bool has_data = false;
      std::size_t pos = 0;
      while (pos <= block.size()) {
        std::size_t nl = block.find('\n', pos);
        if (nl == std::string::npos) nl = block.size();
        const std::string line = block.substr(pos, nl - pos);
        pos = nl + 1;
        if (line.rfind(": keepalive", 0) == 0) ++keepalives_;
        if (line.rfind("id: ", 0) == 0) message.id = line.substr(4);
        if (line.rfind("event: ", 0) == 0) message.event = line.substr(7);
        if (line.rfind("data: ", 0) == 0) {
          message.data = line.substr(6);
          has_data = true;
        }
      }
      if (has_data) messages_.push_back(std::move(message));
    }
  }

  net::io_context io_;
  tcp::socket socket_;
  std::array<char, 64 * 1024> chunk_{};
  std::string buffer_;
  std::string head_;
  std::vector<SseMessage> messages_;
  std::size_t keepalives_ = 0;
  bool closed_ = false;
};

}  // namespace warmstart::api::testing
