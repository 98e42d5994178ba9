#pragma once
// The form every read model's snapshot takes (RegistryModel, InventoryModel,
// GatewayModel): a fixed header of 64-bit words, then pieces each framed by
// a 4-byte length; a piece is usually one event (schemas/codec.h) that
// rebuilds part of the state when folded again. Pure byte handling.
//
// Thread safety: plain values.

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "schemas/codec.h"
#include "schemas/error.h"
#include "schemas/events.h"

namespace wpm::kernel {

class SnapshotWriter {
 public:
  void word(uint64_t v) { out_.append(reinterpret_cast<const char*>(&v), 8); }
  void piece(std::string_view bytes) {
    auto size = static_cast<uint32_t>(bytes.size());
    out_.append(reinterpret_cast<const char*>(&size), 4);
    out_.append(bytes);
  }
  // One event as a piece: its stream, version, time and (when it matters) sequence.
  void event(std::string stream, uint64_t version, int64_t timestamp_ns, Payload payload, uint64_t sequence = 0) {
    Event e;
    e.sequence = sequence;
    e.stream_id = std::move(stream);
    e.stream_version = version;
    e.timestamp_ns = timestamp_ns;
    e.payload = std::move(payload);
    piece(encode_event(e));
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

class SnapshotReader {
 public:
  // `what` names the snapshot in errors ("inventory snapshot truncated").
  SnapshotReader(std::string_view bytes, std::string_view what) : bytes_(bytes), what_(what) {}
  Result<uint64_t> word() {
    uint64_t v = 0;
    if (bytes_.size() < 8) return truncated();
    std::memcpy(&v, bytes_.data(), 8);
    bytes_.remove_prefix(8);
    return v;
  }
  bool done() const { return bytes_.empty(); }
  Result<std::string_view> piece() {
    uint32_t size = 0;
    if (bytes_.size() < 4) return truncated();
    std::memcpy(&size, bytes_.data(), 4);
    if (bytes_.size() - 4 < size) return truncated();
    auto out = bytes_.substr(4, size);
    bytes_.remove_prefix(4 + size);
    return out;
  }
  Result<Event> event() {
    auto p = piece();
    if (!p) return std::unexpected(p.error());
    return decode_event(*p);
  }

 private:
  Error truncated_error() const { return Error{ErrorCode::kCorruption, std::string(what_) + " truncated"}; }
  std::unexpected<Error> truncated() const { return std::unexpected(truncated_error()); }
  std::string_view bytes_;
  std::string_view what_;
};

}  // namespace wpm::kernel
