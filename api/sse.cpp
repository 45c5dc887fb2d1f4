#include "api/sse.hpp"

#include "api/metrics.hpp"
#include "common/log.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>

#include <charconv>
#include <deque>

namespace warmstart::api {

using net::ip::tcp;
using nlohmann::json;

namespace {

struct StreamId {
  std::uint64_t ms = 0;
  std::uint64_t seq = 0;
};

std::optional<StreamId> parse_stream_id(std::string_view id) {
  StreamId out;
  const auto dash = id.find('-');
  const std::string_view ms = id.substr(0, dash);
  if (ms.empty()) return std::nullopt;
  auto [p, ec] = std::from_chars(ms.data(), ms.data() + ms.size(), out.ms);
  if (ec != std::errc() || p != ms.data() + ms.size()) return std::nullopt;
  if (dash != std::string_view::npos) {
    const std::string_view seq = id.substr(dash + 1);
    if (seq.empty()) return std::nullopt;
    auto [q, ec2] = std::from_chars(seq.data(), seq.data() + seq.size(), out.seq);
    if (ec2 != std::errc() || q != seq.data() + seq.size()) return std::nullopt;
  }
  return out;
}

// SSE fields end at a line break; an id or type carrying one would let a
// value forge extra fields.
std::string single_line(std::string value) {
  for (char& c : value) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return value;
}

}  // namespace

bool event_id_less(std::string_view a, std::string_view b) {
  if (b.empty()) return false;
  if (a.empty()) return true;
  const auto pa = parse_stream_id(a);
  const auto pb = parse_stream_id(b);
  if (pa && pb) return pa->ms != pb->ms ? pa->ms < pb->ms : pa->seq < pb->seq;
  return a < b;
}

bool is_stream_id(std::string_view id) {
  return id.size() <= 41 && parse_stream_id(id).has_value();
}

SseEventPtr frame_event(const json& event) {
  auto framed = std::make_shared<SseEvent>();
  framed->id = single_line(event.at("id").get<std::string>());
  const auto type = event.find("type");
  const std::string name = (type != event.end() && type->is_string())
                               ? single_line(type->get<std::string>())
                               : "message";
  // dump() escapes control characters, so the JSON is always a single line.
  framed->text = "id: " + framed->id + "\nevent: " + name +
                 "\ndata: " + event.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
  return framed;
}

// ---------------------------------------------------------------------------
// ReplayMerger

ReplayMerger::ReplayMerger(std::optional<std::string> last_event_id, std::size_t max_held)
    : replaying_(last_event_id.has_value()),
      last_sent_(std::move(last_event_id)),
      max_held_(max_held) {}

bool ReplayMerger::newer(const std::string& id) const {
  return !last_sent_ || event_id_less(*last_sent_, id);
}

bool ReplayMerger::on_replay(const SseEvent& event) {
  if (!newer(event.id)) return false;
  last_sent_ = event.id;
  return true;
}

std::vector<SseEventPtr> ReplayMerger::finish_replay() {
  replaying_ = false;
  std::vector<SseEventPtr> out;
  for (auto& event : held_) {
    if (newer(event->id)) {
      last_sent_ = event->id;
      out.push_back(std::move(event));
    }
  }
  held_.clear();
  return out;
}

ReplayMerger::Live ReplayMerger::on_live(SseEventPtr event) {
  if (replaying_) {
    if (held_.size() >= max_held_) return Live::overflow;
    held_.push_back(std::move(event));
    return Live::held;
  }
  if (!newer(event->id)) return Live::duplicate;
  last_sent_ = event->id;
  return Live::send;
}

// ---------------------------------------------------------------------------
// SseSession: everything below runs on the socket's strand, except deliver()
// and close(), which post to it.

class SseSession : public std::enable_shared_from_this<SseSession> {
 public:
  SseSession(SseHub& hub, tcp::socket socket, std::optional<std::string> last_event_id)
      : hub_(hub),
        socket_(std::move(socket)),
        wake_(socket_.get_executor()),
        merger_(last_event_id, hub.options_.max_queue),
        last_event_id_(std::move(last_event_id)) {}

  awaitable<void> run();

  void deliver(SseEventPtr event) {
    net::post(socket_.get_executor(),
              [self = shared_from_this(), event = std::move(event)]() mutable {
                self->on_event(std::move(event));
              });
  }
  void close() {
    net::post(socket_.get_executor(), [self = shared_from_this()] { self->close_now("stopped"); });
  }

 private:
  void on_event(SseEventPtr event);
  void close_now(const char* reason);
  void drop_slow();
  awaitable<void> stream();
  awaitable<void> stream_events();
  awaitable<void> watch_peer();
  awaitable<bool> write(std::string text);

  SseHub& hub_;
  tcp::socket socket_;
  net::steady_timer wake_;  // the writer sleeps on it; cancel() = "queue changed"
  ReplayMerger merger_;
  std::optional<std::string> last_event_id_;
  std::deque<SseEventPtr> queue_;
  bool closed_ = false;
  const char* close_reason_ = "client closed";
  std::uint64_t sent_ = 0;
};

awaitable<void> SseSession::run() {
  using namespace net::experimental::awaitable_operators;
  const auto& options = hub_.options_;
  const std::string head =
      "HTTP/1.1 200 OK\r\n"
      "Content-Type: text/event-stream\r\n"
      "Cache-Control: no-cache\r\n"
      "Connection: close\r\n"
      "X-Accel-Buffering: no\r\n"
      "\r\n"
      "retry: " +
      std::to_string(options.retry_hint.count()) + "\n\n";
  if (!hub_.attach(shared_from_this())) {
    close_now("stopped");
    co_return;
  }
  try {
    if (co_await write(head)) co_await (stream() || watch_peer());
  } catch (const std::exception& e) {
    log::warn("event stream failed", {{"error", e.what()}});
  }
  close_now(close_reason_);
  hub_.detach(this);
  log::info("event stream closed", {{"reason", close_reason_}, {"events_sent", sent_}});
}

void SseSession::on_event(SseEventPtr event) {
  if (closed_) return;
  switch (merger_.on_live(event)) {
    case ReplayMerger::Live::send:
      queue_.push_back(std::move(event));
      if (queue_.size() > hub_.options_.max_queue) {
        drop_slow();
      } else {
        wake_.cancel();
      }
      return;
    case ReplayMerger::Live::held:
    case ReplayMerger::Live::duplicate:
      return;
    case ReplayMerger::Live::overflow:
      drop_slow();
      return;
  }
}

void SseSession::close_now(const char* reason) {
  if (!closed_) close_reason_ = reason;
  closed_ = true;
  wake_.cancel();
  boost::system::error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
}

void SseSession::drop_slow() {
  if (closed_) return;
  hub_.count_slow_drop();
  log::warn("event stream client too slow, dropped", {{"queued", queue_.size()}});
  close_now("slow client");
}

// Never throws and always closes on the way out: the `||` in run() waits for
// the first branch to *succeed*, so a throwing branch would leave the session
// hanging until the client hung up.
awaitable<void> SseSession::stream() {
  try {
    co_await stream_events();
  } catch (const std::exception& e) {
    if (!closed_) {
      log::warn("event stream failed", {{"error", e.what()}});
      close_reason_ = "error";
    }
  }
  close_now(close_reason_);
}

awaitable<void> SseSession::stream_events() {
  const auto& options = hub_.options_;
  if (merger_.replaying()) {
    std::string after = *last_event_id_;
    for (;;) {
      std::vector<json> page;
      try {
        page = co_await with_deadline(hub_.backend_.read_events(after, options.replay_page),
                                      options.backend_timeout, "read_events");
      } catch (const std::exception& e) {
        // The client resumes from its Last-Event-ID, so ending the stream loses nothing.
        log::warn("event replay failed", {{"error", e.what()}});
        close_reason_ = "replay failed";
        co_return;
      }
      std::string batch;
      for (const json& event : page) {
        if (!event.is_object() || !event.contains("id") || !event["id"].is_string()) continue;
        auto framed = frame_event(event);
        after = framed->id;
        if (merger_.on_replay(*framed)) {
          batch += framed->text;
          ++sent_;
        }
      }
      if (closed_) co_return;
      if (!batch.empty() && !co_await write(std::move(batch))) co_return;
      if (page.size() < options.replay_page) break;
    }
    for (auto& event : merger_.finish_replay()) queue_.push_back(std::move(event));
    if (queue_.size() > options.max_queue) {
      drop_slow();
      co_return;
    }
  }

  constexpr std::size_t max_batch_bytes = 64 * 1024;
  while (!closed_) {
    if (queue_.empty()) {
      wake_.expires_after(options.keepalive);
      auto [ec] = co_await wake_.async_wait(net::as_tuple(use_awaitable));
      if (closed_) break;
      if (ec == net::error::operation_aborted) continue;  // woken: new events
      if (!co_await write(": keepalive\n\n")) break;
      continue;
    }
    std::string batch;
    while (!queue_.empty() && batch.size() < max_batch_bytes) {
      batch += queue_.front()->text;
      queue_.pop_front();
      ++sent_;
    }
    if (!co_await write(std::move(batch))) break;
  }
}

// The client never sends anything after its request; a completed read means
// it hung up (or we closed the socket). Without this, a vanished client would
// only be noticed at the next keepalive.
awaitable<void> SseSession::watch_peer() {
  std::array<char, 256> discard;
  for (;;) {
    auto [ec, n] =
        co_await socket_.async_read_some(net::buffer(discard), net::as_tuple(use_awaitable));
    if (ec) break;
  }
  if (!closed_) close_now("client closed");
}

awaitable<bool> SseSession::write(std::string text) {
  using namespace net::experimental::awaitable_operators;
  if (closed_) co_return false;
  net::steady_timer deadline(socket_.get_executor(), hub_.options_.write_timeout);
  auto result =
      co_await (net::async_write(socket_, net::buffer(text), net::as_tuple(use_awaitable)) ||
                deadline.async_wait(net::as_tuple(use_awaitable)));
  if (result.index() == 1) {
    drop_slow();
    co_return false;
  }
  auto [ec, n] = std::get<0>(result);
  if (ec) {
    close_now("client closed");
    co_return false;
  }
  co_return true;
}

// ---------------------------------------------------------------------------
// SseHub

SseHub::SseHub(Backend& backend, SseOptions options, Metrics* metrics)
    : backend_(backend), options_(options), metrics_(metrics) {}

SseHub::~SseHub() {
  std::lock_guard reg(subscription_mutex_);
  subscription_.reset();
}

awaitable<void> SseHub::serve(tcp::socket socket, std::optional<std::string> last_event_id) {
  if (last_event_id && !is_stream_id(*last_event_id)) {
    // Never passed to Redis: the stream starts live, as for a new client.
    log::warn("sse: malformed Last-Event-ID ignored", {{"length", last_event_id->size()}});
    last_event_id.reset();
  }
  auto session = std::make_shared<SseSession>(*this, std::move(socket), std::move(last_event_id));
  co_await session->run();
}

bool SseHub::attach(const std::shared_ptr<SseSession>& session) {
  std::lock_guard reg(subscription_mutex_);
  std::size_t count = 0;
  {
    std::lock_guard lock(mutex_);
    if (stopped_) return false;
    sessions_.emplace(session.get(), session);
    count = sessions_.size();
  }
  // Subscribed before attach() returns, so the session's replay (which starts
  // after) and the live feed overlap instead of leaving a gap.
  if (!subscription_) {
    subscription_ = backend_.subscribe_events([this](const json& event) { fan_out(event); });
  }
  if (metrics_ != nullptr) metrics_->sse_clients().Set(static_cast<double>(count));
  return true;
}

void SseHub::detach(const SseSession* session) {
  std::lock_guard reg(subscription_mutex_);
  SubscriptionPtr released;
  std::size_t count = 0;
  {
    std::lock_guard lock(mutex_);
    sessions_.erase(session);
    count = sessions_.size();
    if (sessions_.empty()) released = std::move(subscription_);
  }
  // Destroyed outside mutex_: the backend may be inside fan_out() holding its lock.
  released.reset();
  if (metrics_ != nullptr) metrics_->sse_clients().Set(static_cast<double>(count));
}

void SseHub::fan_out(const json& event) {
  if (!event.contains("id") || !event["id"].is_string()) {
    log::warn("event without an id not streamed", {{"type", event.value("type", "")}});
    return;
  }
  const SseEventPtr framed = frame_event(event);
  std::vector<std::shared_ptr<SseSession>> targets;
  {
    std::lock_guard lock(mutex_);
    targets.reserve(sessions_.size());
    for (const auto& [ptr, weak] : sessions_) {
      if (auto session = weak.lock()) targets.push_back(std::move(session));
    }
  }
  for (const auto& session : targets) session->deliver(framed);
}

void SseHub::stop() {
  std::vector<std::shared_ptr<SseSession>> targets;
  {
    std::lock_guard lock(mutex_);
    stopped_ = true;
    for (const auto& [ptr, weak] : sessions_) {
      if (auto session = weak.lock()) targets.push_back(std::move(session));
    }
  }
  for (const auto& session : targets) session->close();
}

std::size_t SseHub::session_count() const {
  std::lock_guard lock(mutex_);
  return sessions_.size();
}

bool SseHub::subscribed() const {
  std::lock_guard reg(subscription_mutex_);
  return subscription_ != nullptr;
}

void SseHub::count_slow_drop() {
  ++slow_dropped_;
  if (metrics_ != nullptr) metrics_->sse_slow_clients_dropped().Increment();
}

}  // namespace warmstart::api
