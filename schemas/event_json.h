#pragma once
// Events as JSON, with the schema's field names (camelCase): what
// `wpm log dump -o json`, `wpm events watch -o json` and the gateway print.
// Thread safety: pure functions.

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "schemas/events.h"

namespace wpm {

nlohmann::json event_to_json(const Event& event);
nlohmann::json payload_to_json(const Payload& payload);
nlohmann::json wpar_to_json(const WparDefinition& wpar);
std::string base64(std::string_view bytes);

}  // namespace wpm
