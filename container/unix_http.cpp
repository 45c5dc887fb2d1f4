#include "container/unix_http.hpp"

#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>

#include <algorithm>
#include <array>
#include <cctype>

namespace warmstart::container {

namespace http = beast::http;
using boost::system::error_code;

namespace {

constexpr std::size_t kChunk = 16 * 1024;  // body read step when the length is unknown
constexpr std::size_t kMaxStep = 1 << 20;  // largest single body read step
// Read-ahead of a connection: a whole engine answer of the usual size in one
// read (Beast would start at 512 bytes).
constexpr std::size_t kReadAhead = 16 * 1024;

bool is_post_like(const std::string& method) {
  return method == "POST" || method == "PUT";
}

// The request line and headers. Host is required by HTTP/1.1 and ignored by
// the engine. A curl-style "Name:" (no value) drops a header in curl; here
// there is nothing to drop, so it is skipped.
std::string request_head(const HttpRequest& r) {
  std::string head;
  head.reserve(128 + r.target.size());
  head.append(r.method).append(" ").append(r.target).append(" HTTP/1.1\r\nHost: docker\r\n");
  for (const auto& h : r.headers) {
    if (!h.empty() && h.back() == ':') continue;
    head.append(h).append("\r\n");
  }
  if (!r.body.empty() || is_post_like(r.method)) {
    head.append("Content-Length: ").append(std::to_string(r.body.size())).append("\r\n");
  }
  head.append("\r\n");
  return head;
}

void fail(HttpResult& out, CURLcode code, std::string error) {
  out.code = code;
  out.error = std::move(error);
}

// A reused connection the engine closed while it sat idle (or the engine
// restarted): the request may go again on a new one, as curl does.
bool looks_stale(const error_code& ec) {
  return ec == net::error::eof || ec == net::error::connection_reset ||
         ec == net::error::broken_pipe || ec == http::error::end_of_stream;
}

// Beast's parser refused the bytes (as opposed to the connection ending early).
bool is_parse_error(const error_code& ec) {
  static const auto& category = http::make_error_code(http::error::end_of_stream).category();
  return ec.category() == category && ec != http::error::end_of_stream &&
         ec != http::error::partial_message;
}

}  // namespace

// One request's deadline: the timer closes the connection in use when it fires
// (every pending operation on it then fails), and says so in `timed_out`.
// Shared with the timer's handler, which may run after perform() returned.
struct UnixHttp::Exchange {
  explicit Exchange(const net::any_io_executor& ex) : timer(ex) {}
  net::steady_timer timer;
  ConnectionPtr conn;
  bool timed_out = false;
  std::uint64_t generation = 0;  // a handler of an earlier arm() does nothing

  void arm(const std::shared_ptr<Exchange>& self, Clock::time_point at) {
    std::uint64_t armed = ++generation;
    timer.expires_at(at);
    timer.async_wait([self, armed](error_code ec) {
      if (ec || armed != self->generation) return;
      self->timed_out = true;
      if (self->conn) self->conn->socket.close(ec);
    });
  }
  void disarm() {
    ++generation;
    timer.cancel();
  }
};

std::shared_ptr<UnixHttp> UnixHttp::create(net::any_io_executor executor, UnixHttpOptions options) {
  return std::shared_ptr<UnixHttp>(new UnixHttp(std::move(executor), std::move(options)));
}

UnixHttp::UnixHttp(net::any_io_executor executor, UnixHttpOptions options)
    : executor_(std::move(executor)), options_(std::move(options)) {}

bool UnixHttp::handles(const HttpRequest& r) {
  return r.body_file.empty() && !r.body_source && !r.on_body_flow;
}

void UnixHttp::release(ConnectionPtr c) {
  // Only a connection with nothing unread goes back: its next answer starts clean.
  if (c->buffer.size() != 0 || !c->socket.is_open()) return;
  if (idle_.size() >= options_.max_idle_connections) return;
  idle_.push_back(std::move(c));
}

awaitable<HttpResult> UnixHttp::perform(HttpRequest r) {
  auto self = shared_from_this();  // alive until the request ends
  ++in_flight_;
  struct Leave {
    std::size_t& n;
    ~Leave() { --n; }
  } leave{in_flight_};

  auto x = std::make_shared<Exchange>(executor_);
  struct Disarm {
    Exchange& x;
    ~Disarm() { x.disarm(); }
  } disarm{*x};
  const bool has_deadline = r.timeout.count() > 0;
  const Clock::time_point deadline = Clock::now() + r.timeout;
  const std::string head = request_head(r);
  HttpResult out;

  for (int attempt = 0;; ++attempt) {
    ConnectionPtr c;
    const bool from_pool = !idle_.empty();
    if (from_pool) {
      c = std::move(idle_.back());
      idle_.pop_back();
      x->conn = c;
      if (has_deadline) x->arm(x, deadline);
    } else {
      Clock::time_point connect_by = Clock::now() + options_.connect_timeout;
      x->arm(x, has_deadline ? std::min(deadline, connect_by) : connect_by);
      // A pending connect is closed by the timer: it fails and timed_out says why.
      auto made = std::make_shared<Connection>(executor_);
      made->buffer.reserve(kReadAhead);
      x->conn = made;
      ++connections_opened_;
      auto [ec] = co_await made->socket.async_connect(
          net::local::stream_protocol::endpoint(options_.socket_path),
          net::as_tuple(use_awaitable));
      if (x->timed_out) {
        fail(out, CURLE_OPERATION_TIMEDOUT,
             "connect to unix://" + options_.socket_path + " timed out");
        co_return out;
      }
      if (ec == net::error::operation_aborted) throw boost::system::system_error(ec);
      if (ec) {
        fail(out, CURLE_COULDNT_CONNECT, ec.message());
        co_return out;
      }
      c = std::move(made);
      if (has_deadline) {
        x->arm(x, deadline);
      } else {
        x->disarm();
      }
    }

    Outcome o = co_await exchange(*c, head, r, out);
    if (!o.ec && out.code == CURLE_OK) {
      if (o.keep) release(std::move(c));
      co_return out;
    }
    if (x->timed_out) {
      fail(out, CURLE_OPERATION_TIMEDOUT,
           "Operation timed out after " + std::to_string(r.timeout.count()) + " milliseconds");
      co_return out;
    }
    if (o.ec == net::error::operation_aborted) throw boost::system::system_error(o.ec);
    if (out.code != CURLE_OK) co_return out;  // the answer itself was bad: no retry
    if (from_pool && !o.answered && attempt == 0 && looks_stale(o.ec)) {
      // The pool is from before the engine dropped it (restart, idle close):
      // none of it is worth trying.
      idle_.clear();
      continue;
    }
    fail(out, o.answered ? CURLE_RECV_ERROR : CURLE_SEND_ERROR,
         "the engine connection failed: " + o.ec.message());
    co_return out;
  }
}

awaitable<UnixHttp::Outcome> UnixHttp::exchange(Connection& c, const std::string& head,
                                                const HttpRequest& r, HttpResult& out) {
  Outcome o;
  std::array<net::const_buffer, 2> request{net::buffer(head), net::buffer(r.body)};
  std::tie(o.ec, std::ignore) =
      co_await net::async_write(c.socket, request, net::as_tuple(use_awaitable));
  if (o.ec) co_return o;

  // A malformed answer fails the request (no retry) and the connection.
  auto malformed = [&](const error_code& ec) {
    fail(out, CURLE_WEIRD_SERVER_REPLY, "malformed answer from the engine: " + ec.message());
    o.ec = {};
  };
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(boost::none);  // bounded below, per kind of request
  if (r.method == "HEAD") parser.skip(true);
  std::tie(o.ec, std::ignore) =
      co_await http::async_read_header(c.socket, c.buffer, parser, net::as_tuple(use_awaitable));
  o.answered = parser.got_some();
  if (o.ec) {
    if (is_parse_error(o.ec)) malformed(o.ec);
    co_return o;
  }
  const auto& msg = parser.get();
  out.status = static_cast<long>(msg.result_int());
  for (const auto& field : msg) {
    std::string name(field.name_string());
    for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    out.headers[std::move(name)] = std::string(field.value());
  }

  const bool streaming = static_cast<bool>(r.on_body);
  const bool success = out.status >= 200 && out.status < 300;
  std::string scratch;
  std::string& sink = streaming ? scratch : out.body;
  while (!parser.is_done()) {
    std::size_t room = kChunk;
    if (auto left = parser.content_length_remaining()) {
      room = static_cast<std::size_t>(std::min<std::uint64_t>(*left, kMaxStep));
    }
    std::size_t base = streaming ? 0 : sink.size();
    if (!streaming) room = std::min(room, options_.max_body_bytes + 1 - base);
    sink.resize(base + room);
    parser.get().body().data = sink.data() + base;
    parser.get().body().size = room;
    // A collected answer reads until the body buffer is full; a streamed one
    // hands over what arrived (an event feed's chunk must not wait for 16 KiB).
    if (streaming) {
      std::tie(o.ec, std::ignore) =
          co_await http::async_read_some(c.socket, c.buffer, parser, net::as_tuple(use_awaitable));
    } else {
      std::tie(o.ec, std::ignore) =
          co_await http::async_read(c.socket, c.buffer, parser, net::as_tuple(use_awaitable));
    }
    if (o.ec == http::error::need_buffer) o.ec = {};
    std::size_t got = room - parser.get().body().size;
    sink.resize(base + got);
    if (o.ec) {
      if (is_parse_error(o.ec)) malformed(o.ec);
      co_return o;
    }
    if (!streaming) {
      if (sink.size() > options_.max_body_bytes) {
        fail(out, CURLE_FILESIZE_EXCEEDED,
             "the engine's answer is larger than " + std::to_string(options_.max_body_bytes) +
                 " bytes");
        co_return o;
      }
    } else if (got > 0 && success) {
      try {
        r.on_body(std::string_view(scratch.data(), got));
      } catch (...) {
        out.sink_error = std::current_exception();
        fail(out, CURLE_WRITE_ERROR, "the body consumer failed");
        co_return o;
      }
    } else if (got > 0 && out.body.size() < options_.max_error_body_bytes) {
      out.body.append(scratch.data(),
                      std::min(got, options_.max_error_body_bytes - out.body.size()));
    }
  }
  o.keep = parser.keep_alive();
  co_return o;
}

}  // namespace warmstart::container
