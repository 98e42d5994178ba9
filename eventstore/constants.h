#pragma once
// Limits and fixed values of the event store (STYLE.md §2). Each is a bound
// the store enforces; changing a persisted one is a format change.

#include <cstddef>
#include <cstdint>

#include "schemas/record.h"

namespace wpm::eventstore {

// Largest stream id, idempotency key and actor/correlation strings accepted.
inline constexpr size_t kStreamIdBytesMax = 256;
inline constexpr size_t kIdempotencyKeyBytesMax = 256;
// Text and data one event may carry (stream id, ids, actor and payload
// together); the stored record stays below kRecordEventBytesMax, which readers
// enforce.
inline constexpr size_t kEventBytesMax = 1u << 20;
static_assert(2 * kEventBytesMax <= kRecordEventBytesMax, "an accepted event must stay readable");
// Events in one append request.
inline constexpr size_t kRequestEventsMax = 10'000;
// Events re-derived per write when rebuilding derived data at open.
inline constexpr uint64_t kRebuildChunkEvents = 100'000;
// Stream heads kept in memory before the cache is dropped and reloaded lazily.
inline constexpr size_t kStreamCacheEntriesMax = 1'000'000;

// The layout of a data directory (DATA/format). 1: log/ with the column
// families log, streams, idempotency, meta (and snapshots), the
// acknowledged-sequence mark, keys/. A change that an older wpmd would
// misread takes the next number.
inline constexpr uint32_t kDataFormat = 1;

// Acknowledged-sequence file: two slots, written alternately, each in its own
// 4 KiB block so that a torn write can only damage the slot being written.
inline constexpr size_t kMarkSlotBytes = 4096;
inline constexpr uint32_t kMarkMagic = 0x57504d41;    // "WPMA": first format
inline constexpr uint32_t kMarkMagicV2 = 0x57504d42;  // "WPMB": with boot id and flags

}  // namespace wpm::eventstore
