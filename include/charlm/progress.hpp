// What a training run tells whoever watches it: its start, its steps and reports, its checkpoints, warnings and end.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "charlm/model_config.hpp"
#include "charlm/precision.hpp"

namespace charlm {

// What trains on what, told once as the loop begins.
struct RunDescription {
    ModelConfig model;                      // cell, layers x hidden size; parameter_count() counts the parameters
    std::size_t train_characters = 0;
    std::size_t validation_characters = 0;  // below 2: the run has no validation text
    // Predictions each periodic validation makes: all of the held-out text's (validation_characters
    // - 1) or, under --val-chars, part of them, which the run's end then scores whole. 0: not told.
    std::size_t periodic_validation_characters = 0;
    std::size_t windows_per_pass = 0;       // windows of seq_length x batch_size in one pass over the training text
    int seq_length = 0;
    int batch_size = 0;
    bool resumed = false;
    std::int64_t first_step = 0;            // steps taken before this invocation: the checkpoint's, where resumed
};

// Where the run stands after a step.
struct StepProgress {
    std::int64_t step = 0;                    // the run's steps so far, resumed ones included
    std::int64_t total_steps = 0;             // the run's --steps; 0 where only --minutes bounds it
    double epoch = 0;                         // characters trained on so far (steps x seq x batch) / training characters
    double train_loss = 0;                    // nats/char, the mean over the steps since the last report
    double learning_rate = 0;                 // the latest step's
    double chars_per_second = 0;              // training characters per second of training, in this invocation
    double elapsed_seconds = 0;               // since this invocation's loop began
    std::optional<double> remaining_seconds;  // to the run's end, where --steps bounds it (or --minutes, if sooner)
    Precision precision = Precision::fp32;    // the products' (--precision)
};

// Progress worth keeping, as a log line and a record of metrics.jsonl: one at each evaluation and,
// between evaluations, one every ten seconds unless the sink shows every step.
struct ProgressReport : StepProgress {
    bool evaluated = false;                  // an --eval-every step or the run's last: validated (where there is
                                             // validation text) and saved
    std::optional<double> validation_loss;   // nats/char, where evaluated and the run has validation text
    std::optional<double> averaged_validation_loss;  // likewise, of the averaged parameters (--ema)
    bool new_best = false;                   // the lowest validation loss yet (of either): best.safetensors holds this step's
    bool best_is_averaged = false;           // that new best is the averaged parameters' (--ema), not the step's own
    // Where there is a validation loss: the predictions it covers, and those of all the held-out text
    // (fewer where --val-chars validates on part of it).
    std::size_t validation_characters = 0;
    std::size_t held_out_characters = 0;
};

enum class CheckpointKind {
    last,  // last.safetensors: everything a resume needs
    best,  // best.safetensors: the parameters with the lowest validation loss
    kept,  // step-001200-val-1.4822.safetensors: a validation's parameters (--keep-checkpoints)
};

struct SavedCheckpoint {
    CheckpointKind kind = CheckpointKind::last;
    std::filesystem::path path;
    std::int64_t step = 0;
};

// Why a run ended. Every one of these leaves last.safetensors holding the final state.
enum class StopReason { steps, minutes, patience, interrupted };

// How a run ended: what train() and resume_training() return, and what run_finished() hears.
struct TrainResult {
    std::int64_t steps = 0;            // the run's step count, resumed ones included
    // The train loss the log showed last (the mean over its last report's steps, or those since); none
    // where this invocation took no step.
    std::optional<double> last_train_loss;
    bool validated = false;            // the run has validation text; without it there is no best checkpoint
    double best_validation_loss = 0;
    bool averaged = false;             // the run averaged its parameters (--ema): each validation scored both
    bool best_is_averaged = false;     // best.safetensors holds the averaged parameters (--ema)
    // Where the periodic validations scored part of the held-out text (--val-chars): how much, and the
    // loss of the run's last step on more of it (all of it, or an evenly spread part: --final-val),
    // scored once at its end (not after a stop request).
    std::size_t validation_characters = 0;  // predictions the best validation loss covers (a periodic validation's)
    std::size_t held_out_characters = 0;    // predictions of all the held-out text
    std::optional<double> final_validation_loss;
    std::size_t final_validation_characters = 0;  // the predictions that loss covers
    bool final_validation_is_averaged = false;  // that loss is the averaged parameters' (the last validation preferred them)
    bool final_validation_cut_short = false;    // a stop request came during it: no figure
    double chars_per_second = 0;
    StopReason stopped_by = StopReason::steps;
    int patience = 0;                  // the run's --patience, for saying why it stopped
    std::filesystem::path best_checkpoint;  // empty where the run has no validation text
    std::filesystem::path last_checkpoint;
};

// Receives a run's events as they happen, on the thread that called train() or resume_training().
// Training writes nothing to the terminal itself: a sink decides what to show and where (the CLI's
// draws a status line and log lines; metrics.jsonl is the loop's own). Every method does nothing here,
// so that a sink overrides only what it shows, and this class itself shows nothing.
class TrainingProgress {
public:
    virtual ~TrainingProgress() = default;

    // Something the user should act on or know: an option that does nothing, numbers a resume changes,
    // the command that continues an interrupted run.
    virtual void warning(const std::string& /*message*/) {}
    // A fact worth a line: what a resume changed, a text copied into the run directory, an early stop.
    virtual void note(const std::string& /*message*/) {}

    virtual void run_started(const RunDescription& /*run*/) {}
    // Each step that no report follows, for a display that follows every step.
    virtual void step_taken(const StepProgress& /*progress*/) {}
    // After the file is in place; at an evaluation, last before best before kept, and all before the report.
    virtual void checkpoint_saved(const SavedCheckpoint& /*checkpoint*/) {}
    virtual void progress_reported(const ProgressReport& /*report*/) {}
    // The run ended, its last.safetensors saved, as `result` says. Not called where training throws.
    virtual void run_finished(const TrainResult& /*result*/) {}

    // A sink that shows every step as it is taken (a status line redrawn in place) needs no reports
    // between evaluations; for any other the loop reports every ten seconds, so that a log shows the
    // run moving. metrics.jsonl gets the same reports.
    virtual bool shows_every_step() const { return false; }
};

// A sink that shows nothing, for callers that want no progress (tests, a program with a log of its own).
inline TrainingProgress& silent_progress() {
    static TrainingProgress silent;
    return silent;
}

}  // namespace charlm
