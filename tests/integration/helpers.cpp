#include "tests/integration/helpers.h"

#include <gtest/gtest.h>

#include <sstream>

#include "schemas/codec.h"
#include "schemas/record.h"
#include "tests/support/process.h"

namespace wpm::testing {

AppendRequest synthetic_request(const std::string& key, const std::string& stream, uint64_t count,
                                uint64_t first_index) {
  AppendRequest req;
  req.idempotency_key = key;
  for (uint64_t i = 0; i < count; ++i) {
    req.events.push_back(
        EventDraft{stream, "corr", "cause", "test", Synthetic{stream, first_index + i, "", "x"}});
  }
  return req;
}

std::vector<Event> read_all(bus::StoreClient& client) {
  std::vector<Event> out;
  uint64_t next = 1;
  for (int pages = 0; pages < 100'000; ++pages) {
    auto page = client.read_range(ReadRangeRequest{next, 0, 0});
    EXPECT_TRUE(page.has_value()) << page.error().message;
    if (!page) break;
    for (const auto& record : page->records) {
      auto view = parse_record(record);
      EXPECT_TRUE(view.has_value());
      if (!view) return out;
      auto event = decode_event(view->event_bytes);
      EXPECT_TRUE(event.has_value());
      if (!event) return out;
      out.push_back(std::move(*event));
    }
    if (page->end || page->records.empty()) break;
    next = page->next;
  }
  return out;
}

std::vector<Ack> read_acks(const std::string& path) {
  std::vector<Ack> acks;
  std::istringstream in(read_file(path));
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    Ack a{};
    if (fields >> a.sequence >> a.key) acks.push_back(a);
  }
  return acks;
}

}  // namespace wpm::testing
