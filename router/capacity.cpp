#include "router/capacity.hpp"

namespace warmstart::router {

bool Capacity::acquire_slot(const std::string& job_id) {
  if (free_slots() <= 0 || holders_.count(job_id) != 0) return false;
  holders_.insert(job_id);
  return true;
}

bool Capacity::key_has_room(const std::string& key) const {
  return key.empty() || running_with_key(key) < per_key_limit_;
}

void Capacity::acquire_key(const std::string& job_id, const std::string& key) {
  if (key.empty() || key_of_.count(job_id) != 0) return;
  key_of_[job_id] = key;
  ++key_count_[key];
}

void Capacity::release(const std::string& job_id) {
  holders_.erase(job_id);
  auto it = key_of_.find(job_id);
  if (it == key_of_.end()) return;
  if (--key_count_[it->second] <= 0) key_count_.erase(it->second);
  key_of_.erase(it);
}

int Capacity::running_with_key(const std::string& key) const {
  auto it = key_count_.find(key);
  return it == key_count_.end() ? 0 : it->second;
}

}  // namespace warmstart::router
