#include "agents/runtime/devices.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace wpm::runtime {
namespace {

// The kernel's instruction encodings (linux/filter.h keeps these macros
// for classic BPF only).
bpf_insn insn(uint8_t code, uint8_t dst, uint8_t src, int16_t off, int32_t imm) {
  bpf_insn i{};
  i.code = code;
  i.dst_reg = dst & 0xf;
  i.src_reg = src & 0xf;
  i.off = off;
  i.imm = imm;
  return i;
}
bpf_insn load_u32(uint8_t dst, uint8_t src, int16_t off) { return insn(BPF_LDX | BPF_MEM | BPF_W, dst, src, off, 0); }
bpf_insn mov_reg(uint8_t dst, uint8_t src) { return insn(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0); }
bpf_insn mov_imm(uint8_t dst, int32_t imm) { return insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm); }
bpf_insn and_imm(uint8_t dst, int32_t imm) { return insn(BPF_ALU64 | BPF_AND | BPF_K, dst, 0, 0, imm); }
bpf_insn rsh_imm(uint8_t dst, int32_t imm) { return insn(BPF_ALU64 | BPF_RSH | BPF_K, dst, 0, 0, imm); }
bpf_insn jne_imm(uint8_t dst, int32_t imm, int16_t off) { return insn(BPF_JMP | BPF_JNE | BPF_K, dst, 0, off, imm); }
bpf_insn exit_insn() { return insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0); }

uint32_t access_mask(const std::string& access) {
  uint32_t m = 0;
  if (access.find('m') != std::string::npos) m |= BPF_DEVCG_ACC_MKNOD;
  if (access.find('r') != std::string::npos) m |= BPF_DEVCG_ACC_READ;
  if (access.find('w') != std::string::npos) m |= BPF_DEVCG_ACC_WRITE;
  return m;
}

long bpf(int cmd, bpf_attr& attr) { return ::syscall(SYS_bpf, cmd, &attr, sizeof attr); }

}  // namespace

std::vector<DeviceRule> minimal_devices(bool own_ptys) {
  std::vector<DeviceRule> out;
  for (uint32_t minor : {3u, 5u, 7u, 8u, 9u}) out.push_back({'c', 1, minor, "rwm"});  // null zero full random urandom
  out.push_back({'c', 5, 0, "rwm"});            // tty
  out.push_back({'c', 5, 2, "rwm"});            // ptmx
  if (own_ptys) out.push_back({'c', 136, std::nullopt, "rw"});  // the WPAR's own pseudo-terminals (devpts makes them)
  return out;
}

std::string v1_rule_text(const DeviceRule& r) {
  auto part = [](const std::optional<uint32_t>& n) { return n ? std::to_string(*n) : std::string("*"); };
  return fmt::format("{} {}:{} {}", r.type, part(r.major), part(r.minor), r.access);
}

std::vector<bpf_insn> device_program(const std::vector<DeviceRule>& rules) {
  // R1 holds struct bpf_cgroup_dev_ctx {u32 access_type; u32 major; u32 minor}:
  // the device type in the low 16 bits of access_type, the access in the high.
  constexpr uint8_t kCtx = 1, kType = 2, kAccess = 3, kMajor = 4, kMinor = 5, kScratch = 0;
  std::vector<bpf_insn> p = {
      load_u32(kType, kCtx, offsetof(bpf_cgroup_dev_ctx, access_type)),
      mov_reg(kAccess, kType),
      and_imm(kType, 0xffff),
      rsh_imm(kAccess, 16),
      load_u32(kMajor, kCtx, offsetof(bpf_cgroup_dev_ctx, major)),
      load_u32(kMinor, kCtx, offsetof(bpf_cgroup_dev_ctx, minor)),
  };
  for (const auto& r : rules) {
    // Each rule is one block; every failed test jumps past the rest of it.
    std::vector<bpf_insn> tests;
    tests.push_back(jne_imm(kType, r.type == 'b' ? BPF_DEVCG_DEV_BLOCK : BPF_DEVCG_DEV_CHAR, 0));
    if (r.major) tests.push_back(jne_imm(kMajor, static_cast<int32_t>(*r.major), 0));
    if (r.minor) tests.push_back(jne_imm(kMinor, static_cast<int32_t>(*r.minor), 0));
    // Any access outside the rule's own refuses this rule.
    tests.push_back(mov_reg(kScratch, kAccess));
    tests.push_back(and_imm(kScratch, static_cast<int32_t>(~access_mask(r.access) & 0xffff)));
    tests.push_back(jne_imm(kScratch, 0, 0));
    const size_t block = tests.size() + 2;  // + allow: r0 = 1; exit
    for (size_t i = 0; i < tests.size(); ++i) {
      if (BPF_CLASS(tests[i].code) == BPF_JMP && BPF_OP(tests[i].code) == BPF_JNE) tests[i].off = static_cast<int16_t>(block - i - 1);
    }
    p.insert(p.end(), tests.begin(), tests.end());
    p.push_back(mov_imm(0, 1));
    p.push_back(exit_insn());
  }
  p.push_back(mov_imm(0, 0));
  p.push_back(exit_insn());
  return p;
}

Result<void> attach_device_program(const std::string& dir, const std::vector<DeviceRule>& rules) {
  auto program = device_program(rules);
  static const char kLicense[] = "GPL";
  bpf_attr load{};
  load.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE;
  load.insns = reinterpret_cast<uint64_t>(program.data());
  load.insn_cnt = static_cast<uint32_t>(program.size());
  load.license = reinterpret_cast<uint64_t>(kLicense);
  int prog = static_cast<int>(bpf(BPF_PROG_LOAD, load));
  if (prog < 0) {
    return fail(ErrorCode::kIo, fmt::format("cannot load the device program of cgroup {}: {}", dir, std::strerror(errno)));
  }
  int cg = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cg < 0) {
    int e = errno;
    ::close(prog);
    return fail(ErrorCode::kIo, fmt::format("cannot open cgroup {}: {}", dir, std::strerror(e)));
  }
  bpf_attr attach{};
  attach.target_fd = static_cast<uint32_t>(cg);
  attach.attach_bpf_fd = static_cast<uint32_t>(prog);
  attach.attach_type = BPF_CGROUP_DEVICE;
  long r = bpf(BPF_PROG_ATTACH, attach);  // without flags: replaces what was attached
  int e = errno;
  ::close(cg);
  ::close(prog);  // the cgroup holds the program now
  if (r != 0) {
    return fail(ErrorCode::kIo, fmt::format("cannot attach the device program to cgroup {}: {}", dir, std::strerror(e)));
  }
  return {};
}

}  // namespace wpm::runtime
