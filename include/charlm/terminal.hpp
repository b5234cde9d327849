// Writing for a person at a terminal: whether the log is coloured, characters shown so that they can be read,
// and the lines that show a training run's progress.
#pragma once

#include <string>
#include <string_view>

#include <spdlog/common.h>

#include "charlm/progress.hpp"

namespace charlm {

// The colour mode of the log on stderr. Never when NO_COLOR is set and not empty (https://no-color.org)
// or when stderr is not a terminal; otherwise spdlog's automatic mode, which also asks TERM.
// `no_color` is the variable's value, or null where it is not set.
spdlog::color_mode log_color_mode(const char* no_color, bool stderr_is_terminal);

// One character as it can be read in a list such as a vocabulary: itself where it prints as a mark of
// its own; \n, \t, \r, \0 and \\ (a backslash, so that "\n" is never ambiguous) as escapes; and
// U+XXXX for every other control, format character (such as a bidirectional override), combining mark
// (such as U+0301, which would fuse with its neighbour), space other than U+0020, separator,
// surrogate or private-use character.
std::string displayable(char32_t character);
// The same for every character of a UTF-8 text (a path, an option); a byte that is not UTF-8 as \xFF.
std::string displayable(std::string_view utf8_text);

// A time as a person reads it: 42s, 3m07s, 2h05m.
std::string format_duration(double seconds);
// A count as a person reads it, to three digits: 950, 320k, 5.5M, 1.23G.
std::string format_count(std::size_t count);
// "training lstm 2x256 (833600 parameters) on 950000 characters, validating on 50000, 148 windows of 100x64 per pass";
// where each validation scores part of the held-out text, "validating on 5500000 (320000 of them each time, all at the end)".
std::string describe_run(const RunDescription& run);
// The line redrawn after each step: "step 120/2000 | epoch 2.31 | train 1.9876 | 41.2k chars/s | 1m02s | ETA 16m10s".
std::string format_status_line(const StepProgress& progress);
// A report's log line: the status line's figures, with the validation loss and the learning rate. A
// validation loss of part of the held-out text says how much: "val 1.5230 (on 320k of 5.5M held-out chars)".
std::string format_report_line(const ProgressReport& report);

}  // namespace charlm
