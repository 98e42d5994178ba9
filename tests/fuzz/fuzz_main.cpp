// wpm-fuzz: the decoders of untrusted bytes as fuzz targets (issue: every
// decoder of bytes that come from the network or from files a user can
// write). One binary, one target per name:
//
//   wpm-fuzz TARGET [FILE...]        decode each FILE (stdin when none): what
//                                    AFL++ runs (`make fuzz`)
//   wpm-fuzz --list                  the targets
//   wpm-fuzz --replay DIR [--mutations N] [--seed S]
//                                    every target on its corpus DIR/TARGET/*
//                                    and N mutations of it (`make test`)
//   wpm-fuzz --make-corpus DIR       writes seed inputs made by the encoders
//
// A target decodes and must return (an error or a value); a crash, an
// assertion or a sanitizer report is the finding. Inputs that crashed once
// are kept in the corpus as regression cases.

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <iterator>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "agents/agent/agent_config.h"
#include "bus/registration_proof.h"
#include "eventstore/series.h"
#include "schemas/agent_protocol.h"
#include "schemas/codec.h"
#include "schemas/record.h"
#include "services/wpmd/config.h"

namespace {

namespace fs = std::filesystem;
using wpm::Result;

// wpmd.toml is read from a file: the bytes go through an in-memory one.
void wpmd_toml(std::string_view bytes) {
  int fd = ::memfd_create("wpmd.toml", MFD_CLOEXEC);
  if (fd < 0) return;
  if (::write(fd, bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size())) {
    wpm::wpmd::WpmdOptions options;
    (void)wpm::wpmd::load_config_file(fmt::format("/proc/self/fd/{}", fd), options);
  }
  ::close(fd);
}

const std::map<std::string, std::function<void(std::string_view)>>& targets() {
  static const std::map<std::string, std::function<void(std::string_view)>> all = {
      {"record", [](std::string_view b) { (void)wpm::parse_record(b); }},
      {"event",
       [](std::string_view b) {
         (void)wpm::decode_event(b);
         (void)wpm::peek_event_header(b);
       }},
      {"store-request",
       [](std::string_view b) {
         (void)wpm::decode_request(b);
         (void)wpm::peek_request_id(b);
       }},
      {"store-reply", [](std::string_view b) { (void)wpm::decode_reply(b); }},
      {"publication", [](std::string_view b) { (void)wpm::decode_publication(b); }},
      {"host-sample", [](std::string_view b) { (void)wpm::decode_host_sample(b); }},
      {"manager-request", [](std::string_view b) { (void)wpm::agentproto::decode_manager_request(b); }},
      {"manager-reply", [](std::string_view b) { (void)wpm::agentproto::decode_manager_reply(b); }},
      {"agent-command", [](std::string_view b) { (void)wpm::agentproto::decode_agent_command(b); }},
      {"agent-reply", [](std::string_view b) { (void)wpm::agentproto::decode_agent_reply(b); }},
      {"metrics-block", [](std::string_view b) { (void)wpm::eventstore::series::decode_block(b); }},
      {"password-hash", [](std::string_view b) { (void)wpm::bus::parse_password_hash(b); }},
      {"agent-toml", [](std::string_view b) { (void)wpm::agent::parse_agent_config(b, "agent.toml"); }},
      {"wpmd-toml", wpmd_toml},
  };
  return all;
}

std::string slurp(std::istream& in) { return std::string(std::istreambuf_iterator<char>(in), {}); }

// Seeds: valid inputs made by the encoders, so that mutations start from
// something each decoder accepts.
std::map<std::string, std::vector<std::string>> seeds() {
  std::map<std::string, std::vector<std::string>> out;
  std::string key = "key-1";
  wpm::EventDraft draft{"wpar/web1", "corr-1", "cause-1", "tester", wpm::Synthetic{"fuzz", 7, "payload", "x"}};
  std::string event = wpm::encode_event(wpm::EventHeader{42, {}, 1'700'000'000'000'000'000, 3, key}, draft, 0);
  out["event"].push_back(event);
  wpm::Sha256 hasher;
  std::string record = wpm::make_record(wpm::Sha256Digest{}, event, hasher, nullptr);
  out["record"].push_back(record);
  out["publication"].push_back(wpm::encode_publication(42, record));
  wpm::AppendRequest append;
  append.idempotency_key = key;
  append.events = {draft, draft};
  out["store-request"].push_back(wpm::encode_request(9, append));
  out["store-request"].push_back(wpm::encode_request(wpm::Request{10, wpm::ReadRangeRequest{1, 100, 50}}));
  wpm::Reply reply;
  reply.request_id = 9;
  reply.body = wpm::AppendResult{42, 2, false};
  out["store-reply"].push_back(wpm::encode_reply(reply));
  wpm::metrics::HostSample sample;
  sample.system = "h1";
  sample.time_s = 1'700'000'000;
  sample.wpars.push_back(wpm::metrics::WparSample{});
  sample.wpars.back().name = "web1";
  out["host-sample"].push_back(wpm::encode_host_sample(sample));
  out["manager-request"].push_back(wpm::agentproto::encode(wpm::agentproto::ManagerRequest{1, wpm::agentproto::GetManagerKey{}}));
  out["manager-request"].push_back(wpm::agentproto::encode(wpm::agentproto::ManagerRequest{2, wpm::agentproto::Heartbeat{}}));
  out["manager-reply"].push_back(wpm::agentproto::encode(wpm::agentproto::ManagerReply{1, wpm::agentproto::Ack{}}));
  out["agent-command"].push_back(wpm::agentproto::encode(wpm::agentproto::AgentCommand{1, wpm::agentproto::Ping{}}));
  out["agent-command"].push_back(wpm::agentproto::encode(wpm::agentproto::AgentCommand{2, wpm::agentproto::ListWpars{}}));
  out["agent-reply"].push_back(wpm::agentproto::encode(wpm::agentproto::AgentReply{1, wpm::agentproto::Pong{}}));
  wpm::eventstore::series::Block block;
  block.times_s = {1'700'000'000, 1'700'000'010, 1'700'000'020};
  block.columns = {wpm::eventstore::series::Column{1, {500, 510, 490}}};
  out["metrics-block"].push_back(wpm::eventstore::series::encode_block(block));
  auto kdf = wpm::bus::new_kdf();
  out["password-hash"].push_back(wpm::bus::format_password_hash(kdf, std::string(32, '\x11')));
  out["agent-toml"].push_back(
      "[agent]\nendpoint = \"tcp://0.0.0.0:9510\"\nheartbeat_s = 5\nidmap_host_layers = true\n"
      "[log]\nlevel = \"INFO\"\ncount = 5\n[metrics]\nhost_scope = \"host\"\n"
      "[profile]\nkernel_version = \"6.1.0\"\ncpu_flags = [\"sse2\", \"avx2\"]\n");
  out["wpmd-toml"].push_back(
      "data_dir = \"/var/lib/wpm\"\nlog_level = \"info\"\n[store]\nmark_sync_interval_ms = 5\n");
  return out;
}

// One mutation of `in`: bit flips, byte sets, inserted and removed runs,
// truncation, or a splice with another input.
std::string mutate(const std::string& in, const std::string& other, std::mt19937_64& random) {
  std::string s = in;
  int steps = 1 + static_cast<int>(random() % 4);
  for (int i = 0; i < steps; ++i) {
    size_t at = s.empty() ? 0 : random() % s.size();
    switch (random() % 6) {
      case 0:
        if (!s.empty()) s[at] = static_cast<char>(s[at] ^ (1 << (random() % 8)));
        break;
      case 1:
        if (!s.empty()) s[at] = static_cast<char>(random());
        break;
      case 2:
        s.insert(at, std::string(1 + random() % 16, static_cast<char>(random())));
        break;
      case 3:
        if (!s.empty()) s.erase(at, 1 + random() % 16);
        break;
      case 4:
        s.resize(at);
        break;
      default:
        if (!other.empty()) s = s.substr(0, at) + other.substr(random() % other.size());
        break;
    }
  }
  return s;
}

int replay(const fs::path& dir, uint64_t mutations, uint64_t seed) {
  std::mt19937_64 random(seed);
  int missing = 0;
  for (const auto& [name, target] : targets()) {
    std::vector<std::string> inputs;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir / name, ec)) {
      std::ifstream in(e.path(), std::ios::binary);
      inputs.push_back(slurp(in));
    }
    if (inputs.empty()) {
      std::fprintf(stderr, "wpm-fuzz: no corpus for target %s in %s\n", name.c_str(), (dir / name).c_str());
      ++missing;
      continue;
    }
    for (const auto& input : inputs) target(input);
    for (uint64_t i = 0; i < mutations; ++i) {
      const auto& a = inputs[random() % inputs.size()];
      const auto& b = inputs[random() % inputs.size()];
      target(mutate(a, b, random));
    }
    std::printf("%-16s %zu corpus inputs, %llu mutations: no crash\n", name.c_str(), inputs.size(),
                static_cast<unsigned long long>(mutations));
  }
  return missing == 0 ? 0 : 1;
}

int usage() {
  std::fprintf(stderr,
               "usage: wpm-fuzz TARGET [FILE...] | --list | --replay DIR [--mutations N] [--seed S] | "
               "--make-corpus DIR\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h") return args.empty() ? usage() : (usage(), 0);
  if (args[0] == "--list") {
    for (const auto& [name, _] : targets()) std::printf("%s\n", name.c_str());
    return 0;
  }
  if (args[0] == "--make-corpus" && args.size() == 2) {
    for (const auto& [name, inputs] : seeds()) {
      fs::create_directories(fs::path(args[1]) / name);
      for (size_t i = 0; i < inputs.size(); ++i) {
        std::ofstream(fs::path(args[1]) / name / fmt::format("seed-{}", i), std::ios::binary) << inputs[i];
      }
    }
    return 0;
  }
  if (args[0] == "--replay" && args.size() >= 2) {
    uint64_t mutations = 1000, seed = 1;
    for (size_t i = 2; i + 1 < args.size(); i += 2) {
      if (args[i] == "--mutations") mutations = std::strtoull(args[i + 1].c_str(), nullptr, 10);
      if (args[i] == "--seed") seed = std::strtoull(args[i + 1].c_str(), nullptr, 10);
    }
    return replay(args[1], mutations, seed);
  }
  auto it = targets().find(args[0]);
  if (it == targets().end()) {
    std::fprintf(stderr, "wpm-fuzz: unknown target %s; see wpm-fuzz --list\n", args[0].c_str());
    return 2;
  }
  if (args.size() == 1) {
    it->second(slurp(std::cin));
    return 0;
  }
  for (size_t i = 1; i < args.size(); ++i) {
    std::ifstream in(args[i], std::ios::binary);
    it->second(slurp(in));
  }
  return 0;
}
