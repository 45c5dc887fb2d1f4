// SnapshotRegistry: the snapshot entries of one Docker engine, in Redis.
//
// Layout, under <key_prefix><engine id>: (routers on different hosts share one
// Redis but never one another's local images):
//   entry:<key>    hash of the SnapshotEntry fields
//   keys           set of the keys that have an entry
//   generations    hash key -> last generation handed out (never reset, so an
//                  image name is never reused even after invalidation)
// Registration is a compare-and-set in a Lua script, so concurrent commits of
// one key leave exactly one winner.
#pragma once
#include "common/net.hpp"
#include "common/redis.hpp"
#include "snapshots/entry.hpp"

#include <optional>
#include <string>
#include <vector>

namespace warmstart::snapshots {

struct RegistryOptions {
  std::string key_prefix = "warmstart:snapshots:";  // Redis key root; tests use a unique one
};

struct RegisterResult {
  bool won = false;
  std::optional<SnapshotEntry> previous;  // won: the entry it replaced (if any)
  std::optional<SnapshotEntry> current;   // lost: the entry that is registered instead
};

class SnapshotRegistry {
 public:
  SnapshotRegistry(redis::ClientPtr client, std::string engine_id, RegistryOptions options = {});

  const std::string& engine_id() const { return engine_id_; }
  const std::string& key_prefix() const { return options_.key_prefix; }

  awaitable<std::optional<SnapshotEntry>> lookup(std::string key);
  // lookup() and, in the same round trip (one script), a use counted at
  // `now_ms` when the entry was built on `base_image_id`: the lookup of a job
  // that will start from it. Returns the entry as it was before the count.
  awaitable<std::optional<SnapshotEntry>> lookup_and_use(std::string key, std::string base_image_id,
                                                         std::int64_t now_ms);
  // A fresh generation number for the next image of `key`.
  awaitable<std::int64_t> next_generation(std::string key);
  // Stores `entry` if the registered image of entry.key is `expected_image_id`
  // ("" = no entry may exist).
  awaitable<RegisterResult> register_cas(SnapshotEntry entry, std::string expected_image_id);
  // Deletes the entry of `key` (only if its image is `only_if_image_id`, when
  // not empty, so a stale caller never drops a newer generation). Returns the
  // removed entry.
  awaitable<std::optional<SnapshotEntry>> remove(std::string key,
                                                 std::string only_if_image_id = "");
  // Every entry, sorted by key.
  awaitable<std::vector<SnapshotEntry>> list();
  // How many entries list() would return and the sum of their size_bytes,
  // in one round trip with a reply of two numbers.
  awaitable<Totals> totals();

 private:
  std::string ns() const { return options_.key_prefix + engine_id_ + ":"; }
  std::string entry_key(const std::string& key) const { return ns() + "entry:" + key; }
  std::string index_key() const { return ns() + "keys"; }
  std::string generations_key() const { return ns() + "generations"; }

  redis::ClientPtr client_;
  std::string engine_id_;
  RegistryOptions options_;
};

// Hash fields <-> entry; exposed for tests. Unknown fields are ignored and
// malformed numbers read as 0 (the registry is shared, the reader is lenient).
std::vector<std::string> entry_to_fields(const SnapshotEntry& entry);
std::optional<SnapshotEntry> entry_from_fields(const std::vector<std::string>& flat);

}  // namespace warmstart::snapshots
