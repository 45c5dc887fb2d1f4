// The operator dashboard (api/dashboard.html), embedded into the binary at
// build time by api/embed_file.cmake: the page is served with no files on disk
// and no network access.
#pragma once
#include <string_view>

namespace warmstart::api {

std::string_view dashboard_html();

}  // namespace warmstart::api
