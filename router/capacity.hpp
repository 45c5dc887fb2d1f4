// Admission bookkeeping of one router: container slots and per-concurrency-key
// limits. Pure (no I/O): the dispatcher asks before it claims and before it
// starts a claimed job, and releases on every path.
#pragma once
#include <map>
#include <set>
#include <string>

namespace warmstart::router {

class Capacity {
 public:
  Capacity(int slots, int per_key_limit) : slots_(slots), per_key_limit_(per_key_limit) {}

  // Slots not held by a job: how many jobs the dispatcher may claim now.
  int free_slots() const { return slots_ - static_cast<int>(holders_.size()); }
  // Takes a slot for `job_id`; false when none is free or the job already holds one.
  bool acquire_slot(const std::string& job_id);
  // True when `key` ("" = none) has room for one more running job.
  bool key_has_room(const std::string& key) const;
  // Takes the key for the job (call only after key_has_room()).
  void acquire_key(const std::string& job_id, const std::string& key);
  // Releases whatever the job holds (slot and key). Safe to call twice.
  void release(const std::string& job_id);
  // Releases only the slot (the job keeps its concurrency key, e.g. while its
  // snapshot is committed after the container exited).
  void release_slot(const std::string& job_id) { holders_.erase(job_id); }
  // Takes a slot even past the limit: re-attached containers after a restart
  // run whatever the configured concurrency is now.
  void force_slot(const std::string& job_id) { holders_.insert(job_id); }

  bool holds_slot(const std::string& job_id) const { return holders_.count(job_id) != 0; }
  int running_with_key(const std::string& key) const;

 private:
  int slots_;
  int per_key_limit_;
  std::set<std::string> holders_;
  std::map<std::string, std::string> key_of_;  // job -> key
  std::map<std::string, int> key_count_;       // key -> jobs holding it
};

}  // namespace warmstart::router
