// One case per documented CLI form (DESIGN.md "CLI", docs/), checked on the
// parser alone: what each form runs, with which values.
#include "cli/parse.hpp"

#include <catch2/catch.hpp>

#include <initializer_list>

using namespace warmstart::cli;

namespace {

ParseOutcome parse(std::initializer_list<const char*> args) {
  std::vector<const char*> argv = {"warmstart"};
  argv.insert(argv.end(), args.begin(), args.end());
  Common defaults;
  defaults.redis_url = "redis://env:6379/0";
  defaults.docker_host = "unix:///env.sock";
  return parse_command_line(static_cast<int>(argv.size()), argv.data(), defaults);
}

Invocation parsed(std::initializer_list<const char*> args) {
  ParseOutcome out = parse(args);
  INFO(out.error);
  REQUIRE(out.invocation);
  return *out.invocation;
}

using Args = std::vector<std::string>;

}  // namespace

TEST_CASE("cli: router with every flag, --queue once per queue", "[unit][cli]") {
  Invocation inv =
      parsed({"router", "--config", "/etc/ws.toml", "--docker-host", "unix:///d.sock",
              "--base-image", "w:1", "--concurrency", "8", "--listen", "127.0.0.1:0", "--router-id",
              "r1", "--queue", "a", "--queue", "b", "--redis", "redis://r:1/2"});
  CHECK(inv.command == Command::router);
  CHECK(inv.router.config_file == "/etc/ws.toml");
  CHECK(inv.router.docker_host == "unix:///d.sock");
  CHECK(inv.router.base_image == "w:1");
  CHECK(inv.router.concurrency == 8);
  CHECK(inv.router.listen == "127.0.0.1:0");
  CHECK(inv.router.router_id == "r1");
  CHECK(inv.router.queues == Args{"a", "b"});
  CHECK(inv.router.redis == "redis://r:1/2");
  CHECK_FALSE(parsed({"router"}).router.redis);  // unset flags leave the config's value
}

TEST_CASE("cli: snapshots list --host-id names the snapshot namespace", "[unit][cli]") {
  Invocation inv = parsed({"snapshots", "list", "--host-id", "rack-1"});
  CHECK(inv.command == Command::snapshots_list);
  CHECK(inv.common.host_id == "rack-1");
  CHECK(parsed({"snapshots", "list"}).common.host_id.empty());
}

TEST_CASE("cli: routers and routers --json", "[unit][cli]") {
  CHECK(parsed({"routers"}).command == Command::routers);
  CHECK_FALSE(parsed({"routers"}).json);
  Invocation inv = parsed({"routers", "--json", "--redis", "redis://r:1/2"});
  CHECK(inv.command == Command::routers);
  CHECK(inv.json);
  CHECK(inv.common.redis_url == "redis://r:1/2");
}

TEST_CASE("cli: enqueue --env A=1 -- sh -c 'exit 0' (issue 12)", "[unit][cli]") {
  Invocation inv = parsed({"enqueue", "--env", "A=1", "--", "sh", "-c", "exit 0"});
  CHECK(inv.command == Command::enqueue);
  CHECK(inv.enqueue.env == Args{"A=1"});
  CHECK(inv.enqueue.cmd == Args{"sh", "-c", "exit 0"});
}

TEST_CASE("cli: enqueue, one value per --env, repeatable", "[unit][cli]") {
  Invocation inv = parsed({"enqueue", "--env", "A=1", "--env", "B=x y", "--", "true"});
  CHECK(inv.enqueue.env == Args{"A=1", "B=x y"});
  CHECK(inv.enqueue.cmd == Args{"true"});
  // A second word after --env is not another env value: it starts the command.
  Invocation bare = parsed({"enqueue", "--env", "A=1", "echo", "hi"});
  CHECK(bare.enqueue.env == Args{"A=1"});
  CHECK(bare.enqueue.cmd == Args{"echo", "hi"});
}

TEST_CASE("cli: enqueue with every documented option", "[unit][cli]") {
  Invocation inv = parsed({"enqueue",
                           "--id",
                           "build-1",
                           "--queue",
                           "gpu",
                           "--image",
                           "tools/x:1",
                           "--snapshot-key",
                           "repo-42/main",
                           "--no-reuse",
                           "--no-commit",
                           "--timeout",
                           "30m",
                           "--max-attempts",
                           "3",
                           "--concurrency-key",
                           "repo-42",
                           "--env",
                           "K=V",
                           "--memory",
                           "512m",
                           "--cpus",
                           "1.5",
                           "--pids",
                           "256",
                           "--redis",
                           "redis://r:1/0",
                           "--",
                           "make",
                           "--jobs",
                           "4",
                           "--",
                           "test"});
  const EnqueueOptions& e = inv.enqueue;
  CHECK(e.id == "build-1");
  CHECK(e.queue == "gpu");
  CHECK(e.image == "tools/x:1");
  CHECK(e.snapshot_key == "repo-42/main");
  CHECK(e.no_reuse);
  CHECK(e.no_commit);
  CHECK(e.timeout == "30m");
  CHECK(e.max_attempts == 3);
  CHECK(e.concurrency_key == "repo-42");
  CHECK(e.env == Args{"K=V"});
  CHECK(e.memory == "512m");
  CHECK(e.cpus == 1.5);
  CHECK(e.pids == 256);
  CHECK(inv.common.redis_url == "redis://r:1/0");
  // Everything after the first "--" is the command, option-like words included.
  CHECK(e.cmd == Args{"make", "--jobs", "4", "--", "test"});
}

TEST_CASE("cli: enqueue without a command is a usage error", "[unit][cli]") {
  ParseOutcome out = parse({"enqueue", "--env", "A=1"});
  CHECK_FALSE(out.invocation);
  CHECK(out.exit_code == usage);
  CHECK_FALSE(out.error.empty());
  // "--" is not a value of --env: refused, not swallowed.
  ParseOutcome swallowed = parse({"enqueue", "--env", "--", "true"});
  CHECK(swallowed.exit_code == usage);
  CHECK(swallowed.error.find("K=V") != std::string::npos);
  CHECK(parse({"enqueue", "--env", "NOEQUALS", "--", "true"}).exit_code == usage);
}

TEST_CASE("cli: status, wait, logs, cancel take a job id", "[unit][cli]") {
  Invocation status = parsed({"status", "j-1", "--json"});
  CHECK(status.command == Command::status);
  CHECK(status.job_id == "j-1");
  CHECK(status.json);
  CHECK_FALSE(parsed({"status", "j-1"}).json);
  Invocation wait = parsed({"wait", "j-2", "--timeout", "5s"});
  CHECK(wait.command == Command::wait);
  CHECK(wait.job_id == "j-2");
  CHECK(wait.timeout == "5s");
  CHECK(parsed({"wait", "j-2"}).timeout == "10m");
  CHECK(parsed({"logs", "j-3"}).command == Command::logs);
  Invocation cancel = parsed({"cancel", "j-4"});
  CHECK(cancel.command == Command::cancel);
  CHECK(cancel.job_id == "j-4");
  CHECK(parse({"status"}).exit_code == usage);
}

TEST_CASE("cli: jobs [--state STATE] [--json]", "[unit][cli]") {
  Invocation all = parsed({"jobs"});
  CHECK(all.command == Command::jobs);
  CHECK_FALSE(all.state);
  Invocation failed = parsed({"jobs", "--state", "failed", "--json"});
  CHECK(failed.state == "failed");
  CHECK(failed.json);
}

TEST_CASE("cli: snapshots list [--json] | rm KEY | gc", "[unit][cli]") {
  Invocation list = parsed({"snapshots", "list", "--json"});
  CHECK(list.command == Command::snapshots_list);
  CHECK(list.json);
  CHECK(list.common.docker_host == "unix:///env.sock");
  Invocation rm = parsed({"snapshots", "--docker-host", "unix:///x.sock", "rm", "repo-42/main"});
  CHECK(rm.command == Command::snapshots_rm);
  CHECK(rm.snapshot_key == "repo-42/main");
  CHECK(rm.common.docker_host == "unix:///x.sock");
  CHECK(parsed({"snapshots", "gc", "--redis", "redis://r:2/0"}).common.redis_url ==
        "redis://r:2/0");
  CHECK(parse({"snapshots"}).exit_code == usage);
}

TEST_CASE("cli: events [--follow] [--json]", "[unit][cli]") {
  Invocation events = parsed({"events", "--follow", "--json"});
  CHECK(events.command == Command::events);
  CHECK(events.follow);
  CHECK(events.json);
  CHECK(parsed({"events"}).common.redis_url == "redis://env:6379/0");  // the environment's default
}

TEST_CASE("cli: --help and --version print and exit 0: nonsense exits 2", "[unit][cli]") {
  ParseOutcome version = parse({"--version"});
  CHECK(version.exit_code == 0);
  CHECK(version.output.find("warmstart 0.1.0") != std::string::npos);
  ParseOutcome help = parse({"enqueue", "--help"});
  CHECK(help.exit_code == 0);
  CHECK(help.output.find("--env") != std::string::npos);
  CHECK(parse({}).exit_code == usage);
  CHECK(parse({"frobnicate"}).exit_code == usage);
  CHECK(parse({"status", "j", "--bogus"}).exit_code == usage);
}

TEST_CASE("cli: prewarm --snapshot-key K [--image I] -- SETUP", "[unit][cli]") {
  Invocation inv = parsed({"prewarm", "--snapshot-key", "repo/main", "--image", "w:1", "--env",
                           "A=1", "--", "sh", "-c", "echo built > /work/pre"});
  CHECK(inv.command == Command::prewarm);
  CHECK(inv.enqueue.snapshot_key == "repo/main");
  CHECK(inv.enqueue.image == "w:1");
  CHECK(inv.enqueue.env == Args{"A=1"});
  CHECK(inv.enqueue.cmd == Args{"sh", "-c", "echo built > /work/pre"});
  CHECK_FALSE(inv.enqueue.no_reuse);
  CHECK(parsed({"prewarm", "--snapshot-key", "k", "--no-reuse", "--", "true"}).enqueue.no_reuse);
  // The key is what a prewarm builds: required. There is nothing to not commit.
  CHECK(parse({"prewarm", "--", "true"}).exit_code == usage);
  CHECK(parse({"prewarm", "--snapshot-key", "k", "--no-commit", "--", "true"}).exit_code == usage);
  CHECK(parse({"prewarm", "--snapshot-key", "k"}).exit_code == usage);
}
