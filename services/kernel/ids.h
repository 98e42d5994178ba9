#pragma once
// Strong id types (STYLE.md §4): a system id is never passed where a WPAR
// name is expected. Each wraps the text form used in streams and events.
// Thread safety: plain values.

#include <compare>
#include <functional>
#include <string>
#include <string_view>

namespace wpm::kernel {

template <typename Tag>
class StrongId {
 public:
  StrongId() = default;
  explicit StrongId(std::string value) : value_(std::move(value)) {}
  const std::string& value() const { return value_; }
  bool empty() const { return value_.empty(); }
  auto operator<=>(const StrongId&) const = default;
  bool operator==(const StrongId&) const = default;

 private:
  std::string value_;
};

using SystemId = StrongId<struct SystemIdTag>;    // a managed system, e.g. "node1"
using WparName = StrongId<struct WparNameTag>;    // a WPAR, e.g. "web1"
using GroupName = StrongId<struct GroupNameTag>;  // a WPAR group, e.g. "default"
using TaskId = StrongId<struct TaskIdTag>;        // a task of the executor
using UserName = StrongId<struct UserNameTag>;    // a Linux user, e.g. "alice"
using CommandId = StrongId<struct CommandIdTag>;  // one request of a client, unique

}  // namespace wpm::kernel

template <typename Tag>
struct std::hash<wpm::kernel::StrongId<Tag>> {
  size_t operator()(const wpm::kernel::StrongId<Tag>& id) const noexcept {
    return std::hash<std::string>{}(id.value());
  }
};
