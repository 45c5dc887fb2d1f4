#include "api/sse.hpp"

#include <catch2/catch.hpp>

using namespace warmstart::api;
using nlohmann::json;
using Live = ReplayMerger::Live;

namespace {

SseEventPtr event(const std::string& id) {
  return frame_event(json{{"id", id}, {"type", "job.queued"}, {"job", "j" + id}});
}

std::string ids(const std::vector<SseEventPtr>& events) {
  std::string out;
  for (const auto& e : events) out += (out.empty() ? "" : ",") + e->id;
  return out;
}

}  // namespace

TEST_CASE("only a Redis stream id is a Last-Event-ID to resume from", "[unit]") {
  CHECK(is_stream_id("0"));
  CHECK(is_stream_id("1700000000000-3"));
  CHECK(is_stream_id("18446744073709551615-18446744073709551615"));
  CHECK_FALSE(is_stream_id(""));
  CHECK_FALSE(is_stream_id("-1"));
  CHECK_FALSE(is_stream_id("1-"));
  CHECK_FALSE(is_stream_id("1-2-3"));
  CHECK_FALSE(is_stream_id("18446744073709551616-0"));  // past 64 bits
  CHECK_FALSE(is_stream_id("1 OR 1"));
  CHECK_FALSE(is_stream_id(std::string(5000, '1')));
}

TEST_CASE("event ids order like Redis stream ids", "[unit]") {
  CHECK(event_id_less("", "1-0"));
  CHECK_FALSE(event_id_less("1-0", ""));
  CHECK_FALSE(event_id_less("", ""));
  CHECK(event_id_less("0", "1-0"));
  CHECK(event_id_less("9-0", "10-0"));  // numeric, not lexicographic
  CHECK(event_id_less("10-1", "10-2"));
  CHECK(event_id_less("10-9", "10-10"));
  CHECK(event_id_less("10", "10-1"));
  CHECK_FALSE(event_id_less("10-2", "10-2"));
  CHECK_FALSE(event_id_less("1700000000001-0", "1700000000000-5"));
  CHECK(event_id_less("abc", "abd"));  // other shapes: string order
}

TEST_CASE("events are framed as one SSE message each", "[unit]") {
  CHECK(frame_event(json{{"id", "5-0"}, {"type", "job.started"}, {"job", "a\nb"}})->text ==
        "id: 5-0\nevent: job.started\ndata: "
        "{\"id\":\"5-0\",\"job\":\"a\\nb\",\"type\":\"job.started\"}\n\n");
  // A line break in an id or type cannot forge extra fields.
  CHECK(frame_event(json{{"id", "1-0\ndata: x"}})->text.find("\ndata: x") == std::string::npos);
  CHECK(frame_event(json{{"id", "1-0"}})->text.starts_with("id: 1-0\nevent: message\n"));
}

TEST_CASE("replay merger: live only without Last-Event-ID", "[unit]") {
  ReplayMerger m(std::nullopt, 4);
  CHECK_FALSE(m.replaying());
  CHECK(m.on_live(event("1-0")) == Live::send);
  CHECK(m.on_live(event("2-0")) == Live::send);
  CHECK(m.on_live(event("2-0")) == Live::duplicate);
  CHECK(m.on_live(event("1-0")) == Live::duplicate);
  CHECK(m.last_sent() == "2-0");
}

TEST_CASE("replay merger: held live events overlapping the replay are sent once, in order",
          "[unit]") {
  // Client saw up to 3. While it replays 4..6, events 5..8 arrive live.
  ReplayMerger m(std::string("3-0"), 16);
  CHECK(m.replaying());
  CHECK(m.on_live(event("5-0")) == Live::held);
  CHECK_FALSE(m.on_replay(*event("3-0")));  // not newer than Last-Event-ID
  CHECK(m.on_replay(*event("4-0")));
  CHECK(m.on_live(event("6-0")) == Live::held);
  CHECK(m.on_replay(*event("5-0")));
  CHECK(m.on_replay(*event("6-0")));
  CHECK(m.on_live(event("7-0")) == Live::held);
  CHECK(m.on_live(event("8-0")) == Live::held);
  CHECK(ids(m.finish_replay()) == "7-0,8-0");
  CHECK_FALSE(m.replaying());
  CHECK(m.on_live(event("8-0")) == Live::duplicate);
  CHECK(m.on_live(event("9-0")) == Live::send);
}

TEST_CASE("replay merger: an empty replay releases everything held", "[unit]") {
  ReplayMerger m(std::string("10-0"), 16);
  CHECK(m.on_live(event("11-0")) == Live::held);
  CHECK(m.on_live(event("12-0")) == Live::held);
  CHECK(ids(m.finish_replay()) == "11-0,12-0");
  CHECK(m.last_sent() == "12-0");
}

TEST_CASE("replay merger: holding more than the queue bound overflows", "[unit]") {
  ReplayMerger m(std::string("0"), 2);
  CHECK(m.on_live(event("1-0")) == Live::held);
  CHECK(m.on_live(event("2-0")) == Live::held);
  CHECK(m.on_live(event("3-0")) == Live::overflow);
}
