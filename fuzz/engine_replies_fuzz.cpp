// Engine replies: inspect/list bodies, error bodies, the events stream (split
// into lines across arbitrary chunk boundaries), import progress and the
// multiplexed logs stream. The first byte picks the parser.
#include "container/docker_protocol.hpp"

#include <fuzzer/FuzzedDataProvider.h>

using namespace warmstart;
using namespace warmstart::container;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const int which = in.ConsumeIntegralInRange(0, 5);
  const std::size_t chunk = in.ConsumeIntegralInRange<std::size_t>(1, 4096);
  const std::string bytes = in.ConsumeRemainingBytesAsString();
  auto chunks = [&](auto&& feed) {
    for (std::size_t pos = 0; pos < bytes.size(); pos += chunk) {
      feed(std::string_view(bytes).substr(pos, chunk));
    }
  };
  switch (which) {
    case 0: {
      auto j = parse_bounded(bytes, engine_json_limits);
      if (!j) break;
      // "wrong types throw json errors" (docker_protocol.hpp): caught by the client.
      try {
        (void)parse_image_inspect(*j);
        (void)parse_container_inspect(*j);
        (void)parse_image_summary(*j);
        (void)parse_container_summary(*j);
      } catch (const nlohmann::json::exception&) {
      }
      break;
    }
    case 1:
      (void)error_message_from_body(bytes);
      (void)parse_api_version(bytes);
      try {
        (void)negotiate_api_version(bytes, {1, 41}, {1, 45});
      } catch (const DockerError&) {
      }
      break;
    case 2: {
      JsonLineSplitter splitter(4096);
      EventCursor cursor(0);
      chunks([&](std::string_view c) {
        splitter.feed(c, [&](std::string_view line) {
          if (auto e = parse_event_line(line)) (void)cursor.admit(*e);
        });
      });
      if (auto rest = splitter.take_rest()) (void)parse_event_line(*rest);
      break;
    }
    case 3:
      (void)parse_import_progress(bytes);
      break;
    case 4: {
      LogDemuxer demuxer(1024);
      chunks([&](std::string_view c) { demuxer.feed(c); });
      Logs logs = demuxer.finish();
      if (logs.combined.size() > 1024 || logs.stdout_text.size() > 1024) std::abort();
      break;
    }
    default:
      (void)url_encode(bytes);
      try {
        (void)parse_docker_host(bytes);
      } catch (const std::invalid_argument&) {
      }
      break;
  }
  return 0;
}
