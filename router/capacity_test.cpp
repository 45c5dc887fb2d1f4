#include "router/capacity.hpp"

#include <catch2/catch.hpp>

using namespace warmstart::router;

TEST_CASE("slots bound the jobs held at once", "[unit][capacity]") {
  Capacity c(2, 1);
  CHECK(c.free_slots() == 2);
  CHECK(c.acquire_slot("a"));
  CHECK_FALSE(c.acquire_slot("a"));  // no second slot for the same job
  CHECK(c.acquire_slot("b"));
  CHECK_FALSE(c.acquire_slot("c"));
  c.release("a");
  c.release("a");  // idempotent
  CHECK(c.free_slots() == 1);
  CHECK(c.acquire_slot("c"));
}

TEST_CASE("a concurrency key admits up to its limit and is released on every path",
          "[unit][capacity]") {
  Capacity c(10, 2);
  CHECK(c.key_has_room(""));
  CHECK(c.key_has_room("k"));
  c.acquire_key("a", "k");
  c.acquire_key("a", "k");  // counted once
  CHECK(c.running_with_key("k") == 1);
  c.acquire_key("b", "k");
  CHECK_FALSE(c.key_has_room("k"));
  CHECK(c.key_has_room("other"));
  c.release("a");
  CHECK(c.key_has_room("k"));
  c.release("b");
  CHECK(c.running_with_key("k") == 0);
}
