// Container slots of one router: how many jobs may hold a container on this
// engine at once (`concurrency`). Pure (no I/O). Concurrency keys are not
// here: the queue enforces them fleet-wide (queue/queue.hpp), so a job whose
// key is busy never reaches a router, let alone a slot.
#pragma once
#include <set>
#include <string>

namespace warmstart::router {

class Capacity {
 public:
  explicit Capacity(int slots) : slots_(slots) {}

  // Slots not held by a job: how many jobs the dispatcher may claim now.
  int free_slots() const { return slots_ - static_cast<int>(holders_.size()); }
  // Takes a slot for `job_id`; false when none is free or the job already holds one.
  bool acquire_slot(const std::string& job_id);
  // Takes a slot even past the limit: re-attached containers after a restart
  // run whatever the configured concurrency is now.
  void force_slot(const std::string& job_id) { holders_.insert(job_id); }
  // Safe to call twice.
  void release_slot(const std::string& job_id) { holders_.erase(job_id); }
  bool holds_slot(const std::string& job_id) const { return holders_.count(job_id) != 0; }
  int held() const { return static_cast<int>(holders_.size()); }

 private:
  int slots_;
  std::set<std::string> holders_;
};

}  // namespace warmstart::router
