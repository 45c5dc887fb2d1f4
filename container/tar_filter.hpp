// TarFilter: a streaming filter over a tar archive (a container's exported
// filesystem) that removes credential files before the archive becomes a
// snapshot image. Pure: bytes in, bytes out, no I/O, so every rule is
// unit-tested (container/tar_filter_test.cpp).
//
// It reads ustar, pax ('x' per-entry and 'g' global headers) and GNU long
// names ('L', 'K'), and writes the archive back entry by entry:
//   - an entry whose path matches an `exclude` pattern, or lies below one, is
//     dropped with its data and its pax/GNU prefix headers; a *directory*
//     matched exactly is kept (empty), so excluding "/tmp" leaves an empty /tmp;
//   - a hard link to a dropped path is dropped too (it would not import);
//   - a regular file at `.git/config` or `*/.git/config` has the credentials
//     in its remote URLs removed (`https://user:token@host` -> `https://host`,
//     and `extraheader` lines) and its header rewritten with the new size and
//     checksum.
// A malformed archive (bad checksum, truncated entry, oversized metadata)
// throws TarFormatError: the caller must fail closed, never import it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace warmstart::container {

struct TarFormatError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct TarFilterOptions {
  // Absolute paths or fnmatch(3) globs ('*' does not cross '/'), e.g.
  // "/root/.netrc", "/home/*/.ssh/id_*", "/tmp". Matching a directory removes
  // everything below it.
  std::vector<std::string> exclude;
  bool strip_git_credentials = true;  // rewrite */.git/config remote URLs
  // A .git/config larger than this is dropped rather than held in memory.
  std::size_t max_git_config_bytes = 1 << 20;
  std::size_t max_meta_bytes = 1 << 20;  // one pax / GNU long-name header's data

  bool active() const { return !exclude.empty() || strip_git_credentials; }
};

struct TarFilterStats {
  std::uint64_t entries_in = 0;
  std::uint64_t entries_dropped = 0;
  std::uint64_t bytes_dropped = 0;  // file data of dropped entries
  std::uint64_t git_configs_rewritten = 0;
};

// "/root/.netrc" / "./root/.netrc" / "root/.netrc/" -> "root/.netrc".
std::string normalize_tar_path(std::string_view path);

// The .git/config text with credentials removed: userinfo of http(s) URLs,
// the password of any other scheme's userinfo, and `extraheader` settings
// (actions/checkout stores "AUTHORIZATION: basic ..." there).
std::string strip_git_config_credentials(std::string_view text);

// True when `path` (normalized) is `pattern` or lies below it.
bool tar_path_excluded(std::string_view path, const std::vector<std::string>& patterns);

// An exclude pattern, normalized, with what lets most paths be rejected
// without calling fnmatch.
struct TarPattern {
  std::string text;           // "root/.netrc", "home/*/.ssh/id_*"
  std::size_t segments = 0;   // '/'-separated parts
  std::string first_literal;  // the first part when it has no wildcard, else ""
};

class TarFilter {
 public:
  explicit TarFilter(TarFilterOptions options);

  // Consumes the next bytes of the input archive and appends the filtered
  // archive's bytes to `out`. Throws TarFormatError.
  void feed(std::string_view in, std::string& out);
  // The input has ended: throws TarFormatError when it stopped inside an entry.
  void finish(std::string& out);

  const TarFilterStats& stats() const { return stats_; }

 private:
  enum class State { header, meta, pass, skip, collect, trailer };

  void on_header(std::string& out);
  void on_meta_done();
  void on_collect_done(std::string& out);
  void reset_pending();

  TarFilterOptions options_;
  std::vector<TarPattern> patterns_;
  TarFilterStats stats_;
  State state_ = State::header;
  std::string block_;            // a header being assembled (512 bytes)
  std::uint64_t remaining_ = 0;  // data (+ padding) left of the current entry
  std::uint64_t data_size_ = 0;  // meta / collect: the unpadded data size
  std::string data_;             // meta / collect: the data being collected
  char meta_type_ = 0;           // 'x', 'L', 'K'
  std::string header_;           // collect: the entry's header
  // Prefix headers (pax 'x', GNU 'L'/'K') of the next entry, held until its
  // fate is known: they are dropped with it.
  std::string pending_raw_;
  std::optional<std::string> pending_path_;                       // pax "path" or GNU 'L'
  std::optional<std::string> pending_linkpath_;                   // pax "linkpath" or GNU 'K'
  std::optional<std::uint64_t> pending_size_;                     // pax "size"
  std::vector<std::pair<std::string, std::string>> pending_pax_;  // the last 'x' records
};

}  // namespace warmstart::container
