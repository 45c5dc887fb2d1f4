// The job as users submit it (JobSpec), its lifecycle state (JobState) and the
// record the queue keeps (JobRecord). The JSON forms are the public contract of
// DESIGN.md ("Job", "status --json").
#pragma once
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace warmstart::queue {

enum class JobState { queued, scheduled, running, succeeded, failed, timed_out, cancelled };

inline constexpr std::array<JobState, 7> kAllStates = {
    JobState::queued, JobState::scheduled, JobState::running,  JobState::succeeded,
    JobState::failed, JobState::timed_out, JobState::cancelled};

std::string_view to_string(JobState state);
std::optional<JobState> parse_state(std::string_view text);
// succeeded, failed, timed_out, cancelled: nothing moves a job out of these.
bool is_terminal(JobState state);

struct SnapshotSpec {
  std::string key;     // e.g. "repo-42/branch-main"
  bool reuse = true;   // start from the cached snapshot image when there is one
  bool commit = true;  // commit the container after a success
  // A prewarm (docs/snapshots.md): a builder job whose product is the
  // snapshot, so a failed commit fails it. Needs commit.
  bool prewarm = false;
  bool operator==(const SnapshotSpec&) const = default;
};

struct ResourceSpec {
  std::int64_t memory_mb = 1024;  // container memory limit
  double cpus = 1.0;              // CPU quota in cores
  std::int64_t pids = 512;        // pids limit
  bool operator==(const ResourceSpec&) const = default;
};

struct JobSpec {
  std::string id;                             // idempotency key; generated when absent
  std::string queue = "default";              // stream the job is queued on
  std::string image;                          // empty: the router's base image
  std::vector<std::string> cmd;               // argv, never empty
  std::map<std::string, std::string> env;     // worker environment (secrets: never logged)
  std::optional<SnapshotSpec> snapshot;       // none: a cold run, nothing committed
  std::int64_t timeout_s = 0;                 // wall-clock limit of one attempt; 0: the router's
                                              // default_timeout
  int max_attempts = 1;                       // 1..100; retries = max_attempts - 1
  std::string concurrency_key;                // empty: no mutual exclusion
  ResourceSpec resources;                     // container limits
  std::map<std::string, std::string> labels;  // user labels (not warmstart.*)

  bool operator==(const JobSpec&) const = default;

  // DESIGN.md's job JSON; empty optionals are left out.
  nlohmann::json to_json() const;
  // Strict: runs validate_job() and throws std::invalid_argument with its reason.
  static JobSpec from_json(const nlohmann::json& j);
  // SHA-256 (hex) of everything but the id: the same id with another
  // fingerprint is a different job (enqueue answers a conflict).
  std::string fingerprint() const;
};

// The last `max_bytes` of a job's output, never starting inside a UTF-8
// sequence: what both queue adapters store as the log tail.
std::string keep_tail(std::string text, std::size_t max_bytes);

struct JobRecord {
  std::string id;
  JobState state = JobState::queued;
  int attempts = 0;                         // attempts started so far
  std::int64_t created_at = 0;              // Unix ms
  std::optional<std::int64_t> started_at;   // Unix ms of the current/last attempt
  std::optional<std::int64_t> finished_at;  // Unix ms; set in terminal states
  std::optional<int> exit_code;
  std::string error;               // empty: null
  std::string image;               // image the container was created from
  bool from_snapshot = false;      // the container started from a snapshot image
  bool snapshot_fallback = false;  // the snapshot had vanished: ran on the base image
  std::string container_id;
  std::string router_id;
  JobSpec spec;
  std::string log_tail;
  std::optional<std::int64_t> due_at;  // scheduled: when the retry becomes due (Unix ms)
  std::string snapshot_error;          // the commit after this job's success failed: why
  std::string waiting_for_key;         // queued behind its busy concurrency_key
  std::string waiting_for_snapshot;    // scheduled: waits for this key's builder (single-flight)
  std::string host;                    // host identity of the router that ran it (last attempt)
  std::string affinity_host;           // routed at enqueue to the host holding its snapshot
  // Kept for a router that re-attaches the run (RunInfo::snapshot_seen); not
  // in to_json().
  std::string snapshot_seen;           // the registered image its lookup saw ("" none)
  std::int64_t snapshot_build_ms = 0;  // build time of the snapshot it started from

  // "hit" (ran on its affinity host), "miss" (ran elsewhere), "" (no affinity, or not started).
  std::string affinity() const;

  bool operator==(const JobRecord&) const = default;

  // Exactly DESIGN.md's top-level fields (timestamps RFC 3339 or null) plus
  // "spec" and "log_tail", and the fleet's "host", "affinity_host", "affinity".
  nlohmann::json to_json() const;
  // Throws std::invalid_argument or a json error when `j` is not a record.
  static JobRecord from_json(const nlohmann::json& j);
  // The job hash in Redis (HGETALL's fields; docs/queue.md). Never throws: the
  // hash may have been written by anything, so unreadable fields stay default
  // and an unreadable spec is logged.
  static JobRecord from_hash(const std::unordered_map<std::string_view, std::string_view>& fields);
};

}  // namespace warmstart::queue
