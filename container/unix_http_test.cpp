// UnixHttp against a scripted peer on a unix socket: the answers a real engine
// rarely gives on purpose (garbage, a close mid-answer, silence, an idle close)
// are written by hand here. The ordinary ones are covered against the real
// engine by docker_client_test.cpp, whose plain calls all go through UnixHttp.
#include "container/unix_http.hpp"

#include "support/test_env.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>

using namespace warmstart;
using namespace warmstart::container;
namespace wt = warmstart::testing;
using unix_socket = net::local::stream_protocol::socket;

namespace {

// Reads one request (head and a Content-Length body) from `s`; empty when the
// client closed the connection first.
awaitable<std::string> read_request(unix_socket& s, std::string& pending) {
  for (;;) {
    auto end = pending.find("\r\n\r\n");
    if (end != std::string::npos) {
      std::size_t length = 0;
      auto cl = pending.find("Content-Length: ");
      if (cl != std::string::npos && cl < end) length = std::stoul(pending.substr(cl + 16));
      if (pending.size() >= end + 4 + length) {
        std::string request = pending.substr(0, end + 4 + length);
        pending.erase(0, request.size());
        co_return request;
      }
    }
    char chunk[4096];
    auto [ec, n] = co_await s.async_read_some(net::buffer(chunk), net::as_tuple(use_awaitable));
    if (ec) co_return std::string();
    pending.append(chunk, n);
  }
}

awaitable<void> write_all(unix_socket& s, std::string_view bytes) {
  co_await net::async_write(s, net::buffer(bytes), net::as_tuple(use_awaitable));
}

std::string answer(int status, const std::string& body, const std::string& extra = "") {
  return "HTTP/1.1 " + std::to_string(status) +
         " X\r\nApi-Version: 1.43\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" +
         extra + "\r\n" + body;
}

// A unix-socket peer: each accepted connection runs `script(socket, index)`.
// Records every request it read in `requests`.
struct Peer {
  using Script = std::function<awaitable<void>(Peer&, unix_socket&, int)>;

  Peer(net::any_io_executor ex, Script s) : acceptor(ex), script(std::move(s)) {
    char tmpl[] = "/tmp/ws-unix-http.XXXXXX";
    dir = ::mkdtemp(tmpl);
    path = dir + "/peer.sock";
    acceptor.open();
    acceptor.bind(net::local::stream_protocol::endpoint(path));
    acceptor.listen();
    net::co_spawn(ex, accept_loop(), net::detached);
  }
  ~Peer() { std::filesystem::remove_all(dir); }

  awaitable<void> accept_loop() {
    for (int i = 0;; ++i) {
      auto [ec, s] = co_await acceptor.async_accept(net::as_tuple(use_awaitable));
      if (ec) co_return;
      ++accepted;
      auto shared = std::make_shared<unix_socket>(std::move(s));
      net::co_spawn(
          acceptor.get_executor(),
          [this, shared, i]() -> awaitable<void> { co_await script(*this, *shared, i); },
          net::detached);
    }
  }
  void stop() { acceptor.close(); }

  UnixHttpPtr client(UnixHttpOptions o = {}) {
    o.socket_path = path;
    return UnixHttp::create(acceptor.get_executor(), std::move(o));
  }

  net::local::stream_protocol::acceptor acceptor;
  Script script;
  std::string dir;
  std::string path;
  int accepted = 0;
  std::vector<std::string> requests;
};

// Answers every request on the connection with `status` and `body`, keep-alive.
Peer::Script answers(int status, std::string body) {
  return [status, body](Peer& peer, unix_socket& s, int) -> awaitable<void> {
    std::string pending;
    for (;;) {
      std::string request = co_await read_request(s, pending);
      if (request.empty()) co_return;
      peer.requests.push_back(request);
      std::string reply = answer(status, body);
      co_await write_all(s, reply);
    }
  };
}

// Reads one request, writes `bytes` (whatever they are), closes the connection.
Peer::Script writes_once(std::string bytes) {
  return [bytes](Peer&, unix_socket& s, int) -> awaitable<void> {
    std::string pending;
    co_await read_request(s, pending);
    co_await write_all(s, bytes);
    s.close();
  };
}

HttpRequest get(std::string target, Duration timeout = 5s) {
  HttpRequest r;
  r.target = std::move(target);
  r.timeout = timeout;
  return r;
}

}  // namespace

TEST_CASE("unix http: answers are collected and one kept-alive connection serves them all",
          "[container][unix_http]") {
  wt::run_coro([]() -> awaitable<void> {
    Peer peer(co_await net::this_coro::executor, answers(200, R"({"Id":"abc"})"));
    auto client = peer.client();
    for (int i = 0; i < 5; ++i) {
      HttpRequest request = get("/v1.43/info");
      HttpResult got = co_await client->perform(std::move(request));
      CHECK(got.code == CURLE_OK);
      CHECK(got.status == 200);
      CHECK(got.body == R"({"Id":"abc"})");
      CHECK(got.headers["api-version"] == "1.43");
    }
    HttpRequest post = get("/v1.43/containers/create?name=x");
    post.method = "POST";
    post.headers.emplace_back("Content-Type: application/json");
    post.body = R"({"Image":"busybox"})";
    HttpResult created = co_await client->perform(std::move(post));
    CHECK(created.status == 200);
    HttpRequest start = get("/v1.43/containers/x/start");
    start.method = "POST";
    co_await client->perform(std::move(start));

    CHECK(peer.accepted == 1);
    CHECK(client->connections_opened() == 1);
    CHECK(client->idle_connections() == 1);
    CHECK(client->in_flight() == 0);
    REQUIRE(peer.requests.size() == 7);
    CHECK(peer.requests[0].starts_with("GET /v1.43/info HTTP/1.1\r\n"));
    CHECK(peer.requests[5] ==
          "POST /v1.43/containers/create?name=x HTTP/1.1\r\nHost: docker\r\n"
          "Content-Type: application/json\r\nContent-Length: 19\r\n\r\n{\"Image\":\"busybox\"}");
    // A bodiless POST still says its length (the engine wants one).
    CHECK(peer.requests[6].find("Content-Length: 0\r\n") != std::string::npos);
    peer.stop();
  });
}

TEST_CASE("unix http: a chunked answer streams to on_body, an error body is kept bounded",
          "[container][unix_http]") {
  wt::run_coro([]() -> awaitable<void> {
    Peer peer(co_await net::this_coro::executor, [](Peer&, unix_socket& s, int) -> awaitable<void> {
      std::string pending;
      co_await read_request(s, pending);
      co_await write_all(s, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
      for (int i = 0; i < 3; ++i) {
        std::string chunk = "5\r\npart" + std::to_string(i) + "\r\n";
        co_await write_all(s, chunk);
      }
      co_await write_all(s, "0\r\n\r\n");
      co_await read_request(s, pending);
      std::string reply = answer(500, std::string(100, 'e'));
      co_await write_all(s, reply);
      co_await read_request(s, pending);
    });
    UnixHttpOptions o;
    o.max_error_body_bytes = 10;
    auto client = peer.client(o);
    std::string streamed;
    HttpRequest r = get("/logs");
    r.on_body = [&](std::string_view chunk) { streamed.append(chunk); };
    HttpResult got = co_await client->perform(r);
    CHECK(got.code == CURLE_OK);
    CHECK(got.status == 200);
    CHECK(streamed == "part0part1part2");
    CHECK(got.body.empty());

    streamed.clear();
    HttpResult failed = co_await client->perform(r);
    CHECK(failed.status == 500);
    CHECK(streamed.empty());
    CHECK(failed.body == std::string(10, 'e'));
    CHECK(client->connections_opened() == 1);
    peer.stop();
  });
}

TEST_CASE("unix http: a streamed chunk reaches on_body while the answer is still open",
          "[container][unix_http]") {
  wt::run_coro([]() -> awaitable<void> {
    // The event feed: one small chunk, then nothing until the next event.
    // The peer ends the answer only once on_body has had the chunk (or after 3 s).
    auto seen = std::make_shared<bool>(false);
    auto seen_while_open = std::make_shared<bool>(false);
    // The executor in its own statement: g++ 12 destroys the temporaries of a
    // full-expression with a co_await twice, and this lambda's captures are
    // shared_ptrs (ASan: heap-use-after-free of their control block).
    auto ex = co_await net::this_coro::executor;
    Peer peer(ex, [seen, seen_while_open](Peer&, unix_socket& s, int) -> awaitable<void> {
      std::string pending;
      co_await read_request(s, pending);
      co_await write_all(s, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
      co_await write_all(s, "6\r\nevent\n\r\n");
      for (int i = 0; i < 300 && !*seen; ++i) co_await sleep_for(10ms);
      *seen_while_open = *seen;
      co_await write_all(s, "0\r\n\r\n");
      co_await read_request(s, pending);
    });
    auto client = peer.client({});
    std::string streamed;
    HttpRequest r = get("/events");
    r.on_body = [&](std::string_view chunk) {
      streamed.append(chunk);
      *seen = true;
    };
    HttpResult got = co_await client->perform(r);
    CHECK(got.code == CURLE_OK);
    CHECK(streamed == "event\n");
    CHECK(*seen_while_open);
    peer.stop();
  });
}

TEST_CASE("unix http: an idle connection the engine closed is replaced once, transparently",
          "[container][unix_http]") {
  wt::run_coro([]() -> awaitable<void> {
    // Each connection answers one request, then closes (as a restarted engine
    // leaves the pool's connections).
    Peer peer(co_await net::this_coro::executor,
              [](Peer& self, unix_socket& s, int) -> awaitable<void> {
                std::string pending;
                std::string request = co_await read_request(s, pending);
                if (request.empty()) co_return;
                self.requests.push_back(request);
                std::string reply = answer(200, "ok");
                co_await write_all(s, reply);
                s.close();
              });
    auto client = peer.client();
    for (int i = 0; i < 3; ++i) {
      HttpRequest request = get("/_ping");
      HttpResult got = co_await client->perform(std::move(request));
      CHECK(got.code == CURLE_OK);
      CHECK(got.body == "ok");
    }
    CHECK(peer.requests.size() == 3);
    CHECK(client->connections_opened() == 3);
    peer.stop();
  });
}

TEST_CASE("unix http: silence past the timeout is CURLE_OPERATION_TIMEDOUT, never reused",
          "[container][unix_http]") {
  wt::run_coro([]() -> awaitable<void> {
    bool peer_saw_close = false;
    Peer peer(co_await net::this_coro::executor,
              [&peer_saw_close](Peer&, unix_socket& s, int) -> awaitable<void> {
                std::string pending;
                co_await read_request(s, pending);
                // Never answers; the client's close ends the next read.
                std::string next = co_await read_request(s, pending);
                peer_saw_close = next.empty();
              });
    auto client = peer.client();
    auto started = Clock::now();
    HttpRequest request = get("/containers/x/wait", 150ms);
    HttpResult got = co_await client->perform(std::move(request));
    auto took = Clock::now() - started;
    CHECK(got.code == CURLE_OPERATION_TIMEDOUT);
    CHECK(got.error.find("150") != std::string::npos);
    CHECK(took >= 150ms);
    CHECK(took < 5s);
    CHECK(client->idle_connections() == 0);
    CHECK(client->in_flight() == 0);
    co_await sleep_for(50ms);
    CHECK(peer_saw_close);
    peer.stop();
  });
}

TEST_CASE("unix http: a missing socket is CURLE_COULDNT_CONNECT", "[container][unix_http]") {
  wt::run_coro([]() -> awaitable<void> {
    auto ex = co_await net::this_coro::executor;
    UnixHttpOptions o;
    o.socket_path = "/tmp/ws-unix-http-missing/none.sock";
    auto client = UnixHttp::create(ex, o);
    HttpRequest request = get("/_ping");
    HttpResult got = co_await client->perform(std::move(request));
    CHECK(got.code == CURLE_COULDNT_CONNECT);
    CHECK_FALSE(got.error.empty());
  });
}

TEST_CASE("unix http: garbage for an answer is CURLE_WEIRD_SERVER_REPLY",
          "[container][unix_http]") {
  wt::run_coro([]() -> awaitable<void> {
    auto ex = co_await net::this_coro::executor;
    Peer peer(ex, writes_once("SSH-2.0-OpenSSH\r\nnot http at all\r\n\r\n"));
    auto client = peer.client();
    HttpRequest request = get("/_ping");
    HttpResult got = co_await client->perform(std::move(request));
    CHECK(got.code == CURLE_WEIRD_SERVER_REPLY);
    peer.stop();
  });
}

TEST_CASE("unix http: a close mid-answer is CURLE_RECV_ERROR and the request does not go again",
          "[container][unix_http]") {
  wt::run_coro([]() -> awaitable<void> {
    auto ex = co_await net::this_coro::executor;
    Peer peer(ex, writes_once("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b"));
    auto client = peer.client();
    HttpRequest request = get("/containers/x/json");
    HttpResult got = co_await client->perform(std::move(request));
    CHECK(got.code == CURLE_RECV_ERROR);
    CHECK(peer.accepted == 1);
    CHECK(client->idle_connections() == 0);
    peer.stop();
  });
}

TEST_CASE("unix http: an answer past max_body_bytes fails", "[container][unix_http]") {
  wt::run_coro([]() -> awaitable<void> {
    auto ex = co_await net::this_coro::executor;
    Peer peer(ex, answers(200, std::string(5000, 'x')));
    UnixHttpOptions o;
    o.max_body_bytes = 1000;
    auto client = peer.client(o);
    HttpRequest request = get("/images/json");
    HttpResult got = co_await client->perform(std::move(request));
    CHECK(got.code == CURLE_FILESIZE_EXCEEDED);
    CHECK(got.body.size() <= 1001);
    CHECK(client->idle_connections() == 0);
    peer.stop();
  });
}

TEST_CASE("unix http: on_body throwing ends the request with its exception",
          "[container][unix_http]") {
  wt::run_coro([]() -> awaitable<void> {
    auto ex = co_await net::this_coro::executor;
    Peer peer(ex, answers(200, "some log bytes"));
    auto client = peer.client();
    HttpRequest r = get("/logs");
    r.on_body = [](std::string_view) { throw std::runtime_error("sink full"); };
    HttpResult got = co_await client->perform(r);
    CHECK(got.code != CURLE_OK);
    REQUIRE(got.sink_error);
    CHECK_THROWS_WITH(std::rethrow_exception(got.sink_error), "sink full");
    CHECK(client->idle_connections() == 0);
    peer.stop();
  });
}

TEST_CASE("unix http: the caller's cancellation aborts the request and drops the connection",
          "[container][unix_http]") {
  wt::run_coro([]() -> awaitable<void> {
    using namespace net::experimental::awaitable_operators;
    Peer peer(co_await net::this_coro::executor, [](Peer&, unix_socket& s, int) -> awaitable<void> {
      std::string pending;
      while (!(co_await read_request(s, pending)).empty()) {
      }
    });
    auto client = peer.client();
    net::steady_timer timer(co_await net::this_coro::executor, 100ms);
    HttpRequest request = get("/containers/x/wait", 0ms);
    awaitable<HttpResult> op = client->perform(std::move(request));
    auto winner = co_await (std::move(op) || timer.async_wait(use_awaitable));
    CHECK(winner.index() == 1);
    CHECK(client->in_flight() == 0);
    CHECK(client->idle_connections() == 0);
    peer.stop();
  });
}
