#pragma once
// Events as JSON, with the schema's field names (camelCase): what
// `wpm log dump -o json`, `wpm events watch -o json` and the gateway print.
// Thread safety: pure functions.

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "schemas/events.h"

namespace wpm {

// One event as one line of JSON text (no newline), written directly: what
// the event stream and `wpm log dump` send, at a fraction of the cost of a
// JSON document. Members in alphabetical order at every level of the
// envelope and payload; strings escaped, invalid UTF-8 replaced by U+FFFD.
std::string event_json_text(const Event& event);
void append_event_json(std::string& out, const Event& event);
// The same as a JSON document.
nlohmann::json event_to_json(const Event& event);
nlohmann::json wpar_to_json(const WparDefinition& wpar);
std::string base64(std::string_view bytes);

}  // namespace wpm
