#include "eventstore/samples.h"

#include <fmt/format.h>
#include <rocksdb/db.h>
#include <rocksdb/iterator.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace wpm::eventstore {
namespace {

using series::Metric;

constexpr char kRaw = 'r';
constexpr char kIndex = 'x';
constexpr char kChunk = 'c';
constexpr char kAggregates = 'a';
constexpr std::string_view kSealedKey = "m/sealed-before";
// A sealing writes its chunks in batches of about this size.
constexpr size_t kSealBatchBytes = 4u << 20;

// Sealing and dropping write without the WAL and flush after: what they
// write is derived from rows that stay (in the WAL or a table) until the
// same memtable's flush makes their removal durable, so a crash before it
// only means sealing again. (It also keeps range deletions out of the
// log's WAL, which a salvage replay of a damaged WAL refused.)
rocksdb::WriteOptions derived_write() {
  rocksdb::WriteOptions wo;
  wo.disableWAL = true;
  return wo;
}

Error rocks_error(const std::string& what, const rocksdb::Status& s) {
  return Error{s.IsCorruption() ? ErrorCode::kCorruption : ErrorCode::kIo, fmt::format("{}: {}", what, s.ToString())};
}

void put_be64(std::string& out, int64_t value) {
  auto v = static_cast<uint64_t>(value);
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}

int64_t get_be64(std::string_view in) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8; ++i) v = (v << 8) | static_cast<uint8_t>(in[i]);
  return static_cast<int64_t>(v);
}

std::string block_prefix(char kind, int64_t block) {
  std::string k(1, kind);
  put_be64(k, block);
  return k;
}

std::string raw_prefix(int64_t block, const std::string& system) {
  std::string k = block_prefix(kRaw, block);
  k += system;
  k.push_back('\0');
  return k;
}

// The entity part of chunk and index keys: S SYSTEM, or W NAME \0 (then the system).
std::string entity_prefix(char kind, int64_t block, bool wpar, const std::string& name) {
  std::string k = block_prefix(kind, block);
  k.push_back(wpar ? 'W' : 'S');
  k += name;
  if (wpar) k.push_back('\0');
  return k;
}

rocksdb::Slice slice(const std::string& s) { return rocksdb::Slice(s.data(), s.size()); }

// ---- rows ------------------------------------------------------------------------

using series::get_varint;
using series::put_varint;
using series::unzigzag;
using series::zigzag;

void put_values(std::string& out, const MetricValues& v) {
  out.push_back(static_cast<char>(v.present));
  for (uint8_t m = 1; m <= series::kMetricMax; ++m) {
    if (v.has(static_cast<Metric>(m))) put_varint(out, zigzag(v.fixed[m]));
  }
}

bool get_values(std::string_view& in, MetricValues& v) {
  if (in.empty()) return false;
  v.present = static_cast<uint8_t>(in.front());
  in.remove_prefix(1);
  if ((v.present & ~((2u << series::kMetricMax) - 2)) != 0) return false;  // an unknown metric
  for (uint8_t m = 1; m <= series::kMetricMax; ++m) {
    if (!v.has(static_cast<Metric>(m))) continue;
    auto x = get_varint(in);
    if (!x) return false;
    v.fixed[m] = unzigzag(*x);
  }
  return true;
}

// ---- blocks of one entity ----------------------------------------------------------

struct Builder {
  std::vector<int64_t> times;
  std::vector<MetricValues> values;
  void add(int64_t t, const MetricValues& v) {
    if (!times.empty() && t <= times.back()) return;  // one sample a second
    times.push_back(t);
    values.push_back(v);
  }
  series::Block block() const {
    series::Block b;
    b.times_s = times;
    uint8_t present = 0;
    for (const auto& v : values) present |= v.present;
    for (uint8_t m = 1; m <= series::kMetricMax; ++m) {
      if (((present >> m) & 1u) == 0) continue;
      series::Column c{m, {}};
      c.values.reserve(values.size());
      for (const auto& v : values) c.values.push_back(v.has(static_cast<Metric>(m)) ? v.fixed[m] : series::kMissing);
      b.columns.push_back(std::move(c));
    }
    return b;
  }
};

// Min, mean and max of each metric per `span` seconds (buckets by start).
series::Block aggregate(const series::Block& raw, int64_t span) {
  series::Block out;
  std::vector<std::pair<size_t, size_t>> buckets;  // [first, last) of raw
  for (size_t i = 0; i < raw.times_s.size(); ++i) {
    int64_t start = raw.times_s[i] - raw.times_s[i] % span;
    if (out.times_s.empty() || out.times_s.back() != start) {
      out.times_s.push_back(start);
      buckets.push_back({i, i});
    }
    buckets.back().second = i + 1;
  }
  for (const auto& c : raw.columns) {
    auto m = static_cast<Metric>(c.tag);
    series::Column lo{series::aggregate_tag(m, series::Aggregate::kMin), {}};
    series::Column mean{series::aggregate_tag(m, series::Aggregate::kMean), {}};
    series::Column hi{series::aggregate_tag(m, series::Aggregate::kMax), {}};
    for (auto [first, last] : buckets) {
      int64_t mn = std::numeric_limits<int64_t>::max(), mx = std::numeric_limits<int64_t>::min();
      double sum = 0;
      int n = 0;
      for (size_t i = first; i < last; ++i) {
        int64_t v = c.values[i];
        if (v == series::kMissing) continue;
        mn = std::min(mn, v);
        mx = std::max(mx, v);
        sum += static_cast<double>(v);
        ++n;
      }
      lo.values.push_back(n ? mn : series::kMissing);
      hi.values.push_back(n ? mx : series::kMissing);
      mean.values.push_back(n ? static_cast<int64_t>(std::llround(sum / n)) : series::kMissing);
    }
    out.columns.push_back(std::move(lo));
    out.columns.push_back(std::move(mean));
    out.columns.push_back(std::move(hi));
  }
  return out;
}

// Points of several blocks (several systems, several spans) before they are
// laid out as one History.
struct Point {
  int64_t t;
  size_t block;  // which of the blocks read
  size_t index;  // the row in it
};

}  // namespace

std::string encode_sample_row(const HostSample& sample) {
  std::string out;
  out.reserve(16 + sample.wpars.size() * 32);
  put_values(out, sample.host);
  put_varint(out, sample.wpars.size());
  for (const auto& w : sample.wpars) {
    put_varint(out, w.name.size());
    out += w.name;
    put_values(out, w.values);
  }
  return out;
}

Result<HostSample> decode_sample_row(std::string_view in, std::string system, int64_t time_s) {
  HostSample s;
  s.system = std::move(system);
  s.time_s = time_s;
  auto bad = [&] {
    return fail(ErrorCode::kCorruption, fmt::format("a stored metric row of system {} at {} is damaged", s.system,
                                                    time_s));
  };
  if (!get_values(in, s.host)) return bad();
  auto n = get_varint(in);
  if (!n || *n > in.size()) return bad();
  s.wpars.resize(*n);
  for (auto& w : s.wpars) {
    auto len = get_varint(in);
    if (!len || *len > in.size()) return bad();
    w.name.assign(in.substr(0, *len));
    in.remove_prefix(*len);
    if (!get_values(in, w.values)) return bad();
  }
  if (!in.empty()) return bad();
  return s;
}

Result<std::unique_ptr<SampleStore>> SampleStore::open(Store& store, SampleOptions options,
                                                       std::shared_ptr<spdlog::logger> log) {
  auto column = store.metrics_column();
  if (column.cf == nullptr) {
    return fail(ErrorCode::kReadOnly, "this data directory has no metric history yet (it was written by an older "
                                      "wpmd); start wpmd on it once to add it");
  }
  if (options.block_s <= 0 || options.aggregate_s <= 0 || options.block_s % options.aggregate_s != 0) {
    return fail(ErrorCode::kInvalidRequest,
                fmt::format("a metric block of {} s must be a multiple of the {} s aggregate", options.block_s,
                            options.aggregate_s));
  }
  std::unique_ptr<SampleStore> s(new SampleStore(column, options, std::move(log)));
  std::string value;
  auto st = s->db_->Get(rocksdb::ReadOptions(), s->cf_, rocksdb::Slice(kSealedKey.data(), kSealedKey.size()), &value);
  if (st.ok() && value.size() == 8) s->sealed_before_ = get_be64(value);
  if (!st.ok() && !st.IsNotFound()) return std::unexpected(rocks_error("cannot read the metric history", st));
  return s;
}

Result<void> SampleStore::write(const HostSample& sample) {
  int64_t block = block_of(sample.time_s);
  std::string key = raw_prefix(block, sample.system);
  put_be64(key, sample.time_s);
  rocksdb::WriteBatch batch;
  batch.Put(cf_, slice(key), slice(encode_sample_row(sample)));
  for (const auto& w : sample.wpars) {
    std::string index = entity_prefix(kIndex, block, true, w.name);
    index += sample.system;
    batch.Put(cf_, slice(index), rocksdb::Slice());
  }
  {
    std::shared_lock lock(seal_mutex_);
    if (sample.time_s < sealed_before_) {
      late_.fetch_add(1, std::memory_order_relaxed);
      return {};
    }
    auto s = db_->Write(rocksdb::WriteOptions(), &batch);
    if (!s.ok()) return std::unexpected(rocks_error("cannot record a metric sample", s));
  }
  std::vector<std::function<void(const HostSample&)>> subscribers;
  {
    std::lock_guard lock(subscribers_mutex_);
    subscribers = subscribers_;
  }
  for (const auto& f : subscribers) f(sample);
  return {};
}

void SampleStore::subscribe(std::function<void(const HostSample&)> subscriber) {
  std::lock_guard lock(subscribers_mutex_);
  subscribers_.push_back(std::move(subscriber));
}

uint64_t SampleStore::late() const { return late_.load(std::memory_order_relaxed); }

std::optional<int64_t> SampleStore::oldest_raw_block() const {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cf_));
  it->Seek(rocksdb::Slice(&kRaw, 1));
  if (!it->Valid() || it->key().size() < 9 || it->key()[0] != kRaw) return std::nullopt;
  return get_be64(std::string_view(it->key().data() + 1, 8));
}

Result<MaintainOutcome> SampleStore::maintain(int64_t now_s) {
  MaintainOutcome outcome;
  while (auto block = oldest_raw_block()) {
    if (*block + options_.block_s + options_.seal_grace_s > now_s) break;
    if (auto r = seal(*block, outcome); !r) return std::unexpected(r.error());
    ++outcome.sealed_blocks;
  }
  // Past retention: whole blocks by range, written only when there are some.
  rocksdb::WriteBatch drop;
  auto drop_before = [&](char kind, int64_t retention) {
    std::string from = block_prefix(kind, 0);
    std::string to = block_prefix(kind, std::max<int64_t>(0, block_of(now_s - retention)));
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cf_));
    it->Seek(slice(from));
    if (it->Valid() && it->key().compare(slice(to)) < 0) drop.DeleteRange(cf_, slice(from), slice(to));
  };
  drop_before(kChunk, options_.raw_retention_s);
  drop_before(kAggregates, options_.aggregate_retention_s);
  if (drop.Count() == 0) return outcome;
  if (auto s = db_->Write(derived_write(), &drop); !s.ok()) {
    return std::unexpected(rocks_error("cannot drop expired metric history", s));
  }
  flush_soon();
  return outcome;
}

Result<void> SampleStore::seal(int64_t block, MaintainOutcome& outcome) {
  {
    // From here on a report of this block is refused as late; one being
    // written holds the lock shared and is in the rows read below.
    std::unique_lock lock(seal_mutex_);
    sealed_before_ = std::max(sealed_before_, block + options_.block_s);
  }
  std::string from = block_prefix(kRaw, block), to = block_prefix(kRaw, block + 1);
  rocksdb::ReadOptions ro;
  rocksdb::Slice upper = slice(to);
  ro.iterate_upper_bound = &upper;
  ro.fill_cache = false;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, cf_));
  rocksdb::WriteBatch batch;
  std::string system;
  Builder host;
  std::map<std::string, Builder> wpars;
  auto put_chunks = [&](bool wpar, const std::string& name, const Builder& b) {
    auto raw = b.block();
    std::string key = entity_prefix(kChunk, block, wpar, name);
    if (wpar) key += system;
    batch.Put(cf_, slice(key), slice(series::encode_block(raw)));
    key[0] = kAggregates;
    batch.Put(cf_, slice(key), slice(series::encode_block(aggregate(raw, options_.aggregate_s))));
    outcome.chunks_written += 2;
  };
  auto flush_system = [&]() -> Result<void> {
    if (!host.times.empty()) put_chunks(false, system, host);
    for (const auto& [name, b] : wpars) put_chunks(true, name, b);
    host = Builder{};
    wpars.clear();
    if (batch.GetDataSize() < kSealBatchBytes) return {};
    auto s = db_->Write(derived_write(), &batch);
    batch.Clear();
    if (!s.ok()) return std::unexpected(rocks_error("cannot write sealed metric history", s));
    return {};
  };
  for (it->Seek(slice(from)); it->Valid(); it->Next()) {
    std::string_view key(it->key().data(), it->key().size());
    auto nul = key.find('\0', 9);
    if (nul == std::string_view::npos || key.size() != nul + 9) {
      log_->warn("metric_row_skipped reason=\"malformed key\" block={}", block);
      continue;
    }
    std::string row_system(key.substr(9, nul - 9));
    int64_t t = get_be64(key.substr(nul + 1));
    if (row_system != system) {
      if (auto r = flush_system(); !r) return r;
      system = std::move(row_system);
    }
    auto row = decode_sample_row(std::string_view(it->value().data(), it->value().size()), system, t);
    if (!row) {
      log_->warn("metric_row_skipped system={} time={} error=\"{}\"", system, t, row.error().message);
      continue;
    }
    ++outcome.sealed_rows;
    host.add(t, row->host);
    for (const auto& w : row->wpars) wpars[w.name].add(t, w.values);
  }
  if (!it->status().ok()) return std::unexpected(rocks_error("cannot read metric rows to seal", it->status()));
  if (auto r = flush_system(); !r) return r;
  batch.DeleteRange(cf_, slice(from), slice(to));
  std::string index_from = block_prefix(kIndex, block), index_to = block_prefix(kIndex, block + 1);
  batch.DeleteRange(cf_, slice(index_from), slice(index_to));
  std::string sealed;
  put_be64(sealed, block + options_.block_s);
  batch.Put(cf_, rocksdb::Slice(kSealedKey.data(), kSealedKey.size()), slice(sealed));
  auto s = db_->Write(derived_write(), &batch);
  if (!s.ok()) return std::unexpected(rocks_error("cannot finish sealing metric history", s));
  flush_soon();
  return {};
}

Result<void> SampleStore::read_block(bool wpar, const std::string& name, int64_t block, Resolution resolution,
                                     const std::string* system, History& out) const {
  const char kind = resolution == Resolution::kRaw ? kChunk : kAggregates;
  // Which systems hold the entity's samples in this block, sealed or not.
  std::vector<std::string> systems;
  std::vector<std::string> sealed;
  if (!wpar) {
    if (system != nullptr && *system != name) return {};
    systems.push_back(name);
  } else if (system != nullptr) {
    systems.push_back(*system);
  } else {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cf_));
    for (char k : {kind, kIndex}) {
      std::string prefix = entity_prefix(k, block, true, name);
      for (it->Seek(slice(prefix)); it->Valid() && it->key().starts_with(slice(prefix)); it->Next()) {
        systems.emplace_back(it->key().data() + prefix.size(), it->key().size() - prefix.size());
      }
      if (!it->status().ok()) return std::unexpected(rocks_error("cannot read metric history", it->status()));
    }
    std::sort(systems.begin(), systems.end());
    systems.erase(std::unique(systems.begin(), systems.end()), systems.end());
  }
  std::vector<std::pair<std::string, series::Block>> blocks;
  for (const auto& from : systems) {
    std::string key = entity_prefix(kind, block, wpar, name);
    if (wpar) key += from;
    std::string value;
    auto s = db_->Get(rocksdb::ReadOptions(), cf_, slice(key), &value);
    if (s.ok()) {
      auto decoded = series::decode_block(value);
      if (!decoded) return std::unexpected(decoded.error());
      blocks.emplace_back(from, std::move(*decoded));
      continue;
    }
    if (!s.IsNotFound()) return std::unexpected(rocks_error("cannot read metric history", s));
    // Not sealed yet: from the rows.
    Builder b;
    std::string prefix = raw_prefix(block, from);
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cf_));
    for (it->Seek(slice(prefix)); it->Valid() && it->key().starts_with(slice(prefix)); it->Next()) {
      if (it->key().size() != prefix.size() + 8) continue;
      int64_t t = get_be64(std::string_view(it->key().data() + prefix.size(), 8));
      auto row = decode_sample_row(std::string_view(it->value().data(), it->value().size()), from, t);
      if (!row) continue;  // counted when sealed
      if (!wpar) {
        b.add(t, row->host);
        continue;
      }
      for (const auto& w : row->wpars) {
        if (w.name == name) b.add(t, w.values);
      }
    }
    if (!it->status().ok()) return std::unexpected(rocks_error("cannot read metric rows", it->status()));
    if (b.times.empty()) continue;
    auto raw = b.block();
    blocks.emplace_back(from, resolution == Resolution::kRaw ? std::move(raw) : aggregate(raw, options_.aggregate_s));
  }
  // Laid out in time order, with the union of the columns.
  for (const auto& [system, b] : blocks) {
    for (const auto& c : b.columns) {
      if (out.column(c.tag) == nullptr) {
        out.columns.push_back(series::Column{c.tag, std::vector<int64_t>(out.times_s.size(), series::kMissing)});
      }
    }
  }
  // Each output column's source in each block (none: missing).
  std::vector<std::vector<const series::Column*>> sources(blocks.size());
  for (size_t k = 0; k < blocks.size(); ++k) {
    for (const auto& c : out.columns) {
      const series::Column* source = nullptr;
      for (const auto& bc : blocks[k].second.columns) {
        if (bc.tag == c.tag) source = &bc;
      }
      sources[k].push_back(source);
    }
  }
  if (blocks.size() == 1) {  // one system: already in time order
    const auto& [system, b] = blocks[0];
    out.times_s.insert(out.times_s.end(), b.times_s.begin(), b.times_s.end());
    out.systems.insert(out.systems.end(), b.times_s.size(), system);
    for (size_t c = 0; c < out.columns.size(); ++c) {
      auto& values = out.columns[c].values;
      if (sources[0][c] != nullptr) {
        values.insert(values.end(), sources[0][c]->values.begin(), sources[0][c]->values.end());
      } else {
        values.insert(values.end(), b.times_s.size(), series::kMissing);
      }
    }
    return {};
  }
  std::vector<Point> points;
  for (size_t k = 0; k < blocks.size(); ++k) {
    const auto& b = blocks[k].second;
    for (size_t i = 0; i < b.times_s.size(); ++i) points.push_back({b.times_s[i], k, i});
  }
  std::stable_sort(points.begin(), points.end(), [](const Point& a, const Point& b) { return a.t < b.t; });
  for (const auto& p : points) {
    out.times_s.push_back(p.t);
    out.systems.push_back(blocks[p.block].first);
    for (size_t c = 0; c < out.columns.size(); ++c) {
      const series::Column* source = sources[p.block][c];
      out.columns[c].values.push_back(source != nullptr ? source->values[p.index] : series::kMissing);
    }
  }
  return {};
}

Result<History> SampleStore::read(bool wpar, const std::string& name, int64_t from_s, int64_t to_s,
                                  Resolution resolution, const std::string* system) const {
  History out;
  // Nothing is kept beyond the aggregates' retention: a span longer than it
  // (or out of any sane range) is cut, so that a read walks a bounded number of blocks.
  constexpr int64_t kTimeMax = int64_t{1} << 40;  // about 36,000 years of seconds
  to_s = std::clamp<int64_t>(to_s, 0, kTimeMax);
  from_s = std::clamp<int64_t>(from_s, std::max<int64_t>(0, to_s - options_.aggregate_retention_s - options_.block_s),
                               kTimeMax);
  if (to_s < from_s) return out;
  for (int64_t b = block_of(from_s); b <= to_s; b += options_.block_s) {
    if (auto r = read_block(wpar, name, b, resolution, system, out); !r) return std::unexpected(r.error());
  }
  // Only the asked span (an aggregate counts from its bucket's start), kept in place.
  int64_t first = resolution == Resolution::kRaw ? from_s : from_s - (from_s % options_.aggregate_s);
  size_t kept = 0;
  for (size_t i = 0; i < out.times_s.size(); ++i) {
    if (out.times_s[i] < first || out.times_s[i] > to_s) continue;
    if (kept != i) {
      out.times_s[kept] = out.times_s[i];
      out.systems[kept] = std::move(out.systems[i]);
      for (auto& c : out.columns) c.values[kept] = c.values[i];
    }
    ++kept;
  }
  out.times_s.resize(kept);
  out.systems.resize(kept);
  for (auto& c : out.columns) c.values.resize(kept);
  return out;
}

void SampleStore::flush_soon() {
  rocksdb::FlushOptions flush;
  flush.wait = false;
  flush.allow_write_stall = true;
  (void)db_->Flush(flush, cf_);  // in the background; a failure leaves it in the memtable (sealed again after a crash)
}

uint64_t SampleStore::disk_bytes() const {
  rocksdb::ColumnFamilyMetaData meta;
  db_->GetColumnFamilyMetaData(cf_, &meta);
  return meta.size;
}

void SampleStore::compact() {
  rocksdb::CompactRangeOptions o;
  o.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  (void)db_->Flush(rocksdb::FlushOptions(), cf_);  // benchmarks only: a failure shows in the size
  (void)db_->CompactRange(o, cf_, nullptr, nullptr);
}

}  // namespace wpm::eventstore
