// Training's progress as the terminal shows it, and whether the log is coloured: presentation, for the CLI alone.
#include "cli/terminal.hpp"

#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "charlm/display.hpp"

namespace charlm {

spdlog::color_mode log_color_mode(const char* no_color, bool stderr_is_terminal) {
    if (no_color != nullptr && no_color[0] != '\0') return spdlog::color_mode::never;
    return stderr_is_terminal ? spdlog::color_mode::automatic : spdlog::color_mode::never;
}

std::string describe_run(const RunDescription& run) {
    const bool validates_on_part = run.periodic_validation_characters > 0 && run.periodic_validation_characters + 1 < run.validation_characters;
    const std::string part = validates_on_part ? fmt::format(" ({} of them each time, all at the end)", run.periodic_validation_characters)
                                               : std::string();
    // A held-out part of one character has nothing to predict: no validation at all.
    const std::string validation = run.validation_characters > 1 ? fmt::format("validating on {}{}", run.validation_characters, part)
                                                                 : std::string("with no validation");
    return fmt::format("training {} {}x{} ({} parameters) on {} characters, {}, {} window{} of {}x{} per pass",
                       to_string(run.model.cell), run.model.layers, run.model.hidden_size, run.model.parameter_count(),
                       run.train_characters, validation, run.windows_per_pass,
                       run.windows_per_pass == 1 ? "" : "s", run.seq_length, run.batch_size);
}

namespace {

std::string step_of_total(const StepProgress& progress) {
    const std::string step = progress.total_steps > 0 ? fmt::format("step {}/{}", progress.step, progress.total_steps)
                                                      : fmt::format("step {}", progress.step);
    return fmt::format("{} | epoch {:.2f}", step, progress.epoch);
}

std::string time_left(const StepProgress& progress) {
    return progress.remaining_seconds ? fmt::format(" | ETA {}", format_duration(*progress.remaining_seconds)) : std::string();
}

}  // namespace

std::string format_status_line(const StepProgress& progress) {
    return fmt::format("{} | train {:.4f} | {:.1f}k chars/s | {}{}", step_of_total(progress), progress.train_loss,
                       progress.chars_per_second / 1000, format_duration(progress.elapsed_seconds), time_left(progress));
}

std::string format_report_line(const ProgressReport& report) {
    // "(best)" follows the figure that was best, the step's or the average's; how much of the held-out
    // text was scored follows the last figure, since it holds for both.
    std::vector<std::string> step_remarks, averaged_remarks;
    if (report.new_best) (report.best_is_averaged ? averaged_remarks : step_remarks).emplace_back("best");
    if (report.validation_characters > 0 && report.validation_characters < report.held_out_characters)
        (report.averaged_validation_loss ? averaged_remarks : step_remarks)
            .push_back(fmt::format("on {} of {} held-out chars", format_count(report.validation_characters),
                                   format_count(report.held_out_characters)));
    auto remarked = [](double loss, const std::vector<std::string>& remarks) {
        return remarks.empty() ? fmt::format("{:.4f}", loss) : fmt::format("{:.4f} ({})", loss, fmt::join(remarks, ", "));
    };
    const std::string averaged = report.averaged_validation_loss
                                     ? fmt::format(", averaged {}", remarked(*report.averaged_validation_loss, averaged_remarks))
                                     : std::string();
    const std::string validation =
        report.validation_loss ? fmt::format(" | val {}{}", remarked(*report.validation_loss, step_remarks), averaged) : "";
    return fmt::format("{} | train {:.4f}{} | lr {:.2e} | {:.1f}k chars/s | {}{}", step_of_total(report), report.train_loss,
                       validation, report.learning_rate, report.chars_per_second / 1000, format_duration(report.elapsed_seconds),
                       time_left(report));
}

}  // namespace charlm
