// Job spec parse + validate: what POST /v1/jobs, the CLI and raw stream entries
// feed to api/job_body.cpp and queue/validation.cpp. Properties checked beyond
// "no crash": a valid spec survives its own round trip (to_json -> validate ->
// the same spec), and the ceilings hold for every accepted spec.
#include "api/job_body.hpp"
#include "common/json_limits.hpp"
#include "common/time.hpp"
#include "queue/validation.hpp"

#include <cstdlib>
#include <string_view>

using namespace warmstart;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  queue::ValidationOptions plain;
  plain.generate_id = false;
  queue::ValidationOptions capped = plain;
  capped.limits = queue::JobLimits{2048, 2.0, 256, 3600};

  for (const auto* options : {&plain, &capped}) {
    queue::Validated v = queue::validate_job_text(text, *options);
    if (!v.ok()) continue;
    const queue::JobSpec& spec = *v.spec;
    if (options->limits) {
      const auto& l = *options->limits;
      if (spec.resources.memory_mb > l.memory_mb || spec.resources.cpus > l.cpus ||
          spec.resources.pids > l.pids || spec.timeout_s > l.timeout_s) {
        std::abort();  // a ceiling let through
      }
    }
    queue::Validated again = queue::validate_job(spec.to_json(), *options);
    if (!again.ok() || !(*again.spec == spec)) std::abort();  // the round trip must hold
  }

  // The API's shape check on the same document, as the HTTP front parses it.
  if (auto body = parse_bounded(text, JsonLimits{})) {
    (void)api::job_body_problem(*body);
    (void)dump_lossy(*body);
  }
  // CLI-side text: durations.
  if (size < 64) (void)parse_duration(text);
  return 0;
}
