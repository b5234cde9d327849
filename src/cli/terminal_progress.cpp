// Training's progress sink for the terminal: log lines on stderr and a status line redrawn in place. The line formats are terminal.hpp's.
#include "cli/terminal_progress.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "cli/terminal.hpp"

namespace charlm::cli {

void TerminalProgress::warning(const std::string& message) {
    clear_status();
    spdlog::warn("{}", message);
}

void TerminalProgress::note(const std::string& message) {
    clear_status();
    spdlog::info("{}", message);
}

void TerminalProgress::run_started(const RunDescription& run) { note(describe_run(run)); }

// At most ten redraws a second: a small model takes hundreds of steps a second, more than anyone reads.
void TerminalProgress::step_taken(const StepProgress& progress) {
    if (!live_status_ || progress.elapsed_seconds - drawn_at_seconds_ <= 0.1) return;
    // Cut to the terminal's width: a line that wraps leaves a trail, since \033[K clears one row.
    std::string line = format_status_line(progress);
    winsize size{};
    if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 1 && line.size() >= size.ws_col)
        line.resize(size.ws_col - 1u);
    std::fputs(fmt::format("\r\033[K{}", line).c_str(), stderr);  // fmt::print throws where stderr is gone; a log line does not
    std::fflush(stderr);
    status_shown_ = true;
    drawn_at_seconds_ = progress.elapsed_seconds;
}

void TerminalProgress::progress_reported(const ProgressReport& report) { note(format_report_line(report)); }

void TerminalProgress::clear_status() {
    if (!status_shown_) return;
    std::fputs("\r\033[K", stderr);
    status_shown_ = false;
}

}  // namespace charlm::cli
