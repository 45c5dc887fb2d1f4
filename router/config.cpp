#include "router/config.hpp"

#include "common/time.hpp"

#include <toml++/toml.h>

#include <unistd.h>

#include <cstdlib>
#include <map>
#include <set>
#include <stdexcept>

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
      if (used != digits.size() || n < 0) throw std::invalid_argument(digits);
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

void load_config_file(const std::string& path, RouterConfig& c) {
  toml::table root;
  try {
    root = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    std::string msg = std::string(e.description());
    bad(path, msg + " (line " + std::to_string(e.source().begin.line) + ")");
  }
  if (const auto* r = root["router"].as_table()) {
    Section s(*r, path + ": router");
    s.read("redis_url", c.redis_url);
    s.read("docker_host", c.docker_host);
    s.read("id", c.router_id);
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
    s.read("stop_grace", c.stop_grace);
    s.read("default_timeout", c.default_timeout);
    s.read("drain_deadline", c.drain_deadline);
    s.read("reconcile_interval", c.reconcile_interval);
    s.read("orphan_grace", c.orphan_grace);
    s.read("docker_timeout", c.docker_timeout);
    s.read("log_tail_bytes", c.log_tail_bytes);
    s.read("log_level", c.log_level);
    s.reject_unknown();
  }
  if (const auto* t = root["snapshots"].as_table()) {
    Section s(*t, path + ": snapshots");
    s.read("ttl", c.snapshot_ttl);
    s.read("max_count", c.snapshot_max_count);
    s.bytes("max_bytes", c.snapshot_max_bytes);
    s.read("gc_interval", c.snapshot_gc_interval);
    s.read("work_dir", c.snapshot_work_dir);
    if (t->get("exclude") != nullptr) {
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
}

void apply_environment(RouterConfig& c) {
  if (const char* v = std::getenv("WARMSTART_REDIS_URL"); v && *v) c.redis_url = v;
  if (const char* v = std::getenv("WARMSTART_DOCKER_HOST"); v && *v) c.docker_host = v;
  if (const char* v = std::getenv("WARMSTART_ROUTER_ID"); v && *v) c.router_id = v;
  if (const char* v = std::getenv("WARMSTART_LOG_LEVEL"); v && *v) c.log_level = v;
  if (const char* v = std::getenv("WARMSTART_STATE_DIR"); v && *v) c.state_dir = v;
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
  if (c.queues.empty()) bad("queues", "at least one queue is needed");
  if (c.base_image.empty()) bad("base_image", "must not be empty");
  if (c.network_mode == "host") bad("network_mode", "\"host\" is never allowed for job containers");
  if (c.lease_timeout < 1s) bad("lease_timeout", "must be at least 1s");
  if (c.default_timeout < 1s) bad("default_timeout", "must be at least 1s");
  if (c.reconcile_interval < 10ms) bad("reconcile_interval", "must be at least 10ms");
  if (c.log_tail_bytes > 16 * 1024 * 1024) bad("log_tail_bytes", "at most 16 MiB");
  if (c.snapshot_exclude) {
    for (const auto& path : *c.snapshot_exclude) {
      if (path.empty() || path[0] != '/' || path.find_first_not_of('/') == std::string::npos) {
        bad("snapshots.exclude", "\"" + path + "\": expected an absolute path below /");
      }
    }
  }
  for (const char* bad_char : {" ", "/"}) {
    if (c.router_id.find(bad_char) != std::string::npos) {
      bad("router id", "must not contain spaces or '/'");
    }
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
