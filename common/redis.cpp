// Redis client on hiredis 0.14's async API, driven by Asio.
//
// Layout: Url/Reply helpers; Event (one-shot notification with per-waiter
// deadlines); Adapter (hiredis ev hooks -> stream_descriptor readiness waits);
// Connection (one redisAsyncContext: connect, handshake, send); ClientImpl
// (reconnect with backoff, deadlines, EVALSHA); SubscriberImpl (pub/sub loop).
//
// Threading: a client is used from one executor that runs on one thread at a
// time (an io_context run by one thread, or a strand). hiredis is not
// thread-safe and nothing here locks.
#include "common/redis.hpp"

#include "common/digest.hpp"
#include "common/log.hpp"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <signal.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <limits>
#include <mutex>
#include <unordered_map>

namespace warmstart::redis {

// ---------------------------------------------------------------------------
// Url

namespace {

std::string percent_decode(std::string_view in, std::string_view what) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    if (i + 2 >= in.size()) {
      throw std::invalid_argument("redis URL: truncated percent-escape in " + std::string(what));
    }
    int hi = hex(in[i + 1]);
    int lo = hex(in[i + 2]);
    if (hi < 0 || lo < 0) {
      throw std::invalid_argument("redis URL: bad percent-escape in " + std::string(what));
    }
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

int parse_int(std::string_view text, int min, int max, const char* what) {
  int value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value < min ||
      value > max) {
    throw std::invalid_argument("redis URL: " + std::string(what) + " must be an integer in " +
                                std::to_string(min) + ".." + std::to_string(max) + ", got \"" +
                                std::string(text) + "\"");
  }
  return value;
}

}  // namespace

namespace {

// host[:port] or [v6][:port].
Endpoint parse_endpoint(std::string_view hostport, int default_port) {
  std::string_view host = hostport;
  std::string_view port;
  if (!hostport.empty() && hostport.front() == '[') {
    auto close = hostport.find(']');
    if (close == std::string_view::npos) {
      throw std::invalid_argument("redis URL: unterminated [IPv6] host");
    }
    host = hostport.substr(1, close - 1);
    std::string_view after = hostport.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') throw std::invalid_argument("redis URL: junk after [IPv6] host");
      port = after.substr(1);
      if (port.empty()) throw std::invalid_argument("redis URL: empty port");
    }
  } else if (auto colon = hostport.rfind(':'); colon != std::string_view::npos) {
    host = hostport.substr(0, colon);
    port = hostport.substr(colon + 1);
    if (port.empty()) throw std::invalid_argument("redis URL: empty port");
  }
  if (host.empty()) throw std::invalid_argument("redis URL: missing host");
  Endpoint e{std::string(host), default_port};
  if (!port.empty()) e.port = parse_int(port, 1, 65535, "port");
  return e;
}

constexpr std::string_view kSentinelScheme = "redis+sentinel://";
constexpr std::string_view kUnixScheme = "unix://";

// user:password, or a lone password (redis://secret@host: the legacy AUTH
// password; AUTH with a user but no password does not exist).
void parse_userinfo(std::string_view userinfo, Url& url) {
  if (auto colon = userinfo.find(':'); colon != std::string_view::npos) {
    url.user = percent_decode(userinfo.substr(0, colon), "user");
    url.password = percent_decode(userinfo.substr(colon + 1), "password");
  } else {
    url.password = percent_decode(userinfo, "password");
  }
}

// What follows unix://: [user[:password]@]/path[?db=N].
Url parse_unix(std::string_view rest) {
  const std::string_view form = "unix://[user[:password]@]/path/to/redis.sock[?db=N]";
  Url url;
  url.host.clear();
  url.port = 0;
  std::string_view query;
  if (auto q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  if (rest.find('#') != std::string_view::npos) {
    throw std::invalid_argument("redis URL: fragments are not supported");
  }
  const auto slash = rest.find('/');
  std::string_view userinfo = rest.substr(0, slash);
  if (slash == std::string_view::npos || (!userinfo.empty() && userinfo.back() != '@')) {
    throw std::invalid_argument("redis URL: unix:// needs an absolute socket path: " +
                                std::string(form));
  }
  if (!userinfo.empty()) parse_userinfo(userinfo.substr(0, userinfo.size() - 1), url);
  url.socket_path = percent_decode(rest.substr(slash), "socket path");
  // sockaddr_un's sun_path: hiredis would cut a longer path short.
  constexpr std::size_t max_path = 107;
  if (url.socket_path.size() < 2 || url.socket_path.size() > max_path) {
    throw std::invalid_argument("redis URL: the socket path must have 1.." +
                                std::to_string(max_path - 1) + " characters after '/', got \"" +
                                url.socket_path.substr(0, 64) + "\"");
  }
  if (!query.empty()) {
    if (query.rfind("db=", 0) != 0 || query.find('&') != std::string_view::npos) {
      throw std::invalid_argument("redis URL: unix:// takes no query but ?db=N: " +
                                  std::string(form));
    }
    url.db = parse_int(query.substr(3), 0, std::numeric_limits<int>::max(), "db index");
  }
  return url;
}

}  // namespace

std::string to_string(const Endpoint& e) {
  std::string out = e.host.find(':') != std::string::npos ? "[" + e.host + "]" : e.host;
  return out + ":" + std::to_string(e.port);
}

Url Url::parse(std::string_view text) {
  Url url;
  std::string_view rest;
  bool sentinel = false;
  if (text.rfind("redis://", 0) == 0) {
    rest = text.substr(8);
  } else if (text.rfind("rediss://", 0) == 0) {
    rest = text.substr(9);
    url.tls = true;
  } else if (text.rfind(kSentinelScheme, 0) == 0) {
    rest = text.substr(kSentinelScheme.size());
    sentinel = true;
  } else if (text.rfind(kUnixScheme, 0) == 0) {
    return parse_unix(text.substr(kUnixScheme.size()));
  } else {
    throw std::invalid_argument(
        "redis URL must start with redis://, rediss://, redis+sentinel:// or unix://, got \"" +
        std::string(text.substr(0, 64)) + "\"");
  }
  if (rest.find_first_of("?#") != std::string_view::npos) {
    throw std::invalid_argument("redis URL: query strings and fragments are not supported");
  }
  // Userinfo ends at the LAST '@' so that a raw '@' in a password still works.
  if (auto at = rest.rfind('@'); at != std::string_view::npos) {
    parse_userinfo(rest.substr(0, at), url);
    rest = rest.substr(at + 1);
  }
  std::string_view hostport = rest;
  std::string_view path;
  if (auto slash = rest.find('/'); slash != std::string_view::npos) {
    hostport = rest.substr(0, slash);
    path = rest.substr(slash + 1);
  }
  if (sentinel) {
    // /<master>[/db]
    std::string_view name = path;
    std::string_view db;
    if (auto slash = path.find('/'); slash != std::string_view::npos) {
      name = path.substr(0, slash);
      db = path.substr(slash + 1);
    }
    if (name.empty()) {
      throw std::invalid_argument(
          "redis URL: redis+sentinel:// needs the master name: "
          "redis+sentinel://host:26379[,host:26379...]/<master>[/db]");
    }
    url.master_name = percent_decode(name, "master name");
    if (!db.empty()) url.db = parse_int(db, 0, std::numeric_limits<int>::max(), "db index");
    while (true) {
      auto comma = hostport.find(',');
      url.sentinels.push_back(parse_endpoint(hostport.substr(0, comma), 26379));
      if (comma == std::string_view::npos) break;
      hostport = hostport.substr(comma + 1);
    }
    url.host = url.sentinels.front().host;
    url.port = url.sentinels.front().port;
    return url;
  }
  if (!path.empty()) url.db = parse_int(path, 0, std::numeric_limits<int>::max(), "db index");
  Endpoint e = parse_endpoint(hostport, 6379);
  url.host = std::move(e.host);
  url.port = e.port;
  return url;
}

std::string Url::redacted() const {
  std::string out = sentinel()      ? std::string(kSentinelScheme)
                    : unix_socket() ? std::string(kUnixScheme)
                    : tls           ? "rediss://"
                                    : "redis://";
  if (!user.empty() || !password.empty()) {
    out += user;
    if (!password.empty()) out += ":***";
    out += "@";
  }
  if (sentinel()) {
    for (std::size_t i = 0; i < sentinels.size(); ++i) {
      if (i > 0) out += ",";
      out += to_string(sentinels[i]);
    }
    return out + "/" + master_name + "/" + std::to_string(db);
  }
  if (unix_socket()) return out + socket_path + "?db=" + std::to_string(db);
  return out + to_string(Endpoint{host, port}) + "/" + std::to_string(db);
}

// ---------------------------------------------------------------------------
// Reply

namespace {
const char* type_name(Reply::Type t) {
  switch (t) {
    case Reply::Type::nil:
      return "nil";
    case Reply::Type::integer:
      return "integer";
    case Reply::Type::string:
      return "string";
    case Reply::Type::status:
      return "status";
    case Reply::Type::error:
      return "error";
    case Reply::Type::array:
      return "array";
  }
  return "?";
}
}  // namespace

std::int64_t Reply::as_integer() const {
  if (type == Type::integer) return integer;
  throw ProtocolError("", std::string("expected an integer reply, got ") + type_name(type));
}

const std::string& Reply::as_string() const {
  if (type == Type::string || type == Type::status) return str;
  throw ProtocolError("", std::string("expected a string reply, got ") + type_name(type));
}

std::optional<std::string> Reply::as_optional_string() const {
  if (type == Type::nil) return std::nullopt;
  return as_string();
}

const std::vector<Reply>& Reply::as_array() const {
  if (type == Type::array) return elements;
  throw ProtocolError("", std::string("expected an array reply, got ") + type_name(type));
}

namespace {

Reply convert(const redisReply* r) {
  Reply out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = Reply::Type::string;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = Reply::Type::status;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = Reply::Type::error;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = Reply::Type::integer;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = Reply::Type::array;
      out.elements.reserve(r->elements);
      for (std::size_t i = 0; i < r->elements; ++i) out.elements.push_back(convert(r->element[i]));
      break;
    default:
      out.type = Reply::Type::nil;
      break;
  }
  return out;
}

}  // namespace

bool is_transient(const std::exception& error) {
  if (dynamic_cast<const ConnectionError*>(&error) != nullptr) return true;
  if (dynamic_cast<const ReplyError*>(&error) == nullptr) return false;
  std::string_view text = error.what();
  for (std::string_view code :
       {"LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "BUSY ", "CLUSTERDOWN", "NOREPLICAS"}) {
    // The reply text may be prefixed by the command ("EVALSHA: LOADING ...").
    if (text.substr(0, code.size()) == code) return true;
    if (text.find(": " + std::string(code)) != std::string_view::npos) return true;
  }
  return false;
}

bool is_transient(const std::exception_ptr& error) {
  if (!error) return false;
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return is_transient(e);
  } catch (...) {
    return false;
  }
}

namespace {

std::string command_name(const std::vector<std::string>& args) {
  std::string name = args.empty() ? std::string() : args.front();
  for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return name;
}

Duration backoff_for(const ClientOptions& o, int failures) {
  Duration d = o.reconnect_min_backoff;
  for (int i = 1; i < failures && d < o.reconnect_max_backoff; ++i) d *= 2;
  return std::min(d, o.reconnect_max_backoff);
}

// Far enough in the future to mean "no deadline" without overflowing Asio's
// time arithmetic.
Clock::time_point far_future() {
  return Clock::now() + std::chrono::hours(24 * 365);
}

// ---------------------------------------------------------------------------
// Event: a one-shot notification that coroutines wait for with a deadline.
// Each waiter has its own timer; notify() cancels them all.

// Always held by shared_ptr (EventPtr): a waiter keeps its Event alive.
class Event : public std::enable_shared_from_this<Event> {
 public:
  bool is_set() const { return set_; }
  void notify() {
    set_ = true;
    for (auto* t : waiters_) t->cancel();
    waiters_.clear();
  }
  // True when notified; false on deadline or cancellation of the waiter.
  awaitable<bool> wait_until(Clock::time_point until) {
    if (set_) co_return true;
    auto self = shared_from_this();
    net::steady_timer timer(co_await net::this_coro::executor, until);
    // Unregistered however the wait ends, also when the io_context is
    // destroyed with this frame suspended (shutdown): a later notify() must
    // not cancel a timer that no longer exists.
    struct Registration {
      std::vector<net::steady_timer*>& waiters;
      net::steady_timer* timer;
      ~Registration() { std::erase(waiters, timer); }
    } registration{waiters_, &timer};
    waiters_.push_back(&timer);
    co_await timer.async_wait(net::as_tuple(use_awaitable));
    co_return set_;
  }

 private:
  bool set_ = false;
  std::vector<net::steady_timer*> waiters_;
};
using EventPtr = std::shared_ptr<Event>;

// ---------------------------------------------------------------------------
// One in-flight command. hiredis holds a heap shared_ptr to it as privdata and
// invokes the callback exactly once (with NULL when the context goes away).
//
// Its waiter (wait_reply) is resumed straight from the adapter's read handler
// once hiredis has parsed the reply, not through a posted timer cancellation:
// that was one more pass of the event loop per command (bench/RESULTS.md).

// A type-erased completion handler (Boost 1.81's any_completion_handler
// recurses forever when moved from a non-const lvalue).
struct Waiter {
  virtual ~Waiter() = default;
  virtual void invoke(boost::system::error_code ec) = 0;
};
template <typename Handler>
struct WaiterOf final : Waiter {
  explicit WaiterOf(Handler&& h) : handler(std::move(h)) {}
  void invoke(boost::system::error_code ec) override { std::move(handler)(ec); }
  Handler handler;
};

struct Request {
  explicit Request(net::any_io_executor ex) : timer(ex) {}
  net::steady_timer timer;  // the waiter's deadline
  bool done = false;
  bool lost = false;  // no reply: the connection went away
  std::string lost_reason;
  Reply reply;
  std::unique_ptr<Waiter> waiter;  // the coroutine in wait_reply, until resumed

  // Resumes the waiter (once; later calls do nothing) with `ec`: inline, or
  // posted to its executor when the caller is in the middle of something
  // else (a timer, a cancellation, hiredis freeing the context).
  void resume(boost::system::error_code ec, bool inline_call) {
    if (!waiter) return;
    std::unique_ptr<Waiter> w = std::move(waiter);
    if (ec != net::error::timed_out) timer.cancel();
    if (inline_call) {
      w->invoke(ec);
      return;
    }
    // The client's executor, which is the waiter's (one executor per client).
    net::post(timer.get_executor(), [w = std::move(w), ec]() { w->invoke(ec); });
  }
};
using RequestPtr = std::shared_ptr<Request>;

// Waits for `req` until `until`. Returns no error once it is done (replied or
// lost), timed_out at the deadline, operation_aborted when the caller's
// cancellation slot fires.
template <typename Token>
auto async_wait_reply(RequestPtr req, Clock::time_point until, Token&& token) {
  return net::async_initiate<Token, void(boost::system::error_code)>(
      [](auto handler, RequestPtr r, Clock::time_point deadline) {
        using Handler = decltype(handler);
        if (r->done) {
          r->waiter = std::make_unique<WaiterOf<Handler>>(std::move(handler));
          r->resume({}, false);
          return;
        }
        auto slot = net::get_associated_cancellation_slot(handler);
        if (slot.is_connected()) {
          slot.assign([weak = std::weak_ptr<Request>(r)](net::cancellation_type) {
            if (auto locked = weak.lock()) locked->resume(net::error::operation_aborted, false);
          });
        }
        r->waiter = std::make_unique<WaiterOf<Handler>>(std::move(handler));
        r->timer.expires_at(deadline);
        r->timer.async_wait([weak = std::weak_ptr<Request>(r)](boost::system::error_code ec) {
          auto locked = weak.lock();
          if (!ec && locked) locked->resume(net::error::timed_out, false);
        });
      },
      token, std::move(req), until);
}

awaitable<boost::system::error_code> wait_reply(RequestPtr req, Clock::time_point until) {
  if (req->done) co_return boost::system::error_code{};
  auto [ec] = co_await async_wait_reply(std::move(req), until, net::as_tuple(use_awaitable));
  co_return ec;
}

void completed(redisAsyncContext* ac, const RequestPtr& req);  // Adapter, below

void on_reply(redisAsyncContext* ac, void* r, void* privdata) {
  std::unique_ptr<RequestPtr> holder(static_cast<RequestPtr*>(privdata));
  Request& req = **holder;
  if (r == nullptr) {
    req.lost = true;
    req.lost_reason = (ac != nullptr && ac->err != 0 && ac->errstr != nullptr)
                          ? std::string(ac->errstr)
                          : std::string("connection closed");
  } else {
    req.reply = convert(static_cast<const redisReply*>(r));
  }
  req.done = true;
  completed(ac, *holder);
}

// ---------------------------------------------------------------------------
// Adapter: hiredis's event hooks on an Asio stream_descriptor. hiredis owns
// the fd (redisFree closes it), so cleanup() releases it from Asio instead of
// closing it. Pending waits keep the adapter alive through shared_from_this.

class Adapter : public std::enable_shared_from_this<Adapter> {
 public:
  explicit Adapter(net::any_io_executor ex) : sd_(std::move(ex)) {}

  void attach(redisAsyncContext* ac) {
    ac_ = ac;
    self_ = shared_from_this();
    sd_.assign(ac->c.fd);
    ac->ev.data = this;
    ac->ev.addRead = [](void* p) { static_cast<Adapter*>(p)->add_read(); };
    ac->ev.delRead = [](void* p) { static_cast<Adapter*>(p)->want_read_ = false; };
    ac->ev.addWrite = [](void* p) { static_cast<Adapter*>(p)->add_write(); };
    ac->ev.delWrite = [](void* p) { static_cast<Adapter*>(p)->want_write_ = false; };
    ac->ev.cleanup = [](void* p) { static_cast<Adapter*>(p)->cleanup(); };
  }

  redisAsyncContext* context() const { return ac_; }

  void add_read() {
    want_read_ = true;
    if (read_armed_ || ac_ == nullptr) return;
    read_armed_ = true;
    sd_.async_wait(net::posix::stream_descriptor::wait_read,
                   [self = shared_from_this()](boost::system::error_code ec) {
                     self->read_armed_ = false;
                     if (ec || self->ac_ == nullptr || !self->want_read_) return;
                     self->on_readable();
                   });
  }

  // A request is done (called from hiredis's callback). Inside on_readable its
  // waiter is resumed once hiredis has returned; anywhere else (the context
  // being freed, a write error) it is posted.
  void completed(const RequestPtr& req) {
    if (reading_) {
      ready_.push_back(req);
    } else {
      req->resume({}, false);
    }
  }

  void add_write() {
    want_write_ = true;
    if (write_armed_ || ac_ == nullptr) return;
    // Commands sent by waiters resumed in on_readable go out in one write
    // when they are all done (its end flushes).
    if (reading_) return;
    write_armed_ = true;
    auto handler = [self = shared_from_this()](boost::system::error_code ec) {
      self->write_armed_ = false;
      if (ec || self->ac_ == nullptr || !self->want_write_) return;
      // A partial write calls add_write() again from inside: it then waits.
      self->writing_ = true;
      redisAsyncHandleWrite(self->ac_);  // may free the context (cleanup() clears ac_)
      self->writing_ = false;
    };
    if (writing_) {
      // hiredis could not write everything: wait until the socket has room.
      sd_.async_wait(net::posix::stream_descriptor::wait_write, std::move(handler));
      return;
    }
    // A socket is almost always writable: write once the current handler has
    // returned (which batches every command it issued into one write: free
    // pipelining) without a readiness wait, which costs an epoll_ctl and an
    // epoll round per command (bench/RESULTS.md, profile).
    net::post(sd_.get_executor(),
              [handler = std::move(handler)]() mutable { handler(boost::system::error_code{}); });
  }

 private:
  void on_readable() {
    reading_ = true;
    // May free the context on EOF/error; cleanup() then clears ac_.
    redisAsyncHandleRead(ac_);
    // Resume the waiters of the replies just parsed, here and now: they may
    // send commands (batched into the flush below) or close the connection
    // (which completes the rest as lost: those land in ready_ too).
    while (!ready_.empty()) {
      std::vector<RequestPtr> ready;
      ready.swap(ready_);
      for (auto& req : ready) req->resume({}, true);
    }
    reading_ = false;
    if (ac_ != nullptr && want_write_ && !write_armed_) {
      writing_ = true;  // a partial write waits for room (add_write)
      redisAsyncHandleWrite(ac_);
      writing_ = false;
    }
    if (ac_ != nullptr && want_read_) add_read();
  }

  void cleanup() {
    ac_ = nullptr;
    want_read_ = want_write_ = false;
    if (sd_.is_open()) sd_.release();  // cancels pending waits; hiredis closes the fd
    auto keep_until_return = std::move(self_);
  }

  net::posix::stream_descriptor sd_;
  redisAsyncContext* ac_ = nullptr;
  std::shared_ptr<Adapter> self_;  // hiredis's reference (ev.data), dropped in cleanup
  bool want_read_ = false;
  bool want_write_ = false;
  bool read_armed_ = false;
  bool write_armed_ = false;
  bool writing_ = false;           // inside redisAsyncHandleWrite
  bool reading_ = false;           // inside on_readable
  std::vector<RequestPtr> ready_;  // done while reading_: resumed when hiredis returned
};

void completed(redisAsyncContext* ac, const RequestPtr& req) {
  auto* adapter = ac != nullptr ? static_cast<Adapter*>(ac->ev.data) : nullptr;
  if (adapter != nullptr) {
    adapter->completed(req);
  } else {
    req->resume({}, false);
  }
}

// hiredis sends with write(2): on a socket whose peer has gone (at once on a
// Unix socket, on TCP at the second write after a reset) that raises SIGPIPE,
// whose default action ends the process. A process with a Redis connection
// ignores it instead, unless it installed a handler of its own: the write
// fails with EPIPE and the connection counts as lost.
void ignore_sigpipe() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current {};
    if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
      ::signal(SIGPIPE, SIG_IGN);
    }
  });
}

// ---------------------------------------------------------------------------
// Connection: one hiredis async context.

class Connection {
 public:
  using PushHandler = std::function<void(Reply)>;

  explicit Connection(net::any_io_executor ex) : ex_(std::move(ex)) {}
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() { close(); }

  const EventPtr& lost() const { return lost_; }
  const std::string& last_error() const { return last_error_; }

  bool alive() const {
    redisAsyncContext* ac = adapter_ ? adapter_->context() : nullptr;
    return connected_ && ac != nullptr &&
           (ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING)) == 0;
  }

  // What a connection is for: the server the URL names (or the master the
  // Sentinels named: AUTH, SELECT, CLIENT SETNAME, and ROLE must say master),
  // or a Sentinel itself (no handshake).
  enum class Peer { server, sentinel };

  // How errors name the peer: the URL, or which Sentinel / master.
  static std::string describe(const Url& url, const Endpoint& to, Peer peer) {
    if (!url.sentinel()) return url.redacted();
    if (peer == Peer::sentinel) return "sentinel " + to_string(to);
    return "master " + url.master_name + " at " + to_string(to);
  }

  // Connects to `to`, then the handshake of `peer`. Throws ConnectionError.
  awaitable<void> open(const ClientOptions& o, const Endpoint& to, Peer peer,
                       std::string client_name, Clock::time_point until) {
    const std::string where = describe(o.url, to, peer);
    // unix://: `to` (the URL's unused host and port) plays no part.
    const bool local = peer == Peer::server && o.url.unix_socket();
    ignore_sigpipe();
    redisAsyncContext* ac = local ? redisAsyncConnectUnix(o.url.socket_path.c_str())
                                  : redisAsyncConnect(to.host.c_str(), to.port);
    if (ac == nullptr) throw ConnectionError("CONNECT", "connect to " + where + ": out of memory");
    if (ac->err != 0) {
      std::string reason = ac->errstr;
      redisAsyncFree(ac);
      throw ConnectionError("CONNECT", "connect to " + where + ": " + reason);
    }
    ac->data = this;
    adapter_ = std::make_shared<Adapter>(ex_);
    try {
      adapter_->attach(ac);
    } catch (const std::exception& e) {
      ac->data = nullptr;
      redisAsyncFree(ac);
      throw ConnectionError("CONNECT", "connect to " + where + ": " + e.what());
    }
    redisAsyncSetConnectCallback(ac, &Connection::on_connect);
    redisAsyncSetDisconnectCallback(ac, &Connection::on_disconnect);
    // hiredis 0.14 only notices the finished connect(2) on a write event.
    adapter_->add_write();

    Clock::time_point connect_until = std::min(until, Clock::now() + o.connect_timeout);
    auto connected_event = connected_event_;
    bool signalled = co_await connected_event->wait_until(connect_until);
    if (!signalled || !connected_) {
      std::string reason = signalled ? last_error_ : "timed out";
      close();
      throw ConnectionError("CONNECT", "connect to " + where + ": " + reason);
    }
    if (!local) redisEnableKeepAlive(&adapter_->context()->c);  // TCP keepalive

    if (peer == Peer::sentinel) co_return;
    // The handshake is pipelined; each reply is checked in order.
    std::vector<std::pair<std::string, RequestPtr>> steps;
    if (!o.url.password.empty()) {
      std::vector<std::string> auth{"AUTH"};
      if (!o.url.user.empty()) auth.push_back(o.url.user);
      auth.push_back(o.url.password);
      steps.emplace_back("AUTH", send(auth));
    }
    if (o.url.db != 0) steps.emplace_back("SELECT", send({"SELECT", std::to_string(o.url.db)}));
    if (!client_name.empty()) {
      steps.emplace_back("CLIENT SETNAME", send({"CLIENT", "SETNAME", client_name}));
    }
    // A Sentinel's answer can be stale (a failover under way): only a master
    // is kept.
    if (o.url.sentinel()) steps.emplace_back("ROLE", send({"ROLE"}));
    for (auto& [name, req] : steps) {
      // Not done after the wait (deadline, cancellation): "timed out" below.
      auto waiting = wait_reply(req, connect_until);
      co_await std::move(waiting);
      std::string failure;
      if (!req->done)
        failure = "timed out";
      else if (req->lost)
        failure = req->lost_reason;
      else if (req->reply.is_error())
        failure = req->reply.str;
      else if (name == "ROLE" && (!req->reply.is_array() || req->reply.elements.empty() ||
                                  req->reply.elements[0].str != "master"))
        failure =
            "the server is not a master (role " +
            (req->reply.is_array() && !req->reply.elements.empty() ? req->reply.elements[0].str
                                                                   : std::string("unknown")) +
            "); a failover may be under way";
      if (!failure.empty()) {
        close();
        throw ConnectionError(name, name + " on " + where + " failed: " + failure);
      }
    }
  }

  // Queues a command; the returned request completes with a reply or `lost`.
  RequestPtr send(const std::vector<std::string>& args) {
    auto req = std::make_shared<Request>(ex_);
    redisAsyncContext* ac = adapter_ ? adapter_->context() : nullptr;
    if (!alive()) {
      req->lost = true;
      req->lost_reason = "not connected";
      req->done = true;
      return req;
    }
    std::vector<const char*> argv(args.size());
    std::vector<std::size_t> lens(args.size());
    for (std::size_t i = 0; i < args.size(); ++i) {
      argv[i] = args[i].data();
      lens[i] = args[i].size();
    }
    auto* holder = new RequestPtr(req);
    if (redisAsyncCommandArgv(ac, &on_reply, holder, static_cast<int>(args.size()), argv.data(),
                              lens.data()) != REDIS_OK) {
      delete holder;
      req->lost = true;
      req->lost_reason = "connection is closing";
      req->done = true;
    }
    return req;
  }

  // SUBSCRIBE whose messages go to `handler` (called from hiredis's callback:
  // it must only post work).
  bool subscribe(const std::vector<std::string>& channels, PushHandler handler) {
    redisAsyncContext* ac = adapter_ ? adapter_->context() : nullptr;
    if (!alive()) return false;
    push_handler_ = std::move(handler);
    std::vector<std::string> args{"SUBSCRIBE"};
    args.insert(args.end(), channels.begin(), channels.end());
    std::vector<const char*> argv(args.size());
    std::vector<std::size_t> lens(args.size());
    for (std::size_t i = 0; i < args.size(); ++i) {
      argv[i] = args[i].data();
      lens[i] = args[i].size();
    }
    return redisAsyncCommandArgv(ac, &Connection::on_push, this, static_cast<int>(args.size()),
                                 argv.data(), lens.data()) == REDIS_OK;
  }

  // Frees the context: every pending request completes as lost.
  void close() {
    redisAsyncContext* ac = adapter_ ? adapter_->context() : nullptr;
    if (ac != nullptr) {
      ac->data = nullptr;  // our callbacks must not see a half-closed Connection
      redisAsyncFree(ac);
    }
    mark_lost("closed");
  }

 private:
  void mark_lost(const std::string& reason) {
    if (connected_ && last_error_.empty()) last_error_ = reason;
    connected_ = false;
    if (!connected_event_->is_set()) {
      if (last_error_.empty()) last_error_ = reason;
      connected_event_->notify();
    }
    lost_->notify();
  }

  static void on_connect(const redisAsyncContext* ac, int status) {
    auto* self = static_cast<Connection*>(ac->data);
    if (self == nullptr) return;
    if (status == REDIS_OK) {
      self->connected_ = true;
    } else {
      self->last_error_ = ac->errstr != nullptr ? ac->errstr : "connect failed";
    }
    self->connected_event_->notify();
  }

  static void on_disconnect(const redisAsyncContext* ac, int /*status*/) {
    auto* self = static_cast<Connection*>(ac->data);
    if (self == nullptr) return;
    self->mark_lost(ac->err != 0 && ac->errstr != nullptr ? ac->errstr
                                                          : "server closed the connection");
  }

  static void on_push(redisAsyncContext* ac, void* r, void* privdata) {
    // r is NULL while the context is being freed: nothing to deliver then.
    if (r == nullptr || ac->data == nullptr) return;
    auto* self = static_cast<Connection*>(privdata);
    if (self->push_handler_) self->push_handler_(convert(static_cast<const redisReply*>(r)));
  }

  net::any_io_executor ex_;
  std::shared_ptr<Adapter> adapter_;
  bool connected_ = false;
  std::string last_error_;
  EventPtr connected_event_ = std::make_shared<Event>();
  EventPtr lost_ = std::make_shared<Event>();
  PushHandler push_handler_;
};
using ConnectionPtr = std::shared_ptr<Connection>;
using Peer = Connection::Peer;

// Where the next connection of a client goes: the URL's host, or for
// redis+sentinel:// the master the Sentinels name. The Sentinels are asked in
// turn, starting with the last one that answered; a connection lost, a
// READONLY reply or +switch-master makes the next connection ask again.
class MasterResolver {
 public:
  awaitable<Endpoint> resolve(net::any_io_executor ex, const ClientOptions& o,
                              Clock::time_point until) {
    if (!o.url.sentinel()) co_return Endpoint{o.url.host, o.url.port};
    const auto& sentinels = o.url.sentinels;
    std::string failures;
    for (std::size_t n = 0; n < sentinels.size(); ++n) {
      const std::size_t i = (first_ + n) % sentinels.size();
      std::string failure;
      std::optional<Endpoint> master;
      auto conn = std::make_shared<Connection>(ex);
      const Clock::time_point ask_until = std::min(until, Clock::now() + o.connect_timeout);
      try {
        auto opening = conn->open(o, sentinels[i], Peer::sentinel, "", ask_until);
        co_await std::move(opening);
        RequestPtr req = conn->send({"SENTINEL", "get-master-addr-by-name", o.url.master_name});
        auto waiting = wait_reply(req, ask_until);
        co_await std::move(waiting);  // not done: "timed out" (master_of)
        master = master_of(*req, o.url.master_name, failure);
      } catch (const Error& e) {
        failure = e.what();
      }
      conn->close();
      if (master) {
        first_ = i;
        co_return *master;
      }
      if (!failures.empty()) failures += "; ";
      failures += to_string(sentinels[i]) + ": " + failure;
      if (Clock::now() >= until) break;
    }
    throw ConnectionError("SENTINEL",
                          "no Sentinel of " + o.url.redacted() + " named the master: " + failures);
  }

 private:
  static std::optional<Endpoint> master_of(const Request& req, const std::string& name,
                                           std::string& failure) {
    if (!req.done) {
      failure = "timed out";
    } else if (req.lost) {
      failure = req.lost_reason;
    } else if (req.reply.is_error()) {
      failure = req.reply.str;
    } else if (req.reply.is_nil()) {
      failure = "does not know a master named \"" + name + "\"";
    } else if (!req.reply.is_array() || req.reply.elements.size() != 2) {
      failure = "unexpected reply to SENTINEL get-master-addr-by-name";
    } else {
      Endpoint e{req.reply.elements[0].str, 0};
      const std::string& port = req.reply.elements[1].str;
      auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), e.port);
      if (ec == std::errc() && end == port.data() + port.size() && e.port > 0 && e.port <= 65535 &&
          !e.host.empty()) {
        return e;
      }
      failure = "bad master address \"" + e.host + ":" + port + "\"";
    }
    return std::nullopt;
  }

  std::size_t first_ = 0;
};

std::string sanitized_client_name(std::string name) {
  // CLIENT SETNAME refuses spaces and newlines.
  for (char& c : name) {
    if (c <= ' ' || c > '~') c = '-';
  }
  return name;
}

const char* const kTlsUnsupported = "TLS (rediss://) is not supported: hiredis 0.14 has no TLS";

// ---------------------------------------------------------------------------
// ClientImpl

class ClientImpl final : public Client {
 public:
  ClientImpl(net::any_io_executor ex, ClientOptions o) : ex_(std::move(ex)), opt_(std::move(o)) {}
  ~ClientImpl() override { close(); }

  awaitable<void> connect() override {
    auto self = shared_from_this();
    co_await ensure_connected("CONNECT", Clock::now() + opt_.connect_timeout);
  }

  awaitable<Reply> command(std::vector<std::string> args) override {
    return command(std::move(args), opt_.command_timeout);
  }

  awaitable<Reply> command(std::vector<std::string> args, Duration deadline) override {
    auto self = shared_from_this();
    if (args.empty()) throw std::invalid_argument("redis command without a name");
    std::string name = command_name(args);
    Clock::time_point until = Clock::now() + deadline;
    ConnectionPtr conn = co_await ensure_connected(name, until);
    RequestPtr req = conn->send(args);
    if (!req->done) {
      auto waiting = wait_reply(req, until);
      const boost::system::error_code ec = co_await std::move(waiting);
      if (!req->done) {
        if (ec == net::error::operation_aborted) {
          // The caller cancelled us (e.g. an outer with_deadline); the reply,
          // when it comes, lands in the abandoned request.
          throw boost::system::system_error(ec, name);
        }
        // Replies are strictly ordered: everything behind this command is stuck
        // too, and a silent peer is only detected this way. Drop the link so
        // the next command reconnects.
        if (conn_ == conn) drop_connection();
        conn->close();
        throw ConnectionError(name, name + ": deadline of " + std::to_string(deadline.count()) +
                                        " ms exceeded (" + opt_.url.redacted() + ")");
      }
    }
    if (req->lost) {
      throw ConnectionError(
          name, name + ": connection to " + opt_.url.redacted() + " lost: " + req->lost_reason);
    }
    if (req->reply.is_error()) {
      // A master demoted under us (failover): the next command reconnects
      // and, with Sentinel, finds the new master.
      if (req->reply.str.rfind("READONLY", 0) == 0 && conn_ == conn) {
        drop_connection();
        conn->close();
      }
      throw ReplyError(name, name + ": " + req->reply.str);
    }
    co_return std::move(req->reply);
  }

  awaitable<Reply> eval(const std::string& script, std::vector<std::string> keys,
                        std::vector<std::string> args) override {
    auto self = shared_from_this();
    auto it = sha_cache_.find(script);
    if (it == sha_cache_.end()) it = sha_cache_.emplace(script, sha1_hex(script)).first;
    std::vector<std::string> cmd;
    cmd.reserve(3 + keys.size() + args.size());
    cmd.push_back("EVALSHA");
    cmd.push_back(it->second);
    cmd.push_back(std::to_string(keys.size()));
    for (auto& k : keys) cmd.push_back(k);
    for (auto& a : args) cmd.push_back(a);
    // g++ 12 mishandles temporaries with destructors in co_await expressions
    // (double destruction): awaitables are built in their own statements and
    // nothing is co_returned from inside the try.
    std::optional<Reply> reply;
    auto first = command(cmd);
    try {
      reply = co_await std::move(first);
    } catch (const ReplyError& e) {
      // NOSCRIPT: first use on this server, or after SCRIPT FLUSH / a restart.
      if (std::string_view(e.what()).rfind("EVALSHA: NOSCRIPT", 0) != 0) throw;
    }
    if (reply) co_return std::move(*reply);
    cmd[0] = "EVAL";
    cmd[1] = script;  // EVAL also caches the script for the next EVALSHA
    auto second = command(std::move(cmd));
    co_return co_await std::move(second);
  }

  bool connected() const override { return conn_ && conn_->alive(); }

  void close() override {
    closed_ = true;
    if (watcher_) watcher_->stop();
    if (conn_) {
      auto c = std::move(conn_);
      c->close();
    }
  }

 private:
  void drop_connection() {
    conn_.reset();
    // A lost link counts as a failure: reconnecting waits out the first backoff
    // step so a server that accepts and drops at once is not hammered.
    failures_ = std::max(failures_, 1);
    next_attempt_ = Clock::now() + backoff_for(opt_, failures_);
  }

  awaitable<ConnectionPtr> ensure_connected(const std::string& name, Clock::time_point until) {
    for (;;) {
      if (opt_.url.tls) throw ConnectionError(name, kTlsUnsupported);
      if (closed_) throw ConnectionError(name, name + ": the client is closed");
      if (conn_ && conn_->alive()) co_return conn_;
      if (conn_) {
        last_error_ = conn_->last_error();
        drop_connection();
      }
      if (connecting_) {
        // Someone else is connecting: share the outcome instead of racing.
        EventPtr attempt = connecting_;
        if (!co_await attempt->wait_until(until)) {
          throw ConnectionError(
              name, name + ": deadline exceeded while connecting to " + opt_.url.redacted());
        }
        if (conn_ && conn_->alive()) co_return conn_;
        throw ConnectionError(
            name, name + ": cannot connect to " + opt_.url.redacted() + ": " + last_error_);
      }
      Clock::time_point now = Clock::now();
      if (now < next_attempt_) {
        if (next_attempt_ >= until) {
          throw ConnectionError(name, name + ": cannot connect to " + opt_.url.redacted() +
                                          " (reconnect backoff): " + last_error_);
        }
        net::steady_timer wait(ex_, next_attempt_);
        co_await wait.async_wait(use_awaitable);
        continue;  // state may have changed while we slept
      }
      EventPtr attempt = std::make_shared<Event>();
      connecting_ = attempt;
      auto conn = std::make_shared<Connection>(ex_);
      std::exception_ptr failure;
      try {
        auto resolving = resolver_.resolve(ex_, opt_, until);
        const Endpoint to = co_await std::move(resolving);
        auto opening =
            conn->open(opt_, to, Peer::server, sanitized_client_name(opt_.client_name), until);
        co_await std::move(opening);
        note_master(to);
      } catch (const Error& e) {
        failure = std::current_exception();
        last_error_ = e.what();
      }
      connecting_.reset();
      if (failure || closed_) {
        ++failures_;
        next_attempt_ = Clock::now() + backoff_for(opt_, failures_);
        attempt->notify();
        if (closed_) conn->close();
        if (failure) std::rethrow_exception(failure);
        throw ConnectionError(name, name + ": the client is closed");
      }
      if (failures_ > 0) log::info("redis reconnected", {{"redis", opt_.url.redacted()}});
      failures_ = 0;
      conn_ = conn;
      attempt->notify();
      watch_switch_master();
      co_return conn;
    }
  }

  void note_master(const Endpoint& to) {
    if (!opt_.url.sentinel() || to == master_) return;
    log::info("redis master", {{"redis", opt_.url.redacted()},
                               {"master", to_string(to)},
                               {"previous", master_.host.empty() ? "" : to_string(master_)}});
    master_ = to;
  }

  // redis+sentinel://: a subscription to the Sentinels' +switch-master drops
  // the connection when the master changes, even if the old one still answers
  // (a partition): the next command asks the Sentinels again.
  void watch_switch_master() {
    if (!opt_.url.sentinel() || watcher_) return;
    std::weak_ptr<ClientImpl> weak = std::static_pointer_cast<ClientImpl>(shared_from_this());
    watcher_ = Subscriber::create_on_sentinels(
        ex_, opt_, {"+switch-master"}, [weak](const std::string&, const std::string& message) {
          auto self = weak.lock();
          if (!self) return;
          // "<master-name> <old-ip> <old-port> <new-ip> <new-port>"
          if (message.substr(0, message.find(' ')) != self->opt_.url.master_name) return;
          log::warn("redis master switched; reconnecting",
                    {{"redis", self->opt_.url.redacted()}, {"switch", message}});
          if (self->conn_) {
            auto c = self->conn_;
            self->drop_connection();
            c->close();
          }
        });
  }

  net::any_io_executor ex_;
  ClientOptions opt_;
  ConnectionPtr conn_;
  EventPtr connecting_;
  int failures_ = 0;
  Clock::time_point next_attempt_{};
  std::string last_error_;
  bool closed_ = false;
  std::unordered_map<std::string, std::string> sha_cache_;  // script text -> SHA1
  MasterResolver resolver_;
  Endpoint master_;                      // the master last connected to (Sentinel URLs)
  std::unique_ptr<Subscriber> watcher_;  // +switch-master (Sentinel URLs)
};

// ---------------------------------------------------------------------------
// SubscriberImpl: a loop that connects, subscribes, waits for the link to go
// down, backs off and does it again, until stop().

class SubscriberImpl final : public Subscriber {
 public:
  struct State : std::enable_shared_from_this<State> {
    net::any_io_executor ex;
    ClientOptions opt;
    std::vector<std::string> channels;
    Handler handler;
    bool stopped = false;
    bool subscribed = false;
    bool on_sentinels = false;  // subscribe on the URL's Sentinels, in turn
    std::size_t next_sentinel = 0;
    MasterResolver resolver;
    ConnectionPtr conn;
    EventPtr wake = std::make_shared<Event>();           // stop() interrupts backoff sleeps
    EventPtr subscribed_ev = std::make_shared<Event>();  // renewed per connection
  };

  explicit SubscriberImpl(std::shared_ptr<State> st) : st_(std::move(st)) {}
  ~SubscriberImpl() override { stop(); }

  void stop() override {
    if (st_->stopped) return;
    st_->stopped = true;
    if (st_->conn) st_->conn->close();
    st_->wake->notify();
  }

  awaitable<bool> wait_subscribed(Duration timeout) override {
    auto st = st_;
    Clock::time_point until = Clock::now() + timeout;
    while (!st->subscribed && !st->stopped && Clock::now() < until) {
      EventPtr ev = st->subscribed_ev;
      co_await ev->wait_until(until);
    }
    co_return st->subscribed;
  }

  static awaitable<void> run(std::shared_ptr<State> st) {
    int failures = 0;
    while (!st->stopped) {
      if (st->opt.url.tls) {
        log::error("redis subscriber cannot start", {{"error", kTlsUnsupported}});
        co_return;
      }
      auto conn = std::make_shared<Connection>(st->ex);
      st->conn = conn;
      try {
        Endpoint to;
        Peer peer = Peer::server;
        if (st->on_sentinels) {
          const auto& sentinels = st->opt.url.sentinels;
          to = sentinels[st->next_sentinel++ % sentinels.size()];
          peer = Peer::sentinel;
        } else {
          auto resolving = st->resolver.resolve(st->ex, st->opt, far_future());
          to = co_await std::move(resolving);
        }
        auto opening = conn->open(
            st->opt, to, peer, sanitized_client_name(st->opt.client_name + "-sub"), far_future());
        co_await std::move(opening);
        std::weak_ptr<State> weak = st;
        auto ex = st->ex;
        bool ok = conn->subscribe(st->channels, [weak, ex](Reply r) {
          auto s = weak.lock();
          if (!s || s->stopped || !r.is_array() || r.elements.size() < 3) return;
          const std::string& kind = r.elements[0].str;
          if (kind == "subscribe") {
            if (r.elements[2].integer == static_cast<std::int64_t>(s->channels.size())) {
              s->subscribed = true;
              s->subscribed_ev->notify();
            }
          } else if (kind == "message") {
            // Run the user's handler outside hiredis's callback: it may stop us.
            net::post(ex, [weak, ch = r.elements[1].str, msg = r.elements[2].str] {
              if (auto s2 = weak.lock(); s2 && !s2->stopped) s2->handler(ch, msg);
            });
          }
        });
        if (!ok) throw ConnectionError("SUBSCRIBE", "SUBSCRIBE could not be sent");
        EventPtr lost = conn->lost();
        while (!st->stopped && !lost->is_set()) co_await lost->wait_until(far_future());
        if (st->subscribed) failures = 0;
        if (!st->stopped) {
          log::warn("redis subscriber lost its connection; resubscribing",
                    {{"redis", st->opt.url.redacted()}, {"error", conn->last_error()}});
        }
      } catch (const std::exception& e) {
        if (!st->stopped) {
          log::warn("redis subscriber cannot connect",
                    {{"redis", st->opt.url.redacted()}, {"error", e.what()}});
        }
      }
      conn->close();
      st->conn.reset();
      st->subscribed = false;
      st->subscribed_ev = std::make_shared<Event>();
      if (st->stopped) break;
      ++failures;
      co_await st->wake->wait_until(Clock::now() + backoff_for(st->opt, failures));
    }
  }

 private:
  std::shared_ptr<State> st_;
};

}  // namespace

ClientPtr Client::create(net::any_io_executor executor, ClientOptions options) {
  return std::make_shared<ClientImpl>(std::move(executor), std::move(options));
}

namespace {
std::unique_ptr<Subscriber> start_subscriber(net::any_io_executor executor, ClientOptions options,
                                             std::vector<std::string> channels,
                                             Subscriber::Handler handler, bool on_sentinels) {
  if (channels.empty()) throw std::invalid_argument("Subscriber needs at least one channel");
  auto st = std::make_shared<SubscriberImpl::State>();
  st->ex = executor;
  st->opt = std::move(options);
  st->channels = std::move(channels);
  st->handler = std::move(handler);
  st->on_sentinels = on_sentinels;
  net::co_spawn(executor, SubscriberImpl::run(st), net::detached);
  return std::make_unique<SubscriberImpl>(st);
}
}  // namespace

std::unique_ptr<Subscriber> Subscriber::create(net::any_io_executor executor, ClientOptions options,
                                               std::vector<std::string> channels, Handler handler) {
  return start_subscriber(std::move(executor), std::move(options), std::move(channels),
                          std::move(handler), false);
}

std::unique_ptr<Subscriber> Subscriber::create_on_sentinels(net::any_io_executor executor,
                                                            ClientOptions options,
                                                            std::vector<std::string> channels,
                                                            Handler handler) {
  if (!options.url.sentinel()) {
    throw std::invalid_argument("create_on_sentinels needs a redis+sentinel:// URL");
  }
  return start_subscriber(std::move(executor), std::move(options), std::move(channels),
                          std::move(handler), true);
}

}  // namespace warmstart::redis
