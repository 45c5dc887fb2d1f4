#include "router/outcome.hpp"

#include "common/redis.hpp"
#include "container/errors.hpp"
#include "queue/queue.hpp"

namespace warmstart::router {

Fault classify(const std::exception_ptr& error) {
  if (!error) return Fault::none;
  try {
    std::rethrow_exception(error);
  } catch (const container::ApiError& e) {
    if (e.is_image_not_found()) return Fault::image_not_found;
    if (e.is_not_found()) return Fault::not_found;
    if (e.is_conflict()) return Fault::conflict;
    return Fault::other;
  } catch (const container::TransportError&) {
    return Fault::engine_down;
  } catch (const queue::LeaseLost&) {
    return Fault::lease_lost;
  } catch (const redis::Error& e) {
    return redis::is_transient(e) ? Fault::redis : Fault::other;
  } catch (const DeadlineExceeded&) {
    // with_deadline() bounds engine calls (stop): no answer in time.
    return Fault::engine_down;
  } catch (...) {
    return Fault::other;
  }
}

std::string describe(const std::exception_ptr& error) {
  if (!error) return "";
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown error";
  }
}

}  // namespace warmstart::router
