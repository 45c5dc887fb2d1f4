// The checks POST /v1/jobs makes before a body reaches the Backend: the shape
// the contract promises (DESIGN.md "Job") and the requests that are never
// allowed (privileged, host binds, host network). The Backend applies the
// router's own policy (image allowlist, limits) after this.
#pragma once
#include <nlohmann/json.hpp>

#include <optional>
#include <string>

namespace warmstart::api {

// nullopt when acceptable, else the reason (names the field).
std::optional<std::string> job_body_problem(const nlohmann::json& body);

}  // namespace warmstart::api
