#include "common/log.hpp"

#include "common/time.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <stdexcept>
#include <string>

namespace warmstart::log {
namespace {

std::shared_ptr<spdlog::logger>& logger() {
  static std::shared_ptr<spdlog::logger> instance = [] {
    auto l = spdlog::stderr_logger_mt("warmstart");
    l->set_pattern("%v");
    l->set_level(spdlog::level::info);
    l->flush_on(spdlog::level::debug);
    return l;
  }();
  return instance;
}

spdlog::level::level_enum to_spdlog(Level level) {
  switch (level) {
    case Level::debug:
      return spdlog::level::debug;
    case Level::info:
      return spdlog::level::info;
    case Level::warn:
      return spdlog::level::warn;
    case Level::error:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

const char* name(Level level) {
  switch (level) {
    case Level::debug:
      return "debug";
    case Level::info:
      return "info";
    case Level::warn:
      return "warn";
    case Level::error:
      return "error";
  }
  return "info";
}

}  // namespace

void init(Level min_level) {
  logger()->set_level(to_spdlog(min_level));
}

Level parse_level(std::string_view level) {
  if (level == "debug") return Level::debug;
  if (level == "info") return Level::info;
  if (level == "warn") return Level::warn;
  if (level == "error") return Level::error;
  throw std::invalid_argument("unknown log level: " + std::string(level));
}

std::string format(Level level, std::string_view msg, const nlohmann::json& fields) {
  // Written straight into a string: building a DOM of the line copied every
  // field first (a log line or two per job).
  const bool object = fields.is_object();
  auto dump = [](const nlohmann::json& v) {
    return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  auto own = [&](const char* key) { return !object || !fields.contains(key); };
  std::string line = "{";
  if (own("ts")) line.append("\"ts\":\"").append(rfc3339_now()).append("\",");
  if (own("level")) line.append("\"level\":\"").append(name(level)).append("\",");
  if (own("msg")) line.append("\"msg\":").append(dump(nlohmann::json(msg))).append(",");
  if (object) {
    for (const auto& [k, v] : fields.items()) {
      line.append(dump(nlohmann::json(k))).append(":").append(dump(v)).append(",");
    }
  }
  line.back() = '}';
  return line;
}

void write(Level level, std::string_view msg, const nlohmann::json& fields) {
  auto& l = logger();
  if (!l->should_log(to_spdlog(level))) return;
  l->log(to_spdlog(level), "{}", format(level, msg, fields));
}

}  // namespace warmstart::log
