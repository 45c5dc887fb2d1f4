// Test support: a strict parser for the Prometheus text exposition format
// (0.0.4), so tests check what /metrics serves instead of grepping it.
// Header-only, used by the api tests only.
#pragma once
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace warmstart::api::testing {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct Family {
  std::string name;
  std::string type;  // counter, gauge, histogram, summary, untyped
  std::string help;
  std::vector<Sample> samples;
};

struct Exposition {
  std::map<std::string, Family> families;

  const Family& family(const std::string& name) const {
    auto it = families.find(name);
    if (it == families.end()) throw std::runtime_error("no metric family " + name);
    return it->second;
  }
  // The value of the sample `name` with exactly `labels`; throws when absent.
  double value(const std::string& family_name, const std::string& sample_name,
               const std::map<std::string, std::string>& labels = {}) const {
    for (const Sample& s : family(family_name).samples) {
      if (s.name == sample_name && s.labels == labels) return s.value;
    }
    throw std::runtime_error("no sample " + sample_name);
  }
};

namespace detail {

inline bool valid_name(const std::string& name) {
  if (name.empty()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                    (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

inline double parse_value(const std::string& text) {
  if (text == "+Inf") return INFINITY;
  if (text == "-Inf") return -INFINITY;
  if (text == "NaN") return NAN;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size()) {
    throw std::runtime_error("bad sample value \"" + text + "\"");
  }
  return v;
}

// The family a sample belongs to: histogram samples carry suffixes.
inline std::string family_of(const std::string& sample,
                             const std::map<std::string, Family>& known) {
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    const std::string s(suffix);
    if (sample.size() > s.size() && sample.compare(sample.size() - s.size(), s.size(), s) == 0) {
      const std::string base = sample.substr(0, sample.size() - s.size());
      auto it = known.find(base);
      if (it != known.end() && (it->second.type == "histogram" || it->second.type == "summary")) {
        return base;
      }
    }
  }
  return sample;
}

inline void check_histograms(const Family& f) {
  // Group by the label set without "le".
  std::map<std::map<std::string, std::string>, std::vector<const Sample*>> buckets;
  std::map<std::map<std::string, std::string>, double> counts;
  std::set<std::map<std::string, std::string>> sums;
  for (const Sample& s : f.samples) {
    auto key = s.labels;
    if (s.name == f.name + "_bucket") {
      if (!key.count("le")) throw std::runtime_error(f.name + "_bucket without le");
      key.erase("le");
      buckets[key].push_back(&s);
    } else if (s.name == f.name + "_count") {
      counts[key] = s.value;
    } else if (s.name == f.name + "_sum") {
      sums.insert(key);
    } else {
      throw std::runtime_error("unexpected sample " + s.name + " in histogram " + f.name);
    }
  }
  if (buckets.empty()) throw std::runtime_error("histogram " + f.name + " has no buckets");
  for (const auto& [key, list] : buckets) {
    double previous_le = -INFINITY;
    double previous_count = 0;
    for (const Sample* b : list) {
      const double le = parse_value(b->labels.at("le"));
      if (!(le > previous_le)) throw std::runtime_error(f.name + ": le not increasing");
      if (b->value < previous_count) throw std::runtime_error(f.name + ": buckets not cumulative");
      previous_le = le;
      previous_count = b->value;
    }
    if (!std::isinf(previous_le)) throw std::runtime_error(f.name + ": last bucket is not +Inf");
    if (!counts.count(key)) throw std::runtime_error(f.name + ": missing _count");
    if (counts.at(key) != previous_count)
      throw std::runtime_error(f.name + ": +Inf bucket != _count");
    if (!sums.count(key)) throw std::runtime_error(f.name + ": missing _sum");
  }
}

}  // namespace detail

// Throws std::runtime_error naming the line on any deviation from the format.
inline Exposition parse_exposition(const std::string& text) {
  using namespace detail;
  Exposition out;
  std::istringstream in(text);
  std::string line;
  std::size_t number = 0;
  std::set<std::string> seen_samples_of;
  auto fail = [&](const std::string& why) {
    throw std::runtime_error("line " + std::to_string(number) + ": " + why + ": " + line);
  };
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::istringstream words(line.substr(1));
      std::string keyword, name;
      words >> keyword >> name;
      if (keyword != "HELP" && keyword != "TYPE") continue;  // other comments are allowed
      if (!valid_name(name)) fail("bad metric name");
      std::string rest;
      std::getline(words, rest);
      if (!rest.empty() && rest[0] == ' ') rest.erase(0, 1);
      Family& f = out.families[name];
      f.name = name;
      if (keyword == "HELP") {
        f.help = rest;
      } else {
        static const std::set<std::string> types = {"counter", "gauge", "histogram", "summary",
                                                    "untyped"};
        if (!types.count(rest)) fail("unknown type");
        if (seen_samples_of.count(name)) fail("TYPE after samples");
        f.type = rest;
      }
      continue;
    }
    Sample s;
    std::size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    s.name = line.substr(0, i);
    if (!valid_name(s.name)) fail("bad sample name");
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        std::size_t eq = line.find('=', i);
        if (eq == std::string::npos) fail("label without =");
        const std::string label = line.substr(i, eq - i);
        if (!valid_name(label)) fail("bad label name");
        if (eq + 1 >= line.size() || line[eq + 1] != '"') fail("label value not quoted");
        std::string value;
        std::size_t j = eq + 2;
        for (; j < line.size() && line[j] != '"'; ++j) {
          if (line[j] == '\\') {
            if (++j >= line.size()) fail("dangling escape");
            if (line[j] == 'n') {
              value.push_back('\n');
            } else if (line[j] == '\\' || line[j] == '"') {
              value.push_back(line[j]);
            } else {
              fail("bad escape");
            }
          } else {
            value.push_back(line[j]);
          }
        }
        if (j >= line.size()) fail("unterminated label value");
        if (s.labels.count(label)) fail("duplicate label");
        s.labels[label] = value;
        i = j + 1;
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (i >= line.size()) fail("unterminated label set");
      ++i;
    }
    if (i >= line.size() || line[i] != ' ') fail("no value");
    std::istringstream rest(line.substr(i + 1));
    std::string value, timestamp, extra;
    rest >> value >> timestamp >> extra;
    if (!extra.empty()) fail("trailing fields");
    s.value = parse_value(value);
    const std::string family = family_of(s.name, out.families);
    auto it = out.families.find(family);
    if (it == out.families.end() || it->second.type.empty()) fail("sample without # TYPE");
    if (it->second.type == "counter" && s.value < 0) fail("negative counter");
    seen_samples_of.insert(family);
    it->second.samples.push_back(std::move(s));
  }
  for (const auto& [name, f] : out.families) {
    if (f.type == "histogram") check_histograms(f);
  }
  return out;
}

}  // namespace warmstart::api::testing
