// Admission policy of the router: which images a job may name. Requests for
// privileged mode, host binds, host network or added capabilities are refused
// earlier, by job validation (queue/validation.hpp); the router never sets them.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace warmstart::router {

// Shell-style glob: '*' any run (including '/' and ':'), '?' one character.
bool glob_match(std::string_view pattern, std::string_view text);

class ImagePolicy {
 public:
  ImagePolicy(std::string base_image, std::vector<std::string> allowlist)
      : base_image_(std::move(base_image)), allowlist_(std::move(allowlist)) {}
  // The image a job runs on: its own (when allowed) or the base image.
  // Returns nullopt plus a reason when the image is not allowed.
  std::optional<std::string> resolve(const std::string& requested, std::string* reason) const;
  const std::string& base_image() const { return base_image_; }

 private:
  std::string base_image_;
  std::vector<std::string> allowlist_;
};

}  // namespace warmstart::router
