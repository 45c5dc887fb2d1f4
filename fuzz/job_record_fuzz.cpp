// Redis reply -> job record: the job hash (HGETALL's field/value pairs, split
// here at NUL bytes) as JobRecord::from_hash reads it, and the record JSON as
// JobRecord::from_json reads it; then the record's own JSON output, which the
// API and `status --json` print and which must never throw.
#include "common/json_limits.hpp"
#include "queue/job.hpp"

#include <string_view>
#include <unordered_map>
#include <vector>

using namespace warmstart;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string_view> parts;
  for (std::size_t pos = 0;;) {
    const std::size_t nul = text.find('\0', pos);
    parts.push_back(text.substr(pos, nul == std::string_view::npos ? nul : nul - pos));
    if (nul == std::string_view::npos) break;
    pos = nul + 1;
  }
  std::unordered_map<std::string_view, std::string_view> fields;
  for (std::size_t i = 0; i + 1 < parts.size(); i += 2) fields.emplace(parts[i], parts[i + 1]);
  queue::JobRecord record = queue::JobRecord::from_hash(fields);
  (void)dump_lossy(record.to_json());

  if (auto j = parse_bounded(text, JsonLimits{})) {
    try {
      queue::JobRecord parsed = queue::JobRecord::from_json(*j);
      (void)dump_lossy(parsed.to_json());
    } catch (const std::invalid_argument&) {
    } catch (const nlohmann::json::exception&) {
    }
  }
  return 0;
}
