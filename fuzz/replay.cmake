# The fuzz targets in the regular (g++) build, each linked with replay_main.cpp
# instead of libFuzzer and run over its seed corpus as a unit test
# ("fuzz/replay: <target>"). ./scripts/test turns it on, so the targets keep
# compiling and past findings stay fixed; fuzzing itself is ./scripts/fuzz (clang).
# Two targets read their input through libFuzzer's FuzzedDataProvider.h, a
# header of Debian's libclang-rt-14-dev.
find_path(WARMSTART_FUZZED_DATA_PROVIDER_DIR fuzzer/FuzzedDataProvider.h
          PATHS /usr/lib/llvm-14/lib/clang/14.0.6/include /usr/lib/clang/14/include
                /usr/lib/llvm-14/lib/clang/14/include
          NO_DEFAULT_PATH)
if(NOT WARMSTART_FUZZED_DATA_PROVIDER_DIR)
  message(FATAL_ERROR "WARMSTART_FUZZ_REPLAY needs fuzzer/FuzzedDataProvider.h: "
                      "apt-get install libclang-rt-14-dev (./scripts/test installs it)")
endif()

# Only that header: clang's include directory would shadow g++'s own stddef.h.
set(fuzz_include ${CMAKE_BINARY_DIR}/fuzz_replay_include)
configure_file(${WARMSTART_FUZZED_DATA_PROVIDER_DIR}/fuzzer/FuzzedDataProvider.h
               ${fuzz_include}/fuzzer/FuzzedDataProvider.h COPYONLY)

set(fuzz_dir ${PROJECT_SOURCE_DIR}/fuzz)
add_library(warmstart_fuzz_replay_main OBJECT ${fuzz_dir}/replay_main.cpp)
target_link_libraries(warmstart_fuzz_replay_main PRIVATE warmstart_warnings)
include(${fuzz_dir}/targets.cmake)
foreach(target IN LISTS WARMSTART_FUZZ_TARGETS)
  add_executable(fuzz_replay_${target} ${fuzz_dir}/${target}_fuzz.cpp)
  set_target_properties(fuzz_replay_${target} PROPERTIES RUNTIME_OUTPUT_DIRECTORY
                                                         ${CMAKE_BINARY_DIR}/fuzz)
  target_include_directories(fuzz_replay_${target} SYSTEM PRIVATE ${fuzz_include})
  target_link_libraries(fuzz_replay_${target}
                        PRIVATE warmstart_fuzz_replay_main warmstart_api warmstart_queue
                                warmstart_container warmstart_common warmstart_warnings)
  add_test(NAME "fuzz/replay: ${target}" COMMAND fuzz_replay_${target} ${fuzz_dir}/corpus/${target})
  set_tests_properties("fuzz/replay: ${target}" PROPERTIES LABELS unit)
endforeach()
