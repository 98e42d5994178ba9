#pragma once
// A bounded hand-off between one producer thread and one consumer: push()
// waits while `depth` items are waiting and returns false once the consumer
// has closed it; pop() waits for an item and returns nothing once the
// producer is finished and every item was taken. Used to read the log on one
// thread while another checks or folds it.
//
// Thread safety: one producer and one consumer, any threads.

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>

namespace wpm::eventstore {

template <typename T>
class Handoff {
 public:
  explicit Handoff(size_t depth) : depth_(depth) {}
  bool push(T item) {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return items_.size() < depth_ || closed_; });
    if (closed_) return false;
    items_.push_back(std::move(item));
    cv_.notify_all();
    return true;
  }
  std::optional<T> pop() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [&] { return !items_.empty() || finished_; });
    if (items_.empty()) return std::nullopt;
    T item = std::move(items_.front());
    items_.pop_front();
    cv_.notify_all();
    return item;
  }
  void finish() {  // producer: nothing more comes
    std::lock_guard lock(mutex_);
    finished_ = true;
    cv_.notify_all();
  }
  void close() {  // consumer: take nothing more
    std::lock_guard lock(mutex_);
    closed_ = true;
    cv_.notify_all();
  }

 private:
  size_t depth_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<T> items_;
  bool finished_ = false, closed_ = false;
};

}  // namespace wpm::eventstore
