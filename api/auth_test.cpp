#include "api/auth.hpp"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <sys/stat.h>

using namespace warmstart::api;

TEST_CASE("HMAC-SHA256 matches GitHub's published webhook test vector", "[unit]") {
  CHECK(to_hex(hmac_sha256("It's a Secret to Everybody", "Hello, World!")) ==
        "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
  // RFC 4231 test case 2.
  CHECK(to_hex(hmac_sha256("Jefe", "what do ya want for nothing?")) ==
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST_CASE("hex decoding rejects odd lengths and non-hex digits", "[unit]") {
  CHECK(from_hex("00ff10") == std::string("\x00\xff\x10", 3));
  CHECK(from_hex("ABcd") == std::string("\xab\xcd", 2));
  CHECK_FALSE(from_hex("abc"));
  CHECK_FALSE(from_hex("zz"));
}

TEST_CASE("secrets_equal compares whole values of any length", "[unit]") {
  CHECK(secrets_equal("s3cret", "s3cret"));
  CHECK_FALSE(secrets_equal("s3cret", "s3creT"));
  CHECK_FALSE(secrets_equal("s3cret", "s3cret2"));
  CHECK_FALSE(secrets_equal("s3cret", ""));
  CHECK_FALSE(secrets_equal("", "x"));
}

TEST_CASE("bearer_token parses the Authorization header", "[unit]") {
  CHECK(bearer_token("Bearer abc") == "abc");
  CHECK(bearer_token("bearer   abc  ") == "abc");
  CHECK_FALSE(bearer_token("Basic abc"));
  CHECK_FALSE(bearer_token("Bearer "));
  CHECK_FALSE(bearer_token("Bearerabc"));
}

TEST_CASE("API token: env wins over the file, file is trimmed, no source means no auth", "[unit]") {
  const auto dir =
      std::filesystem::temp_directory_path() / ("ws-api-auth-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto file = (dir / "token").string();
  std::ofstream(file) << "from-file\n";

  ::unsetenv("WARMSTART_API_TOKEN");
  CHECK_FALSE(load_api_token(std::nullopt));
  CHECK(load_api_token(file) == "from-file");
  ::setenv("WARMSTART_API_TOKEN", "from-env", 1);
  CHECK(load_api_token(file) == "from-env");
  ::unsetenv("WARMSTART_API_TOKEN");
  CHECK_THROWS_WITH(load_api_token((dir / "missing").string()),
                    Catch::Contains("cannot read secret file"));
  std::ofstream(file) << "\n";
  CHECK_THROWS_WITH(load_api_token(file), Catch::Contains("is empty"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("a generated token file is 0600 in a 0700 directory and read back", "[unit]") {
  const auto dir =
      std::filesystem::temp_directory_path() / ("ws-api-gen-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  const auto file = (dir / "state" / "api-token").string();
  const std::string first = load_or_create_secret_file(file);
  CHECK(first.size() == 64);
  CHECK(from_hex(first).has_value());
  struct stat st {};
  REQUIRE(::stat(file.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  REQUIRE(::stat((dir / "state").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
  CHECK(load_or_create_secret_file(file) == first);  // kept across restarts
  CHECK(random_token() != random_token());

  // Loosened by hand: tightened again on the next start.
  ::chmod(file.c_str(), 0644);
  CHECK(load_or_create_secret_file(file) == first);
  REQUIRE(::stat(file.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  // A symlink planted where the token goes is not followed.
  const auto planted = (dir / "state" / "planted").string();
  std::filesystem::create_symlink(dir / "elsewhere", planted);
  CHECK_THROWS_AS(load_or_create_secret_file(planted), std::runtime_error);
  CHECK_FALSE(std::filesystem::exists(dir / "elsewhere"));
  std::filesystem::remove_all(dir);
}
