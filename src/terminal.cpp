// Colour or not for the log, characters escaped for display by their Unicode category, and training's progress lines.
#include "charlm/terminal.hpp"

#include <algorithm>
#include <iterator>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <utf8.h>

#include "charlm/text.hpp"

namespace charlm {

namespace {

struct CodePointRange {
    char32_t first, last;
};

// Combining marks, format characters, separators, spaces but U+0020, controls, surrogates and
// private use, in ascending order: see scripts/unicode_invisible.py.
constexpr CodePointRange kInvisible[] = {
#include "unicode_invisible.inc"
};

bool invisible(char32_t character) {
    const auto* after = std::upper_bound(std::begin(kInvisible), std::end(kInvisible), character,
                                         [](char32_t value, const CodePointRange& range) { return value < range.first; });
    return after != std::begin(kInvisible) && character <= std::prev(after)->last;
}

}  // namespace

spdlog::color_mode log_color_mode(const char* no_color, bool stderr_is_terminal) {
    if (no_color != nullptr && no_color[0] != '\0') return spdlog::color_mode::never;
    return stderr_is_terminal ? spdlog::color_mode::automatic : spdlog::color_mode::never;
}

std::string displayable(char32_t character) {
    switch (character) {
        case U'\n': return "\\n";
        case U'\t': return "\\t";
        case U'\r': return "\\r";
        case U'\0': return "\\0";
        case U'\\': return "\\\\";
        default: break;
    }
    if (character > 0x10FFFF || invisible(character)) return fmt::format("U+{:04X}", static_cast<std::uint32_t>(character));
    return encode_utf8(character);
}

std::string displayable(std::string_view utf8_text) {
    std::string shown;
    auto position = utf8_text.begin();
    while (position != utf8_text.end()) {
        const auto start = position;
        try {
            shown += displayable(static_cast<char32_t>(utf8::next(position, utf8_text.end())));
        } catch (const utf8::exception&) {
            shown += fmt::format("\\x{:02X}", static_cast<unsigned char>(*start));
            position = start + 1;
        }
    }
    return shown;
}

std::string format_duration(double seconds) {
    const auto total = static_cast<long long>(seconds + 0.5);
    if (total >= 3600) return fmt::format("{}h{:02}m", total / 3600, total % 3600 / 60);
    if (total >= 60) return fmt::format("{}m{:02}s", total / 60, total % 60);
    return fmt::format("{}s", total);
}

std::string format_count(std::size_t count) {
    double value = static_cast<double>(count);
    const char* unit = "";
    for (const char* larger : {"k", "M", "G", "T"}) {
        if (value < 999.5) break;  // 999.7 would round to "1e+03"
        value /= 1000;
        unit = larger;
    }
    return fmt::format("{:.3g}{}", value, unit);
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
