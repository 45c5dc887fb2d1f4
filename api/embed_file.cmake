# cmake -DINPUT=file -DOUTPUT=file.cpp -DFUNCTION=name -P embed_file.cmake
# Writes a C++ file defining `std::string_view warmstart::api::<FUNCTION>()`
# that returns INPUT's bytes, as a raw string literal.
file(READ "${INPUT}" content)
set(delimiter "WSEMBED")
string(FIND "${content}" ")${delimiter}\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${INPUT} contains the raw-string delimiter )${delimiter}\"")
endif()
file(WRITE "${OUTPUT}.tmp"
  "// Generated from ${INPUT} by embed_file.cmake; do not edit.\n"
  "#include <string_view>\n"
  "namespace warmstart::api {\n"
  "std::string_view ${FUNCTION}() {\n"
  "  static constexpr std::string_view text = R\"${delimiter}(${content})${delimiter}\";\n"
  "  return text;\n"
  "}\n"
  "}  // namespace warmstart::api\n")
file(COPY_FILE "${OUTPUT}.tmp" "${OUTPUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUTPUT}.tmp")
