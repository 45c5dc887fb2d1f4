// Validation of untrusted job JSON (API, CLI, raw stream entries): the schema of
// DESIGN.md plus the security rules (no privileged, binds, host network or
// added capabilities). Pure: no I/O. The image allowlist is the router's policy.
#pragma once
#include "queue/job.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace warmstart::queue {

// Operator ceilings (the router's [limits]): what one job may ask for at most.
// A job over one is rejected naming the limit; a job that asks for nothing (or
// for exactly the schema's default) gets min(default, ceiling).
struct JobLimits {
  std::int64_t memory_mb = 8192;       // resources.memory_mb
  double cpus = 4.0;                   // resources.cpus
  std::int64_t pids = 1024;            // resources.pids
  std::int64_t timeout_s = 24 * 3600;  // timeout_s
  bool operator==(const JobLimits&) const = default;
};

struct ValidationOptions {
  std::size_t max_payload_bytes = 256 * 1024;  // size of the job JSON text
  std::size_t max_depth = 64;                  // nesting of the job JSON (arrays, objects)
  bool generate_id = true;                     // give an id-less job a unique one
  std::optional<JobLimits> limits;             // none: only the absolute ranges apply
};

struct Validated {
  std::optional<JobSpec> spec;  // set when valid
  std::string reason;           // one line, set when invalid
  std::string id;               // the job's id when it could be read (also when invalid)
  bool ok() const { return spec.has_value(); }
};

Validated validate_job_text(std::string_view json_text, const ValidationOptions& options = {});
Validated validate_job(const nlohmann::json& job, const ValidationOptions& options = {});

// The ceilings as one line for messages and logs: "memory_mb<=8192 cpus<=4 ...".
std::string describe(const JobLimits& limits);
// {"memory_mb":..,"cpus":..,"pids":..,"timeout_s":..}: how a router publishes
// its ceilings in Redis for the CLI. from_json: nullopt unless well-formed.
nlohmann::json limits_to_json(const JobLimits& limits);
std::optional<JobLimits> limits_from_json(const nlohmann::json& j);

// [A-Za-z0-9._:-]{1,128}: job ids and queue names.
bool is_valid_job_id(std::string_view id);
// A new globally unique id: "j-<unix ms>-<16 hex random>".
std::string generate_job_id();

}  // namespace warmstart::queue
