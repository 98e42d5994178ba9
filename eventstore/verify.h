#pragma once
// Checking the log where it is stored (DESIGN.md §2): every record's checksum,
// gap-free sequences and the hash chain, read on other threads (a bounded
// range in two halves at once) and checked in order on the caller's. `wpm log verify --data` runs it on a stopped store's directory;
// the store runs it for `wpm log verify` online (a VerifyRequest), so the
// records never cross the network.
//
// Thread safety: any thread; the store may be appended to meanwhile (stored
// records never change).

#include <cstdint>
#include <functional>

#include "eventstore/store.h"
#include "schemas/error.h"
#include "schemas/protocol.h"
#include "schemas/record.h"

namespace wpm::eventstore {

// Feeds `verifier` the stored records from its next sequence up to `to`
// (inclusive; UINT64_MAX: every stored record), at most `max_events` of them
// (0: no limit). Returns the first fault (a check of the verifier, or an
// unreadable table block naming the sequence); the verifier then holds what
// was sound before it. A log that ends before `to` is not a fault here: the
// caller compares `verifier.next_sequence()` with what it expected.
// `progress` is called on the caller's thread about every megabyte.
Result<void> verify_log(const Store& store, ChainVerifier& verifier, uint64_t to, uint64_t max_events,
                        const std::function<void(const ChainVerifier&)>& progress = {});

// The store's answer to a VerifyRequest: at most `max_events_cap` records
// from `request.from`, no further than the acknowledged head.
VerifyReply verify_request(const Store& store, const VerifyRequest& request, uint64_t max_events_cap);

}  // namespace wpm::eventstore
