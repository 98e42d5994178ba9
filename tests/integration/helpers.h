#pragma once
// Shared pieces of the integration suites: building requests, reading the
// whole log through the store, checking acknowledgement files.

#include <cstdint>
#include <map>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "bus/client.h"
#include "schemas/events.h"
#include "schemas/protocol.h"

namespace wpm::testing {

AppendRequest synthetic_request(const std::string& key, const std::string& stream, uint64_t count,
                                uint64_t first_index = 0);

// Reads [1, head] through the store, decoding every record. Fails the test on error.
std::vector<Event> read_all(bus::StoreClient& client);

struct Ack {
  uint64_t sequence;
  std::string key;
};
std::vector<Ack> read_acks(const std::string& path);

}  // namespace wpm::testing
