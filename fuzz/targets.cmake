# The libFuzzer targets, one <name>_fuzz.cpp each: built by fuzz/CMakeLists.txt
# (clang, ./scripts/fuzz) and by fuzz/replay.cmake (g++, ./scripts/test).
set(WARMSTART_FUZZ_TARGETS job_spec webhook engine_replies job_record http_routing)
