// The training loop's class, whose members loop.cpp (the steps, saves, reports) and validation.cpp define.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "charlm/clock.hpp"
#include "charlm/error.hpp"
#include "loop.hpp"
#include "metrics_log.hpp"
#include "step.hpp"

namespace charlm::training {

// A stop signal came (Ctrl-C, SIGTERM) while the loop runs; it stays set until the next loop begins.
bool stop_was_requested();

// One invocation's training loop over a session: the steps, the evaluations and checkpoints between
// them, and what it tells the progress sinks. run() reads top to bottom; the rest are its parts.
class TrainingLoop {
public:
    TrainingLoop(Session& session, TrainingProgress& progress);
    TrainResult run();

private:
    void remove_stale_temporaries() const;
    void warn_about_options_that_do_nothing();
    RunDescription description() const;
    void agree_on_stop();
    std::optional<StopReason> stop_reason() const;
    double take_step();
    void check_for_divergence(const StepOutcome& outcome, double learning_rate, std::int64_t step);
    Error diverged(const std::string& what, std::int64_t step) const;
    bool report_due(bool evaluate_now) const;
    void validate_and_save(ProgressReport& report);
    void warn_if_overfitting(double validation_loss);
    std::optional<LossSum> score_held_out_text_at_end();
    LossSum evaluate_held_out(std::size_t max_characters, bool stoppable = false);
    void save(CheckpointKind kind, const std::filesystem::path& kept_path = {});
    StepProgress step_progress(double learning_rate) const;
    void report_progress(ProgressReport& report, double learning_rate);
    TrainResult final_result(StopReason stopped_by, std::optional<LossSum> final_validation) const;

    Session& session_;
    const TrainOptions& options_;
    const Communicator& processes_;
    TrainingProgress& progress_;  // the caller's sink
    std::optional<MetricsLog> metrics_log_;  // and the run directory's, told the same checkpoints and reports (process 0's)
    const std::filesystem::path last_path_, best_path_;
    BatchStream stream_;
    Batch batch_;
    const bool has_validation_;
    std::optional<std::string> overfitting_warning_;  // said after its validation's report, which shows the figure it names
    Clock::time_point start_, last_report_;  // when the steps began; the last report
    bool interrupted_ = false, out_of_time_ = false;  // a stop signal, and --minutes up, on any process
    double training_seconds_ = 0, loss_since_report_ = 0, chars_per_second_ = 0;
    // The train loss the log showed last: the mean over the steps of its last report (or status line,
    // for steps taken since); none until this invocation takes a step.
    std::optional<double> last_train_loss_;
    std::int64_t steps_since_report_ = 0, steps_this_run_ = 0;
    // The state last.safetensors holds: the step it was saved at (or -1: nothing of this run yet).
    std::int64_t saved_step_;
    // Past this the loss has exploded (char-rnn stops past three times its first loss): three times
    // the loss of a uniform guess, ln V, or of a fresh run's first step where that is higher. A resumed
    // run's first loss says nothing: it may already be low, or already have climbed.
    const double uniform_loss_;
    double exploded_loss_;
    bool exploded(double loss) const { return !std::isfinite(loss) || loss > exploded_loss_; }
    bool averaged_is_better_ = false;  // at the last validation, the averaged weights scored lower (--ema)
    bool final_validation_cut_short_ = false;  // a stop request came during the scoring at the end
};

// The averaged parameters (--ema) in the model's place while it lives; the last step's come back after.
class AveragedWeights {
public:
    explicit AveragedWeights(Session& session) : session_(session) { session_.average->swap_with(session_.model.parameters()); }
    ~AveragedWeights() { session_.average->swap_with(session_.model.parameters()); }
    AveragedWeights(const AveragedWeights&) = delete;
    AveragedWeights& operator=(const AveragedWeights&) = delete;

private:
    Session& session_;
};

}  // namespace charlm::training
