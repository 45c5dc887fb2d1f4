// Validation of untrusted job JSON (API, CLI, raw stream entries): the schema of
// DESIGN.md plus the security rules (no privileged, binds, host network or
// added capabilities). Pure: no I/O. The image allowlist is the router's policy.
#pragma once
#include "queue/job.hpp"

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace warmstart::queue {

struct ValidationOptions {
  std::size_t max_payload_bytes = 256 * 1024;  // size of the job JSON text
  bool generate_id = true;                     // give an id-less job a unique one
};

struct Validated {
  std::optional<JobSpec> spec;  // set when valid
  std::string reason;           // one line, set when invalid
  std::string id;               // the job's id when it could be read (also when invalid)
  bool ok() const { return spec.has_value(); }
};

Validated validate_job_text(std::string_view json_text, const ValidationOptions& options = {});
Validated validate_job(const nlohmann::json& job, const ValidationOptions& options = {});

// [A-Za-z0-9._:-]{1,128}: job ids and queue names.
bool is_valid_job_id(std::string_view id);
// A new globally unique id: "j-<unix ms>-<16 hex random>".
std::string generate_job_id();

}  // namespace warmstart::queue
