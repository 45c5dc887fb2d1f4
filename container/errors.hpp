// Typed errors of the Docker Engine API client.
#pragma once
#include <stdexcept>
#include <string>

namespace warmstart::container {

// Base of every error the client throws.
class DockerError : public std::runtime_error {
 public:
  DockerError(std::string operation, const std::string& what)
      : std::runtime_error(what), operation_(std::move(operation)) {}
  // The client operation, e.g. "container create".
  const std::string& operation() const { return operation_; }

 private:
  std::string operation_;
};

// The engine answered with an HTTP error status. Keeps status and message.
class ApiError : public DockerError {
 public:
  ApiError(std::string operation, int status, std::string message)
      : DockerError(operation, operation + ": HTTP " + std::to_string(status) + ": " + message),
        status_(status),
        message_(std::move(message)) {}
  int status() const { return status_; }
  // The engine's own message ("No such image: foo:latest").
  const std::string& message() const { return message_; }
  bool is_not_found() const { return status_ == 404; }
  bool is_conflict() const { return status_ == 409; }
  // True only for a 404 whose message starts with "No such image": not for a
  // missing container, network or volume. Case-insensitive: create answers
  // "No such image: x", image inspect "no such image: x: No such image: x".
  bool is_image_not_found() const {
    static constexpr char prefix[] = "no such image";
    if (status_ != 404 || message_.size() < sizeof prefix - 1) return false;
    for (std::size_t i = 0; i + 1 < sizeof prefix; ++i) {
      char c = message_[i];
      if ((c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c) != prefix[i]) return false;
    }
    return true;
  }

 private:
  int status_;
  std::string message_;
};

// The request never got an HTTP answer: socket missing, connection reset,
// deadline exceeded, malformed response.
class TransportError : public DockerError {
 public:
  enum class Kind { connect, timeout, io, protocol };
  TransportError(std::string operation, Kind kind, const std::string& detail)
      : DockerError(operation, operation + ": " + detail), kind_(kind) {}
  Kind kind() const { return kind_; }
  bool is_timeout() const { return kind_ == Kind::timeout; }

 private:
  Kind kind_;
};

}  // namespace warmstart::container
