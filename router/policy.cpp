#include "router/policy.hpp"

namespace warmstart::router {

bool glob_match(std::string_view pattern, std::string_view text) {
  // Iterative matcher with single-star backtracking: linear in practice, no
  // recursion for hostile patterns.
  std::size_t p = 0, t = 0, star = std::string_view::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p;
      ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

std::optional<std::string> ImagePolicy::resolve(const std::string& requested,
                                                std::string* reason) const {
  if (requested.empty() || requested == base_image_) return base_image_;
  for (const auto& pattern : allowlist_) {
    if (glob_match(pattern, requested)) return requested;
  }
  if (reason != nullptr) *reason = "image not allowed: " + requested;
  return std::nullopt;
}

}  // namespace warmstart::router
