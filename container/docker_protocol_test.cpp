#include "container/docker_protocol.hpp"

#include <catch2/catch.hpp>

#include <string>

using namespace warmstart::container;
using nlohmann::json;

namespace {

// One frame of the logs stream: [type, 0, 0, 0, size (big-endian)] + payload.
std::string frame(unsigned char stream, std::string_view payload) {
  std::string out(8, '\0');
  out[0] = static_cast<char>(stream);
  auto n = static_cast<std::uint32_t>(payload.size());
  out[4] = static_cast<char>((n >> 24) & 0xFF);
  out[5] = static_cast<char>((n >> 16) & 0xFF);
  out[6] = static_cast<char>((n >> 8) & 0xFF);
  out[7] = static_cast<char>(n & 0xFF);
  return out + std::string(payload);
}

Event event(std::string action, std::string id, std::int64_t t) {
  Event e;
  e.type = "container";
  e.action = std::move(action);
  e.id = std::move(id);
  e.time_nano = t;
  return e;
}

}  // namespace

TEST_CASE("API versions compare numerically", "[unit][container]") {
  auto v = [](std::string_view s) { return parse_api_version(s).value(); };
  CHECK(v("1.9") < v("1.41"));
  CHECK(v("1.41") < v("1.100"));
  CHECK(v("1.41") == v("1.41"));
  CHECK(v("2.0") > v("1.100"));
  CHECK_FALSE(parse_api_version(""));
  CHECK_FALSE(parse_api_version("1"));
  CHECK_FALSE(parse_api_version("1."));
  CHECK_FALSE(parse_api_version("1.4x"));
  CHECK_FALSE(parse_api_version("v1.41"));
}

TEST_CASE("API version negotiation: min(engine, newest), floor enforced", "[unit][container]") {
  ApiVersion floor{1, 41};
  ApiVersion newest{1, 43};
  CHECK(negotiate_api_version("1.41", floor, newest).str() == "1.41");
  CHECK(negotiate_api_version("1.42", floor, newest).str() == "1.42");
  CHECK(negotiate_api_version("1.100", floor, newest).str() == "1.43");
  CHECK_THROWS_WITH(negotiate_api_version("1.40", floor, newest),
                    Catch::Contains("1.40") && Catch::Contains("older than 1.41"));
  CHECK_THROWS_AS(negotiate_api_version("1.9", floor, newest), DockerError);
  CHECK_THROWS_AS(negotiate_api_version("", floor, newest), DockerError);
}

TEST_CASE("parse_docker_host accepts unix:// and bare paths only", "[unit][container]") {
  CHECK(parse_docker_host("unix:///var/run/docker.sock") == "/var/run/docker.sock");
  CHECK(parse_docker_host("/tmp/x/docker.sock") == "/tmp/x/docker.sock");
  CHECK_THROWS_AS(parse_docker_host("tcp://127.0.0.1:2375"), std::invalid_argument);
  CHECK_THROWS_AS(parse_docker_host("unix://relative.sock"), std::invalid_argument);
  CHECK_THROWS_AS(parse_docker_host(""), std::invalid_argument);
}

TEST_CASE("label filters are JSON, URL-encoded as one query value", "[unit][container]") {
  CHECK(label_filters_json({}).empty());
  CHECK(label_filters_json({"warmstart.managed=true", "warmstart.job"}) ==
        R"({"label":["warmstart.managed=true","warmstart.job"]})");
  CHECK(url_encode(R"({"label":["a=b c"]})") == "%7B%22label%22%3A%5B%22a%3Db%20c%22%5D%7D");
  CHECK(url_encode("AZaz09-_.~") == "AZaz09-_.~");
  EventFilter f;
  f.types = {"container"};
  f.labels = {"t=1"};
  f.events = {"die"};
  CHECK(event_filters_json(f) == R"({"event":["die"],"label":["t=1"],"type":["container"]})");
  CHECK(event_filters_json(EventFilter{}).empty());
}

TEST_CASE("since/until timestamps carry nine nanosecond digits", "[unit][container]") {
  CHECK(format_unix_nano(1'700'000'000'000'000'123) == "1700000000.000000123");
  CHECK(format_unix_nano(1'700'000'000'500'000'000) == "1700000000.500000000");
  CHECK(format_unix_nano(0) == "0.000000000");
}

TEST_CASE("logs demux: interleaved stdout and stderr keep arrival order", "[unit][container]") {
  LogDemuxer d(1024);
  d.feed(frame(1, "out1\n") + frame(2, "err1\n") + frame(1, "out2\n"));
  Logs logs = d.finish();
  CHECK(logs.stdout_text == "out1\nout2\n");
  CHECK(logs.stderr_text == "err1\n");
  CHECK(logs.combined == "out1\nerr1\nout2\n");
  CHECK_FALSE(logs.truncated);
}

TEST_CASE("logs demux: frames split at every byte boundary", "[unit][container]") {
  std::string stream = frame(1, "hello ") + frame(2, std::string(300, 'e')) + frame(1, "world");
  for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
    LogDemuxer d(4096);
    d.feed(std::string_view(stream).substr(0, cut));
    d.feed(std::string_view(stream).substr(cut));
    Logs logs = d.finish();
    INFO("cut at " << cut);
    REQUIRE(logs.stdout_text == "hello world");
    REQUIRE(logs.stderr_text == std::string(300, 'e'));
  }
  LogDemuxer bytewise(4096);
  for (char c : stream) bytewise.feed(std::string_view(&c, 1));
  CHECK_FALSE(bytewise.incomplete());
  CHECK(bytewise.finish().combined == "hello " + std::string(300, 'e') + "world");
}

TEST_CASE("logs demux: keeps only the tail, marks truncation", "[unit][container]") {
  LogDemuxer d(10);
  for (int i = 0; i < 2000; ++i) d.feed(frame(i % 2 == 0 ? 1 : 2, std::to_string(i % 10)));
  Logs logs = d.finish();
  CHECK(logs.truncated);
  CHECK(logs.combined == "0123456789");
  CHECK(logs.stdout_text == "0246802468");
  CHECK(logs.stderr_text == "1357913579");

  LogDemuxer exact(5);
  exact.feed(frame(1, "12345"));
  Logs fits = exact.finish();
  CHECK_FALSE(fits.truncated);
  CHECK(fits.combined == "12345");
}

TEST_CASE("logs demux: an unframed (TTY) stream is raw stdout", "[unit][container]") {
  LogDemuxer d(100);
  d.feed("plain text\n");
  Logs logs = d.finish();
  CHECK(logs.stdout_text == "plain text\n");
  CHECK(logs.stderr_text.empty());
}

TEST_CASE("logs demux: a stream cut mid-frame is reported incomplete", "[unit][container]") {
  LogDemuxer d(100);
  std::string f = frame(1, "abcdef");
  d.feed(std::string_view(f).substr(0, 10));
  CHECK(d.incomplete());
  CHECK(d.finish().stdout_text == "ab");
}

TEST_CASE("events: lines split anywhere parse the same", "[unit][container]") {
  std::string stream =
      R"({"status":"die","id":"abc","from":"img","Type":"container","Action":"die",)"
      R"("Actor":{"ID":"abc","Attributes":{"exitCode":"3","warmstart.job":"j1"}},)"
      R"("scope":"local","time":1700000000,"timeNano":1700000000123456789})"
      "\n"
      R"({"Type":"image","Action":"delete","Actor":{"ID":"sha256:ff","Attributes":{}},)"
      R"("time":1700000001,"timeNano":1700000001000000000})"
      "\r\n";
  for (std::size_t cut = 0; cut <= stream.size(); cut += 7) {
    JsonLineSplitter splitter;
    std::vector<Event> events;
    auto on_line = [&](std::string_view line) {
      if (auto e = parse_event_line(line)) events.push_back(*e);
    };
    splitter.feed(std::string_view(stream).substr(0, cut), on_line);
    splitter.feed(std::string_view(stream).substr(cut), on_line);
    INFO("cut at " << cut);
    REQUIRE(events.size() == 2);
    CHECK(events[0].type == "container");
    CHECK(events[0].action == "die");
    CHECK(events[0].id == "abc");
    CHECK(events[0].attributes.at("exitCode") == "3");
    CHECK(exit_code_of(events[0]) == 3);
    CHECK(events[0].attributes.at("warmstart.job") == "j1");
    CHECK(events[0].time_nano == 1'700'000'000'123'456'789);
    CHECK(events[1].action == "delete");
    CHECK_FALSE(splitter.take_rest());
  }
  CHECK_FALSE(parse_event_line("not json"));
  CHECK_FALSE(parse_event_line(R"({"Type":"container"})"));
}

TEST_CASE("events: the exit code of a die event is a whole number or nothing",
          "[unit][container]") {
  auto with_code = [](std::string code) {
    Event e;
    e.action = "die";
    e.attributes["exitCode"] = std::move(code);
    return exit_code_of(e);
  };
  CHECK(with_code("0") == 0);
  CHECK(with_code("137") == 137);
  CHECK(with_code("-1") == -1);
  CHECK_FALSE(with_code(""));
  CHECK_FALSE(with_code("3x"));
  CHECK_FALSE(with_code("99999999999"));
  CHECK_FALSE(exit_code_of(Event{}));
}

TEST_CASE("event cursor: replay after reconnect is deduplicated, nothing dropped",
          "[unit][container]") {
  const std::int64_t s = 1'000'000'000;  // one second in ns
  EventCursor cursor(100 * s, /*window_nano=*/s);
  CHECK_FALSE(cursor.admit(event("start", "old", 99 * s)));  // before the subscription
  CHECK(cursor.admit(event("start", "a", 100 * s)));         // since is inclusive
  CHECK(cursor.admit(event("die", "a", 105 * s)));
  CHECK(cursor.admit(event("die", "b", 105 * s)));  // same instant, other container
  CHECK(cursor.resume_since() == 104 * s);
  // The reconnect replays from 104 s: what was delivered is dropped, the rest
  // (including an event published slightly out of time order) comes through.
  CHECK_FALSE(cursor.admit(event("die", "a", 105 * s)));
  CHECK_FALSE(cursor.admit(event("die", "b", 105 * s)));
  CHECK(cursor.admit(event("destroy", "c", 104 * s + 5)));
  CHECK(cursor.admit(event("destroy", "a", 106 * s)));
  CHECK_FALSE(cursor.admit(event("destroy", "a", 106 * s)));
  CHECK(cursor.resume_since() == 105 * s);
}

TEST_CASE("event cursor: an event published seconds after a later one is still delivered, once",
          "[unit][container]") {
  // dockerd stamps an event, then publishes it: on a loaded engine another
  // container's event, stamped later, can go out first (load_bench's ramp).
  const std::int64_t s = 1'000'000'000;
  EventCursor cursor(100 * s, /*window_nano=*/s);
  CHECK(cursor.admit(event("start", "a", 101 * s)));
  CHECK(cursor.admit(event("start", "b", 105 * s)));
  CHECK(cursor.admit(event("start", "late", 102 * s)));  // 3 s out of order: new
  CHECK(cursor.resume_since() == 104 * s);
  // A replay from 104 s repeats nothing delivered; a longer one (the engine
  // answering a stale since) is deduplicated too.
  CHECK_FALSE(cursor.admit(event("start", "b", 105 * s)));
  CHECK_FALSE(cursor.admit(event("start", "late", 102 * s)));
  CHECK_FALSE(cursor.admit(event("start", "a", 101 * s)));
  // Memory stays bounded: fingerprints are forgotten 30 s behind the resume
  // point (a replay starts at it), not before.
  CHECK(cursor.admit(event("die", "b", 140 * s)));
  CHECK(cursor.admit(event("start", "a", 101 * s)));
  CHECK_FALSE(cursor.admit(event("die", "b", 140 * s)));
}

TEST_CASE("import progress: image id or the engine's error", "[unit][container]") {
  auto ok = parse_import_progress(R"({"status":"sha256:abc"})"
                                  "\n");
  CHECK(ok.image_id == "sha256:abc");
  CHECK(ok.error.empty());
  auto bad = parse_import_progress(
      R"({"errorDetail":{"message":"unexpected EOF"},"error":"unexpected EOF"})");
  CHECK(bad.error == "unexpected EOF");
  CHECK(bad.image_id.empty());
}

TEST_CASE("error bodies: the engine's message, else the text", "[unit][container]") {
  CHECK(error_message_from_body(R"({"message":"No such image: x:latest"})") ==
        "No such image: x:latest");
  CHECK(error_message_from_body("page not found\n") == "page not found");
  CHECK(error_message_from_body("") == "(empty body)");
  CHECK(ApiError("container create", 404, "No such image: x:latest").is_image_not_found());
  CHECK_FALSE(ApiError("container inspect", 404, "No such container: x").is_image_not_found());
  CHECK(ApiError("image inspect", 404, "no such image: x: No such image: x").is_image_not_found());
  CHECK_FALSE(ApiError("image remove", 409, "No such image: x").is_image_not_found());
  CHECK_FALSE(ApiError("image inspect", 404, "No such imag").is_image_not_found());
  CHECK(transport_error_kind(CURLE_COULDNT_CONNECT) == TransportError::Kind::connect);
  CHECK(transport_error_kind(CURLE_OPERATION_TIMEDOUT) == TransportError::Kind::timeout);
  CHECK(transport_error_kind(CURLE_RECV_ERROR) == TransportError::Kind::io);
}

TEST_CASE("container create body: secure defaults and limits", "[unit][container]") {
  ContainerSpec spec;
  spec.name = "job-1";
  spec.image = "warmstart-worker:latest";
  spec.cmd = {"sh", "-c", "true"};
  spec.env = {"A=1"};
  spec.labels = {{"warmstart.managed", "true"}};
  spec.resources = {512 * 1024 * 1024, 1'500'000'000, 64};
  json body = container_create_body(spec);
  CHECK(
      body.dump() ==
      R"({"AttachStderr":false,"AttachStdin":false,"AttachStdout":false,"Cmd":["sh","-c","true"],)"
      R"("Env":["A=1"],"HostConfig":{"Binds":[],"CapDrop":["ALL"],"Memory":536870912,)"
      R"("NanoCpus":1500000000,"NetworkMode":"none","PidsLimit":64,"Privileged":false,)"
      R"("SecurityOpt":["no-new-privileges"]},"Image":"warmstart-worker:latest",)"
      R"("Labels":{"warmstart.managed":"true"},"OpenStdin":false,"Tty":false})");
  spec.resources = {};
  json unlimited = container_create_body(spec);
  CHECK_FALSE(unlimited["HostConfig"].contains("Memory"));
  CHECK_FALSE(unlimited["HostConfig"].contains("PidsLimit"));
  CHECK_FALSE(unlimited["HostConfig"].contains("MemorySwap"));
  CHECK_FALSE(unlimited["HostConfig"].contains("LogConfig"));
  CHECK_FALSE(unlimited["HostConfig"].contains("Ulimits"));
}

TEST_CASE("container create body: swap, log cap and ulimits", "[unit][container]") {
  ContainerSpec spec;
  spec.image = "warmstart-worker:latest";
  spec.resources.memory_bytes = 64 << 20;
  spec.resources.memory_swap_bytes = 64 << 20;
  spec.log = {"json-file", {{"max-size", "10m"}, {"max-file", "3"}}};
  spec.ulimits = {{"nofile", 1024, 2048}};
  const json host = container_create_body(spec)["HostConfig"];
  CHECK(host["MemorySwap"] == 64 << 20);
  CHECK(host["LogConfig"] ==
        json::parse(R"({"Type":"json-file","Config":{"max-file":"3","max-size":"10m"}})"));
  CHECK(host["Ulimits"] == json::parse(R"([{"Name":"nofile","Soft":1024,"Hard":2048}])"));
}

TEST_CASE("engine numbers that do not fit are not converted", "[unit][container]") {
  // Fuzzing regressions: a float or a huge "time" made int conversions undefined.
  auto e = parse_event_line(
      R"({"Type":"container","Action":"die","Actor":{"ID":"c"},"time":1e300,"timeNano":1.5})");
  CHECK_FALSE(e);  // no usable time
  auto late = parse_event_line(
      R"({"Type":"container","Action":"die","Actor":{"ID":"c"},"time":9223372036854775807})");
  CHECK_FALSE(late);
  auto ok = parse_event_line(R"({"Type":"container","Action":"die","Actor":{"ID":"c"},"time":2})");
  REQUIRE(ok);
  CHECK(ok->time_nano == 2'000'000'000);
  ContainerInfo info = parse_container_inspect(json::parse(
      R"({"Id":"c","State":{"ExitCode":1e300,"Pid":18446744073709551615,"Running":"yes"}})"));
  CHECK(info.state.exit_code == 0);
  CHECK(info.state.pid == 0);
  CHECK_FALSE(info.state.running);
  ImageInfo image = parse_image_inspect(json::parse(R"({"Id":"i","Size":-1e300})"));
  CHECK(image.size_bytes == 0);
}

TEST_CASE("JSON lines past the bound are dropped, never buffered", "[unit][container]") {
  JsonLineSplitter splitter(16);
  std::vector<std::string> lines;
  auto on_line = [&](std::string_view l) { lines.emplace_back(l); };
  splitter.feed("short\n", on_line);
  splitter.feed(std::string(10, 'x'), on_line);
  splitter.feed(std::string(10, 'y'), on_line);  // now past 16: dropped
  splitter.feed(std::string(1000, 'z') + "\nnext\n", on_line);
  splitter.feed(std::string(100, 'w'), on_line);
  CHECK(lines == std::vector<std::string>{"short", "next"});
  CHECK(splitter.dropped_lines() == 2);
  CHECK_FALSE(splitter.take_rest());
  CHECK_FALSE(parse_event_line("[" + std::string(100, '[') + std::string(101, ']')));
}

TEST_CASE("image config as import changes: quoted, no $ expansion", "[unit][container]") {
  ImageConfig config;
  config.env = {"PATH=/bin", "MSG=a \"b\" $HOME"};
  config.cmd = {"/bin/sh", "-c", "echo hi"};
  config.user = "nobody";
  config.working_dir = "/work";
  config.labels = {{"k", "v w"}};
  CHECK(image_config_changes(config) == std::vector<std::string>{
                                            R"(ENV PATH="/bin")",
                                            R"(ENV MSG="a \"b\" \$HOME")",
                                            R"(CMD ["/bin/sh","-c","echo hi"])",
                                            "USER nobody",
                                            "WORKDIR /work",
                                            R"(LABEL "k"="v w")",
                                        });
}

TEST_CASE("inspect parsing: image layers/config and container state", "[unit][container]") {
  json image = json::parse(R"({"Id":"sha256:1","RepoTags":["a:b"],"Size":10,
      "Created":"2026-11-22T01:47:41.123456789Z","RootFS":{"Type":"layers","Layers":["x","y"]},
      "Config":{"Env":["PATH=/bin"],"Cmd":["sh"],"Entrypoint":null,"User":"","WorkingDir":"/work",
                "Labels":{"l":"1"}}})");
  ImageInfo info = parse_image_inspect(image);
  CHECK(info.id == "sha256:1");
  CHECK(info.layer_count == 2);
  CHECK(info.created_unix == 1'795'312'061);
  CHECK(info.config.env == std::vector<std::string>{"PATH=/bin"});
  CHECK(info.config.entrypoint.empty());
  CHECK(info.config.labels.at("l") == "1");

  json container = json::parse(R"({"Id":"c1","Name":"/job","Image":"sha256:1",
      "Config":{"Image":"a:b","Labels":{"warmstart.job":"j"}},
      "State":{"Status":"exited","Running":false,"OOMKilled":true,"ExitCode":137,"Pid":0,
               "Error":"","StartedAt":"s","FinishedAt":"f"}})");
  ContainerInfo c = parse_container_inspect(container);
  CHECK(c.name == "job");
  CHECK(c.image_id == "sha256:1");
  CHECK(c.image == "a:b");
  CHECK(c.state.oom_killed);
  CHECK(c.state.exit_code == 137);
  CHECK(c.labels.at("warmstart.job") == "j");
}
