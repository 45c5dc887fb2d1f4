#include "queue/script_batcher.hpp"

#include <algorithm>
#include <stdexcept>

namespace warmstart::queue {

awaitable<redis::Reply> ScriptBatcher::run(std::vector<std::string> item) {
  auto call = std::make_shared<Call>(executor_);
  call->item = std::move(item);
  pending_.push_back(call);
  if (in_flight_) {
    // Woken (timer cancelled) with a result, or to lead the next batch.
    co_await call->wake.async_wait(net::as_tuple(use_awaitable));
    if (!call->lead) {
      if (call->error) std::rethrow_exception(call->error);
      if (call->reply) co_return std::move(*call->reply);
      // Cancelled from outside (a deadline) before its batch was sent.
      std::erase(pending_, call);
      throw boost::system::system_error(net::error::operation_aborted);
    }
  }
  in_flight_ = true;
  co_await send_batch();
  if (call->error) std::rethrow_exception(call->error);
  // A leader is always the oldest pending call, so its own item went out.
  if (!call->reply) throw std::logic_error("ScriptBatcher: leader's call was not sent");
  co_return std::move(*call->reply);
}

awaitable<void> ScriptBatcher::send_batch() {
  std::vector<CallPtr> batch;
  const std::size_t n = std::min(pending_.size(), std::max<std::size_t>(max_items_, 1));
  batch.assign(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(n));
  pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(n));
  std::vector<std::string> args;
  for (const auto& c : batch) {
    args.insert(args.end(), std::make_move_iterator(c->item.begin()),
                std::make_move_iterator(c->item.end()));
  }
  ++batches_;
  items_ += batch.size();

  std::exception_ptr error;
  redis::Reply reply;
  // The awaitable is built outside the try: g++ 12 destroys temporaries of a
  // throwing co_await expression twice.
  auto sending = send_(std::move(args));
  try {
    reply = co_await std::move(sending);
    if (!reply.is_array() || reply.elements.size() != batch.size()) {
      throw redis::ProtocolError(
          "EVALSHA", "batched script returned " + std::to_string(reply.elements.size()) +
                         " replies for " + std::to_string(batch.size()) + " calls");
    }
  } catch (...) {
    error = std::current_exception();
  }
  for (std::size_t i = 0; i < batch.size(); ++i) {
    if (error) {
      batch[i]->error = error;
    } else {
      batch[i]->reply = std::move(reply.elements[i]);
    }
    batch[i]->wake.cancel();  // no-op for the leader, which is not waiting
  }
  // Hand the lead to the oldest waiting call; it sends what queued up meanwhile.
  if (pending_.empty()) {
    in_flight_ = false;
  } else {
    pending_.front()->lead = true;
    pending_.front()->wake.cancel();
  }
}

}  // namespace warmstart::queue
