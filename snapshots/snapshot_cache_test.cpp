// Integration tests of SnapshotCache (filled in below).
#include <catch2/catch.hpp>
