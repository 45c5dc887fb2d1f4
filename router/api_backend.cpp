#include "router/api_backend.hpp"

#include "api/sse.hpp"
#include "common/log.hpp"
#include "common/retry.hpp"
#include "common/time.hpp"
#include "container/errors.hpp"
#include "queue/prewarm.hpp"
#include "queue/validation.hpp"
#include "router/dispatcher.hpp"

#include <algorithm>
#include <map>
#include <mutex>

namespace warmstart::router {

using nlohmann::json;
using namespace net::experimental::awaitable_operators;

namespace {

// Maps the exception in flight to what the HTTP layer answers: environment
// failures (Redis, Docker, deadlines) are 503, invalid input 400; anything else
// is a bug and passes unchanged (500). Call it only from a catch block.
[[noreturn]] void rethrow_for_http(const char* what) {
  try {
    throw;
  } catch (const api::BackendError&) {
    throw;
  } catch (const queue::InvalidJob& e) {
    throw api::BackendError(400, e.what());
  } catch (const queue::IdConflict& e) {
    throw api::BackendError(409, e.what(),
                            {{"job", e.job_id()},
                             {"existing_spec_hash", e.existing_fingerprint()},
                             {"requested_spec_hash", e.requested_fingerprint()}});
  } catch (const redis::ProtocolError&) {
    throw;
  } catch (const redis::Error& e) {
    throw api::BackendError(503, std::string(what) + ": redis " + e.command() + ": " + e.what());
  } catch (const container::DockerError& e) {
    throw api::BackendError(503, std::string(what) + ": docker: " + e.what());
  } catch (const DeadlineExceeded& e) {
    throw api::BackendError(503, std::string(what) + ": " + e.what());
  }
}

}  // namespace

// ---------------------------------------------------------------------------
// The event tailer: one coroutine per backend, alive while anyone listens.

class ApiBackend::Tail : public std::enable_shared_from_this<Tail> {
 public:
  Tail(net::any_io_executor executor, queue::QueuePtr queue, const ApiBackendOptions& options)
      : executor_(std::move(executor)), queue_(std::move(queue)), options_(options) {}

  std::uint64_t add(api::EventHandler handler) {
    std::uint64_t token = 0;
    bool start = false;
    {
      std::lock_guard lock(mutex_);
      token = next_token_++;
      handlers_.emplace(token, std::move(handler));
      if (!running_) {
        running_ = true;
        start = true;
        // Where the stream is right now is only known after a round trip, and
        // an event appended meanwhile must not be missed: start a margin
        // before now, or where the previous run stopped when that is later.
        const auto margin_ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(options_.tail_start_margin);
        const std::string since = std::to_string(unix_ms_now() - margin_ms.count()) + "-0";
        if (cursor_.empty() || api::event_id_less(cursor_, since)) cursor_ = since;
      }
    }
    // Outside the lock: co_spawn may start run() right here, on this thread.
    if (start) {
      net::co_spawn(executor_, run(shared_from_this()), [](std::exception_ptr e) {
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          log::error("event tailer ended", {{"error", ex.what()}});
        }
      });
    }
    return token;
  }

  void remove(std::uint64_t token) {
    std::lock_guard lock(mutex_);
    handlers_.erase(token);
  }

  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return handlers_.size();
  }
  bool running() const {
    std::lock_guard lock(mutex_);
    return running_;
  }

 private:
  // `self` keeps the table alive after the backend is gone.
  static awaitable<void> run(std::shared_ptr<Tail> self) {
    net::steady_timer timer(self->executor_);
    bool failing = false;
    for (;;) {
      std::string after;
      {
        std::lock_guard lock(self->mutex_);
        if (self->handlers_.empty()) {
          self->running_ = false;
          break;
        }
        after = self->cursor_;
      }
      std::vector<queue::QueueEvent> batch;
      std::string error;
      try {
        batch = co_await self->queue_->read_events(after, self->options_.event_page);
      } catch (const std::exception& e) {
        error = e.what();
      }
      if (!error.empty()) {
        if (!failing) log::warn("event tailer cannot read events", {{"error", error}});
        failing = true;
        timer.expires_after(1s);
        co_await timer.async_wait(net::as_tuple(use_awaitable));
        continue;
      }
      if (failing) log::info("event tailer reads events again");
      failing = false;
      if (!batch.empty()) {
        // Delivered under the lock: once remove() has returned, a handler is
        // never called again.
        std::lock_guard lock(self->mutex_);
        for (const queue::QueueEvent& event : batch) {
          self->cursor_ = event.id;
          for (const auto& [token, handler] : self->handlers_) handler(event.body);
        }
      }
      if (batch.size() >= self->options_.event_page) continue;
      timer.expires_after(self->options_.event_poll_interval);
      co_await timer.async_wait(net::as_tuple(use_awaitable));
    }
  }

  net::any_io_executor executor_;
  queue::QueuePtr queue_;
  const ApiBackendOptions options_;

  mutable std::mutex mutex_;
  std::map<std::uint64_t, api::EventHandler> handlers_;  // guarded
  std::uint64_t next_token_ = 1;                         // guarded
  bool running_ = false;                                 // guarded: a run() is live
  std::string cursor_;                                   // guarded: last id delivered
};

class ApiBackend::TailSubscription : public api::Subscription {
 public:
  TailSubscription(std::shared_ptr<Tail> tail, std::uint64_t token)
      : tail_(std::move(tail)), token_(token) {}
  ~TailSubscription() override { tail_->remove(token_); }

 private:
  std::shared_ptr<Tail> tail_;
  std::uint64_t token_;
};

// ---------------------------------------------------------------------------

ApiBackend::ApiBackend(net::any_io_executor executor, ApiBackendDeps deps, ImagePolicy policy,
                       ApiBackendOptions options)
    : executor_(std::move(executor)),
      deps_(std::move(deps)),
      policy_(std::move(policy)),
      options_(std::move(options)),
      tail_(std::make_shared<Tail>(executor_, deps_.queue, options_)) {}

ApiBackend::~ApiBackend() = default;

awaitable<api::EnqueueResult> ApiBackend::enqueue(json job_body) {
  try {
    const queue::Validated validated = queue::validate_job(job_body);
    if (!validated.ok()) throw api::BackendError(400, validated.reason);
    std::string reason;
    if (!policy_.resolve(validated.spec->image, &reason)) throw api::BackendError(400, reason);
    // The id is fixed (validate_job generates one): a retry is idempotent.
    const queue::JobSpec& spec = *validated.spec;
    if (spec.snapshot && spec.snapshot->prewarm) {
      const queue::PrewarmResult prewarm = co_await retry_until(
          [&] { return queue::submit_prewarm(*deps_.queue, spec); }, redis_deadline());
      log::info("prewarm submitted through the api", {{"job", prewarm.job_id},
                                                      {"snapshot_key", spec.snapshot->key},
                                                      {"coalesced", prewarm.coalesced}});
      std::optional<queue::JobRecord> record =
          co_await retry_until([&] { return deps_.queue->get(prewarm.job_id); }, redis_deadline());
      json job = json::object();
      if (record) {
        job = record->to_json();
      } else {
        job["id"] = prewarm.job_id;  // the builder finished and its record expired
      }
      co_return api::EnqueueResult{std::move(job), prewarm.created, prewarm.coalesced};
    }
    queue::EnqueueResult result =
        co_await retry_until([&] { return deps_.queue->enqueue(spec); }, redis_deadline());
    if (result.created) {
      log::info("job enqueued through the api",
                {{"job", result.record.id}, {"queue", result.record.spec.queue}});
    }
    co_return api::EnqueueResult{result.record.to_json(), result.created};
  } catch (...) {
    rethrow_for_http("enqueue");
  }
}

Clock::time_point ApiBackend::redis_deadline() const {
  return Clock::now() + options_.redis_retry;
}

awaitable<queue::JobRecord> ApiBackend::require_job(std::string id) {
  std::optional<queue::JobRecord> record =
      co_await retry_until([&] { return deps_.queue->get(id); }, redis_deadline());
  if (!record) throw api::BackendError(404, "no such job: " + id);
  co_return std::move(*record);
}

awaitable<json> ApiBackend::get_job(std::string id) {
  try {
    queue::JobRecord record = co_await require_job(std::move(id));
    co_return record.to_json();
  } catch (...) {
    rethrow_for_http("get_job");
  }
}

awaitable<std::vector<json>> ApiBackend::list_jobs(std::optional<std::string> state,
                                                   std::size_t limit) {
  try {
    std::vector<queue::JobState> states;
    if (state) {
      const std::optional<queue::JobState> parsed = queue::parse_state(*state);
      if (!parsed) throw api::BackendError(400, "unknown state \"" + *state + "\"");
      states.push_back(*parsed);
    } else {
      states.assign(queue::kAllStates.begin(), queue::kAllStates.end());
    }
    std::vector<queue::JobRecord> records;
    for (const queue::JobState s : states) {
      std::vector<queue::JobRecord> part =
          co_await retry_until([&] { return deps_.queue->list(s, limit); }, redis_deadline());
      for (auto& record : part) records.push_back(std::move(record));
    }
    // Each state's list is newest first; merged, the newest `limit` of all.
    std::sort(records.begin(), records.end(), [](const auto& a, const auto& b) {
      if (a.created_at != b.created_at) return a.created_at > b.created_at;
      return a.id > b.id;
    });
    if (records.size() > limit) records.resize(limit);
    std::vector<json> out;
    out.reserve(records.size());
    for (const auto& record : records) out.push_back(record.to_json());
    co_return out;
  } catch (...) {
    rethrow_for_http("list_jobs");
  }
}

awaitable<std::string> ApiBackend::job_logs(std::string id) {
  try {
    queue::JobRecord record = co_await require_job(std::move(id));
    co_return std::move(record.log_tail);
  } catch (...) {
    rethrow_for_http("job_logs");
  }
}

awaitable<json> ApiBackend::cancel_job(std::string id) {
  try {
    const queue::CancelResult result =
        co_await retry_until([&] { return deps_.queue->cancel(id); }, redis_deadline());
    switch (result.outcome) {
      case queue::CancelOutcome::not_found:
        throw api::BackendError(404, "no such job: " + id);
      case queue::CancelOutcome::already_finished: {
        std::string state = "finished";
        if (result.previous_state) state = std::string(queue::to_string(*result.previous_state));
        throw api::BackendError(409, "job " + id + " already " + state);
      }
      case queue::CancelOutcome::cancelled:
      case queue::CancelOutcome::router_notified:
        break;
    }
    log::info("job cancel requested through the api", {{"job", id}});
    queue::JobRecord record = co_await require_job(id);
    co_return record.to_json();
  } catch (...) {
    rethrow_for_http("cancel_job");
  }
}

awaitable<std::vector<json>> ApiBackend::list_snapshots() {
  try {
    std::vector<snapshots::SnapshotEntry> entries = co_await deps_.snapshots->list();
    // The keys being built now (single-flight): a listing without them still
    // answers (a builder column is worth less than the list).
    std::map<std::string, std::string> builds;
    // Built outside the try: g++ 12 destroys temporaries of a throwing co_await twice.
    auto read_builds = deps_.queue->builds();
    try {
      builds = co_await std::move(read_builds);
    } catch (const std::exception& e) {
      log::warn("snapshot list: running builds unreadable", {{"error", e.what()}});
    }
    json rows = snapshots::snapshot_listing(entries, builds);
    co_return std::vector<json>(std::make_move_iterator(rows.begin()),
                                std::make_move_iterator(rows.end()));
  } catch (...) {
    rethrow_for_http("list_snapshots");
  }
}

awaitable<std::vector<json>> ApiBackend::list_routers() {
  try {
    auto records = co_await retry_until([&] { return deps_.queue->routers(); }, redis_deadline());
    const std::int64_t now = unix_ms_now();
    std::vector<json> out;
    out.reserve(records.size());
    for (const auto& r : records) out.push_back(queue::describe(r, now));
    co_return out;
  } catch (...) {
    rethrow_for_http("list_routers");
  }
}

awaitable<json> ApiBackend::invalidate_snapshot(std::string key) {
  try {
    const bool dropped = co_await deps_.snapshots->invalidate(key, "manual");
    if (!dropped) throw api::BackendError(404, "no snapshot with key " + key);
    co_return json{{"key", key}, {"invalidated", true}};
  } catch (...) {
    rethrow_for_http("invalidate_snapshot");
  }
}

awaitable<std::vector<json>> ApiBackend::read_events(std::string after_id, std::size_t max) {
  try {
    std::vector<queue::QueueEvent> events =
        co_await deps_.queue->read_events(std::move(after_id), max);
    std::vector<json> out;
    out.reserve(events.size());
    for (auto& event : events) out.push_back(std::move(event.body));
    co_return out;
  } catch (...) {
    rethrow_for_http("read_events");
  }
}

api::SubscriptionPtr ApiBackend::subscribe_events(api::EventHandler handler) {
  const std::uint64_t token = tail_->add(std::move(handler));
  return std::make_unique<TailSubscription>(tail_, token);
}

std::size_t ApiBackend::subscriber_count() const {
  return tail_->size();
}
bool ApiBackend::tailing() const {
  return tail_->running();
}

awaitable<bool> ApiBackend::redis_alive() {
  try {
    auto args = redis::make_args("PING");
    co_await deps_.redis->command(std::move(args), options_.ready_timeout);
    co_return true;
  } catch (const std::exception& e) {
    log::debug("readiness: redis ping failed", {{"error", e.what()}});
  }
  co_return false;
}

awaitable<bool> ApiBackend::docker_alive() {
  try {
    co_await with_deadline(deps_.runtime->ping(), options_.ready_timeout, "docker ping");
    co_return true;
  } catch (const std::exception& e) {
    log::debug("readiness: docker ping failed", {{"error", e.what()}});
  }
  co_return false;
}

awaitable<api::ReadyStatus> ApiBackend::check_ready() {
  api::ReadyStatus status;
  // Both probes at once: readiness answers within one ready_timeout.
  auto [redis_ok, docker_ok] = co_await (redis_alive() && docker_alive());
  status.redis_ok = redis_ok;
  status.docker_ok = docker_ok;
  if (deps_.router != nullptr) {
    const RouterStats stats = deps_.router->stats();
    status.draining = stats.draining;
    // Claiming is paused until the engine answers again, even when this
    // probe's ping happened to get through.
    status.docker_ok = status.docker_ok && stats.engine_up;
  }
  co_return status;
}

awaitable<bool> ApiBackend::webhook_seen(std::string delivery_key, Duration ttl) {
  try {
    const auto ttl_ms = std::max<std::int64_t>(ttl.count(), 1);
    auto args =
        redis::make_args("SET", options_.key_prefix + delivery_key, "1", "NX", "PX", ttl_ms);
    const redis::Reply reply = co_await deps_.redis->command(std::move(args));
    // OK: this call set it (first delivery); nil: it was already there.
    co_return reply.is_nil();
  } catch (...) {
    rethrow_for_http("webhook_seen");
  }
}

}  // namespace warmstart::router
