// The file systems of a system WPAR as a plan (pure; DESIGN.md §5 "System
// WPAR file systems"): what is mounted where, read-only or not, in order.

#include "agents/runtime/system_fs.h"

#include <gtest/gtest.h>
#include <sys/mount.h>

#include <algorithm>

namespace wpm::runtime {
namespace {

using Entry = HostRootEntry;
using Kind = HostRootEntry::Kind;

const std::vector<Entry> kMergedUsr = {{"bin", Kind::kSymlink},    {"sbin", Kind::kSymlink},
                                       {"lib", Kind::kSymlink},    {"lib64", Kind::kSymlink},
                                       {"usr", Kind::kDirectory},  {"opt", Kind::kDirectory},
                                       {"etc", Kind::kDirectory},  {"var", Kind::kDirectory},
                                       {"home", Kind::kDirectory}, {"vmlinuz", Kind::kOther}};

SystemFsInput input(std::vector<Entry> host = kMergedUsr) {
  return SystemFsInput{"/data/wpars/web", "web1", std::move(host), ""};
}

const MountStep* find(const std::vector<MountStep>& plan, const std::string& target) {
  auto it = std::find_if(plan.begin(), plan.end(),
                         [&](const MountStep& s) { return s.target == target; });
  return it == plan.end() ? nullptr : &*it;
}

TEST(SystemFs, TheRootIsAnOverlayOfTheHostsRootWithItsUpperLayerInTheWparsDirectory) {
  auto plan = system_wpar_mounts(input());
  ASSERT_FALSE(plan.empty());
  const MountStep& root = plan.front();
  EXPECT_EQ(root.kind, MountStep::Kind::kMount);
  EXPECT_EQ(root.fstype, "overlay");
  EXPECT_EQ(root.target, "/data/wpars/web/rootfs");
  EXPECT_EQ(root.data,
            "lowerdir=/,upperdir=/data/wpars/web/fs/upper,workdir=/data/wpars/web/fs/work");
  for (const auto& s : plan) {
    EXPECT_TRUE(s.target.starts_with("/data/wpars/web/rootfs"))
        << s.target << ": outside the WPAR's root";
  }
}

TEST(SystemFs, HostSystemDirectoriesAreReadOnlyBindsExceptSymlinksIntoUsr) {
  EXPECT_EQ(read_only_host_dirs(kMergedUsr), (std::vector<std::string>{"/opt", "/usr"}));
  std::vector<Entry> split = {{"bin", Kind::kDirectory},  {"sbin", Kind::kDirectory},
                              {"lib", Kind::kDirectory},  {"lib64", Kind::kDirectory},
                              {"libx32", Kind::kSymlink}, {"usr", Kind::kDirectory},
                              {"etc", Kind::kDirectory},  {"library", Kind::kOther}};
  EXPECT_EQ(read_only_host_dirs(split),
            (std::vector<std::string>{"/bin", "/lib", "/lib64", "/sbin", "/usr"}));
  auto plan = system_wpar_mounts(input(split));
  for (const char* dir : {"/bin", "/lib", "/lib64", "/sbin", "/usr"}) {
    const MountStep* s = find(plan, std::string("/data/wpars/web/rootfs") + dir);
    ASSERT_NE(s, nullptr) << dir;
    EXPECT_EQ(s->kind, MountStep::Kind::kBind);
    EXPECT_EQ(s->source, dir);
    EXPECT_TRUE(s->flags & MS_RDONLY) << dir;
  }
  EXPECT_EQ(find(plan, "/data/wpars/web/rootfs/etc"), nullptr)
      << "/etc is in the overlay, writable";
}

TEST(SystemFs, TmpAndHomeArePrivateWritableDirectoriesThatSurviveStops) {
  auto plan = system_wpar_mounts(input());
  for (const char* dir : {"tmp", "home", "var", "root"}) {
    const MountStep* s = find(plan, std::string("/data/wpars/web/rootfs/") + dir);
    ASSERT_NE(s, nullptr) << dir;
    EXPECT_EQ(s->kind, MountStep::Kind::kBind);
    EXPECT_EQ(s->source, std::string("/data/wpars/web/fs/") + dir);
    EXPECT_FALSE(s->flags & MS_RDONLY);
    EXPECT_TRUE(s->flags & MS_NODEV) << dir;
  }
  EXPECT_TRUE(find(plan, "/data/wpars/web/rootfs")->flags & MS_NODEV) << "no usable device node in the overlay";
  auto p = SystemFsPaths::of("/data/wpars/web");
  EXPECT_EQ(p.tmp, "/data/wpars/web/fs/tmp");
  EXPECT_EQ(p.rootfs, "/data/wpars/web/rootfs");
}

TEST(SystemFs, ProcSysAndDevAreTheWparsOwn) {
  auto plan = system_wpar_mounts(input());
  const std::string r = "/data/wpars/web/rootfs";
  ASSERT_NE(find(plan, r + "/proc"), nullptr);
  EXPECT_EQ(find(plan, r + "/proc")->fstype, "proc");
  EXPECT_TRUE(find(plan, r + "/proc/sys")->flags & MS_RDONLY);
  EXPECT_TRUE(find(plan, r + "/proc/sysrq-trigger")->if_present);
  EXPECT_EQ(find(plan, r + "/sys")->fstype, "sysfs");
  EXPECT_TRUE(find(plan, r + "/sys")->flags & MS_RDONLY);
  EXPECT_EQ(find(plan, r + "/dev")->fstype, "tmpfs");
  for (const char* dev : {"null", "zero", "full", "random", "urandom", "tty"}) {
    const MountStep* s = find(plan, r + "/dev/" + dev);
    ASSERT_NE(s, nullptr) << dev;
    EXPECT_EQ(s->kind, MountStep::Kind::kDevice);
    EXPECT_EQ(s->mode, 0666u);
  }
  EXPECT_EQ(find(plan, r + "/dev/null")->major, 1u);
  EXPECT_EQ(find(plan, r + "/dev/null")->minor, 3u);
  EXPECT_EQ(find(plan, r + "/dev/pts")->fstype, "devpts");
  EXPECT_NE(find(plan, r + "/dev/pts")->data.find("newinstance"), std::string::npos);
  EXPECT_EQ(find(plan, r + "/dev/ptmx")->source, "pts/ptmx");
  EXPECT_EQ(find(plan, r + "/dev/shm")->fstype, "tmpfs");
  // Each mount comes after the one it lies on.
  auto at = [&](const std::string& t) { return find(plan, t) - plan.data(); };
  EXPECT_LT(at(r + "/proc"), at(r + "/proc/sys"));
  EXPECT_LT(at(r + "/dev"), at(r + "/dev/pts"));
  EXPECT_LT(at(r + "/dev/pts"), at(r + "/dev/ptmx"));
}

TEST(SystemFs, HostnameAndHostsAreTheWparsOwn) {
  auto plan = system_wpar_mounts(input());
  const MountStep* hostname = find(plan, "/data/wpars/web/rootfs/etc/hostname");
  ASSERT_NE(hostname, nullptr);
  EXPECT_EQ(hostname->kind, MountStep::Kind::kFile);
  EXPECT_EQ(hostname->source, "web1\n");
  const MountStep* hosts = find(plan, "/data/wpars/web/rootfs/etc/hosts");
  ASSERT_NE(hosts, nullptr);
  EXPECT_NE(hosts->source.find("127.0.1.1\tweb1\n"), std::string::npos);
  EXPECT_NE(hosts->source.find("127.0.0.1\tlocalhost\n"), std::string::npos);
}

TEST(SystemFs, ASharedDirectoryIsBoundAtTheSamePathInside) {
  SystemFsInput in = input();
  EXPECT_EQ(find(system_wpar_mounts(in), "/data/wpars/web/rootfs/data/wpars/web/checkpoint"),
            nullptr);
  in.shared_dir = "/data/wpars/web/checkpoint";
  const auto plan = system_wpar_mounts(in);
  const MountStep* s = find(plan, "/data/wpars/web/rootfs/data/wpars/web/checkpoint");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->source, "/data/wpars/web/checkpoint");
  EXPECT_FALSE(s->flags & MS_RDONLY);
}

}  // namespace
}  // namespace wpm::runtime

namespace wpm::runtime {
namespace {

TEST(SystemFs, TheAgentsDataDirectoryIsMaskedUnlessAPrivateDirectoryHidesIt) {
  SystemFsInput in{"/data/wpars/web", "web", {}, "/data/wpars/web/checkpoint"};
  in.masked_dirs = {"/data", "/var/lib/wpm-agent"};
  auto plan = system_wpar_mounts(in);
  std::vector<std::string> at_data;
  size_t shared_at = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    if (plan[i].target == "/data/wpars/web/rootfs/data") at_data.push_back(plan[i].fstype + (plan[i].flags & MS_RDONLY ? ":ro" : ":rw"));
    if (plan[i].target == "/data/wpars/web/rootfs/data/wpars/web/checkpoint") shared_at = i;
  }
  EXPECT_EQ(at_data, (std::vector<std::string>{"tmpfs:rw", ":ro"})) << "mounted, then made read-only";
  EXPECT_GT(shared_at, 0u) << "the shared directory is bound into the mask";
  EXPECT_EQ(find(plan, "/data/wpars/web/rootfs/var/lib/wpm-agent"), nullptr) << "/var is private already";
}

TEST(SystemFs, TheFirstStartRemovesTheHostsSecretsAndLaterStartsDoNot) {
  SystemFsInput in{"/data/wpars/web", "web", {}, ""};
  in.first_start = true;
  in.sanitized_shadow = "root:*:19000:0:99999:7:::\n";
  auto plan = system_wpar_mounts(in);
  const MountStep* key = find(plan, "/data/wpars/web/rootfs/etc/ssh/ssh_host_ed25519_key");
  ASSERT_NE(key, nullptr);
  EXPECT_EQ(key->kind, MountStep::Kind::kRemove);
  const MountStep* shadow = find(plan, "/data/wpars/web/rootfs/etc/shadow");
  ASSERT_NE(shadow, nullptr);
  EXPECT_EQ(shadow->source, in.sanitized_shadow);
  in.first_start = false;
  EXPECT_EQ(find(system_wpar_mounts(in), "/data/wpars/web/rootfs/etc/shadow"), nullptr)
      << "a later start keeps the WPAR's own passwords";
}

TEST(SystemFs, LockPasswordsLocksEveryPasswordFieldAndKeepsTheRest) {
  EXPECT_EQ(lock_passwords("root:$y$j9T$abc:19000:0:99999:7:::\nbin:*:19000::::::\nodd line\n"),
            "root:*:19000:0:99999:7:::\nbin:*:19000::::::\nodd line\n");
  EXPECT_EQ(lock_passwords("sudo:!::alice\n"), "sudo:*::alice\n");
  EXPECT_EQ(lock_passwords(""), "");
}

}  // namespace
}  // namespace wpm::runtime
