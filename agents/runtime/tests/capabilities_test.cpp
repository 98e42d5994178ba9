// A WPAR's capability set: the request syntax and the host's bounding set as
// a table (pure), and the set applied in a real child process (root).

#include "agents/runtime/capabilities.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <string>

namespace wpm::runtime {
namespace {

using Caps = std::vector<std::string>;

// A host like a container host: the default set and a few more, no sys_resource.
const Caps kHost = {"cap_chown",     "cap_dac_override", "cap_fowner",
                    "cap_fsetid",    "cap_kill",         "cap_setgid",
                    "cap_setuid",    "cap_setpcap",      "cap_net_bind_service",
                    "cap_net_admin", "cap_net_raw",      "cap_sys_chroot",
                    "cap_sys_admin", "cap_mknod",        "cap_audit_write",
                    "cap_setfcap"};

Caps default_set() {
  return Caps(std::begin(kDefaultCapabilities), std::end(kDefaultCapabilities));
}

TEST(Capabilities, NamesAreCanonicalWhateverTheirSpelling) {
  EXPECT_EQ(canonical_capability("CAP_NET_ADMIN"), "cap_net_admin");
  EXPECT_EQ(canonical_capability("net_admin"), "cap_net_admin");
  EXPECT_EQ(canonical_capability("cap_chown"), "cap_chown");
  EXPECT_EQ(canonical_capability("cap_bogus"), std::nullopt);
  EXPECT_EQ(canonical_capability(""), std::nullopt);
  EXPECT_EQ(canonical_capability("cap_"), std::nullopt);
}

TEST(Capabilities, RequestsResolveAgainstTheHostsBoundingSet) {
  struct Row {
    const char* request;
    Caps want;
  };
  const Row rows[] = {
      {"", default_set()},
      {"  ", default_set()},
      {"cap_kill,cap_chown", {"cap_chown", "cap_kill"}},  // sorted by number
      {"KILL, chown", {"cap_chown", "cap_kill"}},
      {"none", {}},
      {"+cap_net_admin",
       [] {
         Caps c = default_set();
         c.push_back("cap_net_admin");
         return c;
       }()},
      {"-cap_net_raw,-cap_mknod,-cap_audit_write,-cap_setfcap,-cap_sys_chroot,-cap_net_bind_"
       "service,"
       "-cap_setpcap,-cap_setuid,-cap_setgid,-cap_fsetid,-cap_fowner,-cap_dac_override",
       {"cap_chown", "cap_kill"}},
      {"-cap_sys_resource", default_set()},  // removing what the host lacks is harmless
  };
  for (const Row& row : rows) {
    auto got = resolve_capabilities(row.request, kHost);
    ASSERT_TRUE(got.has_value()) << row.request << ": " << got.error().message;
    Caps want = row.want;
    std::sort(want.begin(), want.end());
    Caps sorted_got = *got;
    std::sort(sorted_got.begin(), sorted_got.end());
    EXPECT_EQ(sorted_got, want) << row.request;
  }
  EXPECT_EQ(resolve_capabilities("cap_kill,cap_chown", kHost)->front(), "cap_chown")
      << "cap 0 first";
  EXPECT_EQ(resolve_capabilities("all", kHost)->size(), kHost.size());
}

TEST(Capabilities, TheDefaultSetLeavesOutWhatTheHostLacks) {
  Caps host = {"cap_chown", "cap_kill", "cap_sys_admin"};
  EXPECT_EQ(resolve_capabilities("", host), (Caps{"cap_chown", "cap_kill"}));
  EXPECT_EQ(wpar_capabilities(std::nullopt, host), (Caps{"cap_chown", "cap_kill"}));
}

TEST(Capabilities, ACapabilityTheHostLacksIsRefusedByName) {
  for (const char* request : {"cap_sys_resource", "+cap_sys_resource", "cap_chown,SYS_RESOURCE"}) {
    auto got = resolve_capabilities(request, kHost);
    ASSERT_FALSE(got.has_value()) << request;
    EXPECT_EQ(got.error().exit_code, kExitCapabilityNotOnHost);
    EXPECT_NE(got.error().message.find("cap_sys_resource is not in this host's bounding set"),
              std::string::npos)
        << got.error().message;
  }
  auto stored = wpar_capabilities(Caps{"cap_chown", "cap_sys_resource"}, kHost);
  ASSERT_FALSE(stored.has_value()) << "a spec made on a host that had it";
  EXPECT_EQ(stored.error().exit_code, kExitCapabilityNotOnHost);
}

TEST(Capabilities, UnknownNamesAndMixedRequestsAreUsageErrors) {
  for (const char* request :
       {"cap_bogus", "+cap_bogus", "cap_kill,+cap_chown", "-cap_kill,cap_chown", "+"}) {
    auto got = resolve_capabilities(request, kHost);
    ASSERT_FALSE(got.has_value()) << request;
    EXPECT_EQ(got.error().exit_code, kExitCapabilitySyntax) << request;
  }
  EXPECT_NE(resolve_capabilities("cap_kill,+cap_chown", kHost).error().message.find("mixes"),
            std::string::npos);
}

TEST(Capabilities, TheHostsBoundingSetIsReadFromTheKernel) {
  auto host = host_bounding_set();
  ASSERT_TRUE(host.has_value()) << host.error().message;
  if (::geteuid() == 0) {
    EXPECT_FALSE(host->empty());
  }
  for (const auto& c : *host) EXPECT_EQ(canonical_capability(c), c);
}

// The status line `key` (CapEff:, CapBnd:, …) of this process.
uint64_t status_mask(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.starts_with(key)) return std::stoull(line.substr(key.size()), nullptr, 16);
  }
  return ~0ull;
}

TEST(Capabilities, AppliedSetIsTheProcesssWholeSet) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to change capability sets";
  int report[2];
  ASSERT_EQ(::pipe(report), 0);
  pid_t child = ::fork();
  if (child == 0) {
    auto r = apply_capabilities({"cap_chown", "cap_kill"});
    uint64_t masks[5] = {r.has_value() ? 1u : 0u, status_mask("CapEff:"), status_mask("CapPrm:"),
                         status_mask("CapBnd:"), status_mask("CapAmb:")};
    (void)::write(report[1], masks, sizeof masks);
    ::_exit(0);
  }
  uint64_t masks[5] = {};
  ASSERT_EQ(::read(report[0], masks, sizeof masks), static_cast<ssize_t>(sizeof masks));
  ::waitpid(child, nullptr, 0);
  const uint64_t want = (1ull << 0) | (1ull << 5);  // CAP_CHOWN, CAP_KILL
  EXPECT_EQ(masks[0], 1u);
  EXPECT_EQ(masks[1], want);
  EXPECT_EQ(masks[2], want);
  EXPECT_EQ(masks[3], want) << "the bounding set is dropped too";
  EXPECT_EQ(masks[4], 0u);
}

}  // namespace
}  // namespace wpm::runtime
