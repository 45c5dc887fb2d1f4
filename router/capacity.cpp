#include "router/capacity.hpp"

namespace warmstart::router {

bool Capacity::acquire_slot(const std::string& job_id) {
  if (free_slots() <= 0 || holders_.count(job_id) != 0) return false;
  holders_.insert(job_id);
  return true;
}

}  // namespace warmstart::router
