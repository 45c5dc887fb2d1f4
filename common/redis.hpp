// Asynchronous Redis client on hiredis, driven by the Asio event loop (no thread
// per connection, nothing blocks the loop). Every command has a deadline; a lost
// connection is re-established with backoff on the next command.
#pragma once
#include "common/net.hpp"

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace warmstart::redis {

struct Endpoint {
  std::string host;
  int port = 0;
  bool operator==(const Endpoint&) const = default;
};
std::string to_string(const Endpoint& e);  // host:port, [v6]:port

// redis://[user[:password]@]host[:port][/db]. rediss:// is parsed but rejected by
// the client with a clear error (hiredis 0.14 has no TLS).
// unix://[user[:password]@]/path/to/redis.sock[?db=N]: a server on this host
// through its Unix socket (redis.conf `unixsocket`; percent-escape '?' and '%',
// and '/' in a password).
// redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/<master>[/db]:
// the hosts are Sentinels (port 26379 by default, contacted without AUTH);
// every connection asks them for <master>'s address, and user/password/db
// apply to the master (docs/fleet.md).
struct Url {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string user;
  std::string password;
  int db = 0;
  bool tls = false;
  std::vector<Endpoint> sentinels;  // non-empty for redis+sentinel://
  std::string master_name;          // the Sentinel master name
  std::string socket_path;          // unix://: the server's socket (host, port unused)

  bool sentinel() const { return !sentinels.empty(); }
  bool unix_socket() const { return !socket_path.empty(); }

  // Throws std::invalid_argument with a one-line reason on malformed input.
  static Url parse(std::string_view text);
  // The URL with the password replaced by "***" (for logs and errors).
  std::string redacted() const;
};

// A reply value: nil, integer, string (bulk or status), error, or array.
struct Reply {
  enum class Type { nil, integer, string, status, error, array };
  Type type = Type::nil;
  std::int64_t integer = 0;
  std::string str;  // string, status and error text
  std::vector<Reply> elements;

  bool is_nil() const { return type == Type::nil; }
  bool is_error() const { return type == Type::error; }
  bool is_array() const { return type == Type::array; }
  // Typed accessors throw ProtocolError on a type mismatch.
  std::int64_t as_integer() const;
  const std::string& as_string() const;
  std::optional<std::string> as_optional_string() const;  // nil -> nullopt
  const std::vector<Reply>& as_array() const;
};

// Builds a command's arguments: make_args("XADD", key, "*", "n", 42). Numbers
// become decimal strings. Use it instead of a braced list inside a co_await
// expression: g++ 12 rejects std::initializer_list<std::string> temporaries
// in coroutines ("array used as initializer").
template <typename... Args>
std::vector<std::string> make_args(Args&&... parts) {
  std::vector<std::string> out;
  out.reserve(sizeof...(parts));
  [[maybe_unused]] auto add = [&out](auto&& part) {
    if constexpr (std::is_arithmetic_v<std::decay_t<decltype(part)>>) {
      out.push_back(std::to_string(part));
    } else {
      out.emplace_back(std::forward<decltype(part)>(part));
    }
  };
  (add(std::forward<Args>(parts)), ...);
  return out;
}

// Base of client errors; `command()` names the command ("XADD", "EVALSHA").
class Error : public std::runtime_error {
 public:
  Error(std::string command, const std::string& what)
      : std::runtime_error(what), command_(std::move(command)) {}
  const std::string& command() const { return command_; }

 private:
  std::string command_;
};
// Redis answered with an error reply ("WRONGTYPE ...", "NOSCRIPT ...").
struct ReplyError : Error {
  using Error::Error;
};
// Could not connect, connection lost, or the deadline fired.
struct ConnectionError : Error {
  using Error::Error;
};
// A reply of an unexpected shape.
struct ProtocolError : Error {
  using Error::Error;
};

// A failure that goes away by itself: the connection (refused, reset, lost,
// deadline), or a server that cannot serve yet: LOADING (a restart still
// loading its AOF/RDB), READONLY (a replica during a failover), MASTERDOWN,
// TRYAGAIN, BUSY (a long script), CLUSTERDOWN. Callers retry these with backoff
// within their own deadline; anything else is an answer.
bool is_transient(const std::exception& error);
bool is_transient(const std::exception_ptr& error);

struct ClientOptions {
  Url url;                                 // where to connect
  Duration connect_timeout = 3s;           // per connection attempt
  Duration command_timeout = 5s;           // default per-command deadline
  Duration reconnect_min_backoff = 100ms;  // first retry delay after a loss
  Duration reconnect_max_backoff = 5s;     // backoff cap
  std::string client_name = "warmstart";   // CLIENT SETNAME
};

class Client;
using ClientPtr = std::shared_ptr<Client>;

class Client : public std::enable_shared_from_this<Client> {
 public:
  static ClientPtr create(net::any_io_executor executor, ClientOptions options);
  virtual ~Client() = default;

  // Connects (AUTH, SELECT, CLIENT SETNAME); throws ConnectionError.
  virtual awaitable<void> connect() = 0;
  // Sends one command; commands issued concurrently are pipelined on the one
  // connection. Throws ReplyError for an error reply, ConnectionError when the
  // connection is down (a later call reconnects) or the deadline fires.
  virtual awaitable<Reply> command(std::vector<std::string> args) = 0;
  virtual awaitable<Reply> command(std::vector<std::string> args, Duration deadline) = 0;
  // EVALSHA with a fallback to EVAL on NOSCRIPT (script cached by SHA1).
  virtual awaitable<Reply> eval(const std::string& script, std::vector<std::string> keys,
                                std::vector<std::string> args) = 0;
  virtual bool connected() const = 0;
  virtual void close() = 0;
};

// Pub/Sub on a dedicated connection; re-subscribes after a reconnect.
class Subscriber {
 public:
  using Handler = std::function<void(const std::string& channel, const std::string& message)>;
  virtual ~Subscriber() = default;
  static std::unique_ptr<Subscriber> create(net::any_io_executor executor, ClientOptions options,
                                            std::vector<std::string> channels, Handler handler);
  // The same on the Sentinels of a redis+sentinel:// URL (one at a time, the
  // next one after a loss): their +switch-master and other events.
  static std::unique_ptr<Subscriber> create_on_sentinels(net::any_io_executor executor,
                                                         ClientOptions options,
                                                         std::vector<std::string> channels,
                                                         Handler handler);
  virtual void stop() = 0;
  // Waits until every channel is subscribed on the current connection (true),
  // or `timeout` passes / stop() is called (false). Messages published before
  // that are not delivered: tests and callers that must not miss one wait here.
  virtual awaitable<bool> wait_subscribed(Duration timeout) = 0;
};

}  // namespace warmstart::redis
