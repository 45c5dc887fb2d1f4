#include "snapshots/registry.hpp"

#include <algorithm>
#include <charconv>

namespace warmstart::snapshots {
namespace {

// KEYS: entry hash, index set. ARGV: expected image id ("" = absent), key,
// field/value pairs of the new entry. Returns {won, entry hash before}.
constexpr const char* kRegisterScript = R"lua(
local cur = redis.call('HGET', KEYS[1], 'image_id')
if not cur then cur = '' end
local before = redis.call('HGETALL', KEYS[1])
if cur ~= ARGV[1] then return {0, before} end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('SADD', KEYS[2], ARGV[2])
return {1, before}
)lua";

// KEYS: entry hash, index set. ARGV: key, only-if image id ("" = any).
// Returns the removed entry hash, or an empty array.
constexpr const char* kRemoveScript = R"lua(
local cur = redis.call('HGET', KEYS[1], 'image_id')
if not cur then
  redis.call('SREM', KEYS[2], ARGV[1])
  return {}
end
if ARGV[2] ~= '' and cur ~= ARGV[2] then return {} end
local h = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return h
)lua";

// KEYS: entry hash. ARGV: base image id, now ms. Returns the entry hash as
// read, and counts a use of it when it names an image built on that base.
constexpr const char* kLookupAndUseScript = R"lua(
local h = redis.call('HGETALL', KEYS[1])
local base, image
for i = 1, #h, 2 do
  if h[i] == 'base_image_id' then base = h[i + 1] elseif h[i] == 'image_id' then image = h[i + 1] end
end
if base == ARGV[1] and image and image ~= '' then
  redis.call('HINCRBY', KEYS[1], 'uses', 1)
  redis.call('HSET', KEYS[1], 'last_used_ms', ARGV[2])
end
return h
)lua";

// KEYS: index set. ARGV: the entry hashes' key prefix. Returns the hash of
// every key in the index (an empty one when its hash is gone): the whole
// registry in one round trip, not one per key (a registry holds hundreds of
// keys; list() runs at start, in gc, for the CLI and the API). The entry
// keys are derived from the prefix, as RedisQueue's scripts derive theirs
// (standalone Redis, not Cluster).
constexpr const char* kListScript = R"lua(
local out = {}
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  out[#out + 1] = redis.call('HGETALL', ARGV[1] .. key)
end
return out
)lua";

// KEYS: index set. ARGV: the entry hashes' key prefix. Returns {count, bytes}
// of the entries list() would return: those whose hash names a key, an image
// and an image id (entry_from_fields); a size that is not an integer counts 0.
constexpr const char* kTotalsScript = R"lua(
local n, bytes = 0, 0
local function set(v) return v and v ~= '' end
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local f = redis.call('HMGET', ARGV[1] .. key, 'key', 'image', 'image_id', 'size_bytes')
  if set(f[1]) and set(f[2]) and set(f[3]) then
    n = n + 1
    if f[4] and string.match(f[4], '^%-?%d+$') then bytes = bytes + tonumber(f[4]) end
  end
end
return {n, string.format('%.0f', bytes)}
)lua";

std::int64_t to_int(const std::string& s) {
  std::int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return ec == std::errc() && ptr == s.data() + s.size() ? v : 0;
}

std::vector<std::string> flatten_reply(const redis::Reply& reply) {
  std::vector<std::string> flat;
  for (const auto& element : reply.as_array()) flat.push_back(element.as_string());
  return flat;
}

}  // namespace

std::vector<std::string> entry_to_fields(const SnapshotEntry& e) {
  return {"key",           e.key,
          "image",         e.image,
          "image_id",      e.image_id,
          "base_image_id", e.base_image_id,
          "source_job",    e.source_job,
          "created_ms",    std::to_string(e.created_ms),
          "last_used_ms",  std::to_string(e.last_used_ms),
          "uses",          std::to_string(e.uses),
          "size_bytes",    std::to_string(e.size_bytes),
          "layer_depth",   std::to_string(e.layer_depth),
          "generation",    std::to_string(e.generation),
          "ttl_ms",        std::to_string(e.ttl_ms),
          "build_ms",      std::to_string(e.build_ms)};
}

std::optional<SnapshotEntry> entry_from_fields(const std::vector<std::string>& flat) {
  SnapshotEntry e;
  for (std::size_t i = 0; i + 1 < flat.size(); i += 2) {
    const auto& f = flat[i];
    const auto& v = flat[i + 1];
    if (f == "key")
      e.key = v;
    else if (f == "image")
      e.image = v;
    else if (f == "image_id")
      e.image_id = v;
    else if (f == "base_image_id")
      e.base_image_id = v;
    else if (f == "source_job")
      e.source_job = v;
    else if (f == "created_ms")
      e.created_ms = to_int(v);
    else if (f == "last_used_ms")
      e.last_used_ms = to_int(v);
    else if (f == "uses")
      e.uses = to_int(v);
    else if (f == "size_bytes")
      e.size_bytes = to_int(v);
    else if (f == "layer_depth")
      e.layer_depth = to_int(v);
    else if (f == "generation")
      e.generation = to_int(v);
    else if (f == "ttl_ms")
      e.ttl_ms = to_int(v);
    else if (f == "build_ms")
      e.build_ms = to_int(v);
  }
  // Without these the entry names no image: treat it as absent.
  if (e.key.empty() || e.image.empty() || e.image_id.empty()) return std::nullopt;
  return e;
}

SnapshotRegistry::SnapshotRegistry(redis::ClientPtr client, std::string engine_id,
                                   RegistryOptions options)
    : client_(std::move(client)), engine_id_(std::move(engine_id)), options_(std::move(options)) {}

awaitable<std::optional<SnapshotEntry>> SnapshotRegistry::lookup(std::string key) {
  // Named argument vectors: g++ 12 miscompiles string-literal init lists
  // inside a co_await expression ("array used as initializer").
  std::vector<std::string> args{"HGETALL", entry_key(key)};
  auto reply = co_await client_->command(std::move(args));
  co_return entry_from_fields(flatten_reply(reply));
}

awaitable<std::optional<SnapshotEntry>> SnapshotRegistry::lookup_and_use(std::string key,
                                                                         std::string base_image_id,
                                                                         std::int64_t now_ms) {
  std::vector<std::string> keys{entry_key(key)};
  std::vector<std::string> args{std::move(base_image_id), std::to_string(now_ms)};
  auto reply = co_await client_->eval(kLookupAndUseScript, std::move(keys), std::move(args));
  co_return entry_from_fields(flatten_reply(reply));
}

awaitable<std::int64_t> SnapshotRegistry::next_generation(std::string key) {
  std::vector<std::string> args{"HINCRBY", generations_key(), key, "1"};
  auto reply = co_await client_->command(std::move(args));
  co_return reply.as_integer();
}

awaitable<RegisterResult> SnapshotRegistry::register_cas(SnapshotEntry entry,
                                                         std::string expected_image_id) {
  std::vector<std::string> args{std::move(expected_image_id), entry.key};
  for (auto& field : entry_to_fields(entry)) args.push_back(std::move(field));
  std::vector<std::string> keys{entry_key(entry.key), index_key()};
  auto reply = co_await client_->eval(kRegisterScript, std::move(keys), std::move(args));
  const auto& parts = reply.as_array();
  if (parts.size() != 2) {
    throw redis::ProtocolError("EVALSHA", "snapshot register script: unexpected reply shape");
  }
  RegisterResult result;
  result.won = parts[0].as_integer() == 1;
  auto before = entry_from_fields(flatten_reply(parts[1]));
  if (result.won) {
    result.previous = std::move(before);
  } else {
    result.current = std::move(before);
  }
  co_return result;
}

awaitable<std::optional<SnapshotEntry>> SnapshotRegistry::remove(std::string key,
                                                                 std::string only_if_image_id) {
  std::vector<std::string> keys{entry_key(key), index_key()};
  std::vector<std::string> args{key, std::move(only_if_image_id)};
  auto reply = co_await client_->eval(kRemoveScript, std::move(keys), std::move(args));
  co_return entry_from_fields(flatten_reply(reply));
}

awaitable<std::vector<SnapshotEntry>> SnapshotRegistry::list() {
  std::vector<std::string> keys{index_key()};
  std::vector<std::string> args{entry_key("")};  // the prefix of every entry hash
  auto reply = co_await client_->eval(kListScript, std::move(keys), std::move(args));
  std::vector<SnapshotEntry> entries;
  for (const auto& hash : reply.as_array()) {
    if (auto entry = entry_from_fields(flatten_reply(hash))) entries.push_back(std::move(*entry));
  }
  std::sort(entries.begin(), entries.end(),
            [](const SnapshotEntry& a, const SnapshotEntry& b) { return a.key < b.key; });
  co_return entries;
}

awaitable<Totals> SnapshotRegistry::totals() {
  std::vector<std::string> keys{index_key()};
  std::vector<std::string> args{entry_key("")};
  auto reply = co_await client_->eval(kTotalsScript, std::move(keys), std::move(args));
  const auto& parts = reply.as_array();
  if (parts.size() != 2) {
    throw redis::ProtocolError("EVALSHA", "snapshot totals script: unexpected reply shape");
  }
  Totals t;
  t.count = parts[0].as_integer();
  t.bytes = to_int(parts[1].as_string());
  co_return t;
}

}  // namespace warmstart::snapshots
