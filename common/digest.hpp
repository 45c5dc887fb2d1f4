// Message digests as lowercase hex (OpenSSL's EVP): script SHA1s for EVALSHA,
// SHA-256 fingerprints of job specs.
#pragma once
#include <string>
#include <string_view>

namespace warmstart {

std::string sha1_hex(std::string_view data);
std::string sha256_hex(std::string_view data);

}  // namespace warmstart
