#include "container/tar_filter.hpp"

#include <fnmatch.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>

namespace warmstart::container {
namespace {

constexpr std::size_t kBlock = 512;

// Header field offsets and sizes (POSIX ustar; GNU shares the first 345 bytes).
constexpr std::size_t kNameOff = 0, kNameLen = 100;
constexpr std::size_t kSizeOff = 124, kSizeLen = 12;
constexpr std::size_t kChksumOff = 148, kChksumLen = 8;
constexpr std::size_t kTypeOff = 156;
constexpr std::size_t kLinkOff = 157, kLinkLen = 100;
constexpr std::size_t kMagicOff = 257;
constexpr std::size_t kPrefixOff = 345, kPrefixLen = 155;

std::uint64_t padded(std::uint64_t size) {
  return (size + kBlock - 1) / kBlock * kBlock;
}

std::string field_string(const std::string& block, std::size_t off, std::size_t len) {
  const char* start = block.data() + off;
  const void* nul = std::memchr(start, '\0', len);
  const std::size_t n = nul == nullptr ? len : static_cast<const char*>(nul) - start;
  return std::string(start, n);
}

// Octal (space/NUL padded) or GNU base-256 (high bit of the first byte set).
std::uint64_t parse_number(const std::string& block, std::size_t off, std::size_t len,
                           const char* what) {
  const auto* p = reinterpret_cast<const unsigned char*>(block.data() + off);
  if ((p[0] & 0x80) != 0) {
    if ((p[0] & 0x40) != 0) throw TarFormatError(std::string("negative base-256 ") + what);
    std::uint64_t value = p[0] & 0x3f;
    for (std::size_t i = 1; i < len; ++i) {
      if (value > (UINT64_MAX >> 8)) throw TarFormatError(std::string("oversized ") + what);
      value = (value << 8) | p[i];
    }
    return value;
  }
  std::size_t i = 0;
  while (i < len && (p[i] == ' ' || p[i] == '\0')) ++i;
  std::uint64_t value = 0;
  for (; i < len && p[i] != ' ' && p[i] != '\0'; ++i) {
    if (p[i] < '0' || p[i] > '7') throw TarFormatError(std::string("bad octal ") + what);
    if (value > (UINT64_MAX >> 3)) throw TarFormatError(std::string("oversized ") + what);
    value = (value << 3) | static_cast<std::uint64_t>(p[i] - '0');
  }
  return value;
}

void write_octal(std::string& block, std::size_t off, std::size_t len, std::uint64_t value) {
  // len-1 digits, then NUL (the size field's form in ustar).
  std::string digits(len - 1, '0');
  for (std::size_t i = len - 1; i-- > 0;) {
    digits[i] = static_cast<char>('0' + (value & 7));
    value >>= 3;
  }
  if (value != 0) throw TarFormatError("value too large for an octal header field");
  std::memcpy(block.data() + off, digits.data(), len - 1);
  block[off + len - 1] = '\0';
}

// Sum of the header bytes with the checksum field read as spaces.
std::pair<long, long> checksums(const std::string& block) {
  long unsigned_sum = 0, signed_sum = 0;
  for (std::size_t i = 0; i < kBlock; ++i) {
    const bool in_field = i >= kChksumOff && i < kChksumOff + kChksumLen;
    const char c = in_field ? ' ' : block[i];
    unsigned_sum += static_cast<unsigned char>(c);
    signed_sum += static_cast<signed char>(c);
  }
  return {unsigned_sum, signed_sum};
}

void set_checksum(std::string& block) {
  const long sum = checksums(block).first;
  // Six octal digits, NUL, space: what GNU tar and Go write.
  std::string digits(6, '0');
  long v = sum;
  for (int i = 5; i >= 0; --i) {
    digits[i] = static_cast<char>('0' + (v & 7));
    v >>= 3;
  }
  std::memcpy(block.data() + kChksumOff, digits.data(), 6);
  block[kChksumOff + 6] = '\0';
  block[kChksumOff + 7] = ' ';
}

void verify_checksum(const std::string& block) {
  const auto stored =
      static_cast<long>(parse_number(block, kChksumOff, kChksumLen, "header checksum"));
  const auto [u, s] = checksums(block);
  if (stored != u && stored != s) throw TarFormatError("tar header checksum mismatch");
}

bool is_posix_ustar(const std::string& block) {
  return std::memcmp(block.data() + kMagicOff, "ustar\0", 6) == 0;
}

std::string header_path(const std::string& block) {
  std::string name = field_string(block, kNameOff, kNameLen);
  if (is_posix_ustar(block)) {
    std::string prefix = field_string(block, kPrefixOff, kPrefixLen);
    if (!prefix.empty()) return prefix + "/" + name;
  }
  return name;
}

bool is_regular(char type) {
  return type == '0' || type == '\0' || type == '7';
}

// pax records "<len> <key>=<value>\n"; <len> counts the whole record.
std::vector<std::pair<std::string, std::string>> parse_pax(std::string_view data) {
  std::vector<std::pair<std::string, std::string>> records;
  while (!data.empty()) {
    if (data.front() == '\0') break;  // padding some writers leave
    const auto space = data.find(' ');
    if (space == std::string_view::npos || space == 0 || space > 20) {
      throw TarFormatError("malformed pax record length");
    }
    std::uint64_t len = 0;
    for (char c : data.substr(0, space)) {
      if (c < '0' || c > '9') throw TarFormatError("malformed pax record length");
      len = len * 10 + static_cast<std::uint64_t>(c - '0');
    }
    if (len <= space + 1 || len > data.size() || data[len - 1] != '\n') {
      throw TarFormatError("malformed pax record");
    }
    const std::string_view record = data.substr(space + 1, len - space - 2);
    const auto eq = record.find('=');
    if (eq == std::string_view::npos) throw TarFormatError("pax record without '='");
    records.emplace_back(std::string(record.substr(0, eq)), std::string(record.substr(eq + 1)));
    data.remove_prefix(len);
  }
  return records;
}

std::string format_pax(const std::vector<std::pair<std::string, std::string>>& records) {
  std::string out;
  for (const auto& [key, value] : records) {
    const std::size_t body = 1 + key.size() + 1 + value.size() + 1;  // " k=v\n"
    std::size_t len = body + 1;
    while (std::to_string(len).size() + body != len) len = std::to_string(len).size() + body;
    out += std::to_string(len) + " " + key + "=" + value + "\n";
  }
  return out;
}

enum class Match { none, exact, below };

std::size_t segment_count(std::string_view path) {
  return static_cast<std::size_t>(std::count(path.begin(), path.end(), '/')) + 1;
}

// With FNM_PATHNAME no wildcard matches '/', so a pattern of k segments can
// only match the path's first k segments: one fnmatch per pattern and entry,
// and a literal first segment rejects most entries without any.
Match match_patterns(std::string_view path, const std::vector<TarPattern>& patterns) {
  if (path.empty()) return Match::none;
  const std::size_t slash = path.find('/');
  const std::string_view first = path.substr(0, slash);
  const std::size_t segments = segment_count(path);
  Match best = Match::none;
  for (const auto& pattern : patterns) {
    if (pattern.segments > segments) continue;
    if (!pattern.first_literal.empty() && pattern.first_literal != first) continue;
    const bool whole = pattern.segments == segments;
    std::size_t end = path.size();
    if (!whole) {
      // The '/' that ends the pattern.segments-th segment.
      std::size_t from = 0;
      for (std::size_t i = 0; i < pattern.segments; ++i) {
        end = path.find('/', from);
        from = end + 1;
      }
    }
    const std::string prefix(path.substr(0, end));
    if (::fnmatch(pattern.text.c_str(), prefix.c_str(), FNM_PATHNAME) != 0) continue;
    if (!whole) return Match::below;  // below wins: a directory inside an excluded one goes
    best = Match::exact;
  }
  return best;
}

std::vector<TarPattern> compile_patterns(const std::vector<std::string>& patterns) {
  std::vector<TarPattern> out;
  for (const auto& pattern : patterns) {
    TarPattern p;
    p.text = normalize_tar_path(pattern);
    if (p.text.empty()) throw std::invalid_argument("tar filter: cannot exclude the root");
    p.segments = segment_count(p.text);
    const std::string first = p.text.substr(0, p.text.find('/'));
    if (first.find_first_of("*?[\\") == std::string::npos) p.first_literal = first;
    out.push_back(std::move(p));
  }
  return out;
}

char lower(char c) {
  return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
}

bool is_scheme_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '+' || c == '-' || c == '.';
}

std::string strip_line(std::string_view line) {
  std::string out;
  std::size_t pos = 0;
  for (;;) {
    const auto sep = line.find("://", pos);
    if (sep == std::string_view::npos) break;
    std::size_t scheme_start = sep;
    while (scheme_start > 0 && is_scheme_char(line[scheme_start - 1])) --scheme_start;
    std::string scheme;
    for (std::size_t i = scheme_start; i < sep; ++i) scheme.push_back(lower(line[i]));
    const std::size_t authority = sep + 3;
    std::size_t end = authority;
    while (end < line.size() && std::string_view("/?#\"' \t").find(line[end]) == std::string::npos)
      ++end;
    const std::string_view auth = line.substr(authority, end - authority);
    const auto at = auth.rfind('@');
    out.append(line.substr(pos, authority - pos));
    if (at == std::string_view::npos) {
      out.append(auth);
    } else {
      const std::string_view userinfo = auth.substr(0, at);
      if (scheme != "http" && scheme != "https") {
        // ssh://git@host keeps its user name; only a password goes.
        out.append(userinfo.substr(0, userinfo.find(':')));
        out.push_back('@');
      }
      out.append(auth.substr(at + 1));
    }
    pos = end;
  }
  out.append(line.substr(pos));
  return out;
}

bool is_extraheader(std::string_view line) {
  std::size_t i = 0;
  while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
  constexpr std::string_view key = "extraheader";
  if (line.size() - i < key.size()) return false;
  for (std::size_t k = 0; k < key.size(); ++k) {
    if (lower(line[i + k]) != key[k]) return false;
  }
  i += key.size();
  while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
  return i == line.size() || line[i] == '=';
}

}  // namespace

std::string normalize_tar_path(std::string_view path) {
  std::vector<std::string_view> parts;
  std::size_t pos = 0;
  while (pos <= path.size()) {
    auto slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    const std::string_view part = path.substr(pos, slash - pos);
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();  // the engine cleans paths the same way
    } else if (!part.empty() && part != ".") {
      parts.push_back(part);
    }
    pos = slash + 1;
  }
  std::string out;
  for (const auto& part : parts) {
    if (!out.empty()) out.push_back('/');
    out.append(part);
  }
  return out;
}

bool tar_path_excluded(std::string_view path, const std::vector<std::string>& patterns) {
  return match_patterns(normalize_tar_path(path), compile_patterns(patterns)) != Match::none;
}

std::string strip_git_config_credentials(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto nl = text.find('\n', pos);
    const bool has_nl = nl != std::string_view::npos;
    if (!has_nl) nl = text.size();
    const std::string_view line = text.substr(pos, nl - pos);
    if (!is_extraheader(line)) {
      out += strip_line(line);
      if (has_nl) out.push_back('\n');
    }
    pos = nl + 1;
  }
  return out;
}

TarFilter::TarFilter(TarFilterOptions options)
    : options_(std::move(options)), patterns_(compile_patterns(options_.exclude)) {
  block_.reserve(kBlock);
}

void TarFilter::reset_pending() {
  pending_raw_.clear();
  pending_path_.reset();
  pending_linkpath_.reset();
  pending_size_.reset();
  pending_pax_.clear();
}

void TarFilter::feed(std::string_view in, std::string& out) {
  while (!in.empty()) {
    switch (state_) {
      case State::header: {
        const std::size_t n = std::min(kBlock - block_.size(), in.size());
        block_.append(in.substr(0, n));
        in.remove_prefix(n);
        if (block_.size() == kBlock) {
          on_header(out);
          block_.clear();
        }
        break;
      }
      case State::meta:
      case State::collect: {
        const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, in.size()));
        const std::uint64_t consumed = padded(data_size_) - remaining_;
        if (consumed < data_size_) {
          const auto take =
              static_cast<std::size_t>(std::min<std::uint64_t>(n, data_size_ - consumed));
          data_.append(in.substr(0, take));
        }
        if (state_ == State::meta) pending_raw_.append(in.substr(0, n));
        in.remove_prefix(n);
        remaining_ -= n;
        if (remaining_ == 0) {
          if (state_ == State::meta) {
            on_meta_done();
          } else {
            on_collect_done(out);
          }
        }
        break;
      }
      case State::pass:
      case State::skip: {
        const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, in.size()));
        if (state_ == State::pass) out.append(in.substr(0, n));
        in.remove_prefix(n);
        remaining_ -= n;
        if (remaining_ == 0) state_ = State::header;
        break;
      }
      case State::trailer:
        out.append(in);
        in = {};
        break;
    }
  }
}

void TarFilter::finish(std::string& out) {
  if (state_ == State::trailer) return;
  if (state_ == State::header && block_.empty() && pending_raw_.empty()) {
    // No end-of-archive marker: add it, so the importer sees a complete archive.
    out.append(2 * kBlock, '\0');
    return;
  }
  throw TarFormatError("tar archive ends inside an entry");
}

void TarFilter::on_header(std::string& out) {
  if (std::all_of(block_.begin(), block_.end(), [](char c) { return c == '\0'; })) {
    if (!pending_raw_.empty()) throw TarFormatError("pax or long-name header before the end");
    out.append(block_);
    state_ = State::trailer;
    return;
  }
  verify_checksum(block_);
  const char type = block_[kTypeOff];
  const std::uint64_t header_size = parse_number(block_, kSizeOff, kSizeLen, "size");

  if (type == 'x' || type == 'L' || type == 'K') {
    if (header_size > options_.max_meta_bytes) {
      throw TarFormatError("pax or long-name header of " + std::to_string(header_size) +
                           " bytes exceeds the limit");
    }
    if (type == 'x') pending_pax_.clear();
    pending_raw_.append(block_);
    meta_type_ = type;
    data_.clear();
    data_size_ = header_size;
    remaining_ = padded(header_size);
    state_ = State::meta;
    if (remaining_ == 0) on_meta_done();
    return;
  }
  if (type == 'g') {
    out.append(block_);
    remaining_ = padded(header_size);
    state_ = remaining_ == 0 ? State::header : State::pass;
    return;
  }
  if (type == 'S') throw TarFormatError("GNU sparse entries are not supported");

  ++stats_.entries_in;
  const std::uint64_t size = pending_size_.value_or(header_size);
  const std::string path = normalize_tar_path(pending_path_.value_or(header_path(block_)));
  const Match match = match_patterns(path, patterns_);
  bool drop = match == Match::below || (match == Match::exact && type != '5');
  if (!drop && type == '1') {
    const std::string target =
        normalize_tar_path(pending_linkpath_.value_or(field_string(block_, kLinkOff, kLinkLen)));
    drop = match_patterns(target, patterns_) != Match::none;
  }
  const bool git_config = options_.strip_git_credentials && is_regular(type) &&
                          (path == ".git/config" || path.ends_with("/.git/config"));
  if (!drop && git_config && size > options_.max_git_config_bytes) drop = true;

  if (drop) {
    ++stats_.entries_dropped;
    stats_.bytes_dropped += size;
    reset_pending();
    remaining_ = padded(size);
    state_ = remaining_ == 0 ? State::header : State::skip;
    return;
  }
  if (git_config) {
    header_ = block_;
    data_.clear();
    data_size_ = size;
    remaining_ = padded(size);
    state_ = State::collect;
    if (remaining_ == 0) on_collect_done(out);
    return;
  }
  out.append(pending_raw_);
  out.append(block_);
  reset_pending();
  remaining_ = padded(size);
  state_ = remaining_ == 0 ? State::header : State::pass;
}

void TarFilter::on_meta_done() {
  auto until_nul = [](const std::string& s) { return s.substr(0, s.find('\0')); };
  switch (meta_type_) {
    case 'L':
      pending_path_ = until_nul(data_);
      break;
    case 'K':
      pending_linkpath_ = until_nul(data_);
      break;
    case 'x':
      pending_pax_ = parse_pax(data_);
      for (const auto& [key, value] : pending_pax_) {
        if (key == "path") {
          pending_path_ = value;
        } else if (key == "linkpath") {
          pending_linkpath_ = value;
        } else if (key == "size") {
          std::uint64_t n = 0;
          if (value.empty() || value.size() > 19) throw TarFormatError("bad pax size");
          for (char c : value) {
            if (c < '0' || c > '9') throw TarFormatError("bad pax size");
            n = n * 10 + static_cast<std::uint64_t>(c - '0');
          }
          pending_size_ = n;
        }
      }
      break;
    default:
      break;
  }
  data_.clear();
  state_ = State::header;
}

void TarFilter::on_collect_done(std::string& out) {
  std::string content = strip_git_config_credentials(data_);
  if (content == data_) {
    out.append(pending_raw_);
    out.append(header_);
    out.append(data_);
    out.append(padded(data_.size()) - data_.size(), '\0');
  } else {
    if (pending_size_) {
      // The pax header carried the old size: write it again without it (the
      // small new size fits the ustar field).
      std::string raw = pending_raw_;
      pending_raw_.clear();
      std::size_t pos = 0;
      while (pos < raw.size()) {
        std::string head = raw.substr(pos, kBlock);
        const std::uint64_t n = parse_number(head, kSizeOff, kSizeLen, "size");
        std::string data = raw.substr(pos + kBlock, static_cast<std::size_t>(n));
        pos += kBlock + padded(n);
        if (head[kTypeOff] == 'x') {
          auto records = parse_pax(data);
          std::erase_if(records, [](const auto& r) { return r.first == "size"; });
          data = format_pax(records);
          write_octal(head, kSizeOff, kSizeLen, data.size());
          set_checksum(head);
        }
        pending_raw_ += head;
        pending_raw_ += data;
        pending_raw_.append(padded(data.size()) - data.size(), '\0');
      }
    }
    write_octal(header_, kSizeOff, kSizeLen, content.size());
    set_checksum(header_);
    out.append(pending_raw_);
    out.append(header_);
    out.append(content);
    out.append(padded(content.size()) - content.size(), '\0');
    ++stats_.git_configs_rewritten;
  }
  reset_pending();
  data_.clear();
  header_.clear();
  state_ = State::header;
}

}  // namespace warmstart::container
