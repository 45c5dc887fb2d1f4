#include "common/digest.hpp"

#include <openssl/evp.h>

#include <stdexcept>

namespace warmstart {
namespace {

std::string digest_hex(std::string_view data, const EVP_MD* md, const char* name) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), out, &len, md, nullptr) != 1) {
    throw std::runtime_error(std::string(name) + " digest failed");
  }
  static constexpr char digits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(len * 2);
  for (unsigned int i = 0; i < len; ++i) {
    hex.push_back(digits[out[i] >> 4]);
    hex.push_back(digits[out[i] & 0xf]);
  }
  return hex;
}

}  // namespace

std::string sha1_hex(std::string_view data) {
  return digest_hex(data, EVP_sha1(), "SHA1");
}

std::string sha256_hex(std::string_view data) {
  return digest_hex(data, EVP_sha256(), "SHA-256");
}

}  // namespace warmstart
