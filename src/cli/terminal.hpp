// What the terminal shows: training's progress lines, `info`'s text, `bench`'s table, whether the log is coloured. Presentation, for the CLI alone.
#pragma once

#include <string>

#include <nlohmann/json.hpp>
#include <spdlog/common.h>

#include "charlm/progress.hpp"

namespace charlm {

// The colour mode of the log on stderr. Never when NO_COLOR is set and not empty (https://no-color.org)
// or when stderr is not a terminal; otherwise spdlog's automatic mode, which also asks TERM.
// `no_color` is the variable's value, or null where it is not set.
spdlog::color_mode log_color_mode(const char* no_color, bool stderr_is_terminal);

// "training lstm 2x256 (833600 parameters) on 950000 characters, validating on 50000, 148 windows of 100x64 per pass";
// where each validation scores part of the held-out text, "validating on 5500000 (320000 of them each time, all at the end)".
std::string describe_run(const RunDescription& run);
// The line redrawn after each step: "step 120/2000 | epoch 2.31 | train 1.9876 | 41.2k chars/s | 1m02s | ETA 16m10s".
std::string format_status_line(const StepProgress& progress);
// A report's log line: the status line's figures, with the validation loss and the learning rate. A
// validation loss of part of the held-out text says how much: "val 1.5230 (on 320k of 5.5M held-out chars)".
std::string format_report_line(const ProgressReport& report);

// describe_checkpoint()'s result as the lines `charlm info` prints, every character of a name, path,
// option or the vocabulary shown readably (\n, \0, U+0301: see displayable()).
std::string format_checkpoint_description(const nlohmann::json& description);

// An aligned text table of run_benchmark()'s result, for a terminal.
std::string format_benchmark_table(const nlohmann::json& result);

}  // namespace charlm
