#include "queue/redis_queue.hpp"

#include "common/json_limits.hpp"
#include "common/log.hpp"
#include "common/time.hpp"
#include "queue/redis_queue_scripts.hpp"
#include "queue/state_machine.hpp"

#include <algorithm>
#include <charconv>
#include <exception>
#include <iterator>
#include <unordered_map>

namespace warmstart::queue {

using redis::make_args;
using redis::Reply;

namespace {

// XAUTOCLAIM calls per stream in one reclaim_expired round: together they look
// at up to 100 pending entries per job wanted.
constexpr int kReclaimScanCalls = 10;

// The consumer group vanished (a Redis without persistence restarted).
bool no_group(const redis::ReplyError& e) {
  return std::string_view(e.what()).find("NOGROUP") != std::string_view::npos;
}

Reply array_reply(std::vector<Reply> elements) {
  Reply r;
  r.type = Reply::Type::array;
  r.elements = std::move(elements);
  return r;
}

// One stream of an XREADGROUP answer: [stream key, entries].
Reply stream_reply(const std::string& stream_key, Reply entries) {
  Reply key;
  key.type = Reply::Type::string;
  key.str = stream_key;
  std::vector<Reply> parts;
  parts.push_back(std::move(key));
  parts.push_back(std::move(entries));
  return array_reply(std::move(parts));
}

// XAUTOCLAIM's entries in the shape of an XREADGROUP answer (what
// process_entries reads): [[stream key, entries]].
Reply as_read_reply(const std::string& stream_key, const Reply& entries) {
  std::vector<Reply> streams;
  streams.push_back(stream_reply(stream_key, entries));
  return array_reply(std::move(streams));
}

// Prelude + body, built once (thread-safe static init): the text, and so the
// EVALSHA digest, is stable for the life of the process.
const std::string& script(const char* body) {
  static const std::unordered_map<const char*, std::string> all = [] {
    std::unordered_map<const char*, std::string> m;
    for (const char* b : {scripts::kEnqueue,      scripts::kClaim,        scripts::kClaimNext,
                          scripts::kRenew,        scripts::kMarkRunning,  scripts::kFinish,
                          scripts::kFailAttempt,  scripts::kHandBack,     scripts::kPromote,
                          scripts::kCancel,       scripts::kList,         scripts::kCounts,
                          scripts::kSetLogTail,   scripts::kDropAffinity, scripts::kBeginBuild,
                          scripts::kWaitForBuild, scripts::kEndBuild,     scripts::kBuilds,
                          scripts::kHeartbeat,    scripts::kRouters}) {
      // The body's returns leave main(); the deferred writes go out after it.
      m.emplace(b, lua_transition_table() + scripts::kPrelude + "local function main()\n" + b +
                       "\nend\nlocal result = main()\nflush_deferred()\nreturn result\n");
    }
    return m;
  }();
  return all.at(body);
}

std::optional<std::int64_t> to_int(const std::string& s) {
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

// A job hash (HGETALL's flat field/value array) -> JobRecord.
JobRecord record_from_hash(const Reply& reply) {
  const auto& items = reply.as_array();
  std::unordered_map<std::string_view, std::string_view> fields;
  for (std::size_t i = 0; i + 1 < items.size(); i += 2) {
    fields.emplace(items[i].as_string(), items[i + 1].as_string());
  }
  return JobRecord::from_hash(fields);
}

// A fresh claim's record from a claim script's item, whose job id is at
// parts[at] (then state, attempts, created_at, affinity host), and the spec
// the claimer holds; the rest of the record is empty run fields.
ClaimedJob fresh_claim(const std::vector<Reply>& parts, std::size_t at, JobSpec spec,
                       const std::string& consumer, const std::string& stream,
                       const std::string& entry_id) {
  ClaimedJob job;
  job.record.id = parts.at(at).as_string();
  job.record.state = parse_state(parts.at(at + 1).as_string()).value_or(JobState::running);
  job.record.attempts = static_cast<int>(parts.at(at + 2).as_integer());
  job.record.created_at = to_int(parts.at(at + 3).as_string()).value_or(0);
  job.record.router_id = consumer;
  job.record.affinity_host = parts.at(at + 4).as_string();
  job.record.spec = std::move(spec);
  job.lease = LeaseHandle{job.record.id, stream, entry_id, consumer, job.record.attempts};
  return job;
}

// Throws for the {'lost'} | {'illegal', state} | {'missing'} replies.
void expect_ok(const Reply& reply, const LeaseHandle& lease, const char* op) {
  const auto& parts = reply.as_array();
  const std::string& status = parts.at(0).as_string();
  if (status == "ok") return;
  if (status == "lost") {
    throw LeaseLost(std::string(op) + ": job " + lease.job_id + " is no longer held by " +
                    lease.consumer + " (lease expired and reclaimed)");
  }
  if (status == "missing") {
    throw QueueError(std::string(op) + ": job " + lease.job_id + " does not exist (expired?)");
  }
  throw QueueError(std::string(op) + ": job " + lease.job_id + " is " +
                   (parts.size() > 1 ? parts[1].as_string() : std::string("?")) +
                   ": transition not allowed");
}

// The {'ok', record} | {'lost'} | {'illegal', state} | {'missing'} replies.
JobRecord expect_record(const Reply& reply, const LeaseHandle& lease, const char* op) {
  expect_ok(reply, lease, op);
  return record_from_hash(reply.as_array().at(1));
}

class RedisCancelSubscription final : public CancelSubscription {
 public:
  explicit RedisCancelSubscription(std::unique_ptr<redis::Subscriber> sub) : sub_(std::move(sub)) {}
  ~RedisCancelSubscription() override { sub_->stop(); }
  awaitable<bool> wait_ready(Duration timeout) override { return sub_->wait_subscribed(timeout); }

 private:
  std::unique_ptr<redis::Subscriber> sub_;
};

}  // namespace

RedisQueue::RedisQueue(net::any_io_executor executor, RedisQueueOptions options)
    : executor_(executor),
      options_(std::move(options)),
      backoff_(options_.retry_backoff),
      finish_batcher_(executor_, options_.finish_batch_max,
                      [this](std::vector<std::string> args) -> awaitable<Reply> {
                        auto finishing = run_script(script(scripts::kFinish), std::move(args));
                        Reply r = co_await std::move(finishing);
                        co_await await_replicas("the result of a job");
                        co_return r;
                      }) {
  client_ = redis::Client::create(executor_, options_.redis);
  redis::ClientOptions blocking = options_.redis;
  blocking.client_name += "-claim";
  blocking_client_ = redis::Client::create(executor_, blocking);
}

RedisQueue::~RedisQueue() {
  close();
}

void RedisQueue::close() {
  client_->close();
  blocking_client_->close();
}

JsonLimits RedisQueue::entry_limits() const {
  return JsonLimits{options_.validation.max_payload_bytes, options_.validation.max_depth};
}

std::string RedisQueue::stream_key(const std::string& queue) const {
  return options_.key_prefix + "stream:" + queue;
}
std::string RedisQueue::job_key(const std::string& id) const {
  return options_.key_prefix + "job:" + id;
}
std::string RedisQueue::events_key() const {
  return options_.key_prefix + "events";
}
std::string RedisQueue::cancel_channel() const {
  return options_.key_prefix + "cancel";
}
std::string RedisQueue::limits_key() const {
  return options_.key_prefix + "limits";
}

std::string RedisQueue::routers_key() const {
  return options_.key_prefix + "routers";
}
std::string RedisQueue::affinity_key() const {
  return options_.key_prefix + "affinity";
}
std::string RedisQueue::host_live_key(const std::string& host_id) const {
  return options_.key_prefix + "hostlive:" + host_id;
}

std::vector<std::string> RedisQueue::streams_of(const std::string& consumer) const {
  std::vector<std::string> out = options_.queues;
  auto host = host_of_.find(consumer);
  if (host != host_of_.end() && !host->second.empty()) {
    for (const auto& q : options_.queues) out.push_back(q + "@" + host->second);
  }
  return out;
}

awaitable<void> RedisQueue::set_affinity(std::string snapshot_key, std::string host_id) {
  auto args = make_args("HSET", affinity_key(), snapshot_key, host_id);
  co_await client_->command(std::move(args));
}

awaitable<void> RedisQueue::drop_affinity(std::string snapshot_key, std::string host_id) {
  auto args = make_args(snapshot_key, host_id);
  co_await run_script(script(scripts::kDropAffinity), std::move(args));
}

awaitable<std::string> RedisQueue::begin_build(std::string snapshot_key, std::string job_id,
                                               bool take) {
  auto args = make_args(snapshot_key, job_id, take ? "1" : "0");
  Reply r = co_await run_script(script(scripts::kBeginBuild), std::move(args));
  co_return r.as_string();
}

awaitable<BuildWait> RedisQueue::wait_for_build(const LeaseHandle& lease, std::string snapshot_key,
                                                std::string builder, Duration poll,
                                                Duration max_wait) {
  auto args = make_args(lease.job_id, lease.entry_id, lease.consumer, lease.queue, snapshot_key,
                        builder, static_cast<std::int64_t>(poll.count()),
                        static_cast<std::int64_t>(max_wait.count()));
  Reply r = co_await run_script(script(scripts::kWaitForBuild), std::move(args));
  const std::string& status = r.as_array().at(0).as_string();
  if (status == "over") co_return BuildWait::over;
  if (status == "gone") co_return BuildWait::builder_gone;
  expect_ok(r, lease, "wait_for_build");
  co_return BuildWait::waiting;
}

awaitable<std::size_t> RedisQueue::end_build(std::string snapshot_key, std::string job_id,
                                             std::string host_id) {
  auto args = make_args(snapshot_key, job_id, host_id);
  Reply r = co_await run_script(script(scripts::kEndBuild), std::move(args));
  co_return static_cast<std::size_t>(r.as_integer());
}

awaitable<std::map<std::string, std::string>> RedisQueue::builds() {
  std::vector<std::string> no_args;
  Reply r = co_await run_script(script(scripts::kBuilds), std::move(no_args));
  std::map<std::string, std::string> out;
  const auto& items = r.as_array();
  for (std::size_t i = 0; i + 1 < items.size(); i += 2) {
    out.emplace(items[i].as_string(), items[i + 1].as_string());
  }
  co_return out;
}

// One script each (kHeartbeat, kRouters): a heartbeat round is two round
// trips, not five.
awaitable<void> RedisQueue::heartbeat(RouterRecord record, Duration keep) {
  const auto keep_ms = std::max<std::int64_t>(
      1, std::chrono::duration_cast<std::chrono::milliseconds>(keep).count());
  if (!record.host_id.empty()) host_of_[record.id] = record.host_id;
  auto args = make_args(record.id, to_json(record).dump(), keep_ms, record.host_id,
                        record.draining ? 1 : 0, std::max<std::int64_t>(1, record.lease_ms));
  co_await run_script(script(scripts::kHeartbeat), std::move(args));
}

awaitable<std::vector<RouterRecord>> RedisQueue::routers() {
  std::vector<std::string> no_args;
  Reply r = co_await run_script(script(scripts::kRouters), std::move(no_args));
  const auto& pairs = r.as_array();
  std::vector<std::pair<std::string, std::string>> listed;
  for (std::size_t i = 0; i + 1 < pairs.size(); i += 2) {
    listed.emplace_back(pairs[i].as_string(), pairs[i + 1].as_string());
  }
  std::sort(listed.begin(), listed.end());
  std::vector<RouterRecord> out;
  for (const auto& [id, value] : listed) {
    auto parsed = parse_bounded(value, JsonLimits{64 * 1024, 4});
    auto record = parsed ? router_record_from_json(*parsed) : std::nullopt;
    if (record) out.push_back(std::move(*record));
  }
  co_return out;
}

awaitable<void> RedisQueue::publish_limits() {
  if (!options_.validation.limits) co_return;
  auto args = make_args("SET", limits_key(), limits_to_json(*options_.validation.limits).dump());
  co_await client_->command(std::move(args));
}

awaitable<void> RedisQueue::adopt_published_limits() {
  auto args = make_args("GET", limits_key());
  Reply r = co_await client_->command(std::move(args));
  if (r.is_nil()) co_return;
  auto parsed = parse_bounded(r.as_string(), JsonLimits{4096, 2});
  std::optional<JobLimits> limits;
  if (parsed) limits = limits_from_json(*parsed);
  if (!limits) {
    log::warn("published job limits are unreadable; keeping the defaults", {{"key", limits_key()}});
    co_return;
  }
  options_.validation.limits = *limits;
}

awaitable<Reply> RedisQueue::run_script(const std::string& body, std::vector<std::string> args) {
  std::int64_t now = unix_ms_now();
  std::vector<std::string> argv = make_args(
      options_.key_prefix, now, rfc3339(now), options_.events_max,
      static_cast<std::int64_t>(options_.retention.count()), options_.group,
      static_cast<std::int64_t>(options_.lease_timeout.count()), options_.concurrency_key_limit);
  argv.insert(argv.end(), std::make_move_iterator(args.begin()),
              std::make_move_iterator(args.end()));
  std::vector<std::string> no_keys;
  auto call = client_->eval(body, std::move(no_keys), std::move(argv));
  co_return co_await std::move(call);
}

awaitable<void> RedisQueue::await_replicas(std::string what) {
  if (options_.replicas_ack <= 0) co_return;
  const auto timeout_ms = static_cast<std::int64_t>(options_.replicas_timeout.count());
  auto args = make_args("WAIT", options_.replicas_ack, timeout_ms);
  // The command's own deadline outlives WAIT's timeout.
  auto waiting = client_->command(std::move(args), options_.replicas_timeout + 5s);
  Reply r = co_await std::move(waiting);
  const std::int64_t acked = r.as_integer();
  if (acked < options_.replicas_ack) {
    throw redis::ReplyError("WAIT", "NOREPLICAS " + what + " reached " + std::to_string(acked) +
                                        " of " + std::to_string(options_.replicas_ack) +
                                        " replicas within " + std::to_string(timeout_ms) +
                                        " ms ([redis] replicas_ack); it may be lost in a failover");
  }
}

awaitable<void> RedisQueue::ensure_group(const std::string& stream) {
  auto args_1 = make_args("XGROUP", "CREATE", stream_key(stream), options_.group, "0", "MKSTREAM");
  // The awaitable is built outside the try: g++ 12 destroys temporaries of a
  // throwing co_await expression twice.
  auto create = client_->command(std::move(args_1));
  try {
    co_await std::move(create);
  } catch (const redis::ReplyError& e) {
    if (std::string_view(e.what()).find("BUSYGROUP") == std::string_view::npos) throw;
  }
}

awaitable<void> RedisQueue::ensure_groups() {
  if (!groups_ready_) {
    grouped_.clear();
    for (const auto& q : options_.queues) co_await ensure_group(q);
    groups_ready_ = true;
  }
  // The host streams of the consumers this process heartbeats for: listed so
  // other routers reclaim from them when this host is lost.
  for (const auto& [consumer, host] : host_of_) {
    for (const auto& q : options_.queues) {
      std::string stream = q + "@" + host;
      if (grouped_.count(stream)) continue;
      co_await ensure_group(stream);
      auto listed = make_args("SADD", options_.key_prefix + "hoststreams", stream);
      co_await client_->command(std::move(listed));
      grouped_.insert(stream);
    }
  }
}

awaitable<EnqueueResult> RedisQueue::enqueue(JobSpec spec) {
  if (spec.id.empty()) spec.id = generate_job_id();
  // The spec may have been built in code: hold it to the same rules as JSON.
  Validated v = validate_job(spec.to_json(), options_.validation);
  if (!v.ok()) throw InvalidJob("invalid job " + spec.id + ": " + v.reason);
  JobSpec checked = std::move(*v.spec);
  std::string spec_json = checked.to_json().dump();
  std::string fingerprint = checked.fingerprint();
  std::int64_t before = unix_ms_now();
  std::string affinity;
  if (checked.snapshot && checked.snapshot->reuse) affinity = checked.snapshot->key;
  auto args_2 = make_args(checked.id, checked.queue, spec_json, checked.max_attempts, fingerprint,
                          affinity, checked.concurrency_key);
  Reply r = co_await run_script(script(scripts::kEnqueue), std::move(args_2));
  co_await await_replicas("enqueue of " + checked.id);
  EnqueueResult out;
  if (r.is_array() && r.as_array().size() == 2 && r.as_array()[0].str == "conflict") {
    throw IdConflict(checked.id, r.as_array()[1].as_string(), fingerprint);
  }
  if (r.type == Reply::Type::integer) {
    // Created: the record is what we just wrote (no second round trip).
    out.created = true;
    out.record.id = checked.id;
    out.record.state = JobState::queued;
    out.record.created_at = before;
    out.record.spec = std::move(checked);
  } else {
    out.record = record_from_hash(r);
  }
  co_return out;
}

awaitable<std::vector<ClaimedJob>> RedisQueue::process_entries(const std::string& consumer,
                                                               const Reply& streams, bool reclaim,
                                                               std::size_t count,
                                                               const EntryObserver& seen) {
  // streams: [[stream key, [[entry id, [field, value, ...]], ...]], ...]
  std::vector<std::string> args =
      make_args(consumer, reclaim ? "1" : "0", options_.max_reclaims, count);
  const std::string stream_prefix = options_.key_prefix + "stream:";
  ValidationOptions validation = options_.validation;
  validation.generate_id = false;
  const JsonLimits limits = entry_limits();
  std::size_t entries = 0;
  // Per entry sent, in order (the script answers one item per entry, in
  // order; entry ids alone are not unique across streams): its stream, which
  // its lease acknowledges it on, and the spec sent as valid, which a fresh
  // claim's record is built from.
  std::vector<std::string> sent_streams;
  std::unordered_map<std::size_t, JobSpec> specs;  // entry index -> spec
  for (const Reply& stream : streams.as_array()) {
    const std::string& key = stream.as_array().at(0).as_string();
    // A host's own stream "<queue>@<host>" (snapshot affinity) holds jobs of <queue>.
    const std::string stream_name = key.substr(stream_prefix.size());
    const std::string queue = stream_name.substr(0, stream_name.find('@'));
    for (const Reply& entry : stream.as_array().at(1).as_array()) {
      const auto& parts = entry.as_array();
      const std::string& entry_id = parts.at(0).as_string();
      const std::string* payload = nullptr;
      const std::string* attempt = nullptr;  // the attempt its claim would run
      if (parts.size() > 1 && parts[1].is_array()) {
        const auto& fields = parts[1].elements;
        for (std::size_t i = 0; i + 1 < fields.size(); i += 2) {
          if (fields[i].str == "job") payload = &fields[i + 1].str;
          if (fields[i].str == "attempt") attempt = &fields[i + 1].str;
        }
      }
      std::string mode = "bad";
      std::string id;
      std::string data;
      if (payload == nullptr) {
        data = "stream entry has no \"job\" field";
      } else {
        // Bounded before anything recursive: a poison entry (e.g. 800 KB of
        // nested arrays) becomes one failed record instead of a crash loop.
        std::string reason;
        auto parsed = parse_bounded(*payload, limits, &reason);
        if (!parsed) {
          data = "job " + reason;
        } else {
          nlohmann::json& j = *parsed;
          // An id-less raw job gets an id derived from its entry, so a
          // redelivery (reclaim) maps to the same record.
          if (j.is_object() && !j.contains("id")) j["id"] = "s-" + queue + "-" + entry_id;
          if (j.is_object() && !j.contains("queue")) j["queue"] = queue;
          Validated v = validate_job(j, validation);
          id = v.id;
          if (v.ok()) {
            v.spec->queue = queue;  // the stream it is on wins
            mode = "ok";
            data = v.spec->to_json().dump();
            specs.insert_or_assign(entries, std::move(*v.spec));
          } else {
            data = "invalid job: " + v.reason;
          }
        }
      }
      std::string concurrency_key;
      if (auto it = specs.find(entries); mode == "ok" && it != specs.end()) {
        concurrency_key = it->second.concurrency_key;
        const auto n = attempt != nullptr ? to_int(*attempt) : std::nullopt;
        if (seen && n && *n > 0 && stream_name == queue) {
          seen(EntrySeen{id, static_cast<int>(*n), it->second});
        }
      }
      args.push_back(stream_name);
      args.push_back(entry_id);
      args.push_back(std::move(mode));
      args.push_back(std::move(id));
      args.push_back(std::move(data));
      args.push_back(std::move(concurrency_key));
      sent_streams.push_back(stream_name);
      ++entries;
    }
  }
  std::vector<ClaimedJob> out;
  if (entries == 0) co_return out;
  Reply r = co_await run_script(script(scripts::kClaim), std::move(args));
  const auto& items = r.as_array().at(0).as_array();
  if (count > 0) entries_wait_ = r.as_array().at(1).as_integer() != 0;
  if (items.size() != entries) {
    throw redis::ProtocolError("EVALSHA", "claim script answered " + std::to_string(items.size()) +
                                              " items for " + std::to_string(entries) + " entries");
  }
  for (std::size_t index = 0; index < items.size(); ++index) {
    const auto& parts = items[index].as_array();
    const std::string& entry_id = parts.at(0).as_string();
    const std::string& outcome = parts.at(1).as_string();
    const std::string& id = parts.at(2).as_string();
    if (outcome == "claimed") {
      // {entry, 'claimed', id, state, attempts, created_at, affinity host}.
      auto it = specs.find(index);
      if (it == specs.end()) {
        throw redis::ProtocolError(
            "EVALSHA", "claim script claimed entry " + entry_id + " that was not sent as valid");
      }
      out.push_back(
          fresh_claim(parts, 2, std::move(it->second), consumer, sent_streams[index], entry_id));
    } else if (outcome == "reclaimed") {
      ClaimedJob job;
      job.record = record_from_hash(parts.at(3));
      log::info("job reclaimed after lease expiry", {{"job", id}, {"router", consumer}});
      job.lease = LeaseHandle{id, sent_streams[index], entry_id, consumer, job.record.attempts};
      out.push_back(std::move(job));
    } else if (outcome == "parked") {
      log::debug("job waits for its concurrency key",
                 {{"job", id}, {"key", parts.at(3).as_string()}});
    } else if (outcome == "rejected") {
      log::warn("job rejected from the stream",
                {{"job", id}, {"entry", entry_id}, {"error", parts.at(3).as_string()}});
    } else {
      log::debug("stream entry skipped", {{"job", id}, {"entry", entry_id}});
    }
  }
  co_return out;
}

awaitable<std::vector<ClaimedJob>> RedisQueue::claim(std::string consumer, std::size_t max_jobs,
                                                     Duration block, EntryObserver seen) {
  co_await ensure_groups();
  const Clock::time_point until = Clock::now() + block;
  // An idle router's claims follow each other, each waiting out its window.
  // A promotion due inside the next window would split its read in two (a
  // round trip more per window, for ever, since the two stay out of phase):
  // such a claim promotes at its start instead, at most one window early.
  bool promote_now = waited_out_ && promote_at_ < until;
  waited_out_ = false;
  for (;;) {
    // Rounded up: a read that timed out has reached `until` (rounded down,
    // it could end a fraction of a millisecond early and cost another read).
    Duration wait = std::chrono::ceil<Duration>(until - Clock::now());
    if (wait.count() < 0) wait = Duration(0);
    // Promoting is a script round trip: before every claim it was one per job.
    // Now at most every promote_every (the bound on how late another router's
    // retry or an expired affinity wait is picked up, like the 1 s claim
    // block before), and on time for what the last answer said is due.
    if (options_.promote_on_claim && (promote_now || Clock::now() >= promote_at_)) {
      promote_now = false;
      auto promote_args = make_args(1000, options_.affinity_wait.count());
      Reply p = co_await run_script(script(scripts::kPromote), std::move(promote_args));
      auto next_due = to_int(p.as_array().at(1).as_string()).value_or(-1);
      promote_at_ = Clock::now() + options_.promote_every;
      if (next_due >= 0) {
        promote_at_ = std::min(promote_at_, Clock::now() + Duration(next_due - unix_ms_now()));
      }
    }
    if (entries_wait_) {
      // The last claim left entries waiting: read and claim in one round trip.
      std::optional<std::vector<ClaimedJob>> jobs;
      bool regroup = false;
      auto next = claim_next(consumer, std::max<std::size_t>(max_jobs, 1), seen);
      try {
        jobs = co_await std::move(next);
      } catch (const redis::ReplyError& e) {
        if (!no_group(e)) throw;
        regroup = true;
      }
      if (regroup) {
        entries_wait_ = false;
        groups_ready_ = false;
        co_await ensure_groups();
      } else if (jobs) {
        ++one_trip_claims_;
        // Entries that were all rejected or skipped do not end the wait.
        if (!jobs->empty() || Clock::now() >= until) co_return std::move(*jobs);
        continue;
      }
      // Nothing was waiting after all: the read below waits for it.
    }
    // Wake up when the next promotion is due, to promote and read it.
    if (options_.promote_on_claim && wait.count() > 0) {
      wait = std::min(
          wait, std::max(Duration(1), std::chrono::ceil<Duration>(promote_at_ - Clock::now())));
    }
    std::vector<std::string> cmd = make_args("XREADGROUP", "GROUP", options_.group, consumer,
                                             "COUNT", std::max<std::size_t>(max_jobs, 1));
    if (wait.count() > 0) {
      cmd.push_back("BLOCK");
      cmd.push_back(std::to_string(wait.count()));
    }
    cmd.push_back("STREAMS");
    const std::vector<std::string> streams_read = streams_of(consumer);
    for (const auto& q : streams_read) cmd.push_back(stream_key(q));
    for (std::size_t i = 0; i < streams_read.size(); ++i) cmd.push_back(">");
    Reply streams;
    for (int tries = 0;; ++tries) {
      try {
        // A blocked read would stall everything pipelined behind it.
        auto read = wait.count() > 0
                        ? blocking_client_->command(cmd, wait + options_.redis.command_timeout)
                        : client_->command(cmd);
        streams = co_await std::move(read);
        break;
      } catch (const redis::ReplyError& e) {
        if (tries > 0 || !no_group(e)) throw;  // recreated below, once
      }
      groups_ready_ = false;
      co_await ensure_groups();
    }
    if (!streams.is_nil()) {
      auto jobs = co_await process_entries(consumer, streams, false, max_jobs, seen);
      // Entries that were all rejected or skipped do not end the wait.
      if (!jobs.empty() || Clock::now() >= until) co_return jobs;
    } else if (Clock::now() >= until) {
      waited_out_ = block > Duration::zero();
      co_return std::vector<ClaimedJob>{};
    }
  }
}

awaitable<std::optional<std::vector<ClaimedJob>>> RedisQueue::claim_next(
    const std::string& consumer, std::size_t count, const EntryObserver& seen) {
  std::vector<std::string> args = make_args(consumer, count);
  for (auto& q : streams_of(consumer)) args.push_back(std::move(q));
  Reply r = co_await run_script(script(scripts::kClaimNext), std::move(args));
  const auto& items = r.as_array().at(0).as_array();
  entries_wait_ = r.as_array().at(1).as_integer() != 0;
  if (items.empty()) co_return std::nullopt;
  ValidationOptions validation = options_.validation;
  validation.generate_id = false;
  std::vector<ClaimedJob> out;
  std::vector<std::pair<LeaseHandle, std::string>> refused;  // lease, reason
  Reply unchecked = array_reply({});  // XREADGROUP-shaped: [[stream key, entries], ...]
  for (const Reply& item : items) {
    const auto& parts = item.as_array();
    const std::string& stream = parts.at(0).as_string();
    const std::string& entry_id = parts.at(1).as_string();
    const std::string& outcome = parts.at(2).as_string();
    if (outcome == "claimed") {
      // {stream, entry, 'claimed', id, state, attempts, created_at, affinity host, spec}:
      // the spec was validated at enqueue; this router holds it to its own limits.
      Validated v = validate_job_text(parts.at(8).as_string(), validation);
      ClaimedJob job = fresh_claim(parts, 3, JobSpec{}, consumer, stream, entry_id);
      if (!v.ok()) {
        refused.emplace_back(job.lease, "invalid job: " + v.reason);
        continue;
      }
      job.record.spec = std::move(*v.spec);
      job.record.spec.queue = stream.substr(0, stream.find('@'));  // the stream it is on wins
      out.push_back(std::move(job));
    } else if (outcome == "parked") {
      log::debug("job waits for its concurrency key",
                 {{"job", parts.at(3).as_string()}, {"key", parts.at(4).as_string()}});
    } else {
      // {stream, entry, 'unchecked', fields}: items come stream by stream.
      const std::string key = stream_key(stream);
      auto& groups = unchecked.elements;
      if (groups.empty() || groups.back().elements.at(0).str != key) {
        groups.push_back(stream_reply(key, array_reply({})));
      }
      groups.back().elements.at(1).elements.push_back(array_reply({parts.at(1), parts.at(3)}));
    }
  }
  if (refused.empty() && unchecked.elements.empty()) co_return out;
  // The jobs claimed above are this router's now: a failure past this point
  // must not leave them to a lease expiry.
  auto rest = settle_claim_next(consumer, std::move(refused), std::move(unchecked), seen);
  std::exception_ptr failed;
  std::string error;
  try {
    auto settled = co_await std::move(rest);
    std::move(settled.begin(), settled.end(), std::back_inserter(out));
  } catch (const std::exception& e) {
    failed = std::current_exception();
    error = e.what();
  }
  if (failed && out.empty()) std::rethrow_exception(failed);
  if (failed) {
    // Unchecked entries stay pending: reclaimed once their lease runs out.
    log::warn("claim: entries left to a later reclaim", {{"router", consumer}, {"error", error}});
  }
  co_return out;
}

awaitable<std::vector<ClaimedJob>> RedisQueue::settle_claim_next(
    const std::string& consumer, std::vector<std::pair<LeaseHandle, std::string>> refused,
    Reply unchecked, const EntryObserver& seen) {
  for (auto& [lease, reason] : refused) {
    log::warn("job rejected when claimed",
              {{"job", lease.job_id}, {"router", consumer}, {"error", reason}});
    co_await fail_attempt(lease, reason, false);
  }
  if (unchecked.elements.empty()) co_return std::vector<ClaimedJob>{};
  // Count 0: the hint is the one claim_next's script gave (it read these streams).
  co_return co_await process_entries(consumer, unchecked, false, 0, seen);
}

awaitable<LeaseReport> RedisQueue::renew_leases(std::string consumer,
                                                std::vector<LeaseHandle> leases) {
  if (leases.empty()) co_return LeaseReport{};
  std::vector<std::string> args = make_args(consumer);
  for (const auto& l : leases) {
    args.push_back(l.queue);
    args.push_back(l.entry_id);
    args.push_back(l.job_id);
  }
  Reply r = co_await run_script(script(scripts::kRenew), std::move(args));
  LeaseReport report;
  for (const Reply& id : r.as_array().at(0).as_array()) report.lost.push_back(id.as_string());
  for (const Reply& id : r.as_array().at(1).as_array()) report.cancelled.push_back(id.as_string());
  co_return report;
}

awaitable<std::vector<ClaimedJob>> RedisQueue::held_by(std::string consumer) {
  co_await ensure_groups();
  std::vector<ClaimedJob> out;
  for (const auto& q : streams_of(consumer)) {
    // XREADGROUP with id 0 returns this consumer's own pending entries without
    // claiming anything new or touching attempts.
    std::string after = "0";
    while (true) {
      auto args_4 = make_args("XREADGROUP", "GROUP", options_.group, consumer, "COUNT", 100,
                              "STREAMS", stream_key(q), after);
      Reply r = co_await client_->command(std::move(args_4));
      if (r.is_nil() || r.as_array().empty()) break;
      const auto& entries = r.as_array().at(0).as_array().at(1).as_array();
      if (entries.empty()) break;
      for (const Reply& entry : entries) {
        const auto& parts = entry.as_array();
        after = parts.at(0).as_string();
        std::string job_id;
        if (parts.size() > 1 && parts[1].is_array()) {
          const auto& fields = parts[1].elements;
          for (std::size_t i = 0; i + 1 < fields.size(); i += 2) {
            if (fields[i].str != "job") continue;
            auto j = parse_bounded(fields[i + 1].str, entry_limits()).value_or(nullptr);
            if (j.is_object() && j.contains("id") && j["id"].is_string()) {
              job_id = j["id"].get<std::string>();
            } else if (j.is_object()) {
              // As process_entries names id-less jobs.
              job_id = "s-" + q.substr(0, q.find('@')) + "-" + after;
            }
          }
        }
        if (job_id.empty()) continue;
        auto rec = co_await get(job_id);
        if (!rec || (is_terminal(rec->state) && rec->state != JobState::cancelled)) continue;
        ClaimedJob job;
        job.lease = LeaseHandle{job_id, q, after, consumer, rec->attempts};
        job.record = std::move(*rec);
        out.push_back(std::move(job));
      }
    }
  }
  co_return out;
}

awaitable<std::vector<ClaimedJob>> RedisQueue::reclaim_expired(std::string consumer,
                                                               std::size_t max_jobs) {
  co_await ensure_groups();
  std::vector<ClaimedJob> out;
  // The shared streams, this process's hosts' own streams, and the streams
  // of hosts that are no longer live (a lost host's jobs are taken over like
  // any other). A live host's router reclaims its own stream: scanning every
  // host's stream from every router cost Redis O(routers^2) (bench/fleet).
  std::vector<std::string> to_scan = options_.queues;
  auto members = make_args("SMEMBERS", options_.key_prefix + "hoststreams");
  Reply listed = co_await client_->command(std::move(members));
  std::vector<std::pair<std::string, std::string>> others;  // stream, host
  for (const auto& m : listed.as_array()) {
    const std::string& name = m.as_string();
    const auto at = name.find('@');
    if (at == std::string::npos) continue;
    const std::string queue = name.substr(0, at);
    const std::string host = name.substr(at + 1);
    if (std::find(options_.queues.begin(), options_.queues.end(), queue) == options_.queues.end()) {
      continue;
    }
    const bool own = std::any_of(host_of_.begin(), host_of_.end(), [&](const auto& consumer_host) {
      return consumer_host.second == host;
    });
    if (own) {
      to_scan.push_back(name);
    } else {
      others.emplace_back(name, host);
    }
  }
  if (!others.empty()) {
    std::vector<std::string> mget{"MGET"};
    for (const auto& [stream, host] : others) mget.push_back(host_live_key(host));
    Reply live = co_await client_->command(std::move(mget));
    const auto& flags = live.as_array();
    for (std::size_t i = 0; i < others.size() && i < flags.size(); ++i) {
      if (flags[i].is_nil()) to_scan.push_back(others[i].first);
    }
  }
  const std::size_t want = std::max<std::size_t>(max_jobs, 1);
  for (const auto& q : to_scan) {
    std::string& cursor = reclaim_cursor_[q];
    if (cursor.empty()) cursor = "0-0";
    // XAUTOCLAIM ... COUNT n looks at no more than 10 n pending entries: one
    // call from a router with a free slot or two would cross a fleet's long
    // pending list ten entries a round. The scan goes on, a bounded number of
    // calls a round, until it has what it wants or the cursor wraps.
    const std::string key = stream_key(q);
    std::size_t taken = 0;
    for (int call = 0; call < kReclaimScanCalls && taken < want; ++call) {
      Reply r;
      auto autoclaim = client_->command(make_args("XAUTOCLAIM", key, options_.group, consumer,
                                                  options_.lease_timeout.count(), cursor, "COUNT",
                                                  want - taken));
      try {
        r = co_await std::move(autoclaim);
      } catch (const redis::ReplyError& e) {
        if (std::string_view(e.what()).find("NOGROUP") == std::string_view::npos) throw;
        groups_ready_ = false;
        break;
      }
      const auto& parts = r.as_array();
      // Continue the PEL scan where it stopped; "0-0" means it wrapped around.
      cursor = parts.at(0).as_string();
      taken += parts.at(1).as_array().size();
      const Reply streams = as_read_reply(key, parts.at(1));
      auto jobs = co_await process_entries(consumer, streams, true, 0);
      for (auto& j : jobs) out.push_back(std::move(j));
      if (cursor == "0-0") break;
    }
  }
  co_return out;
}

awaitable<JobState> RedisQueue::mark_running(const LeaseHandle& lease, RunInfo info) {
  std::string build_ms;  // '' when the job has no snapshot key: nothing kept
  if (info.snapshot_seen) build_ms = std::to_string(info.snapshot_build_ms);
  auto args_5 = make_args(lease.job_id, lease.entry_id, lease.consumer, info.image,
                          info.from_snapshot ? "1" : "0", info.snapshot_fallback ? "1" : "0",
                          info.container_id, info.router_id, info.host_id,
                          info.snapshot_seen.value_or(""), build_ms);
  Reply r = co_await run_script(script(scripts::kMarkRunning), std::move(args_5));
  expect_ok(r, lease, "mark_running");
  const std::string& state = r.as_array().at(1).as_string();
  auto parsed = parse_state(state);
  if (!parsed)
    throw redis::ProtocolError("EVALSHA", "mark_running answered state \"" + state + "\"");
  co_return *parsed;
}

awaitable<FinishOutcome> RedisQueue::finish(const LeaseHandle& lease, JobResult result) {
  if (!is_terminal(result.state)) {
    throw std::invalid_argument("finish() needs a terminal state, got " +
                                std::string(to_string(result.state)));
  }
  // No ?: with class-type operands in coroutines: g++ 12 miscompiles them
  // (the temporary's storage is freed twice).
  std::string exit_code;
  if (result.exit_code) exit_code = std::to_string(*result.exit_code);
  auto args_6 = make_args(lease.job_id, lease.entry_id, lease.consumer, lease.queue,
                          std::string(to_string(result.state)), exit_code, result.error,
                          result.snapshot_error,
                          keep_tail(std::move(result.log_tail), options_.log_tail_max_bytes));
  Reply r = co_await finish_batcher_.run(std::move(args_6));
  expect_ok(r, lease, "finish");
  // {'ok', state, finished_at, exit_code, error}
  const auto& parts = r.as_array();
  FinishOutcome out;
  out.job_id = lease.job_id;
  out.state = parse_state(parts.at(1).as_string()).value_or(result.state);
  out.finished_at = to_int(parts.at(2).as_string()).value_or(0);
  if (auto code = to_int(parts.at(3).as_string())) out.exit_code = static_cast<int>(*code);
  out.error = parts.at(4).as_string();
  co_return out;
}

awaitable<JobRecord> RedisQueue::fail_attempt(const LeaseHandle& lease, std::string reason,
                                              bool retryable) {
  Duration delay = backoff_.delay(std::max(lease.attempt, 1));
  auto args_7 = make_args(lease.job_id, lease.entry_id, lease.consumer, lease.queue, reason,
                          retryable ? "1" : "0", delay.count());
  Reply r = co_await run_script(script(scripts::kFailAttempt), std::move(args_7));
  promote_at_ = {};  // a retry may be scheduled: the next claim promotes it when due
  co_return expect_record(r, lease, "fail_attempt");
}

awaitable<void> RedisQueue::hand_back(const LeaseHandle& lease, std::string reason,
                                      Duration delay) {
  auto args = make_args(lease.job_id, lease.entry_id, lease.consumer, lease.queue, reason,
                        static_cast<std::int64_t>(delay.count()));
  Reply r = co_await run_script(script(scripts::kHandBack), std::move(args));
  promote_at_ = {};  // scheduled again: the next claim promotes it when due
  expect_ok(r, lease, "hand_back");
}

awaitable<std::size_t> RedisQueue::promote_due() {
  auto args_8 = make_args(1000, options_.affinity_wait.count());
  Reply r = co_await run_script(script(scripts::kPromote), std::move(args_8));
  co_return static_cast<std::size_t>(r.as_array().at(0).as_integer());
}

awaitable<CancelResult> RedisQueue::cancel(std::string job_id) {
  auto args_9 = make_args(job_id);
  Reply r = co_await run_script(script(scripts::kCancel), std::move(args_9));
  const auto& parts = r.as_array();
  const std::string& outcome = parts.at(0).as_string();
  CancelResult out;
  if (parts.size() > 1) out.previous_state = parse_state(parts[1].as_string());
  if (outcome == "cancelled")
    out.outcome = CancelOutcome::cancelled;
  else if (outcome == "router_notified")
    out.outcome = CancelOutcome::router_notified;
  else if (outcome == "already_finished")
    out.outcome = CancelOutcome::already_finished;
  else
    out.outcome = CancelOutcome::not_found;
  co_return out;
}

awaitable<std::optional<JobRecord>> RedisQueue::get(std::string job_id) {
  auto args_10 = make_args("HGETALL", job_key(job_id));
  Reply r = co_await client_->command(std::move(args_10));
  if (r.as_array().empty()) co_return std::nullopt;
  co_return record_from_hash(r);
}

awaitable<std::vector<JobRecord>> RedisQueue::list(JobState state, std::size_t limit) {
  std::vector<JobRecord> out;
  if (limit == 0) co_return out;
  auto args_11 = make_args(std::string(to_string(state)), limit);
  Reply r = co_await run_script(script(scripts::kList), std::move(args_11));
  for (const Reply& h : r.as_array()) out.push_back(record_from_hash(h));
  co_return out;
}

awaitable<QueueCounts> RedisQueue::counts() {
  std::vector<std::string> states;
  for (JobState s : kAllStates) states.emplace_back(to_string(s));
  Reply r = co_await run_script(script(scripts::kCounts), std::move(states));
  const auto& parts = r.as_array();
  QueueCounts out;
  for (std::size_t i = 0; i < kAllStates.size(); ++i) {
    out.by_state[kAllStates[i]] = parts.at(i).as_integer();
  }
  const auto& depth = parts.at(kAllStates.size()).as_array();
  for (std::size_t i = 0; i + 1 < depth.size(); i += 2) {
    out.depth[depth[i].as_string()] = depth[i + 1].as_integer();
  }
  out.scheduled_due = parts.at(kAllStates.size() + 1).as_integer();
  co_return out;
}

awaitable<std::vector<JobRecord>> RedisQueue::dead_letters(std::size_t limit) {
  return list(JobState::failed, limit);
}

awaitable<void> RedisQueue::set_log_tail(std::string job_id, std::string tail) {
  auto args_12 = make_args(job_id, keep_tail(std::move(tail), options_.log_tail_max_bytes));
  co_await run_script(script(scripts::kSetLogTail), std::move(args_12));
}

awaitable<std::string> RedisQueue::append_event(nlohmann::json event) {
  if (!event.is_object()) throw std::invalid_argument("an event must be a JSON object");
  event.erase("id");  // the stream assigns it
  event["ts"] = rfc3339_now();
  auto args_13 =
      make_args("XADD", events_key(), "MAXLEN", "~", options_.events_max, "*", "e", event.dump());
  Reply r = co_await client_->command(std::move(args_13));
  co_return r.as_string();
}

awaitable<std::vector<QueueEvent>> RedisQueue::read_events(std::string after_id,
                                                           std::size_t count) {
  std::string start = "-";
  if (!after_id.empty() && after_id != "0") start = "(" + after_id;
  auto args_14 =
      make_args("XRANGE", events_key(), start, "+", "COUNT", std::max<std::size_t>(count, 1));
  Reply r = co_await client_->command(std::move(args_14));
  std::vector<QueueEvent> out;
  for (const Reply& entry : r.as_array()) {
    const auto& parts = entry.as_array();
    QueueEvent ev;
    ev.id = parts.at(0).as_string();
    const auto& fields = parts.at(1).as_array();
    for (std::size_t i = 0; i + 1 < fields.size(); i += 2) {
      if (fields[i].str == "e")
        ev.body = parse_bounded(fields[i + 1].str, JsonLimits{}).value_or(nullptr);
    }
    if (!ev.body.is_object()) ev.body = nlohmann::json::object();
    ev.body["id"] = ev.id;
    out.push_back(std::move(ev));
  }
  co_return out;
}

std::unique_ptr<CancelSubscription> RedisQueue::subscribe_cancellations(CancelHandler handler) {
  redis::ClientOptions o = options_.redis;
  o.client_name += "-cancel";
  auto sub = redis::Subscriber::create(
      executor_, o, {cancel_channel()},
      [handler = std::move(handler)](const std::string&, const std::string& message) {
        auto j = parse_bounded(message, JsonLimits{64 * 1024, 4}).value_or(nullptr);
        if (!j.is_object() || !j.contains("job") || !j["job"].is_string()) {
          log::warn("malformed cancel message ignored", {{"message", message.substr(0, 200)}});
          return;
        }
        std::string router = j.value("router", nlohmann::json()).is_string()
                                 ? j["router"].get<std::string>()
                                 : std::string();
        handler(j["job"].get<std::string>(), router);
      });
  return std::make_unique<RedisCancelSubscription>(std::move(sub));
}

}  // namespace warmstart::queue
