#include "router/capacity.hpp"

#include <catch2/catch.hpp>

using namespace warmstart::router;

TEST_CASE("slots bound the jobs held at once", "[unit][capacity]") {
  Capacity c(2);
  CHECK(c.free_slots() == 2);
  CHECK(c.acquire_slot("a"));
  CHECK_FALSE(c.acquire_slot("a"));  // no second slot for the same job
  CHECK(c.acquire_slot("b"));
  CHECK_FALSE(c.acquire_slot("c"));
  c.release_slot("a");
  c.release_slot("a");  // idempotent
  CHECK(c.free_slots() == 1);
  CHECK(c.acquire_slot("c"));
}

TEST_CASE("re-attached jobs may take slots past the limit", "[unit][capacity]") {
  Capacity c(1);
  c.force_slot("a");
  c.force_slot("b");
  CHECK(c.held() == 2);
  CHECK(c.free_slots() == -1);
  CHECK_FALSE(c.acquire_slot("c"));
  c.release_slot("a");
  c.release_slot("b");
  CHECK(c.acquire_slot("c"));
}
