#include "tools/wpm/log_commands.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/random.h>
#include <unistd.h>

#include <atomic>
#include <optional>
#include <thread>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <zmq.hpp>

#include "bus/client.h"
#include "bus/frame.h"
#include "bus/subscriber.h"
#include "eventstore/handoff.h"
#include "eventstore/store.h"
#include "eventstore/verify.h"
#include "services/kernel/keyring.h"
#include "schemas/codec.h"
#include "schemas/record.h"

namespace wpm::cli {
Result<bus::ClientOptions> client_options(const GlobalOptions& g) {
  auto access = kernel::read_local_store_access(g.data_dir);
  if (!access) return std::unexpected(access.error());
  bus::ClientOptions o{g.timeout_ms, g.attempts, {}};
  o.credentials.client_keys = access->admin;
  o.credentials.store_public_key = access->store_public_key;
  return o;
}

namespace {

std::atomic<bool> g_interrupted{false};
void on_interrupt(int) { g_interrupted.store(true); }

int fail_with(const Error& e) {
  print_error(e.message);
  if (e.code == ErrorCode::kNotFound) return kExitNotFound;
  return kExitFailed;
}

void print_event(const Event& e, Format format) {
  if (format == Format::kJson) {
    std::string line = event_json_text(e);
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fputc('\n', stdout);
  } else {
    std::string row = event_table_row(e);
    std::fwrite(row.data(), 1, row.size(), stdout);
    std::fputc('\n', stdout);
  }
}

Result<Event> decode_record(std::string_view record, uint64_t expected) {
  auto view = parse_record(record);
  if (!view) {
    return fail(ErrorCode::kCorruption, fmt::format("sequence {}: {}", expected, view.error().message));
  }
  return decode_event(view->event_bytes, bus::frame_limits());
}

// ---- stats ---------------------------------------------------------------------

int cmd_stats(const GlobalOptions& g) {
  auto options = client_options(g);
  if (!options) return fail_with(options.error());
  zmq::context_t ctx(1);
  bus::StoreClient client(ctx, g.store, *options);
  auto st = client.stats();
  if (!st) return fail_with(st.error());
  if (g.format == Format::kJson) {
    std::puts(stats_to_json(*st).dump(2).c_str());
    return kExitOk;
  }
  std::printf("data directory:  %s\n", st->data_dir.c_str());
  std::printf("events:          %llu\n", static_cast<unsigned long long>(st->event_count));
  std::printf("head sequence:   %llu\n", static_cast<unsigned long long>(st->head));
  std::printf("log bytes:       %llu\n", static_cast<unsigned long long>(st->log_bytes));
  std::printf("disk bytes:      %llu\n", static_cast<unsigned long long>(st->disk_bytes));
  std::printf("state:           %s\n",
              st->read_only ? fmt::format("read-only ({})", st->read_only_reason).c_str() : "writable");
  std::printf("\n%-24s %s\n", "TYPE", "COUNT");
  for (const auto& t : st->per_type) {
    std::printf("%-24s %llu\n", std::string(event_type_name(t.type)).c_str(),
                static_cast<unsigned long long>(t.count));
  }
  if (st->unknown_events > 0) {
    std::printf("%-24s %llu (types this wpmd does not know: written by a newer version)\n", "unknown",
                static_cast<unsigned long long>(st->unknown_events));
  }
  return kExitOk;
}

// ---- dump and tail ----------------------------------------------------------------

struct DumpOptions {
  uint64_t from = 1;
  uint64_t to = 0;
  std::string stream;
};

int cmd_dump(const GlobalOptions& g, const DumpOptions& d) {
  auto options = client_options(g);
  if (!options) return fail_with(options.error());
  zmq::context_t ctx(1);
  bus::StoreClient client(ctx, g.store, *options);
  if (g.format == Format::kTable) std::puts(event_table_header().c_str());
  uint64_t next = d.stream.empty() ? std::max<uint64_t>(d.from, 1) : std::max<uint64_t>(d.from, 1);
  uint64_t printed = 0;
  // Bounded by the log: each page advances `next` or ends the loop.
  while (!g_interrupted.load()) {
    auto page = d.stream.empty() ? client.read_range(ReadRangeRequest{next, d.to, 0})
                                 : client.read_stream(ReadStreamRequest{d.stream, next, 0});
    if (!page) return fail_with(page.error());
    for (const auto& record : page->records) {
      auto e = decode_record(record, next);
      if (!e) return fail_with(e.error());
      if (!d.stream.empty() && d.to != 0 && e->sequence > d.to) return kExitOk;
      print_event(*e, g.format);
      ++printed;
    }
    std::fflush(stdout);
    if (page->end || page->records.empty()) break;
    next = page->next;
  }
  if (!d.stream.empty() && printed == 0 && d.from <= 1) {
    print_error(fmt::format("stream '{}' has no events; list streams with `wpm log dump`", d.stream));
    return kExitNotFound;
  }
  return kExitOk;
}

int run_follow(const GlobalOptions& g, const std::string& publish, uint64_t from) {
  zmq::context_t ctx(1);
  bus::SubscriberOptions o;
  o.store_endpoint = g.store;
  o.publish_endpoint = publish;
  o.from = from;
  auto options = client_options(g);
  if (!options) return fail_with(options.error());
  o.client = *options;
  o.log = spdlog::get("wpm");
  bus::CatchUpSubscriber sub(ctx, o, [&](const Event& e) {
    print_event(e, g.format);
    std::fflush(stdout);
  });
  auto r = sub.run([] { return g_interrupted.load(); });
  if (!r) return fail_with(r.error());
  return kExitOk;
}

int cmd_tail(const GlobalOptions& g, uint64_t count, bool follow, std::string publish) {
  auto options = client_options(g);
  if (!options) return fail_with(options.error());
  zmq::context_t ctx(1);
  bus::StoreClient client(ctx, g.store, *options);
  auto st = client.stats();
  if (!st) return fail_with(st.error());
  uint64_t from = st->head >= count ? st->head - count + 1 : 1;
  if (g.format == Format::kTable) std::puts(event_table_header().c_str());
  if (follow) {
    if (publish.empty()) publish = st->publish_endpoint;
    return run_follow(g, publish, from);
  }
  // Bounded: each page advances `from` up to the head read above.
  while (from <= st->head) {
    auto page = client.read_range(ReadRangeRequest{from, st->head, 0});
    if (!page) return fail_with(page.error());
    for (const auto& record : page->records) {
      auto e = decode_record(record, from);
      if (!e) return fail_with(e.error());
      print_event(*e, g.format);
    }
    if (page->end || page->records.empty()) break;
    from = page->next;
  }
  return kExitOk;
}

// ---- verify ----------------------------------------------------------------------

struct VerifyReport {
  uint64_t events = 0;
  uint64_t head = 0;
  Sha256Digest chain{};
  std::optional<Error> problem;
  double seconds = 0;
};

int report_verify(const GlobalOptions& g, const VerifyReport& r, const std::string& where,
                  const nlohmann::json& extra = nlohmann::json::object()) {
  double rate = r.seconds > 0 ? static_cast<double>(r.events) / r.seconds : 0;
  if (g.format == Format::kJson) {
    nlohmann::json j = extra;
    j.update({{"sound", !r.problem.has_value()},
                        {"events", r.events},
                        {"head", r.head},
                        {"chain", to_hex(r.chain)},
                        {"seconds", r.seconds},
                        {"where", where}});
    if (r.problem) j["problem"] = r.problem->message;
    std::puts(j.dump(2).c_str());
  } else if (r.problem) {
    // stdout carries the verdict; the error line goes to stderr as well.
    std::printf("log broken: %s\n", r.problem->message.c_str());
  } else {
    std::printf("log sound: %llu events, sequences 1..%llu gap-free, checksums and hash chain "
                "verified (%s) in %.2f s (%.0f events/s); chain head %s\n",
                static_cast<unsigned long long>(r.events), static_cast<unsigned long long>(r.head),
                where.c_str(), r.seconds, rate, to_hex(r.chain).c_str());
  }
  if (r.problem) {
    print_error(fmt::format("log verification failed at {}", r.problem->message));
    return kExitFailed;
  }
  return kExitOk;
}

struct Progress {
  bool enabled = stderr_is_terminal();
  std::chrono::steady_clock::time_point last = std::chrono::steady_clock::now();
  void update(uint64_t done, uint64_t total) {
    if (!enabled) return;
    auto now = std::chrono::steady_clock::now();
    if (now - last < std::chrono::milliseconds(250)) return;
    last = now;
    std::fprintf(stderr, "\rverifying: %llu / %llu events", static_cast<unsigned long long>(done),
                 static_cast<unsigned long long>(total));
  }
  void done() {
    if (enabled) std::fprintf(stderr, "\r\033[K");
  }
};

// Both online checks: a client of the store, and the head to check up to.
Result<std::unique_ptr<bus::StoreClient>> connect_to_verify(const GlobalOptions& g, zmq::context_t& ctx,
                                                            VerifyReport& report) {
  auto options = client_options(g);
  if (!options) return std::unexpected(options.error());
  auto client = std::make_unique<bus::StoreClient>(ctx, g.store, *options);
  auto st = client->stats();
  if (!st) return std::unexpected(st.error());
  report.head = st->head;
  return client;
}

// Online: the store checks its own log, a part at a time (each part is one
// request, so progress shows and no reply holds the log), and this command
// carries the chain from one part to the next. The records never leave the store.
int cmd_verify_online(const GlobalOptions& g) {
  zmq::context_t ctx(1);
  VerifyReport report;
  auto connected = connect_to_verify(g, ctx, report);
  if (!connected) return fail_with(connected.error());
  bus::StoreClient& client = **connected;
  auto t0 = std::chrono::steady_clock::now();
  Progress progress;
  VerifyRequest part{1, report.head, {}, 0};
  while (part.from <= report.head && !g_interrupted.load()) {  // bounded: each part advances `from` or ends
    auto r = client.verify(part);
    if (!r) {
      progress.done();
      if (r.error().code == ErrorCode::kInvalidRequest) {
        print_error(fmt::format("{}; a store older than this wpm cannot check its own log: run "
                                "`wpm log verify --fetch`",
                                r.error().message));
        return kExitFailed;
      }
      return fail_with(r.error());
    }
    report.events += r->checked;
    report.chain = r->chain;
    if (!r->problem.empty()) {
      report.problem = Error{ErrorCode::kCorruption, r->problem};
      break;
    }
    if (r->next <= part.from) {  // cannot happen with a sound store: no progress and no problem
      report.problem = Error{ErrorCode::kCorruption,
                             fmt::format("sequence {}: the store checked nothing from there", part.from)};
      break;
    }
    part.from = r->next;
    part.previous_chain = r->chain;
    progress.update(part.from - 1, report.head);
  }
  progress.done();
  if (g_interrupted.load()) {
    print_error(fmt::format("interrupted after {} of {} events; nothing was found wrong so far",
                            report.events, report.head));
    return kExitFailed;
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report_verify(g, report, g.store);
}

// --fetch: every record crosses the connection and is checked here, in wpm.
int cmd_verify_fetched(const GlobalOptions& g) {
  zmq::context_t ctx(1);
  VerifyReport report;
  auto connected = connect_to_verify(g, ctx, report);
  if (!connected) return fail_with(connected.error());
  bus::StoreClient& client = **connected;
  auto t0 = std::chrono::steady_clock::now();
  ChainVerifier verifier;
  Progress progress;
  // A reader thread fetches the next pages while this one checks the
  // current: the store's reads and the transfer overlap the hashing.
  eventstore::Handoff<Result<ReadReply>> pages(4);
  std::thread reader([&] {
    uint64_t from = 1;
    while (from <= report.head) {  // bounded: each page advances `from`, or ends the loop
      auto page = client.read_range(ReadRangeRequest{from, report.head, 0});
      bool last = !page || page->records.empty();
      if (page) from += page->records.size();
      if (!pages.push(std::move(page)) || last) break;
    }
    pages.finish();
  });
  auto stop_reader = [&] {
    pages.close();
    reader.join();
  };
  uint64_t next = 1;
  while (next <= report.head && !report.problem) {
    auto page = pages.pop();
    if (!page) break;
    if (!*page) {
      if (page->error().code == ErrorCode::kTimeout) {
        stop_reader();
        return fail_with(page->error());
      }
      report.problem = page->error();
      break;
    }
    for (const auto& record : (*page)->records) {
      auto e = verifier.check(next, record);
      if (!e) {
        report.problem = e.error();
        break;
      }
      ++next;
    }
    progress.update(next - 1, report.head);
    if ((*page)->records.empty()) break;
  }
  stop_reader();
  progress.done();
  if (!report.problem && verifier.next_sequence() != report.head + 1) {
    report.problem = Error{ErrorCode::kCorruption,
                           fmt::format("sequence {}: missing", verifier.next_sequence())};
  }
  report.events = verifier.count();
  report.chain = verifier.chain();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report_verify(g, report, g.store);
}

}  // namespace

int cmd_verify_offline(const GlobalOptions& g, const std::string& data_dir, const nlohmann::json& extra) {
  auto log = spdlog::get("wpm");
  eventstore::StoreOptions o;
  o.data_dir = data_dir;
  o.read_only = true;
  std::optional<std::string> open_problem;
  auto store = eventstore::Store::open(o, log);
  if (!store && store.error().code == ErrorCode::kCorruption) {
    // Open what can be read, to name the first damaged sequence.
    open_problem = store.error().message;
    o.salvage = true;
    store = eventstore::Store::open(o, log);
  }
  if (!store && store.error().code == ErrorCode::kUnavailable) {
    print_error(store.error().message +
                "; an offline check needs wpmd stopped (or run `wpm log verify` without --data "
                "against the running store)");
    return kExitFailed;
  }
  if (!store) return fail_with(store.error());
  VerifyReport report;
  uint64_t acknowledged = (*store)->acknowledged_at_open();
  report.head = std::max((*store)->head(), acknowledged);
  auto t0 = std::chrono::steady_clock::now();
  ChainVerifier verifier;
  Progress progress;
  // Every stored record: up to the head in two halves read at once, then
  // any beyond the acknowledged head.
  auto show = [&](const ChainVerifier& v) { progress.update(v.next_sequence() - 1, report.head); };
  auto r = eventstore::verify_log(**store, verifier, report.head, 0, show);
  if (r) r = eventstore::verify_log(**store, verifier, UINT64_MAX, 0, show);
  progress.done();
  if (!r) report.problem = r.error();
  if (!report.problem && verifier.next_sequence() <= acknowledged) {
    report.problem = Error{
        ErrorCode::kCorruption,
        fmt::format("sequence {}: missing (the log ends at {} but {} was acknowledged{})",
                    verifier.next_sequence(), verifier.next_sequence() - 1, acknowledged,
                    open_problem ? "; " + *open_problem : "")};
  }
  if (report.problem && open_problem && report.problem->message.find(*open_problem) == std::string::npos) {
    report.problem->message += "; " + *open_problem;
  }
  report.events = verifier.count();
  report.chain = verifier.chain();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report_verify(g, report, data_dir, extra);
}

namespace {

// ---- append --------------------------------------------------------------------------

struct AppendOptions {
  uint64_t synthetic = 0;
  uint64_t batch = 100;
  std::string ack_file;
  uint64_t payload_bytes = 0;
  std::string run;
};

std::string random_run_id() {
  uint64_t v = 0;
  if (::getrandom(&v, sizeof v, 0) != sizeof v) v = static_cast<uint64_t>(::getpid()) << 20;
  return fmt::format("{:016x}", v);
}

int cmd_append(const GlobalOptions& g, AppendOptions a) {
  if (a.batch == 0 || a.batch > 10'000) {
    print_error(fmt::format("--batch {} is out of range; use 1..10000", a.batch));
    return kExitUsage;
  }
  if (a.run.empty()) a.run = random_run_id();
  std::FILE* ack = nullptr;
  if (!a.ack_file.empty()) {
    ack = std::fopen(a.ack_file.c_str(), "a");
    if (ack == nullptr) {
      print_error(fmt::format("cannot open --ack-file {}: {}", a.ack_file, std::strerror(errno)));
      return kExitFailed;
    }
  }
  auto options = client_options(g);
  if (!options) return fail_with(options.error());
  zmq::context_t ctx(1);
  bus::StoreClient client(ctx, g.store, *options);
  std::string blob(a.payload_bytes, '\0');
  for (size_t i = 0; i < blob.size(); ++i) blob[i] = static_cast<char>('a' + i % 26);
  std::string stream = "synthetic/" + a.run;
  auto t0 = std::chrono::steady_clock::now();
  uint64_t first_seq = 0, last_seq = 0, done = 0;
  Progress progress;
  for (uint64_t start = 0, batch_no = 0; start < a.synthetic && !g_interrupted.load();
       start += a.batch, ++batch_no) {
    AppendRequest req;
    req.idempotency_key = fmt::format("{}-{}", a.run, batch_no);
    uint64_t n = std::min(a.batch, a.synthetic - start);
    req.events.reserve(n);
    for (uint64_t i = 0; i < n; ++i) {
      req.events.push_back(EventDraft{stream, "", "", "wpm log append",
                                      Synthetic{a.run, start + i, "", blob}});
    }
    auto r = client.append(req);
    if (!r) {
      if (ack != nullptr) std::fclose(ack);
      print_error(fmt::format("append of events {}..{} failed: {} ({} events acknowledged before)",
                              start, start + n - 1, r.error().message, done));
      return kExitFailed;
    }
    if (ack != nullptr) {
      for (uint32_t i = 0; i < r->count; ++i) {
        std::fprintf(ack, "%llu %s\n", static_cast<unsigned long long>(r->first_sequence + i),
                     req.idempotency_key.c_str());
      }
      std::fflush(ack);
    }
    if (first_seq == 0) first_seq = r->first_sequence;
    last_seq = r->first_sequence + r->count - 1;
    done += r->count;
    progress.update(done, a.synthetic);
  }
  progress.done();
  if (ack != nullptr) std::fclose(ack);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (g.format == Format::kJson) {
    nlohmann::json j = {{"run", a.run}, {"events", done}, {"firstSequence", first_seq},
                        {"lastSequence", last_seq}, {"seconds", secs}};
    std::puts(j.dump().c_str());
  } else {
    std::printf("appended %llu synthetic events (sequences %llu..%llu, run %s) in %.2f s, %.0f "
                "events/s\n",
                static_cast<unsigned long long>(done), static_cast<unsigned long long>(first_seq),
                static_cast<unsigned long long>(last_seq), a.run.c_str(), secs,
                secs > 0 ? static_cast<double>(done) / secs : 0.0);
  }
  return g_interrupted.load() ? kExitFailed : kExitOk;
}

}  // namespace

void add_log_commands(CLI::App& app, GlobalOptions& g, int& exit_code) {
  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);
  auto* log = app.add_subcommand("log", "read, follow, verify and load the event log");
  log->require_subcommand(1);

  auto* stats = log->add_subcommand("stats", "event count, size and counts per event type");
  stats->callback([&] { exit_code = cmd_stats(g); });

  auto* dump = log->add_subcommand("dump", "print events in sequence order (JSON: one per line)");
  static DumpOptions d;
  dump->add_option("--from", d.from, "first sequence (or stream version with --stream)");
  dump->add_option("--to", d.to, "last sequence (default: the head)");
  dump->add_option("--stream", d.stream, "only this stream, in version order");
  dump->callback([&] { exit_code = cmd_dump(g, d); });

  auto* tail = log->add_subcommand("tail", "print the last events; --follow keeps printing new ones");
  static uint64_t count = 10;
  static bool follow = false;
  static std::string publish;
  tail->add_option("-n,--lines", count, "how many of the last events (default 10)");
  tail->add_flag("-f,--follow", follow, "keep printing new events as they are committed (Ctrl-C stops)");
  tail->add_option("--publish", publish,
                   "publication endpoint (default: the one the store reports)")
      ->check(CLI::Validator(
          [](std::string& value) { return bus::connect_endpoint_problem(value); }, "ENDPOINT"));
  tail->callback([&] { exit_code = cmd_tail(g, count, follow, publish); });

  auto* verify = log->add_subcommand(
      "verify", "check every checksum, the hash chain and gap-free sequences (exit 1 if broken)");
  static std::string offline_dir;
  static bool fetch = false;
  auto* data_option = verify->add_option("--data", offline_dir,
                                         "check the data directory offline, with wpmd stopped (works when "
                                         "wpmd refuses to start)");
  verify->add_flag("--fetch", fetch,
                   "fetch every record from the store and check it in wpm (slower; by default the "
                   "running store checks its own log and sends the outcome)")
      ->excludes(data_option);
  verify->callback([&] {
    exit_code = !offline_dir.empty() ? cmd_verify_offline(g, offline_dir)
                : fetch              ? cmd_verify_fetched(g)
                                     : cmd_verify_online(g);
  });

  auto* append = log->add_subcommand("append", "append synthetic test events through the store");
  static AppendOptions a;
  append->add_option("--synthetic", a.synthetic, "number of synthetic events to append")->required();
  append->add_option("--batch", a.batch, "events per append request (default 100)");
  append->add_option("--ack-file", a.ack_file,
                     "append 'SEQUENCE IDEMPOTENCY-KEY' per acknowledged event, flushed per batch");
  append->add_option("--payload-bytes", a.payload_bytes, "filler bytes per event (default 0)");
  append->add_option("--run", a.run, "run id (default: random); events go to stream synthetic/RUN");
  append->callback([&] { exit_code = cmd_append(g, a); });
}

}  // namespace wpm::cli
