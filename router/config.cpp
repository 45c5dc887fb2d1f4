#include "router/config.hpp"

#include "common/time.hpp"

#include <toml++/toml.h>

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <stdexcept>
#include <string_view>

namespace warmstart::router {
namespace {

[[noreturn]] void bad(const std::string& where, const std::string& why) {
  throw std::invalid_argument(where + ": " + why);
}

Duration duration_value(const toml::node& node, const std::string& where) {
  if (auto s = node.value<std::string>()) {
    auto d = parse_duration(*s);
    if (!d) bad(where, "not a duration: \"" + *s + "\" (use e.g. 30s, 10m, 1h)");
    return *d;
  }
  if (auto n = node.value<std::int64_t>()) return std::chrono::seconds(*n);
  bad(where, "expected a duration string or a number of seconds");
}

std::int64_t bytes_value(const toml::node& node, const std::string& where) {
  if (auto n = node.value<std::int64_t>()) return *n;
  if (auto s = node.value<std::string>()) {
    if (s->empty()) bad(where, "empty size");
    std::int64_t factor = 1;
    std::string digits = *s;
    switch (std::tolower(static_cast<unsigned char>(digits.back()))) {
      case 'k':
        factor = 1LL << 10;
        break;
      case 'm':
        factor = 1LL << 20;
        break;
      case 'g':
        factor = 1LL << 30;
        break;
      case 't':
        factor = 1LL << 40;
        break;
      default:
        break;
    }
    if (factor != 1) digits.pop_back();
    try {
      std::size_t used = 0;
      auto n = std::stoll(digits, &used);
      if (used != digits.size() || n < 0 || n > INT64_MAX / factor) {
        throw std::invalid_argument(digits);
      }
      return n * factor;
    } catch (const std::exception&) {
      bad(where, "not a size: \"" + *s + "\" (use e.g. 512m, 20g)");
    }
  }
  bad(where, "expected a size");
}

template <typename T>
void read(const toml::table& t, const char* key, const std::string& section, T& out) {
  const toml::node* node = t.get(key);
  if (node == nullptr) return;
  const std::string where = section + "." + key;
  if constexpr (std::is_same_v<T, Duration>) {
    out = duration_value(*node, where);
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    const auto* arr = node->as_array();
    if (arr == nullptr) bad(where, "expected an array of strings");
    out.clear();
    for (const auto& el : *arr) {
      auto s = el.value<std::string>();
      if (!s) bad(where, "expected an array of strings");
      out.push_back(*s);
    }
  } else if constexpr (std::is_same_v<T, std::string>) {
    auto s = node->value<std::string>();
    if (!s) bad(where, "expected a string");
    out = *s;
  } else {
    auto n = node->value<std::int64_t>();
    if (!n) bad(where, "expected an integer");
    out = static_cast<T>(*n);
  }
}

// toml++ bounds nested arrays and inline tables (TOML_MAX_NESTED_VALUES) but
// not dotted keys: "a.b.b.b... = 1" with 100k parts overflows its recursive
// table destructor. Counts the dots outside strings and comments: dotted keys
// and table headers (and floats); a real config has a few dozen.
std::size_t toml_bare_dots(std::string_view text) {
  std::size_t dots = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    const std::string_view rest = text.substr(i);
    if (rest.starts_with("\"\"\"") || rest.starts_with("'''")) {
      const std::size_t end = text.find(rest.substr(0, 3), i + 3);
      if (end == std::string_view::npos) break;
      i = end + 3;
    } else if (c == '"') {
      ++i;
      while (i < text.size() && text[i] != '"' && text[i] != '\n') i += text[i] == '\\' ? 2 : 1;
      ++i;
    } else if (c == '\'') {
      const std::size_t end = text.find_first_of("'\n", i + 1);
      if (end == std::string_view::npos) break;
      i = end + 1;
    } else if (c == '#') {
      const std::size_t end = text.find('\n', i);
      if (end == std::string_view::npos) break;
      i = end + 1;
    } else {
      if (c == '.') ++dots;
      ++i;
    }
  }
  return dots;
}

void load_limits(const toml::table& t, const std::string& s, RouterConfig& c) {
  static const std::vector<std::string> known = {
      "memory", "cpus", "pids", "timeout", "log_tail", "log_max_size", "log_max_files", "nofile"};
  for (const auto& [key, value] : t) {
    if (std::find(known.begin(), known.end(), key.str()) == known.end()) {
      bad(s + "." + std::string(key.str()), "unknown key");
    }
  }
  if (const auto* n = t.get("memory")) {
    c.job_limits.memory_mb = bytes_value(*n, s + ".memory") / (1 << 20);
  }
  if (const auto* n = t.get("cpus")) {
    auto cpus = n->value<double>();
    if (!cpus) bad(s + ".cpus", "expected a number");
    c.job_limits.cpus = *cpus;
  }
  read(t, "pids", s, c.job_limits.pids);
  if (const auto* n = t.get("timeout")) {
    c.job_limits.timeout_s =
        std::chrono::duration_cast<std::chrono::seconds>(duration_value(*n, s + ".timeout"))
            .count();
  }
  if (const auto* n = t.get("log_tail")) {
    c.log_tail_bytes = static_cast<std::size_t>(bytes_value(*n, s + ".log_tail"));
  }
  read(t, "log_max_size", s, c.container_caps.log_max_size);
  read(t, "log_max_files", s, c.container_caps.log_max_files);
  read(t, "nofile", s, c.container_caps.nofile);
}

}  // namespace

namespace {

// One [section] of the file: reads the keys it knows and refuses the others,
// so a typo or a removed key is an error, never a silently ignored setting.
class Section {
 public:
  Section(const toml::table& table, std::string where) : table_(table), where_(std::move(where)) {}
  template <typename T>
  void read(const char* key, T& out) {
    known_.insert(key);
    router::read(table_, key, where_, out);
  }
  void bytes(const char* key, std::int64_t& out) {
    known_.insert(key);
    if (const auto* n = table_.get(key)) out = bytes_value(*n, where_ + "." + key);
  }
  void flag(const char* key, bool& out) {
    known_.insert(key);
    if (const auto* n = table_.get(key)) {
      auto v = n->value<bool>();
      if (!v) bad(where_ + "." + key, "expected true or false");
      out = *v;
    }
  }
  // Keys read some other way.
  void allow(const char* key) { known_.insert(key); }
  void reject_unknown(const std::map<std::string, std::string>& removed = {}) const {
    for (const auto& [key, value] : table_) {
      const std::string name(key.str());
      if (known_.count(name) != 0) continue;
      auto why = removed.find(name);
      bad(where_ + "." + name,
          why != removed.end() ? "no longer supported: " + why->second : "unknown key");
    }
  }

 private:
  const toml::table& table_;
  std::string where_;
  std::set<std::string> known_;
};

}  // namespace

namespace {

// The file as TOML, refused before toml++ sees it when it could hurt: toml++
// bounds nesting itself (TOML_MAX_NESTED_VALUES, 256); the size and the
// dotted-key depth are ours.
toml::table parse_config_file(const std::string& path) {
  constexpr std::uintmax_t max_config_bytes = 1 << 20;
  std::error_code size_error;
  const auto size = std::filesystem::file_size(path, size_error);
  if (!size_error && size > max_config_bytes) {
    bad(path, "is " + std::to_string(size) + " bytes; a config file is at most 1 MiB");
  }
  constexpr std::size_t max_bare_dots = 4096;
  {
    std::ifstream in(path, std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (toml_bare_dots(text) > max_bare_dots) {
      bad(path, "has more than " + std::to_string(max_bare_dots) +
                    " dots outside strings (dotted keys nested too deep)");
    }
  }
  try {
    return toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    std::string msg = std::string(e.description());
    bad(path, msg + " (line " + std::to_string(e.source().begin.line) + ")");
  }
}

void load_router_section(const toml::table& r, const std::string& where, RouterConfig& c) {
  Section s(r, where);
  s.read("redis_url", c.redis_url);
  s.read("docker_host", c.docker_host);
  s.read("id", c.router_id);
  s.read("host_id", c.host_id);
  s.read("queues", c.queues);
  s.read("base_image", c.base_image);
  s.read("image_allowlist", c.image_allowlist);
  s.read("concurrency", c.concurrency);
  s.read("concurrency_key_limit", c.concurrency_key_limit);
  s.read("network_mode", c.network_mode);
  s.read("listen", c.listen);
  s.read("key_prefix", c.key_prefix);
  s.read("state_dir", c.state_dir);
  s.read("lease_timeout", c.lease_timeout);
  s.read("affinity_wait", c.affinity_wait);
  s.read("stop_grace", c.stop_grace);
  s.read("default_timeout", c.default_timeout);
  s.read("drain_deadline", c.drain_deadline);
  s.read("reconcile_interval", c.reconcile_interval);
  s.read("orphan_grace", c.orphan_grace);
  s.read("docker_timeout", c.docker_timeout);
  s.read("start_concurrency", c.start_concurrency);
  s.read("log_tail_bytes", c.log_tail_bytes);
  s.read("log_level", c.log_level);
  s.reject_unknown();
}

void load_snapshots_section(const toml::table& t, const std::string& where, RouterConfig& c) {
  Section s(t, where);
  s.read("ttl", c.snapshot_ttl);
  s.read("max_count", c.snapshot_max_count);
  s.bytes("max_bytes", c.snapshot_max_bytes);
  s.read("gc_interval", c.snapshot_gc_interval);
  s.read("coalesce_wait", c.snapshot_coalesce_wait);
  s.read("work_dir", c.snapshot_work_dir);
  if (t.get("exclude") != nullptr) {
    std::vector<std::string> exclude;
    s.read("exclude", exclude);
    c.snapshot_exclude = std::move(exclude);
  }
  s.allow("exclude");
  s.flag("strip_git_credentials", c.snapshot_strip_git_credentials);
  s.reject_unknown({{"max_depth",
                     "every snapshot is flattened to one layer, so its depth never grows "
                     "(docs/snapshots.md)"}});
}

void load_redis_section(const toml::table& t, const std::string& where, RouterConfig& c) {
  Section s(t, where);
  s.read("replicas_ack", c.redis_replicas_ack);
  s.read("replicas_timeout", c.redis_replicas_timeout);
  s.reject_unknown();
  if (c.redis_replicas_ack < 0 || c.redis_replicas_ack > 64) {
    bad(where + ".replicas_ack", "must be 0..64");
  }
  if (c.redis_replicas_timeout <= Duration::zero()) {
    bad(where + ".replicas_timeout", "must be positive");
  }
}

}  // namespace

void load_config_file(const std::string& path, RouterConfig& c) {
  const toml::table root = parse_config_file(path);
  if (const auto* r = root["router"].as_table()) load_router_section(*r, path + ": router", c);
  if (const auto* t = root["limits"].as_table()) load_limits(*t, path + ": limits", c);
  if (const auto* t = root["redis"].as_table()) load_redis_section(*t, path + ": redis", c);
  if (const auto* t = root["snapshots"].as_table()) {
    load_snapshots_section(*t, path + ": snapshots", c);
  }
}

void apply_environment(RouterConfig& c) {
  if (const char* v = std::getenv("WARMSTART_REDIS_URL"); v && *v) c.redis_url = v;
  if (const char* v = std::getenv("WARMSTART_DOCKER_HOST"); v && *v) c.docker_host = v;
  if (const char* v = std::getenv("WARMSTART_ROUTER_ID"); v && *v) c.router_id = v;
  if (const char* v = std::getenv("WARMSTART_HOST_ID"); v && *v) c.host_id = v;
  if (const char* v = std::getenv("WARMSTART_LOG_LEVEL"); v && *v) c.log_level = v;
  if (const char* v = std::getenv("WARMSTART_STATE_DIR"); v && *v) c.state_dir = v;
  apply_replicas_ack_environment(c);
}

void apply_replicas_ack_environment(RouterConfig& c) {
  const char* v = std::getenv("WARMSTART_REDIS_REPLICAS_ACK");
  if (v == nullptr || *v == '\0') return;
  int n = -1;
  const std::string_view text(v);
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size() || n < 0 || n > 64) {
    bad("WARMSTART_REDIS_REPLICAS_ACK",
        "must be an integer in 0..64, got \"" + std::string(text) + "\"");
  }
  c.redis_replicas_ack = n;
}

Duration heartbeat_period(const RouterConfig& c) {
  return std::clamp<Duration>(c.lease_timeout / 3, 100ms, 5s);
}

Duration fleet_keep(const RouterConfig& c) {
  return std::max<Duration>(c.lease_timeout * 10, 5min);
}

std::string default_state_dir() {
  if (::geteuid() == 0) return "/var/lib/warmstart";
  if (const char* v = std::getenv("XDG_STATE_HOME"); v != nullptr && v[0] == '/') {
    return std::string(v) + "/warmstart";
  }
  if (const char* v = std::getenv("HOME"); v != nullptr && v[0] == '/') {
    return std::string(v) + "/.local/state/warmstart";
  }
  bad("state_dir", "no default (not root, no XDG_STATE_HOME or HOME): set [router] state_dir");
}

void validate(const RouterConfig& c) {
  if (c.concurrency < 1 || c.concurrency > 10000) bad("concurrency", "must be 1..10000");
  if (c.concurrency_key_limit < 1) bad("concurrency_key_limit", "must be at least 1");
  if (c.start_concurrency < 1 || c.start_concurrency > 10000) {
    bad("start_concurrency", "must be 1..10000");
  }
  if (c.queues.empty()) bad("queues", "at least one queue is needed");
  if (c.base_image.empty()) bad("base_image", "must not be empty");
  if (c.network_mode == "host") bad("network_mode", "\"host\" is never allowed for job containers");
  if (c.lease_timeout < 1s) bad("lease_timeout", "must be at least 1s");
  if (c.default_timeout < 1s) bad("default_timeout", "must be at least 1s");
  if (c.reconcile_interval < 10ms) bad("reconcile_interval", "must be at least 10ms");
  if (c.snapshot_exclude) {
    for (const auto& path : *c.snapshot_exclude) {
      if (path.empty() || path[0] != '/' || path.find_first_not_of('/') == std::string::npos) {
        bad("snapshots.exclude", "\"" + path + "\": expected an absolute path below /");
      }
    }
  }
  if (c.log_tail_bytes > 16 * 1024 * 1024) bad("limits.log_tail", "at most 16 MiB");
  const queue::JobLimits& l = c.job_limits;
  // The absolute ranges of the job schema bound the ceilings too.
  if (l.memory_mb < 6 || l.memory_mb > (1 << 20)) bad("limits.memory", "must be 6m..1t");
  if (!(l.cpus >= 0.01 && l.cpus <= 1024)) bad("limits.cpus", "must be 0.01..1024");
  if (l.pids < 1 || l.pids > 4194304) bad("limits.pids", "must be 1..4194304");
  if (l.timeout_s < 1 || l.timeout_s > 30LL * 24 * 3600) bad("limits.timeout", "must be 1s..30d");
  const ContainerCaps& caps = c.container_caps;
  if (caps.log_max_files < 1 || caps.log_max_files > 100) {
    bad("limits.log_max_files", "must be 1..100");
  }
  if (caps.nofile < 64 || caps.nofile > (1 << 20)) bad("limits.nofile", "must be 64..1048576");
  // Docker's size syntax: digits and one of k, m, g.
  const std::string& size = caps.log_max_size;
  const bool size_ok = size.size() >= 2 &&
                       std::string_view("kmg").find(size.back()) != std::string_view::npos &&
                       size.find_first_not_of("0123456789") == size.size() - 1 && size[0] != '0';
  if (!size_ok) bad("limits.log_max_size", "must be like 10m (digits and k, m or g)");
  for (const char* bad_char : {" ", "/"}) {
    if (c.router_id.find(bad_char) != std::string::npos) {
      bad("router id", "must not contain spaces or '/'");
    }
  }
  if (!c.host_id.empty()) {
    const bool host_id_ok =
        c.host_id.size() <= 128 && c.host_id.find_first_not_of(
                                       "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                       "0123456789._:-") == std::string::npos;
    if (!host_id_ok) bad("host_id", "must be 1..128 of [A-Za-z0-9._:-]");
  }
  docker_socket_path(c.docker_host);
  if (!c.state_dir.empty() && c.state_dir[0] != '/') {
    bad("state_dir", "must be an absolute path, got \"" + c.state_dir + "\"");
  }
}

std::string docker_socket_path(const std::string& docker_host) {
  constexpr std::string_view scheme = "unix://";
  if (docker_host.rfind(scheme, 0) == 0) {
    std::string path = docker_host.substr(scheme.size());
    if (path.empty() || path[0] != '/') bad("docker host", "expected unix:///absolute/path");
    return path;
  }
  if (!docker_host.empty() && docker_host[0] == '/') return docker_host;
  bad("docker host", "\"" + docker_host + "\": only unix:///path is supported");
}

}  // namespace warmstart::router
