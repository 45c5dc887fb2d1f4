#include "snapshots/naming.hpp"

#include <openssl/evp.h>
#include <nlohmann/json.hpp>

#include <array>
#include <stdexcept>

namespace warmstart::snapshots {

std::string sha256_hex(std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  if (EVP_Digest(data.data(), data.size(), digest.data(), &length, EVP_sha256(), nullptr) != 1) {
    // Only an OpenSSL without SHA-256 gets here: a broken install, not input.
    throw std::logic_error("EVP_Digest(sha256) failed");
  }
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(length * 2);
  for (unsigned int i = 0; i < length; ++i) {
    out.push_back(hex[digest[i] >> 4]);
    out.push_back(hex[digest[i] & 0x0f]);
  }
  return out;
}

ImageName snapshot_image_name(std::string_view repo_prefix, std::string_view registry_namespace,
                              std::string_view key, std::int64_t generation) {
  std::string material(registry_namespace);
  material.push_back('\0');  // no (namespace, key) pair can collide by concatenation
  material.append(key);
  // 80 bits: collisions between the keys of one host are not a practical concern.
  return ImageName{std::string(repo_prefix) + "/" + sha256_hex(material).substr(0, 20),
                   "g" + std::to_string(generation)};
}

container::Labels snapshot_labels(const SnapshotLabelValues& values) {
  return {{std::string(label::key), values.key},
          {std::string(label::base), values.base_image_id},
          {std::string(label::engine), values.engine_id},
          {std::string(label::registry), values.registry_namespace},
          {std::string(label::generation), std::to_string(values.generation)},
          {std::string(label::job), values.job}};
}

std::string dockerfile_quote(std::string_view value) {
  std::string out = "\"";
  for (char c : value) {
    if (c == '"' || c == '\\' || c == '$') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

std::vector<std::string> import_changes(const container::ImageConfig& config) {
  std::vector<std::string> changes;
  for (const auto& kv : config.env) {
    auto eq = kv.find('=');
    if (eq == std::string::npos) continue;  // "K" without a value carries nothing
    changes.push_back("ENV " + kv.substr(0, eq) + "=" + dockerfile_quote(kv.substr(eq + 1)));
  }
  // Exec (JSON) form: no shell and no variable expansion applies to it.
  if (!config.entrypoint.empty()) {
    changes.push_back("ENTRYPOINT " + nlohmann::json(config.entrypoint).dump());
  }
  if (!config.cmd.empty()) changes.push_back("CMD " + nlohmann::json(config.cmd).dump());
  if (!config.user.empty()) changes.push_back("USER " + config.user);
  if (!config.working_dir.empty()) changes.push_back("WORKDIR " + config.working_dir);
  for (const auto& [k, v] : config.labels) {
    changes.push_back("LABEL " + dockerfile_quote(k) + "=" + dockerfile_quote(v));
  }
  return changes;
}

}  // namespace warmstart::snapshots
