#include "container/tar_filter.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

using namespace warmstart::container;

namespace {

// ---- a small tar writer for the tests (independent of the filter's code) ----

std::string octal(std::uint64_t value, std::size_t width) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%0*llo", static_cast<int>(width - 1),
                static_cast<unsigned long long>(value));
  return std::string(buf, width - 1) + '\0';
}

std::string pad(std::string data) {
  data.append((512 - data.size() % 512) % 512, '\0');
  return data;
}

struct Entry {
  std::string name;
  char type = '0';
  std::string content;
  std::string linkname;
  std::string prefix;  // ustar prefix field
};

std::string header(const Entry& e, std::uint64_t size) {
  std::string h(512, '\0');
  std::memcpy(h.data(), e.name.data(), std::min<std::size_t>(e.name.size(), 100));
  std::memcpy(h.data() + 100, octal(e.type == '5' ? 0755 : 0644, 8).data(), 8);
  std::memcpy(h.data() + 108, octal(0, 8).data(), 8);
  std::memcpy(h.data() + 116, octal(0, 8).data(), 8);
  std::memcpy(h.data() + 124, octal(size, 12).data(), 12);
  std::memcpy(h.data() + 136, octal(1700000000, 12).data(), 12);
  h[156] = e.type;
  std::memcpy(h.data() + 157, e.linkname.data(), std::min<std::size_t>(e.linkname.size(), 100));
  std::memcpy(h.data() + 257,
              "ustar\0"
              "00",
              8);
  std::memcpy(h.data() + 345, e.prefix.data(), std::min<std::size_t>(e.prefix.size(), 155));
  std::memset(h.data() + 148, ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  std::snprintf(h.data() + 148, 8, "%06o", sum);
  h[155] = ' ';
  return h;
}

std::string entry(const Entry& e) {
  return header(e, e.content.size()) + pad(e.content);
}

std::string pax_record(const std::string& key, const std::string& value) {
  const std::size_t body = 1 + key.size() + 1 + value.size() + 1;
  std::size_t len = body + 1;
  while (std::to_string(len).size() + body != len) len = std::to_string(len).size() + body;
  return std::to_string(len) + " " + key + "=" + value + "\n";
}

std::string pax(const std::string& records) {
  return entry({"PaxHeaders/x", 'x', records});
}

std::string gnu_long(char type, const std::string& name) {
  Entry e{"././@LongLink", type, name + '\0'};
  return entry(e);
}

std::string end_of_archive() {
  return std::string(1024, '\0');
}

// ---- a small tar reader for the tests ----

struct Read {
  std::string path;
  char type;
  std::string content;
  std::string linkname;
};

std::uint64_t read_octal(const std::string& h, std::size_t off, std::size_t len) {
  std::uint64_t v = 0;
  for (std::size_t i = off; i < off + len && h[i] >= '0' && h[i] <= '7'; ++i)
    v = v * 8 + (h[i] - '0');
  return v;
}

bool checksum_ok(std::string h) {
  const auto stored = read_octal(h, 148, 8);
  std::memset(h.data() + 148, ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  return sum == stored;
}

std::vector<Read> read_tar(const std::string& tar) {
  std::vector<Read> out;
  std::size_t pos = 0;
  std::string long_name, pax_path;
  std::uint64_t pax_size = 0;
  bool has_pax_size = false;
  while (pos + 512 <= tar.size()) {
    const std::string h = tar.substr(pos, 512);
    if (h == std::string(512, '\0')) break;
    REQUIRE(checksum_ok(h));
    std::uint64_t size = read_octal(h, 124, 12);
    const char type = h[156];
    if (has_pax_size && type != 'x' && type != 'L') size = pax_size;
    const std::string data = tar.substr(pos + 512, size);
    pos += 512 + (size + 511) / 512 * 512;
    if (type == 'L') {
      long_name = data.substr(0, data.find('\0'));
      continue;
    }
    if (type == 'x') {
      std::size_t p = 0;
      while (p < data.size()) {
        const auto sp = data.find(' ', p);
        const auto len = std::stoul(data.substr(p, sp - p));
        const std::string rec = data.substr(sp + 1, len - (sp - p) - 2);
        const auto eq = rec.find('=');
        if (rec.substr(0, eq) == "path") pax_path = rec.substr(eq + 1);
        if (rec.substr(0, eq) == "size") {
          pax_size = std::stoull(rec.substr(eq + 1));
          has_pax_size = true;
        }
        p += len;
      }
      continue;
    }
    std::string name(h.data(), strnlen(h.data(), 100));
    std::string prefix(h.data() + 345, strnlen(h.data() + 345, 155));
    if (!prefix.empty()) name = prefix + "/" + name;
    if (!long_name.empty()) name = long_name;
    if (!pax_path.empty()) name = pax_path;
    out.push_back({name, type, data, std::string(h.data() + 157, strnlen(h.data() + 157, 100))});
    long_name.clear();
    pax_path.clear();
    has_pax_size = false;
  }
  return out;
}

std::vector<std::string> paths(const std::vector<Read>& entries) {
  std::vector<std::string> out;
  for (const auto& e : entries) out.push_back(e.path);
  return out;
}

// Runs the filter over `tar` fed in chunks of `chunk` bytes.
std::string run_filter(const std::string& tar, TarFilterOptions options, std::size_t chunk,
                       TarFilterStats* stats = nullptr) {
  TarFilter filter(std::move(options));
  std::string out;
  for (std::size_t pos = 0; pos < tar.size(); pos += chunk) {
    filter.feed(std::string_view(tar).substr(pos, chunk), out);
  }
  filter.finish(out);
  if (stats != nullptr) *stats = filter.stats();
  return out;
}

TarFilterOptions excluding(std::vector<std::string> patterns) {
  TarFilterOptions o;
  o.exclude = std::move(patterns);
  return o;
}

std::string sample_tree() {
  return entry({"root/", '5'}) + entry({"root/.netrc", '0', "machine h login u password p\n"}) +
         entry({"root/.profile", '0', "PS1=x\n"}) + entry({"tmp/", '5'}) +
         entry({"tmp/build/", '5'}) + entry({"tmp/build/secret", '0', std::string(1500, 's')}) +
         entry({"work/", '5'}) + entry({"work/result", '0', "42\n"}) +
         entry({"work/link-to-netrc", '1', "", "root/.netrc"}) +
         entry({"work/symlink", '2', "", "/root/.netrc"}) + end_of_archive();
}

}  // namespace

TEST_CASE("tar filter: paths normalize like the engine cleans them", "[unit][tar]") {
  CHECK(normalize_tar_path("/root/.netrc") == "root/.netrc");
  CHECK(normalize_tar_path("./root//.netrc/") == "root/.netrc");
  CHECK(normalize_tar_path("work/../root/.netrc") == "root/.netrc");
  CHECK(normalize_tar_path("../../root/x") == "root/x");
  CHECK(normalize_tar_path("/") == "");
  CHECK(tar_path_excluded("tmp/a/b", {"/tmp"}));
  CHECK(tar_path_excluded("home/alice/.ssh/id_ed25519", {"/home/*/.ssh/id_*"}));
  CHECK_FALSE(tar_path_excluded("home/alice/.ssh/known_hosts", {"/home/*/.ssh/id_*"}));
  CHECK_FALSE(tar_path_excluded("tmpfile", {"/tmp"}));
  CHECK_FALSE(tar_path_excluded("work/root/.netrc", {"/root/.netrc"}));
  // Wildcards stay inside one segment, also the first one.
  CHECK(tar_path_excluded("opt/secret/x", {"/*/secret"}));
  CHECK_FALSE(tar_path_excluded("opt/a/secret", {"/*/secret"}));
  CHECK(tar_path_excluded("home/bob/.ssh/id_rsa.pub", {"/home/*/.ssh/id_*"}));
  CHECK_FALSE(tar_path_excluded("home/.ssh/id_rsa", {"/home/*/.ssh/id_*"}));
  CHECK(tar_path_excluded("var/tmp", {"/tmp", "/var/tmp"}));
  CHECK_THROWS_AS(TarFilter(TarFilterOptions{{"/"}, true}), std::invalid_argument);
}

TEST_CASE("tar filter: excluded files, subtrees and links to them are dropped", "[unit][tar]") {
  const std::string tar = sample_tree();
  for (std::size_t chunk : {std::size_t{1}, std::size_t{7}, std::size_t{512}, tar.size()}) {
    INFO("chunk " << chunk);
    TarFilterStats stats;
    const std::string out = run_filter(tar, excluding({"/root/.netrc", "/tmp"}), chunk, &stats);
    CHECK(out.size() % 512 == 0);
    const auto entries = read_tar(out);
    CHECK(paths(entries) == std::vector<std::string>{"root/", "root/.profile", "tmp/", "work/",
                                                     "work/result", "work/symlink"});
    CHECK(entries[4].content == "42\n");
    CHECK(stats.entries_in == 10);
    CHECK(stats.entries_dropped == 4);  // .netrc, tmp/build/, tmp/build/secret, the hard link
    CHECK(stats.bytes_dropped == std::string("machine h login u password p\n").size() + 1500);
    // The end-of-archive blocks are passed on.
    CHECK(out.substr(out.size() - 1024) == end_of_archive());
  }
}

TEST_CASE("tar filter: nothing to do leaves the archive byte for byte", "[unit][tar]") {
  const std::string tar = sample_tree();
  TarFilterOptions none;
  none.strip_git_credentials = false;
  CHECK(run_filter(tar, none, 100) == tar);
  CHECK(run_filter(tar, excluding({"/nothing/here"}), 333) == tar);
}

TEST_CASE("tar filter: ustar prefix, pax and GNU long names are matched by their full path",
          "[unit][tar]") {
  const std::string deep(120, 'd');
  const std::string long_path = "root/" + deep + "/.netrc";
  const std::string tar =
      // ustar: name split into prefix + name
      entry({".git-credentials", '0', "https://u:p@h\n", "", "root"}) +
      // pax path (with another record that must go with it)
      pax(pax_record("mtime", "1700000000.5") + pax_record("path", long_path)) +
      entry({"root/dddd/.netrc", '0', "secret"}) +
      // GNU long name
      gnu_long('L', "home/alice/" + deep + "/x") + entry({"home/alice/ddd/x", '0', "keep"}) +
      gnu_long('L', "tmp/" + deep) + entry({"tmp/ddd", '0', "drop"}) +
      entry({"work/ok", '0', "ok"}) + end_of_archive();
  TarFilterStats stats;
  const auto out =
      run_filter(tar, excluding({"/root/.git-credentials", "/root/*/.netrc", "/tmp"}), 61, &stats);
  const auto entries = read_tar(out);
  CHECK(paths(entries) == std::vector<std::string>{"home/alice/" + deep + "/x", "work/ok"});
  CHECK(entries[0].content == "keep");
  CHECK(stats.entries_dropped == 3);
  // The dropped entries' pax and long-name headers went with them: nothing
  // but the kept entries' own headers is left.
  CHECK(out.find("mtime=") == std::string::npos);
  CHECK(out.find(long_path) == std::string::npos);
}

TEST_CASE("tar filter: .git/config credentials are stripped with size and checksum fixed",
          "[unit][tar]") {
  const std::string config =
      "[core]\n\trepositoryformatversion = 0\n"
      "[remote \"origin\"]\n\turl = https://x-access-token:ghs_SECRET123@github.com/org/repo.git\n"
      "\tfetch = +refs/heads/*:refs/remotes/origin/*\n"
      "[remote \"mirror\"]\n\turl = ssh://git:hunter2@example.com:22/repo\n"
      "[remote \"scp\"]\n\turl = git@github.com:org/repo.git\n"
      "[http \"https://github.com/\"]\n\textraheader = AUTHORIZATION: basic c2VjcmV0\n";
  const std::string tar =
      entry({"work/src/.git/", '5'}) + entry({"work/src/.git/config", '0', config}) +
      pax(pax_record("size", std::to_string(config.size())) +
          pax_record("path", "work/other/.git/config")) +
      entry({"placeholder", '0', config}) + entry({"work/after", '0', "a"}) + end_of_archive();
  TarFilterStats stats;
  const auto out = run_filter(tar, TarFilterOptions{}, 100, &stats);
  CHECK(stats.git_configs_rewritten == 2);
  CHECK(out.find("ghs_SECRET123") == std::string::npos);
  CHECK(out.find("hunter2") == std::string::npos);
  CHECK(out.find("c2VjcmV0") == std::string::npos);
  const auto entries = read_tar(out);
  REQUIRE(entries.size() == 4);
  CHECK(entries[1].path == "work/src/.git/config");
  CHECK(entries[2].path == "work/other/.git/config");
  CHECK(entries[3].path == "work/after");
  CHECK(entries[3].content == "a");
  const std::string& clean = entries[1].content;
  CHECK(entries[2].content == clean);
  CHECK(clean.find("url = https://github.com/org/repo.git\n") != std::string::npos);
  CHECK(clean.find("url = ssh://git@example.com:22/repo\n") != std::string::npos);
  CHECK(clean.find("url = git@github.com:org/repo.git\n") != std::string::npos);
  CHECK(clean.find("fetch = +refs/heads/*:refs/remotes/origin/*\n") != std::string::npos);
  CHECK(clean.find("extraheader") == std::string::npos);
}

TEST_CASE("tar filter: git config text rules", "[unit][tar]") {
  CHECK(strip_git_config_credentials("url = https://tok@h/r\n") == "url = https://h/r\n");
  CHECK(strip_git_config_credentials("url = HTTP://a:b@h\n") == "url = HTTP://h\n");
  CHECK(strip_git_config_credentials("url = https://h/r\n") == "url = https://h/r\n");
  CHECK(strip_git_config_credentials("pushurl = https://a:b@h/x?q=1 # c") ==
        "pushurl = https://h/x?q=1 # c");
  CHECK(strip_git_config_credentials("\tExtraHeader=x\nkeep\n") == "keep\n");
  CHECK(strip_git_config_credentials("url = ftp://user@h\n") == "url = ftp://user@h\n");
}

TEST_CASE("tar filter: a malformed archive fails closed", "[unit][tar]") {
  std::string tar = sample_tree();
  SECTION("bad checksum") {
    tar[0] = 'X';
    CHECK_THROWS_AS(run_filter(tar, excluding({"/tmp"}), 512), TarFormatError);
  }
  SECTION("truncated inside an entry") {
    const std::string cut = tar.substr(0, 512 * 3 + 10);
    CHECK_THROWS_AS(run_filter(cut, excluding({"/tmp"}), 512), TarFormatError);
  }
  SECTION("oversized pax header") {
    TarFilterOptions o = excluding({"/tmp"});
    o.max_meta_bytes = 100;
    const std::string big = pax(pax_record("comment", std::string(200, 'c'))) + tar;
    CHECK_THROWS_AS(run_filter(big, o, 512), TarFormatError);
  }
  SECTION("a missing end-of-archive marker is added") {
    const std::string no_end = tar.substr(0, tar.size() - 1024);
    const auto out = run_filter(no_end, excluding({"/tmp"}), 512);
    CHECK(out.substr(out.size() - 1024) == end_of_archive());
  }
}

TEST_CASE("tar filter: an excluded directory itself stays, empty", "[unit][tar]") {
  const auto out = run_filter(sample_tree(), excluding({"/tmp"}), 512);
  const auto entries = read_tar(out);
  const auto p = paths(entries);
  CHECK(std::count(p.begin(), p.end(), "tmp/") == 1);
  CHECK(std::none_of(p.begin(), p.end(), [](const auto& s) { return s.rfind("tmp/b", 0) == 0; }));
}

TEST_CASE("tar filter: GNU tar reads the filtered archive", "[unit][tar]") {
  // An independent reader: the archive written by the filter, listed by tar(1).
  if (::access("/bin/tar", X_OK) != 0) FAIL("tar(1) is needed (Debian's tar package)");
  const auto out = run_filter(sample_tree(), excluding({"/root/.netrc", "/tmp"}), 100);
  const auto file = std::filesystem::temp_directory_path() /
                    ("tar-filter-" + std::to_string(::getpid()) + ".tar");
  {
    std::ofstream f(file, std::ios::binary);
    f.write(out.data(), static_cast<std::streamsize>(out.size()));
  }
  const std::string command = "/bin/tar -tf " + file.string() + " 2>&1";
  std::string listing;
  if (FILE* p = ::popen(command.c_str(), "r")) {
    char buf[256];
    while (std::fgets(buf, sizeof buf, p) != nullptr) listing += buf;
    CHECK(::pclose(p) == 0);
  }
  std::filesystem::remove(file);
  CHECK(listing == "root/\nroot/.profile\ntmp/\nwork/\nwork/result\nwork/symlink\n");
}
