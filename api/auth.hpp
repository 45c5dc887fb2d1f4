// Secrets and their comparison: bearer tokens for /v1/*, HMAC-SHA256 for
// webhooks. Pure functions over OpenSSL; every comparison of a secret is
// constant-time so response timing reveals nothing about it.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace warmstart::api {

// HMAC-SHA256 of `message` under `key`, as 32 raw bytes.
std::string hmac_sha256(std::string_view key, std::string_view message);
std::string to_hex(std::string_view bytes);  // lowercase
// Lower- or uppercase hex -> bytes; nullopt on odd length or a non-hex digit.
std::optional<std::string> from_hex(std::string_view hex);

// Compares two secrets in time independent of their content and of where they
// differ. Both are hashed first (SHA-256), so the length of the expected value
// does not leak through an early exit either.
bool secrets_equal(std::string_view expected, std::string_view presented);

// "Bearer <token>" (scheme case-insensitive) -> token; nullopt otherwise.
std::optional<std::string> bearer_token(std::string_view authorization_header);

// The API token: env WARMSTART_API_TOKEN wins, else the contents of
// `token_file` when given; nullopt = no token configured (auth off).
// Never a command-line flag: flags show up in ps. Throws std::runtime_error
// when the file is named but unreadable or empty.
std::optional<std::string> load_api_token(const std::optional<std::string>& token_file);

// Reads the secret at `path`, or creates it when absent: 32 random bytes as
// hex, written with O_EXCL | O_NOFOLLOW and mode 0600, the parent directories
// created 0700. A file readable by group or others is tightened to 0600 (and
// logged). Throws std::runtime_error naming the path (never the content).
std::string load_or_create_secret_file(const std::string& path);
// 32 bytes from the OpenSSL CSPRNG, hex-encoded.
std::string random_token();

// Reads a secret file: contents with trailing whitespace/newlines removed.
// Throws std::runtime_error naming the path (never the content).
std::string read_secret_file(const std::string& path);

}  // namespace warmstart::api
