// metrics.jsonl: a training run's progress reports, one JSON record a line, for `charlm plot` and for people.
#pragma once

#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "charlm/progress.hpp"

namespace charlm {

// A sink of the loop's own, beside the caller's. A resumed run appends at once. A fresh run, in a
// directory that may still hold an earlier run (--force), keeps its records until its first
// last.safetensors takes the directory over: until then the earlier metrics stay whole, beside the
// checkpoints they describe.
class MetricsLog final : public TrainingProgress {
public:
    MetricsLog(const std::filesystem::path& run_directory, bool wait_for_first_last_checkpoint);

    void checkpoint_saved(const SavedCheckpoint& checkpoint) override;
    // One record: step, epoch, train_loss, learning_rate, chars_per_second, elapsed_seconds, and at an
    // evaluation validation_loss (null for a run without validation text) and, with a loss, the
    // validation_characters it covers.
    void progress_reported(const ProgressReport& report) override;
    // Where the run ended with a loss on more of the held-out text than its validations scored
    // (--final-val), one record of it: step, final_validation_loss, validation_characters (what that
    // loss covers) and held_out_characters (all there are).
    void run_finished(const TrainResult& result) override;

private:
    void open_for_appending();
    void write(const nlohmann::json& record);

    std::filesystem::path run_directory_;
    std::filesystem::path path_;
    std::ofstream file_;
    std::string pending_records_;
    bool waiting_ = false;
};

}  // namespace charlm
