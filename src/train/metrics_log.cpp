// metrics.jsonl, written as a run reports: appended a flushed line at a time, or held until the run owns its directory.
#include "metrics_log.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "charlm/atomic_file.hpp"
#include "charlm/error.hpp"
#include "run_directory.hpp"

namespace charlm {

MetricsLog::MetricsLog(const std::filesystem::path& run_directory, bool wait_for_first_last_checkpoint)
    : run_directory_(run_directory), path_(run_directory / run_files::kMetrics), waiting_(wait_for_first_last_checkpoint) {
    if (!waiting_) open_for_appending();
}

void MetricsLog::open_for_appending() {
    file_.open(path_, std::ios::app);
    if (!file_) throw Error(fmt::format("{}: cannot write {} there", run_directory_.string(), run_files::kMetrics));
}

void MetricsLog::checkpoint_saved(const SavedCheckpoint& checkpoint) {
    if (!waiting_ || checkpoint.kind != CheckpointKind::last) return;
    waiting_ = false;
    write_file_atomically(path_, pending_records_);
    pending_records_.clear();
    open_for_appending();
}

void MetricsLog::progress_reported(const ProgressReport& report) {
    nlohmann::json record = {{"step", report.step}, {"epoch", report.epoch}, {"train_loss", report.train_loss},
                             {"learning_rate", report.learning_rate}};
    if (report.evaluated) record["validation_loss"] = report.validation_loss ? nlohmann::json(*report.validation_loss) : nlohmann::json(nullptr);
    if (report.averaged_validation_loss) record["averaged_validation_loss"] = *report.averaged_validation_loss;
    if (report.validation_loss) record["validation_characters"] = report.validation_characters;
    record["chars_per_second"] = report.chars_per_second;
    record["elapsed_seconds"] = report.elapsed_seconds;
    record["precision"] = to_string(report.precision);
    write(record);
}

void MetricsLog::run_finished(const TrainResult& result) {
    if (!result.final_validation_loss) return;
    write({{"step", result.steps}, {"final_validation_loss", *result.final_validation_loss},
           {"validation_characters", result.final_validation_characters}, {"held_out_characters", result.held_out_characters}});
}

void MetricsLog::write(const nlohmann::json& record) {
    // Flushed a line at a time, so that a run killed at any moment leaves every report it made.
    if (waiting_) pending_records_ += record.dump() + '\n';
    else file_ << record.dump() << '\n' << std::flush;
}

}  // namespace charlm
