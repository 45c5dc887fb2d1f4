// GET /v1/events: the live event feed as Server-Sent Events.
//
// Shape (after Beast's chat-multi example): one SseHub holds the set of
// sessions and one Backend subscription, taken while at least one session is
// attached; each SseSession lives on its own strand with its own bounded queue,
// and delivery posts to that strand. A session that lets its queue overflow (or
// stalls a write past the deadline) is dropped and counted: one slow client
// never holds memory or other clients back.
//
// Resuming without gaps or duplicates: a session attaches (starts receiving
// live events, held back) *before* it replays the events after Last-Event-ID
// page by page, then releases the held events newer than the last replayed one.
// ReplayMerger is that rule as a socket-free state machine.
#pragma once
#include "api/backend.hpp"
#include "common/net.hpp"

#include <nlohmann/json.hpp>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace warmstart::api {

class Metrics;

struct SseOptions {
  Duration keepalive = 15s;       // ": keepalive" when idle, so proxies keep the stream open
  std::size_t max_queue = 1024;   // events queued for one client before it is dropped as slow
  std::size_t replay_page = 256;  // events per Backend::read_events call while replaying
  Duration write_timeout = 30s;   // one write; a client stalled longer is dropped as slow
  Duration backend_timeout =
      10s;                   // one read_events call; on expiry the stream ends (client resumes)
  Duration retry_hint = 3s;  // "retry:" sent first: the browser's reconnect delay
};

// Orders Redis stream ids "<ms>-<seq>" (a bare "<ms>" is "<ms>-0") numerically;
// "" is before everything. Ids of another shape fall back to string order.
bool event_id_less(std::string_view a, std::string_view b);
// A Redis stream id ("<ms>-<seq>" or "<ms>", decimal, fits in 64 bits): the
// only Last-Event-ID a client may resume from; anything else is ignored.
bool is_stream_id(std::string_view id);

// One event framed for the wire once and shared by every session.
struct SseEvent {
  std::string id;
  std::string text;  // "id: ..\nevent: ..\ndata: <json>\n\n"
};
using SseEventPtr = std::shared_ptr<const SseEvent>;
// Frames a backend event (needs a string "id"; "type" defaults to "message").
SseEventPtr frame_event(const nlohmann::json& event);

class ReplayMerger {
 public:
  enum class Live { send, held, duplicate, overflow };

  // With a last_event_id the session replays first and live events are held;
  // without one it is live from the start.
  ReplayMerger(std::optional<std::string> last_event_id, std::size_t max_held);

  // A replayed event: true when it is newer than everything sent so far.
  bool on_replay(const SseEvent& event);
  // Ends the replay: the held live events newer than the last replayed one, in order.
  std::vector<SseEventPtr> finish_replay();
  // A live event: send it, hold it (still replaying), drop it as already sent,
  // or overflow (more than max_held waiting: the client is too slow).
  Live on_live(SseEventPtr event);

  bool replaying() const { return replaying_; }
  const std::optional<std::string>& last_sent() const { return last_sent_; }

 private:
  bool newer(const std::string& id) const;

  bool replaying_;
  std::optional<std::string> last_sent_;
  std::vector<SseEventPtr> held_;
  std::size_t max_held_;
};

class SseSession;

class SseHub {
 public:
  // `backend` and `metrics` (optional) must outlive the hub; the hub must
  // outlive every serve() it started.
  SseHub(Backend& backend, SseOptions options, Metrics* metrics = nullptr);
  ~SseHub();
  SseHub(const SseHub&) = delete;
  SseHub& operator=(const SseHub&) = delete;

  // Streams to one client whose request has been read, until it disconnects,
  // is dropped or the hub stops. Run it on the socket's executor (a strand).
  awaitable<void> serve(net::ip::tcp::socket socket, std::optional<std::string> last_event_id);

  // Ends every stream and refuses new ones.
  void stop();

  std::size_t session_count() const;
  std::uint64_t slow_clients_dropped() const { return slow_dropped_.load(); }
  bool subscribed() const;

 private:
  friend class SseSession;
  bool attach(const std::shared_ptr<SseSession>& session);
  void detach(const SseSession* session);
  void fan_out(const nlohmann::json& event);
  void count_slow_drop();

  Backend& backend_;
  const SseOptions options_;
  Metrics* metrics_;

  // Lock order: subscription_mutex_ -> Backend's own lock, and Backend's lock
  // -> mutex_ (fan_out runs inside the backend's delivery). mutex_ is never held
  // while calling the backend, so the two orders cannot meet.
  mutable std::mutex subscription_mutex_;
  SubscriptionPtr subscription_;  // guarded by subscription_mutex_
  mutable std::mutex mutex_;
  std::map<const SseSession*, std::weak_ptr<SseSession>> sessions_;  // guarded by mutex_
  bool stopped_ = false;                                             // guarded by mutex_
  std::atomic<std::uint64_t> slow_dropped_{0};
};

}  // namespace warmstart::api
