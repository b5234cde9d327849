// Training's progress sink for the terminal: log lines on stderr and a status line redrawn in place. The line formats are terminal.hpp's.
#pragma once

#include <string>

#include "charlm/progress.hpp"

namespace charlm::cli {

// Log lines through spdlog, coloured where the terminal takes it, and, where `live_status`, a status
// line redrawn in place after each step, cleared before anything else is written.
class TerminalProgress final : public TrainingProgress {
public:
    explicit TerminalProgress(bool live_status) : live_status_(live_status) {}
    // Also where training throws: the error's one line must start a line of its own.
    ~TerminalProgress() override { clear_status(); }
    TerminalProgress(const TerminalProgress&) = delete;
    TerminalProgress& operator=(const TerminalProgress&) = delete;

    void warning(const std::string& message) override;
    void note(const std::string& message) override;
    void run_started(const RunDescription& run) override;
    void step_taken(const StepProgress& progress) override;
    void progress_reported(const ProgressReport& report) override;
    void run_finished(const TrainResult&) override { clear_status(); }  // the summary follows on stdout
    bool shows_every_step() const override { return live_status_; }

private:
    void clear_status();

    bool live_status_;
    bool status_shown_ = false;
    double drawn_at_seconds_ = 0;
};

}  // namespace charlm::cli
