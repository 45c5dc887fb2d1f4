#include "api/access.hpp"

#include <boost/asio/ip/address.hpp>

#include <algorithm>
#include <cctype>
#include <stdexcept>

namespace warmstart::api {
namespace {

std::string lowercase(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// "name", "name:port", "[v6]", "[v6]:port", "v4:port" -> the host part,
// lowercase, brackets removed. nullopt when malformed.
std::optional<std::string> host_part(std::string_view authority) {
  if (authority.empty()) return std::nullopt;
  if (authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    const std::string_view rest = authority.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') return std::nullopt;
    return lowercase(authority.substr(1, close - 1));
  }
  const auto colon = authority.find(':');
  if (colon != std::string_view::npos && authority.find(':', colon + 1) != std::string_view::npos) {
    return std::nullopt;  // a bare IPv6 literal is not a valid Host
  }
  std::string host = lowercase(authority.substr(0, colon));
  if (host.empty()) return std::nullopt;
  for (char c : host) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_')) {
      return std::nullopt;
    }
  }
  if (colon != std::string_view::npos) {
    const std::string_view port = authority.substr(colon + 1);
    if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) {
          return std::isdigit(static_cast<unsigned char>(c));
        })) {
      return std::nullopt;
    }
  }
  if (host.back() == '.') host.pop_back();  // "localhost." is "localhost"
  return host;
}

std::optional<boost::asio::ip::address> ip_literal(const std::string& host) {
  boost::system::error_code ec;
  auto address = boost::asio::ip::make_address(host, ec);
  if (ec) return std::nullopt;
  return address;
}

std::string listen_host(const std::string& listen) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos) {
    throw std::invalid_argument("listen address must be ip:port, got \"" + listen + "\"");
  }
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  return lowercase(host);
}

}  // namespace

bool is_loopback_listen(const std::string& listen) {
  const std::string host = listen_host(listen);
  if (host == "localhost") return true;
  const auto address = ip_literal(host);
  if (!address) throw std::invalid_argument("listen address must be an IP literal: " + listen);
  return address->is_loopback();
}

FrontDoor::FrontDoor(FrontDoorOptions options) : options_(std::move(options)) {
  std::string host = listen_host(options_.listen);
  if (host == "localhost") host = "127.0.0.1";
  const auto address = ip_literal(host);
  if (!address) {
    throw std::invalid_argument("listen address must be an IP literal: " + options_.listen);
  }
  listen_ip_ = address->to_string();
  loopback_ = address->is_loopback();
  unspecified_ = address->is_unspecified();
  for (auto& name : options_.allowed_hosts) {
    auto parsed = host_part(name);
    if (!parsed || name.find(':') != std::string::npos) {
      throw std::invalid_argument("api.allowed_hosts: \"" + name + "\" is not a host name");
    }
    name = *parsed;
  }
  for (auto& origin : options_.allowed_origins) {
    origin = lowercase(origin);
    while (!origin.empty() && origin.back() == '/') origin.pop_back();
    const auto scheme = origin.find("://");
    if (scheme == std::string::npos || !host_part(origin.substr(scheme + 3))) {
      throw std::invalid_argument("api.allowed_origins: \"" + origin +
                                  "\" is not an origin such as https://name[:port]");
    }
  }
}

bool FrontDoor::host_allowed(std::string_view header) const {
  const auto host = host_part(header);
  if (!host) return false;
  if (std::find(options_.allowed_hosts.begin(), options_.allowed_hosts.end(), *host) !=
      options_.allowed_hosts.end()) {
    return true;
  }
  if (loopback_ && *host == "localhost") return true;
  const auto address = ip_literal(*host);
  if (!address) return false;  // a name nobody configured: possibly rebound
  if (unspecified_) return true;
  if (loopback_ && address->is_loopback()) return true;
  return address->to_string() == listen_ip_;
}

bool FrontDoor::origin_allowed(std::string_view origin_header, std::string_view host) const {
  std::string origin = lowercase(origin_header);
  while (!origin.empty() && origin.back() == '/') origin.pop_back();
  if (std::find(options_.allowed_origins.begin(), options_.allowed_origins.end(), origin) !=
      options_.allowed_origins.end()) {
    return true;
  }
  for (const std::string_view scheme : {"http://", "https://"}) {
    if (origin.rfind(scheme, 0) != 0) continue;
    const std::string authority = origin.substr(scheme.size());
    // Same origin: the page was served from the very address it now posts to.
    return authority == lowercase(host) && host_allowed(host);
  }
  return false;
}

bool is_json_media_type(std::string_view content_type) {
  const auto semicolon = content_type.find(';');
  std::string_view type = content_type.substr(0, semicolon);
  while (!type.empty() && (type.back() == ' ' || type.back() == '\t')) type.remove_suffix(1);
  while (!type.empty() && (type.front() == ' ' || type.front() == '\t')) type.remove_prefix(1);
  return lowercase(type) == "application/json";
}

std::optional<std::string> snapshot_key_problem(const nlohmann::json& job,
                                                const std::optional<std::string>& prefix) {
  if (!prefix) return std::nullopt;
  if (!job.is_object()) return std::nullopt;  // the schema check answers that
  const auto snapshot = job.find("snapshot");
  if (snapshot == job.end() || snapshot->is_null()) return std::nullopt;
  const auto key = snapshot->is_object() ? snapshot->find("key") : snapshot->end();
  if (!snapshot->is_object() || key == snapshot->end() || !key->is_string()) {
    return std::nullopt;  // malformed: the schema check names it
  }
  const std::string& text = key->get_ref<const std::string&>();
  if (text.rfind(*prefix, 0) == 0 && text.size() > prefix->size()) return std::nullopt;
  return "snapshot.key \"" + text +
         "\" is outside this caller's namespace (keys must start with \"" + *prefix + "\")";
}

nlohmann::json job_summary(const nlohmann::json& record) {
  nlohmann::json out = record;
  if (!out.is_object()) return out;
  out.erase("log_tail");
  if (auto spec = out.find("spec"); spec != out.end() && spec->is_object()) {
    nlohmann::json keys = nlohmann::json::array();
    if (auto env = spec->find("env"); env != spec->end() && env->is_object()) {
      for (const auto& item : env->items()) keys.push_back(item.key());
    }
    spec->erase("env");
    (*spec)["env_keys"] = std::move(keys);
  }
  return out;
}

}  // namespace warmstart::api
