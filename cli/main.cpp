// warmstart: the router daemon and its command-line client.
#include "common/log.hpp"

#include <CLI/CLI.hpp>

#include <iostream>

int main(int argc, char** argv) {
  CLI::App app{"warmstart: a job router for container workloads"};
  app.set_version_flag("--version", "warmstart 0.1.0");
  app.require_subcommand(1);
  auto* router = app.add_subcommand("router", "run the router daemon");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::cerr << "warmstart: " << e.what() << "\n";
    return 2;
  }
  if (router->parsed()) {
    warmstart::log::info("router: not implemented yet");
    return 1;
  }
  return 0;
}
