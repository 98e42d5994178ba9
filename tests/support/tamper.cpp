// wpm-test-tamper: rewrites one stored event the way an attacker with access
// to the database would: through RocksDB (so its own checksums are valid) and
// with our record checksum recomputed. Used by the corruption tests only.
//
//   wpm-test-tamper --data DIR --sequence N [--rechain]
// Without --rechain the record keeps its old chain hash (the chain breaks at
// N); with it the record's own chain hash is recomputed (the chain breaks at
// N+1).

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "eventstore/store.h"
#include "schemas/codec.h"
#include "schemas/record.h"

int main(int argc, char** argv) {
  CLI::App app{"rewrite one stored event (tests only)"};
  std::string data;
  uint64_t sequence = 0;
  bool rechain = false;
  app.add_option("--data", data)->required();
  app.add_option("--sequence", sequence)->required();
  app.add_flag("--rechain", rechain);
  CLI11_PARSE(app, argc, argv);

  auto log = spdlog::stderr_logger_mt("tamper");
  wpm::eventstore::StoreOptions o;
  o.data_dir = data;
  o.open_verify_tail_events = 0;
  auto store = wpm::eventstore::Store::open(o, log);
  if (!store) {
    std::fprintf(stderr, "tamper: %s\n", store.error().message.c_str());
    return 1;
  }
  std::string previous_record, record;
  auto r = (*store)->scan(sequence > 1 ? sequence - 1 : 1, wpm::eventstore::Store::ScanMode::kPage,
                          [&](uint64_t seq, std::string_view rec) {
                            if (seq == sequence - 1) previous_record = rec;
                            if (seq == sequence) record = rec;
                            return seq < sequence;
                          });
  if (!r || record.empty()) {
    std::fprintf(stderr, "tamper: sequence %llu not found\n", static_cast<unsigned long long>(sequence));
    return 1;
  }
  auto view = wpm::parse_record(record);
  auto event = wpm::decode_event(view->event_bytes);
  if (!event) return 1;
  if (auto* s = std::get_if<wpm::Synthetic>(&event->payload)) {
    s->note = "tampered";
  } else {
    event->actor = "tampered";
  }
  std::string bytes = wpm::encode_event(*event);
  wpm::Sha256 hasher;
  wpm::Sha256Digest previous{};
  if (!previous_record.empty()) previous = wpm::parse_record(previous_record)->chain;
  std::string forged = wpm::make_record(previous, bytes, hasher, nullptr);
  if (!rechain) {
    // Keep the old chain hash, recompute only the record checksum.
    std::memcpy(forged.data() + 8, view->chain.data(), view->chain.size());
    uint32_t crc = wpm::crc32c(forged.data() + 4, forged.size() - 4);
    std::memcpy(forged.data(), &crc, 4);
  }
  if (auto w = (*store)->overwrite_record_for_test(sequence, forged); !w) {
    std::fprintf(stderr, "tamper: %s\n", w.error().message.c_str());
    return 1;
  }
  std::printf("rewrote sequence %llu\n", static_cast<unsigned long long>(sequence));
  return 0;
}
