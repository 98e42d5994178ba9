#pragma once
// The stored history as the what-if simulation's passes read it
// (simulate.cpp), an hour (of the clock: the store keeps raw samples in
// hourly blocks) at a time per entity: a host, or a WPAR as one system
// reported it, with the width of the windows asked of it. The sums of the
// windows ending at every pass time of the hour on the interval's grid are
// worked out in one sweep while the hour is in hand (grid_sums: the live
// series' answers to the last bit); the passes then find them ready, entity
// after entity in the order of the pass before (fetched ahead).
//
// While the passes of an hour run, a second thread reads the next hour of
// every entity the last pass asked for and works out its sums: the store's
// reads overlap the passes. A question the prepared sums do not answer (an
// entity asked for the first time, an interval or period changed, a time off
// the grid) waits for that thread and reads what it needs itself.
// Memory: two hours of sums and a window of samples per entity.
//
// Thread safety: one thread calls it. The two threads never touch the same
// entity's data at once: the second writes only the entities of its job
// (their next hour and the samples carried over), the first reads only their
// current hour until it has waited for the job. The reader is called by one
// of them at a time.

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "services/policy/simulate.h"
#include "services/policy/windows.h"

namespace wpm::policy {

class HistorySource : public SampleSource {
 public:
  static constexpr int64_t kHourS = 3600;
  // Reads nothing after to_s (the period's end).
  HistorySource(const HistoryReader& read, int64_t to_s) : read_(read), to_s_(to_s) {}
  ~HistorySource() override { wait(); }
  HistorySource(const HistorySource&) = delete;
  HistorySource& operator=(const HistorySource&) = delete;

  std::optional<WindowSummary> host(const std::string& system, int64_t from_s, int64_t to_s) override {
    return summary(false, system, system, from_s, to_s);
  }
  std::optional<WindowSummary> wpar(const std::string& name, const std::string& system, int64_t from_s,
                                    int64_t to_s) override {
    return summary(true, name, system, from_s, to_s);
  }
  // Before the pass at `at_s` on the grid of `interval_s` (policy.interval):
  // the hour prepared ahead is taken once the passes reach it.
  void pass_begins(int64_t at_s, int64_t interval_s);
  // After the pass at `at_s`: the next one asks for the entities in the same
  // order, and the second thread starts on the hour after this one.
  void pass_ended(int64_t at_s);
  // A read that failed (then a question may have had no answer).
  const std::optional<Error>& error() const { return error_; }
  uint64_t reads() const { return reads_; }

 private:
  static constexpr size_t kAhead = 8;
  struct Sums {  // of the windows ending at first_s + i × step
    int64_t first_s = 0, step = 1;
    std::vector<WindowSums> at;
  };
  struct Entity {
    bool wpar = false;
    std::string name, system;
    int64_t width = 0;  // of the windows asked for (a host is asked once per averaging period in use)
    Sums ready;         // the passes' hour (the passes' thread)
    Sums next;          // the hour after, as the second thread prepares it
    size_t served = 0;  // the next one a pass will likely ask for
    uint64_t job = 0;   // the last job that took it
    // Every sample of (have_to_s − width, have_to_s], in time order.
    int64_t have_to_s = INT64_MIN;
    std::vector<CompactSample> carry;
  };
  Entity& find(bool wpar, const std::string& name, const std::string& system, int64_t width);
  static const WindowSums* ready(Entity& e, int64_t to_s);
  std::optional<WindowSummary> summary(bool wpar, const std::string& name, const std::string& system, int64_t from_s,
                                       int64_t to_s);
  std::optional<Error> prepare(Entity& e, int64_t first_s, int64_t until_s, int64_t step, Sums& out,
                               std::vector<CompactSample>& samples);
  void launch(int64_t at_s);
  void wait();

  const HistoryReader& read_;
  int64_t to_s_;
  int64_t interval_s_ = 60;
  std::unordered_map<std::string, std::unique_ptr<Entity>> entities_;  // by kind, name, system and width
  std::vector<Entity*> order_, last_order_;                            // this pass's, the last one's
  std::optional<Error> error_;
  std::vector<CompactSample> samples_;  // room for an entity's samples (the passes' thread)
  std::atomic<uint64_t> reads_{0};
  // The second thread's job: the hour from job_hour_s_ of these entities.
  std::thread thread_;
  std::vector<Entity*> job_;
  bool pending_ = false;  // a job whose hour the passes have not taken yet
  int64_t job_hour_s_ = 0;
  uint64_t job_id_ = 0;
  std::optional<Error> job_error_;
};

}  // namespace wpm::policy
