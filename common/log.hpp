// JSON-lines logging: one object per line with ts, level, msg and context
// fields (job, container, ...). Never pass secrets (job env values) as fields.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

namespace warmstart::log {

enum class Level { debug, info, warn, error };

// Sets the minimum level and where lines go (stderr by default).
void init(Level min_level = Level::info);
Level parse_level(std::string_view name);  // "debug" | "info" | "warn" | "error"

void write(Level level, std::string_view msg, const nlohmann::json& fields = {});
// The line write() logs: {"ts":..., "level":..., "msg":..., fields...}; a field
// named ts, level or msg replaces that key; invalid UTF-8 becomes U+FFFD.
std::string format(Level level, std::string_view msg, const nlohmann::json& fields);

inline void debug(std::string_view msg, const nlohmann::json& fields = {}) {
  write(Level::debug, msg, fields);
}
inline void info(std::string_view msg, const nlohmann::json& fields = {}) {
  write(Level::info, msg, fields);
}
inline void warn(std::string_view msg, const nlohmann::json& fields = {}) {
  write(Level::warn, msg, fields);
}
inline void error(std::string_view msg, const nlohmann::json& fields = {}) {
  write(Level::error, msg, fields);
}

}  // namespace warmstart::log
