// The operator dashboard (GET /) of a real router in headless Chromium, driven
// over the DevTools protocol (a Beast websocket client): the jobs table
// renders, a job enqueued through the API is seen live going running ->
// succeeded, the snapshot table shows a key's generation, hits and host, the
// charts of the router's history draw points, and a screenshot is kept as a
// test artifact ($WARMSTART_TEST_ARTIFACTS, default tests/artifacts/).
//
// --dump-dom with --virtual-time-budget is not enough: the page keeps its
// event stream open, so virtual time never runs out and Chromium never dumps.
#include "e2e/cli_runner.hpp"
#include "e2e/router_process.hpp"

#include <boost/beast/core/detail/base64.hpp>
#include <boost/beast/websocket.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <set>
#include <vector>

using namespace warmstart;
using namespace warmstart::testing;
using api::testing::http_call;
using nlohmann::json;
using verb = boost::beast::http::verb;
namespace websocket = boost::beast::websocket;

namespace {

std::string chromium_binary() {
  if (const char* v = std::getenv("WARMSTART_TEST_CHROMIUM"); v != nullptr && *v != '\0') return v;
  return "/usr/bin/chromium";  // Debian's package, installed by ./scripts/test
}

fs::path artifacts_dir() {
  fs::path dir;
  if (const char* v = std::getenv("WARMSTART_TEST_ARTIFACTS"); v != nullptr && *v != '\0') {
    dir = v;
  } else {
    dir = fs::path(WARMSTART_E2E_SOURCE_DIR) / "tests" / "artifacts";
  }
  fs::create_directories(dir);
  return dir;
}

// Headless Chromium with remote debugging on a kernel-chosen loopback port, in
// its own process group with a fresh profile. The destructor closes it.
class Chromium {
 public:
  explicit Chromium(fs::path scratch) : scratch_(std::move(scratch)) {
    if (!fs::exists(chromium_binary())) {
      FAIL("no Chromium at " << chromium_binary() << ": run the tests through ./scripts/test");
    }
    const fs::path profile = scratch_ / "profile";
    fs::create_directories(profile);
    std::vector<std::string> args = {chromium_binary(),
                                     "--headless",
                                     "--no-sandbox",
                                     "--disable-gpu",
                                     "--disable-dev-shm-usage",
                                     "--disable-background-networking",
                                     "--disable-component-update",
                                     "--disable-sync",
                                     "--no-first-run",
                                     "--no-default-browser-check",
                                     "--hide-scrollbars",
                                     "--window-size=1280,900",
                                     "--remote-debugging-address=127.0.0.1",
                                     "--remote-debugging-port=0",
                                     "--user-data-dir=" + profile.string(),
                                     "about:blank"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string log = (scratch_ / "chromium.log").string();
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::setpgid(0, 0);  // its own group: the renderers go down with it
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (fd < 0) ::_exit(126);
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::setpgid(pid_, pid_);
    // Chromium writes "<port>\n<browser path>" once it listens.
    const fs::path active = profile / "DevToolsActivePort";
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      std::ifstream in(active);
      unsigned port = 0;
      if (in >> port && port > 0) {
        port_ = static_cast<unsigned short>(port);
        return;
      }
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        FAIL("chromium exited at start; see " << log);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    close();
    FAIL("chromium did not open its DevTools port within 30 s; see " << log);
  }

  ~Chromium() { close(); }
  Chromium(const Chromium&) = delete;
  Chromium& operator=(const Chromium&) = delete;

  unsigned short port() const { return port_; }

  // The websocket path of the first page target (the about:blank tab).
  std::string page_path() const {
    auto r = http_call(port_, verb::get, "/json/list");
    REQUIRE(r.status == 200);
    for (const json& target : r.json()) {
      if (target.value("type", "") != "page") continue;
      const std::string url = target.value("webSocketDebuggerUrl", "");
      const auto slash = url.find('/', std::string("ws://").size());
      REQUIRE(slash != std::string::npos);
      return url.substr(slash);
    }
    FAIL("chromium has no page target: " << r.body);
    return "";
  }

  void close() {
    if (pid_ <= 0) return;
    // Chromium keeps its singleton socket in a directory of its own under
    // TMPDIR (/tmp/org.chromium.Chromium.*), linked from the profile, and
    // leaves it behind when it is killed: it goes with the browser.
    std::error_code ec;
    const fs::path singleton =
        fs::read_symlink(scratch_ / "profile" / "SingletonSocket", ec).parent_path();
    ::kill(-pid_, SIGTERM);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    bool exited = false;
    while (!exited && std::chrono::steady_clock::now() < deadline) {
      exited = ::waitpid(pid_, nullptr, WNOHANG) == pid_;
      if (!exited) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ::kill(-pid_, SIGKILL);  // whatever of the group is left
    if (!exited) ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
    if (!ec && singleton.filename().string().starts_with("org.chromium.Chromium.")) {
      fs::remove_all(singleton, ec);
    }
  }

 private:
  fs::path scratch_;
  pid_t pid_ = -1;
  unsigned short port_ = 0;
};

// A DevTools protocol session on one page: commands are JSON messages with an
// id, answered by the message with the same id (events in between are skipped).
// Every call is bounded.
class DevToolsPage {
 public:
  DevToolsPage(unsigned short port, const std::string& path) {
    run(
        [this, port, path]() -> awaitable<bool> {
          auto& tcp = boost::beast::get_lowest_layer(ws_);
          co_await tcp.async_connect(net::ip::tcp::endpoint(net::ip::address_v4::loopback(), port),
                                     use_awaitable);
          tcp.expires_never();  // the websocket's own timeouts take over
          ws_.read_message_max(64 << 20);
          co_await ws_.async_handshake("127.0.0.1:" + std::to_string(port), path, use_awaitable);
          co_return true;
        },
        std::chrono::seconds(10));
  }

  json call(const std::string& method, json params = json::object(),
            std::chrono::seconds limit = std::chrono::seconds(20)) {
    return run([this, method, params]() { return call_async(method, params); }, limit);
  }

  // The value of a JavaScript expression in the page (JSON-serializable).
  json evaluate(const std::string& expression) {
    const json params = {{"expression", expression}, {"returnByValue", true}};
    const json result = call("Runtime.evaluate", params);
    if (result.contains("exceptionDetails")) {
      FAIL("page script failed: " << result["exceptionDetails"].dump());
    }
    return result.at("result").value("value", json());
  }

 private:
  awaitable<json> call_async(std::string method, json params) {
    const int id = next_id_++;
    json message = json::object();
    message["id"] = id;
    message["method"] = method;
    message["params"] = std::move(params);
    const std::string text = message.dump();
    co_await ws_.async_write(net::buffer(text), use_awaitable);
    for (;;) {
      boost::beast::flat_buffer buffer;
      co_await ws_.async_read(buffer, use_awaitable);
      json reply = json::parse(boost::beast::buffers_to_string(buffer.data()));
      if (!reply.contains("id") || reply["id"] != id) continue;  // an event
      if (reply.contains("error")) {
        throw std::runtime_error("DevTools " + method + ": " + reply["error"].dump());
      }
      co_return reply.value("result", json::object());
    }
  }

  template <typename F, typename T = typename std::invoke_result_t<F>::value_type>
  T run(F make, std::chrono::seconds limit) {
    std::optional<T> result;
    std::exception_ptr error;
    net::co_spawn(io_, make(), [&](std::exception_ptr e, T value) {
      error = e;
      if (!e) result = std::move(value);
    });
    io_.restart();
    io_.run_for(limit);
    if (!result && !error) {
      boost::system::error_code ignored;
      boost::beast::get_lowest_layer(ws_).socket().close(ignored);
      io_.restart();
      io_.run_for(std::chrono::seconds(1));
      FAIL("DevTools call did not finish within " << limit.count() << " s");
    }
    if (error) std::rethrow_exception(error);
    return std::move(*result);
  }

  net::io_context io_;
  websocket::stream<boost::beast::tcp_stream> ws_{io_};
  int next_id_ = 1;
};

std::string js_string(const std::string& text) {
  return json(text).dump();
}

// data-state of the jobs-table row of `job` ("" while it has none).
std::string row_state_js(const std::string& job) {
  return "(() => { const r = document.querySelector('#jobs-body tr[data-job-id=' + "
         "JSON.stringify(" +
         js_string(job) + ") + ']'); return r ? r.dataset.state : ''; })()";
}

// Evaluates `expression` every 100 ms until `accept` takes its value.
template <typename Accept>
json poll_page(DevToolsPage& page, const std::string& expression, Accept accept,
               std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  json value;
  while (std::chrono::steady_clock::now() < deadline) {
    value = page.evaluate(expression);
    if (accept(value)) return value;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return value;
}

std::string job_state(const RouterProcess& router, const std::string& id) {
  return router.call(verb::get, "/v1/jobs/" + id).json().value("state", "");
}

bool wait_job_state(const RouterProcess& router, const std::string& id,
                    const std::set<std::string>& want, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (want.count(job_state(router, id))) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

}  // namespace

TEST_CASE("e2e: the dashboard renders the jobs table and follows a job live to succeeded",
          "[e2e][dashboard]") {
  RouterProcess router;
  SnapshotImageCleanup cleanup{router};
  const fs::path scratch = fs::path(run_dir()) / ("chromium-" + router.router_id());
  Chromium browser(scratch);
  DevToolsPage page(browser.port(), browser.page_path());
  page.call("Page.enable");
  const json viewport = {
      {"width", 1280}, {"height", 900}, {"deviceScaleFactor", 1}, {"mobile", false}};
  page.call("Emulation.setDeviceMetricsOverride", viewport);
  // Signed in by the link ./scripts/run prints: the token in the fragment,
  // which the browser never sends to the server.
  REQUIRE_FALSE(router.token().empty());
  const json navigate = {{"url", router.base_url() + "/#token=" + router.token()}};
  page.call("Page.navigate", navigate);

  // The empty table with its placeholder, and the event stream connected.
  const json empty = poll_page(
      page,
      "document.querySelector('#jobs-body') ? document.querySelector('#jobs-body').textContent : "
      "''",
      [](const json& v) { return v == "no jobs yet"; }, std::chrono::seconds(20));
  CHECK(empty == "no jobs yet");
  CHECK(poll_page(
            page, "document.querySelector('#conn-status').dataset.state",
            [](const json& v) { return v == "live"; }, std::chrono::seconds(20)) == "live");
  CHECK(page.evaluate("document.querySelectorAll('#jobs-table th').length").get<int>() >= 6);
  // The token left the address bar and the history; the tab keeps it.
  CHECK(page.evaluate("location.href").get<std::string>() == router.base_url() + "/");
  CHECK(page.evaluate("sessionStorage.getItem('warmstart.token')").get<std::string>() ==
        router.token());
  CHECK(page.evaluate("document.querySelector('#auth-panel').hidden").get<bool>());

  // A job enqueued through the API appears and is followed live over SSE.
  const std::string id = unique_name("dash");
  const std::string secret = "sk-" + unique_name("dashboard-secret");
  const json body = {{"id", id},
                     {"cmd", {"sh", "-c", "echo working; sleep 4; echo done"}},
                     {"env", {{"API_KEY", secret}}}};
  REQUIRE(router.call(verb::post, "/v1/jobs", body.dump()).status == 201);
  std::vector<std::string> seen;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    const std::string state = page.evaluate(row_state_js(id)).get<std::string>();
    if (!state.empty() && (seen.empty() || seen.back() != state)) seen.push_back(state);
    if (state == "succeeded") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  INFO("states seen on the page: " << json(seen).dump() << "\nrouter log:\n" << router.log_tail());
  REQUIRE_FALSE(seen.empty());
  CHECK(seen.back() == "succeeded");
  const auto running = std::find(seen.begin(), seen.end(), "running");
  CHECK(running != seen.end());
  CHECK(job_state(router, id) == "succeeded");
  CHECK(
      page.evaluate("document.querySelectorAll('#event-feed li[data-event-type=\"job.succeeded\"]')"
                    ".length")
          .get<int>() >= 1);
  // The job's env value never reached the page: neither the DOM nor its state.
  CHECK(page.evaluate("document.documentElement.outerHTML.includes(" + js_string(secret) + ")")
            .get<bool>() == false);
  CHECK(
      page.evaluate("JSON.stringify([...state.jobs.values()]).includes(" + js_string(secret) + ")")
          .get<bool>() == false);
  CHECK(page.evaluate("JSON.stringify(state.jobs.get(" + js_string(id) + ").spec.env_keys)")
            .get<std::string>() == "[\"API_KEY\"]");

  // A key's first job commits its snapshot, the second starts warm from it:
  // the snapshot table shows the key, the charts a warm start and a commit.
  const std::string key = "dash/" + unique_name("charts");
  const std::string builder = unique_name("dash-build");
  const json builder_body = {{"id", builder},
                             {"cmd", {"sh", "-c", "echo built > /work/built; sleep 1"}},
                             {"snapshot", {{"key", key}}}};
  REQUIRE(router.call(verb::post, "/v1/jobs", builder_body.dump()).status == 201);
  REQUIRE(wait_job_state(router, builder, {"succeeded", "failed"}, std::chrono::seconds(60)));
  const std::string warm = unique_name("dash-warm");
  // It commits nothing, so the snapshot stays generation 1 with one hit.
  const json warm_body = {{"id", warm},
                          {"cmd", {"cat", "/work/built"}},
                          {"snapshot", {{"key", key}, {"commit", false}}}};
  REQUIRE(router.call(verb::post, "/v1/jobs", warm_body.dump()).status == 201);
  REQUIRE(wait_job_state(router, warm, {"succeeded", "failed"}, std::chrono::seconds(60)));
  CHECK(router.call(verb::get, "/v1/jobs/" + warm).json().value("from_snapshot", false));
  const std::string snapshot_row =
      "(() => { const r = document.querySelector('#snapshots-body tr[data-snapshot-key=' + "
      "JSON.stringify(" +
      js_string(key) +
      ") + ']'); if (!r) return null; const f = (n) => r.querySelector('[data-field=' + n + "
      "']').textContent; return {generation: f('generation'), hits: f('hits'), host: "
      "f('host')}; })()";
  const json row = poll_page(
      page, snapshot_row, [](const json& v) { return v.is_object() && v["hits"] == "1"; },
      std::chrono::seconds(40));
  INFO("snapshot row: " << row.dump());
  REQUIRE(row.is_object());
  CHECK(row["generation"] == "1");
  CHECK(row["hits"] == "1");
  CHECK_FALSE(row["host"].get<std::string>().empty());

  // The charts: every one draws points from the router's history (a point
  // every 10 s), and they show the warm start, the commit and the time saved.
  const std::string charts =
      "(() => { const out = {}; for (const svg of document.querySelectorAll('svg[data-chart]')) "
      "out[svg.dataset.chart] = Number(svg.dataset.points); return out; })()";
  const std::string history_seen =
      "(() => ({warm: state.history.some((p) => p.warm > 0), commits: state.history.some((p) => "
      "p.commits > 0), saved: state.history.some((p) => p.saved_s > 0), points: "
      "state.history.length}))()";
  const json seen_history = poll_page(
      page, history_seen,
      [](const json& v) {
        return v["warm"] == true && v["commits"] == true && v["saved"] == true &&
               v["points"].get<int>() >= 2;
      },
      std::chrono::seconds(60));
  INFO("history on the page: " << seen_history.dump());
  CHECK(seen_history["warm"] == true);
  CHECK(seen_history["commits"] == true);
  CHECK(seen_history["saved"] == true);
  const json drawn = page.evaluate(charts);
  INFO("points drawn per chart: " << drawn.dump());
  for (const char* line : {"queue_depth", "running", "starts", "time_saved"}) {
    CHECK(drawn.value(line, 0) >= 2);
  }
  for (const char* sparse : {"commit_ms", "dispatch_ms"}) CHECK(drawn.value(sparse, 0) >= 1);
  // The warm series rises off the baseline: its line has distinct heights.
  const json warm_ys = page.evaluate(
      "[...new Set(document.querySelector('svg[data-chart=starts] "
      "polyline[data-series=warm]').getAttribute('points').trim().split(' ').map((p) => "
      "p.split(',')[1]))].length");
  CHECK(warm_ys.get<int>() >= 2);
  const std::string saved = page.evaluate(
                                    "document.querySelector('[data-latest=time_saved]')"
                                    ".textContent")
                                .get<std::string>();
  CHECK(saved != "0");
  CHECK(saved != "–");

  // More rows for the screenshot: a failed job and one still running.
  const std::string failing = unique_name("dash-fails");
  const json failing_body = {{"id", failing}, {"cmd", {"sh", "-c", "echo oops >&2; exit 3"}}};
  REQUIRE(router.call(verb::post, "/v1/jobs", failing_body.dump()).status == 201);
  const std::string sleeper = unique_name("dash-sleeps");
  const json sleeper_body = {{"id", sleeper}, {"cmd", {"sleep", "60"}}};
  REQUIRE(router.call(verb::post, "/v1/jobs", sleeper_body.dump()).status == 201);
  CHECK(poll_page(
            page, row_state_js(failing), [](const json& v) { return v == "failed"; },
            std::chrono::seconds(60)) == "failed");
  CHECK(poll_page(
            page, row_state_js(sleeper), [](const json& v) { return v == "running"; },
            std::chrono::seconds(60)) == "running");
  // Counters refresh every 5 s: wait for "running containers" to show the sleeper.
  poll_page(
      page, "document.querySelector('[data-counter=running] .value').textContent",
      [](const json& v) { return v == "1"; }, std::chrono::seconds(15));

  const json shot_params = {{"format", "png"}};
  const json shot = page.call("Page.captureScreenshot", shot_params);
  const std::string encoded = shot.at("data").get<std::string>();
  std::string png(boost::beast::detail::base64::decoded_size(encoded.size()), '\0');
  const auto decoded =
      boost::beast::detail::base64::decode(png.data(), encoded.data(), encoded.size());
  png.resize(decoded.first);
  REQUIRE(png.size() > 10000);
  CHECK(png.substr(1, 3) == "PNG");
  const fs::path file = artifacts_dir() / "dashboard.png";
  {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(png.data(), static_cast<std::streamsize>(png.size()));
  }
  CHECK(fs::file_size(file) == png.size());

  // Cancel from the API; the page follows.
  REQUIRE(router.call(verb::delete_, "/v1/jobs/" + sleeper).status == 200);
  CHECK(poll_page(
            page, row_state_js(sleeper), [](const json& v) { return v == "cancelled"; },
            std::chrono::seconds(30)) == "cancelled");
  CHECK(wait_job_state(router, sleeper, {"cancelled"}, std::chrono::seconds(30)));

  browser.close();
  std::error_code ignored;
  fs::remove_all(scratch, ignored);
}
