// What the terminal shows: training's progress lines, `info`'s text, `bench`'s table, whether the log is coloured. Presentation, for the CLI alone.
#include "cli/terminal.hpp"

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "charlm/display.hpp"
#include "charlm/model.hpp"
#include "charlm/text.hpp"
#include "charlm/train.hpp"

namespace charlm {

spdlog::color_mode log_color_mode(const char* no_color, bool stderr_is_terminal) {
    if (no_color != nullptr && no_color[0] != '\0') return spdlog::color_mode::never;
    return stderr_is_terminal ? spdlog::color_mode::automatic : spdlog::color_mode::never;
}

std::string describe_run(const RunDescription& run) {
    // The characters validation predicts, as metrics.jsonl and the summary count them: each but the
    // held-out part's first, which only primes. A part of one character has nothing to predict.
    const std::size_t predicted = run.validation_characters > 0 ? run.validation_characters - 1 : 0;
    const bool validates_on_part = run.periodic_validation_characters > 0 && run.periodic_validation_characters < predicted;
    const std::string part = validates_on_part ? fmt::format(" ({} of them each time, all at the end)", run.periodic_validation_characters)
                                               : std::string();
    const std::string validation = predicted > 0 ? fmt::format("validating on {}{}", predicted, part) : std::string("with no validation");
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

// ---- charlm info ----

namespace {

// Nested options as dotted names ("model.hidden_size"), each with its value as a person reads it.
void flatten_options(const nlohmann::json& value, const std::string& name, std::vector<std::pair<std::string, std::string>>& rows) {
    if (value.is_object() && !value.empty()) {
        for (const auto& [key, inner] : value.items()) flatten_options(inner, name.empty() ? key : name + "." + key, rows);
        return;
    }
    // 0 and 0.25 as the command line writes them, not JSON's 0.0.
    const std::string shown = value.is_string()         ? displayable(value.get_ref<const std::string&>())
                              : value.is_null()         ? std::string("none")
                              : value.is_number_float() ? fmt::format("{}", value.get<double>())
                                                        : displayable(value.dump());
    rows.emplace_back(displayable(name), shown);
}

// "/runs/a.txt (1234 bytes, sha256 ab12...)" from what is known of a file; the path alone for an older checkpoint.
std::string describe_file(const nlohmann::json& path, const nlohmann::json& size_bytes, const nlohmann::json& sha256) {
    std::string text = displayable(path.get_ref<const std::string&>());
    std::vector<std::string> known;
    if (size_bytes.is_number()) known.push_back(fmt::format("{} bytes", size_bytes.get<std::uint64_t>()));
    if (sha256.is_string()) known.push_back("sha256 " + displayable(sha256.get_ref<const std::string&>()));
    if (known.empty()) return text + " (size and hash not recorded in this checkpoint)";
    return text + " (" + fmt::format("{}", fmt::join(known, ", ")) + ")";
}

}  // namespace

std::string format_checkpoint_description(const nlohmann::json& description) {
    std::string vocabulary;
    for (char32_t c : decode_utf8(description.at("vocabulary").get<std::string>(), "vocabulary")) vocabulary += displayable(c);
    const auto& best = description.at("best_validation_loss");
    const double dropout = description.at("dropout").get<double>(), embed_dropout = description.value("embed_dropout", 0.0),
                 weight_drop = description.value("weight_drop", 0.0);
    const std::string mask = description.value("dropout_mask", std::string("step"));
    std::string regularization;
    if (dropout > 0) regularization += fmt::format(", dropout {} ({})", dropout, mask);
    if (embed_dropout > 0) regularization += fmt::format(", embedding dropout {} ({})", embed_dropout, mask);
    if (weight_drop > 0) regularization += fmt::format(", weight drop {}", weight_drop);
    std::string text;
    text += fmt::format("model       {} {} layers x {} hidden, embedding {}{}\n", description.at("cell").get<std::string>(),
                        description.at("layers").get<int>(), description.at("hidden_size").get<int>(),
                        description.at("embed_size").get<int>(), regularization);
    text += fmt::format("parameters  {}\n", description.at("parameters").get<std::uint64_t>());
    text += fmt::format("vocabulary  {} characters: {}\n", description.at("vocab_size").get<int>(), vocabulary);
    const auto& epochs = description.at("epochs");
    text += fmt::format("trained     {} steps{}\n", description.at("steps_trained").get<std::int64_t>(),
                        epochs.is_number() ? fmt::format(", {:.2f} epochs", epochs.get<double>()) : "");
    const nlohmann::json init_from = description.value("init_from", nlohmann::json(nullptr));
    if (init_from.is_object())
        text += fmt::format("init from   {} (at its step {})\n", displayable(init_from.at("checkpoint").get_ref<const std::string&>()),
                            init_from.at("step").get<std::int64_t>());
    // Which weights scored the best figure: in a run that averaged them, last.safetensors holds the last
    // step's for eval and sample, and best.safetensors the better of the two at the best validation.
    std::string best_text = "none yet";
    if (best.is_number()) {
        best_text = fmt::format("{:.4f} nats/char (perplexity {:.3f})", best.get<double>(), perplexity_of(best.get<double>()));
        const auto& best_step = description.value("best_step", nlohmann::json(nullptr));
        if (best_step.is_number_integer()) best_text += fmt::format(" at step {}", best_step.get<std::int64_t>());
        const auto& run_options = description.at("training_options");
        const bool averaged_run = run_options.is_object() && run_options.contains("ema") && run_options["ema"].is_number() &&
                                  run_options["ema"].get<double>() > 0;
        if (description.value("best_is_averaged", false))
            best_text += ", of the averaged weights (--ema); best.safetensors holds them";
        else if (averaged_run)
            best_text += ", of the step's own weights (not their average, --ema)";
    }
    text += fmt::format("best val    {}\n", best_text);
    text += fmt::format("resumable   {}\n", description.at("resumable").get<bool>() ? "yes (optimizer state included)" : "no (weights only)");
    const auto& corpus = description.at("corpus");
    text += fmt::format("corpus      {}\n", corpus.is_string() ? describe_file(corpus, description.at("corpus_size_bytes"),
                                                                               description.at("corpus_sha256"))
                                                              : std::string("not recorded"));
    const auto& validation_file = description.at("validation_file");
    const auto& options = description.at("training_options");
    std::string validation = "not recorded";
    if (validation_file.is_string())
        validation = describe_file(validation_file, description.at("validation_file_size_bytes"), description.at("validation_file_sha256"));
    else if (options.is_object() && options.contains("validation_fraction") && options["validation_fraction"].is_number())
        validation = options["validation_fraction"].get<double>() > 0
                         ? fmt::format("the corpus's last {:g}%", 100 * options["validation_fraction"].get<double>())
                         : std::string("none");
    else if (options.is_object() && options.contains("validation_fraction") && options["validation_fraction"] == "auto")
        validation = fmt::format("the corpus's last {:g}%, at most {} characters", 100 * charlm::kAutomaticValidationFraction,
                                 charlm::format_count(charlm::kMostAutomaticHeldOut));
    text += fmt::format("validation  {}\n", validation);
    if (description.at("train_characters").is_number())
        text += fmt::format("train text  {} characters\n", description.at("train_characters").get<std::uint64_t>());

    std::vector<std::pair<std::string, std::string>> rows;
    if (options.is_object()) flatten_options(options, "", rows);
    if (rows.empty()) return text + "options     not recorded\n";
    std::size_t width = 0;
    for (const auto& [name, value] : rows) width = std::max(width, name.size());
    text += "options\n";
    for (const auto& [name, value] : rows) text += fmt::format("  {:<{}}  {}\n", name, width, value);
    return text;
}

// ---- charlm bench ----

std::string format_benchmark_table(const nlohmann::json& result) {
    const int threads = result.at("threads").get<int>();
    std::string table = fmt::format("charlm bench: {} thread{}, GEMM 2048^3 through {}: {:.1f} GFLOP/s\n", threads,
                                    threads == 1 ? "" : "s", result.at("gemm_backend").get<std::string>(),
                                    result.at("gemm_gflops").get<double>());
    table += fmt::format("{:<14} {:>8} {:>12} {:>12} {:>12} {:>11} {:>8} {:>10} {:>8} {:>9}\n", "model", "seq x b",
                         "train ch/s", "eval ch/s", "sample ch/s", "train GF/s", "% peak", "eval GF/s", "% peak", "peak MB");
    for (const auto& row : result.at("models")) {
        table += fmt::format("{:<14} {:>8} {:>12.0f} {:>12.0f} {:>12.0f} {:>11.2f} {:>7.1f}% {:>10.2f} {:>7.1f}% {:>9.0f}\n",
                             row.at("model").get<std::string>() + (row.value("precision", "fp32") == "bf16" ? " bf16" : ""),
                             fmt::format("{}x{}", row.at("seq").get<int>(), row.at("batch").get<int>()),
                             row.at("train_chars_per_second").get<double>(), row.at("eval_chars_per_second").get<double>(),
                             row.at("sample_chars_per_second").get<double>(), row.at("train_gflops").get<double>(),
                             100.0 * row.at("fraction_of_gemm_peak").get<double>(), row.at("eval_gflops").get<double>(),
                             100.0 * row.at("eval_fraction_of_gemm_peak").get<double>(),
                             row.at("peak_rss_megabytes").get<double>());
    }
    if (result.contains("bf16_gemm_gflops") && !result.at("bf16_gemm_gflops").is_null())
        table += fmt::format("GEMM 2048^3 in bf16 with fp32 sums: {:.1f} GFLOP/s, the peak of the bf16 rows' % peak.\n",
                             result.at("bf16_gemm_gflops").get<double>());
    table += fmt::format("GF/s counts {}.\n", result.at("flop_counted").get<std::string>());
    table += "peak MB is the process's high-water mark so far: models run smallest first.\n";
    return table;
}

}  // namespace charlm
