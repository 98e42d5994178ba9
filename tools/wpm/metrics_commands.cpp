#include "tools/wpm/metrics_commands.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "tools/wpm/gateway_client.h"
#include "tools/wpm/output.h"

namespace wpm::cli {
namespace {

using nlohmann::json;

std::string number(const json& v, const std::string& unit) {
  if (!v.is_number()) return "-";
  double x = v.get<double>();
  std::string n = std::fabs(x) >= 100 || x == std::floor(x) ? fmt::format("{:.0f}", x) : fmt::format("{:.2f}", x);
  return unit == "%" ? n + " %" : unit.empty() ? n : n + " " + unit;
}

// The values a row summarises: raw values, or the means of aggregates.
const json& row_values(const json& s) { return s.contains("values") ? s["values"] : s["mean"]; }

}  // namespace


std::string sparkline(const json& values, size_t width) {
  static const char* kLevels[] = {"▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
  std::vector<double> xs;
  std::vector<bool> present;
  size_t n = values.size();
  if (n == 0 || width == 0) return "";
  size_t columns = std::min(width, n);
  double lo = INFINITY, hi = -INFINITY;
  for (size_t c = 0; c < columns; ++c) {
    // Column c covers values [c·n/columns, (c+1)·n/columns): its mean.
    size_t first = c * n / columns, last = (c + 1) * n / columns;
    double sum = 0;
    int count = 0;
    for (size_t i = first; i < last; ++i) {
      if (values[i].is_number()) sum += values[i].get<double>(), ++count;
    }
    xs.push_back(count ? sum / count : 0);
    present.push_back(count > 0);
    if (count) lo = std::min(lo, xs.back()), hi = std::max(hi, xs.back());
  }
  std::string out;
  for (size_t c = 0; c < columns; ++c) {
    if (!present[c]) {
      out += " ";
      continue;
    }
    int level = hi > lo ? static_cast<int>(std::lround((xs[c] - lo) / (hi - lo) * 7)) : 0;
    out += kLevels[std::clamp(level, 0, 7)];
  }
  return out;
}

std::string metrics_table(const json& r, bool chart) {
  std::string out = fmt::format("{} {}: {} from {} to {} ({} points)\n", r.value("kind", ""), r.value("name", ""),
                                r.value("resolution", "") == "raw" ? "samples" : "5-minute aggregates",
                                format_time(r.value("from", int64_t{0}) * 1'000'000'000),
                                format_time(r.value("to", int64_t{0}) * 1'000'000'000), r.value("points", 0));
  if (r.value("points", 0) == 0) {
    return out + "no samples in this span: is the agent running and registered? (wpm system list; agents report "
                 "every metrics.interval)\n";
  }
  out += fmt::format("{:<12} {:>10} {:>10} {:>10} {:>10}{}\n", "METRIC", "LAST", "MIN", "MEAN", "MAX",
                     chart ? "  TREND" : "");
  for (const auto& s : r["series"]) {
    const std::string unit = s.value("unit", "");
    const json& values = row_values(s);
    json last = nullptr;
    double sum = 0;
    int count = 0;
    json lo = nullptr, hi = nullptr;
    const json& mins = s.contains("min") ? s["min"] : values;
    const json& maxs = s.contains("max") ? s["max"] : values;
    for (size_t i = 0; i < values.size(); ++i) {
      if (values[i].is_number()) last = values[i], sum += values[i].get<double>(), ++count;
      if (mins[i].is_number() && (lo.is_null() || mins[i].get<double>() < lo.get<double>())) lo = mins[i];
      if (maxs[i].is_number() && (hi.is_null() || maxs[i].get<double>() > hi.get<double>())) hi = maxs[i];
    }
    json mean = count ? json(sum / count) : json(nullptr);
    out += fmt::format("{:<12} {:>10} {:>10} {:>10} {:>10}{}\n", s.value("metric", ""), number(last, unit),
                       number(lo, unit), number(mean, unit), number(hi, unit),
                       chart ? "  " + sparkline(values, 48) : "");
  }
  if (r.value("kind", "") == "wpar" && r.contains("placements")) {
    for (const auto& p : r["placements"]) {
      out += fmt::format("on {} from {}\n", p.value("system", ""),
                         format_time(p.value("from", int64_t{0}) * 1'000'000'000));
    }
  }
  return out;
}

void add_metrics_command(CLI::App& parent, const std::string& kind, GlobalOptions& g, int& exit_code) {
  struct Options {
    std::string name, since = "1h", until = "0", resolution = "auto";
    std::vector<std::string> metrics;
  };
  auto o = std::make_shared<Options>();
  auto* cmd = parent.add_subcommand(
      "metrics", kind == "system"
                     ? "a system's performance metrics: the recent trend and the longer history (CPU, memory, load, "
                       "processes, threads, page faults)"
                     : "a WPAR's performance metrics, wherever it ran: the recent trend and the longer history");
  cmd->add_option("NAME", o->name, fmt::format("the {} (any unique prefix)", kind == "system" ? "system" : "WPAR"))
      ->required();
  cmd->add_option("--since", o->since, "how far back: 90s, 15m, 6h, 30d (default 1h)");
  cmd->add_option("--until", o->until, "up to how long ago (default 0: now)");
  cmd->add_option("--metric", o->metrics,
                  "only these metrics: cpu, memory, load, processes, threads, page-faults (repeat, or comma-separated)")
      ->delimiter(',');
  cmd->add_option("--resolution", o->resolution,
                  "raw samples, 5m aggregates (min, mean, max), or auto: raw up to 6 h back (default auto)")
      ->check(CLI::IsMember({"raw", "5m", "auto"}));
  cmd->callback([&g, &exit_code, o, kind] {
    auto since = parse_duration_s(o->since);
    auto until = parse_duration_s(o->until);
    if (!since || !until || *until > *since) {
      print_error(fmt::format("--since '{}' and --until '{}' must be durations such as 90s, 15m, 6h, 30d, with "
                              "--since the longer",
                              o->since, o->until));
      exit_code = kExitUsage;
      return;
    }
    json args = {{"name", o->name}, {"since", *since}, {"until", *until}, {"resolution", o->resolution}};
    if (!o->metrics.empty()) args["metrics"] = o->metrics;
    const bool chart = ::isatty(STDOUT_FILENO) != 0;
    exit_code = run_command(g, kind + ".metrics", args,
                            [chart](const json& r) { std::fputs(metrics_table(r, chart).c_str(), stdout); });
  });
}

}  // namespace wpm::cli
