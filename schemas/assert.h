#pragma once
// WPM_ASSERT: always-on invariant checks (STYLE.md §3). A failed assertion is a
// bug: it logs the condition, the place and a formatted message, then aborts.
// WPM_DASSERT is for expensive checks and compiles away under NDEBUG.

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>

namespace wpm::detail {
[[noreturn]] inline void assert_fail(const char* cond, const char* file, int line,
                                     const std::string& msg) {
  std::fprintf(stderr, "wpm: assertion failed: %s at %s:%d: %s\n", cond, file, line, msg.c_str());
  std::fflush(stderr);
  std::abort();
}
}  // namespace wpm::detail

#define WPM_ASSERT(cond, ...)                                                             \
  do {                                                                                    \
    if (!(cond)) [[unlikely]]                                                             \
      ::wpm::detail::assert_fail(#cond, __FILE__, __LINE__, ::fmt::format(__VA_ARGS__)); \
  } while (0)

#ifdef NDEBUG
#define WPM_DASSERT(cond, ...) \
  do {                         \
  } while (0)
#else
#define WPM_DASSERT(cond, ...) WPM_ASSERT(cond, __VA_ARGS__)
#endif
