#include "cli/services.hpp"

#include "common/log.hpp"

#include <iostream>

namespace warmstart::cli {

int report_error(std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::invalid_argument& e) {
    std::cerr << "warmstart: " << e.what() << "\n";
    return usage;
  } catch (const queue::InvalidJob& e) {
    std::cerr << "warmstart: invalid job: " << e.what() << "\n";
    return usage;
  } catch (const redis::Error& e) {
    if (redis::is_transient(e)) {
      std::cerr << "warmstart: cannot reach Redis: " << e.what() << "\n";
      return unreachable;
    }
    std::cerr << "warmstart: " << e.what() << "\n";
    return failed;
  } catch (const container::TransportError& e) {
    std::cerr << "warmstart: cannot reach Docker: " << e.what() << "\n";
    return unreachable;
  } catch (const DeadlineExceeded& e) {
    std::cerr << "warmstart: " << e.what() << "\n";
    return unreachable;
  } catch (const std::exception& e) {
    std::cerr << "warmstart: " << e.what() << "\n";
    return failed;
  }
}

int run_command(net::io_context& io, std::function<awaitable<int>()> body) {
  int code = failed;
  net::co_spawn(io, body(), [&](std::exception_ptr e, int result) {
    code = e ? report_error(e) : result;
    io.stop();
  });
  io.run();
  return code;
}

}  // namespace warmstart::cli
