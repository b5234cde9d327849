// charlm train: its options, the checks of what they ask together, the run, and the summary on stdout.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string_view>
#include <type_traits>
#include <variant>

#include <fmt/format.h>
#include <omp.h>
#include <spdlog/spdlog.h>

#include "charlm/display.hpp"
#include "charlm/error.hpp"
#include "charlm/train.hpp"
#include "cli/commands.hpp"
#include "cli/common_options.hpp"
#include "cli/parse_errors.hpp"
#include "cli/stop_signals.hpp"
#include "cli/terminal_progress.hpp"
#include "train/options.hpp"

namespace charlm::cli {

namespace {

// `charlm train`'s --dropout and --ema when none is given. A library TrainOptions neither drops nor
// averages; on the command line, at the default length on two 1 MB corpora, dropout 0.1 gained 0.03
// nats/char (the run without it overfits by its end) and the average 0.02 more (docs/quality.md, "The
// default run on a 1 MB corpus").
constexpr double kDefaultDropout = 0.1;
constexpr double kDefaultAverageDecay = 0.999;

charlm::TrainOptions default_train_options() {
    charlm::TrainOptions options;
    options.model.dropout = kDefaultDropout;
    options.average_decay = kDefaultAverageDecay;
    return options;
}

struct TrainArguments {
    std::string corpus;
    std::string validation_file;
    std::string run_directory;
    std::string resume;
    std::string moved_corpus;
    std::string init_from;
    charlm::TrainOptions options = default_train_options();
    // The options that the table parses from text (--cell, --lr-schedule, ...), as given, by flag.
    std::map<std::string, std::string, std::less<>> texts;
    int threads = 0;
    std::string precision = "auto";
    bool quiet = false;
    std::vector<std::string> given;  // the training options given on the command line, by name
};

std::string describe_stop(const charlm::TrainResult& result) {
    switch (result.stopped_by) {
        case charlm::StopReason::steps: return "";
        case charlm::StopReason::minutes: return " (--minutes reached)";
        case charlm::StopReason::patience: return fmt::format(" (stopped early: no better validation loss in {} validations)", result.patience);
        case charlm::StopReason::interrupted: return " (interrupted)";
    }
    return "";
}

// Sets `flag`'s option from its text, as its row parses it; throws UsageError for a bad value.
void parse_text_option(TrainArguments& arguments, charlm::TrainOptions& options, std::string_view flag) {
    std::get<charlm::TextOption>(charlm::find_train_option(flag)->binding).parse(options, arguments.texts.find(flag)->second);
}

// What the command line asks of training: a resumed run's request, or a fresh run's options. Throws
// UsageError for arguments that contradict each other.
std::optional<charlm::ResumeRequest> training_request(TrainArguments& arguments) {
    auto given = [&](const std::string& name) {
        return std::find(arguments.given.begin(), arguments.given.end(), name) != arguments.given.end();
    };
    // 0 means "no bound" inside the library; on the command line it is a mistake, not the default.
    if (given("--steps") && arguments.options.steps <= 0)
        throw charlm::UsageError(fmt::format("--steps must be at least 1, not {}; leave it out for 2000", arguments.options.steps));
    if (given("--val") && given("--val-fraction"))
        throw charlm::UsageError("--val FILE validates on that file and --val-fraction on part of the corpus; give one");
    if (given("--out") && arguments.run_directory.empty()) throw charlm::UsageError("--out needs a directory; leave it out for runs/<corpus name>");
    if (given("--minutes") && !(arguments.options.minutes > 0))
        throw charlm::UsageError(fmt::format("--minutes must be positive, not {}", arguments.options.minutes));
    charlm::TrainOptions& options = arguments.options;
    options.precision_choice = charlm::parse_precision_choice(arguments.precision);
    // --cell's refusal follows those of the request's shape, below.
    for (const charlm::TrainOptionSpec& option : charlm::train_option_table())
        if (std::holds_alternative<charlm::TextOption>(option.binding) && option.flag != "--cell")
            parse_text_option(arguments, options, option.flag);
    if (!arguments.resume.empty()) {
        if (given("--init-from"))
            throw charlm::UsageError("--init-from starts a new run from a checkpoint's weights and --resume continues a run; "
                                     "choose one");
        if (!arguments.corpus.empty())
            throw charlm::UsageError("give CORPUS or --resume RUN_DIR, not both: a resumed run reads the corpus it started with "
                                     "(if that moved, say where with --corpus PATH)");
        if (!arguments.run_directory.empty())
            throw charlm::UsageError("--resume RUN_DIR names the run directory already; leave --out out");
        if (options.overwrite) throw charlm::UsageError("--force starts a run over and --resume continues one; choose one");
        charlm::ResumeRequest request;
        request.run_directory = arguments.resume;
        request.options = options;
        parse_text_option(arguments, request.options, "--cell");
        // These act on this invocation, or were checked above; the rest are the run's options.
        const std::set<std::string> not_options = {"--threads", "--precision", "--quiet", "--out", "--force", "--resume", "--corpus", "--val"};
        for (const auto& name : arguments.given)
            if (!not_options.contains(name)) request.given.push_back(name);
        if (!arguments.moved_corpus.empty()) request.corpus = arguments.moved_corpus;
        if (!arguments.validation_file.empty()) request.validation_file = arguments.validation_file;
        return request;
    }
    if (!arguments.moved_corpus.empty())
        throw charlm::UsageError("--corpus says where a resumed run's corpus moved; to start a run, give CORPUS alone");
    if (arguments.corpus.empty()) throw charlm::UsageError("give a CORPUS text file to train on, or --resume RUN_DIR");
    if (arguments.corpus == "-" && ::isatty(STDIN_FILENO))
        throw charlm::UsageError("CORPUS - reads standard input, which is a terminal; pipe a text in: cat corpus.txt | charlm train -");
    options.corpus = arguments.corpus;
    if (!arguments.validation_file.empty()) options.validation_file = arguments.validation_file;
    parse_text_option(arguments, options, "--cell");
    if (given("--init-from")) options.init_from = charlm::TrainOptions::InitFrom{arguments.init_from, arguments.given};
    // runs/<corpus name>; a name that is no name (a pipe's /dev/fd/63, "..txt") is not one to use.
    std::string run_name = std::filesystem::path(arguments.corpus).stem().string();
    if (arguments.corpus == "-" || charlm::is_under_dev_or_proc(arguments.corpus))
        run_name = "stdin";
    if (run_name.empty() || run_name.starts_with(".")) run_name = "corpus";
    options.run_directory = arguments.run_directory.empty() ? std::filesystem::path("runs") / run_name
                                                            : std::filesystem::path(arguments.run_directory);
    if (options.steps == 0 && options.minutes == 0) options.steps = 2000;
    charlm::check_options_take_effect(options, arguments.given);
    return std::nullopt;
}

// What the run came to, on stdout: its best validation loss and the checkpoints to use.
void print_training_summary(const charlm::TrainResult& result) {
    const std::string stopped = describe_stop(result);
    if (!result.validated || !std::isfinite(result.best_validation_loss)) {
        fmt::print("trained {} steps{}; {}, so no best checkpoint{}\n"
                   "checkpoint: {} (to resume)\n",
                   result.steps, stopped, result.validated ? "no validation yet" : "no validation text",
                   result.last_train_loss ? fmt::format("; last train loss {:.4f} nats/char", *result.last_train_loss) : "",
                   result.last_checkpoint.string());
    } else {
        const double best = result.best_validation_loss;
        // Which weights a figure is of, where the run scored both: the average's or the step's own.
        auto weights = [&](bool averaged) {
            return !result.averaged ? std::string() : averaged ? std::string(", averaged weights") : std::string(", the step's weights");
        };
        const std::string part = result.validation_characters < result.held_out_characters
                                     ? fmt::format(" on {} of {} held-out chars", charlm::format_count(result.validation_characters),
                                                   charlm::format_count(result.held_out_characters))
                                     : std::string();
        fmt::print("trained {} steps{}; best validation loss {:.4f} nats/char{}{} (perplexity {:.3f}, {:.4f} bits/char)\n",
                   result.steps, stopped, best, part, weights(result.best_is_averaged), charlm::perplexity_of(best),
                   charlm::bits_per_character_of(best));
        if (result.final_validation_loss) {
            const double final_loss = *result.final_validation_loss;
            const std::string covered = result.final_validation_characters < result.held_out_characters
                                            ? fmt::format("{} of {} held-out chars, spread evenly",
                                                          charlm::format_count(result.final_validation_characters),
                                                          charlm::format_count(result.held_out_characters))
                                            : fmt::format("all {} held-out chars", charlm::format_count(result.held_out_characters));
            fmt::print("on {}, step {}{}: {:.4f} nats/char (perplexity {:.3f}, {:.4f} bits/char)\n", covered, result.steps,
                       weights(result.final_validation_is_averaged), final_loss, charlm::perplexity_of(final_loss),
                       charlm::bits_per_character_of(final_loss));
        }
        fmt::print("checkpoints: {} (best), {} (to resume)\n", result.best_checkpoint.string(), result.last_checkpoint.string());
    }
}

int run_train(TrainArguments& arguments, const charlm::Communicator& processes) {
    std::optional<charlm::ResumeRequest> resume;
    // Every process checks the same arguments; where they were given different ones, none goes on alone.
    charlm::run_on_every_process(processes, [&] { resume = training_request(arguments); });
    if (arguments.quiet) spdlog::set_level(spdlog::level::warn);
    // With several processes the first alone talks: the others' words would repeat its own.
    if (!processes.is_first()) spdlog::set_level(spdlog::level::err);
    use_threads(arguments.threads == 0 && processes.size() > 1 ? default_threads_per_process(processes) : arguments.threads);
    install_training_stop_handler();
    if (processes.size() > 1) {
        const int threads = omp_get_max_threads();
        spdlog::info("{} processes share each batch; this one, on {}, computes with {} thread{}", processes.size(), processes.host(),
                     threads, threads == 1 ? "" : "s");
        const long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
        // mpirun binds each process to one core by default (with 2 processes or fewer): on a larger
        // machine that leaves most of its cores idle.
        if (arguments.threads == 0 && static_cast<long>(processes.local_size()) * threads < cores)
            spdlog::warn("{} processes x {} thread{} use {} of {}'s {} cores: mpirun bound each process to fewer cores than "
                         "its share; give mpirun --bind-to none (charlm then shares the cores out) or --threads",
                         processes.local_size(), threads, threads == 1 ? "" : "s", processes.local_size() * threads,
                         processes.host(), cores);
        if (static_cast<long>(processes.local_size()) * threads > cores)
            spdlog::warn("{} processes x {} thread{} on {}'s {} cores: every step will wait for a core (Open MPI polls while it "
                         "waits); start at most {} processes there (a hostfile's slots), or give fewer --threads",
                         processes.local_size(), threads, threads == 1 ? "" : "s", processes.host(), cores,
                         std::max(1L, cores / threads));
    }
    // A status line redrawn in place needs a terminal that takes the escape codes: not a pipe, not TERM=dumb.
    const char* term = std::getenv("TERM");
    TerminalProgress terminal(/*live_status=*/!arguments.quiet && ::isatty(STDERR_FILENO) &&
                              !(term && std::string_view(term) == "dumb"));
    charlm::TrainingProgress& progress = processes.is_first() ? static_cast<charlm::TrainingProgress&>(terminal) : charlm::silent_progress();
    const charlm::TrainResult result = resume ? charlm::resume_training(*resume, progress, processes)
                                              : charlm::train(arguments.options, progress, processes);
    const int status = result.stopped_by == charlm::StopReason::interrupted || result.final_validation_cut_short ? 130 : 0;
    if (!processes.is_first()) return status;
    print_training_summary(result);
    return status;
}

// Declares one row of the training options' table on `train`, bound to `arguments`.
void declare_training_option(CLI::App& train, const charlm::TrainOptionSpec& row, TrainArguments& arguments) {
    const std::string flag(row.flag), help(row.help);
    CLI::Option* option = std::visit(
        [&](auto binding) -> CLI::Option* {
            using Binding = decltype(binding);
            if constexpr (std::is_same_v<Binding, charlm::TextOption>) {
                std::string& text = arguments.texts[flag];
                text = binding.show(arguments.options);
                return train.add_option(flag, text, help);
            } else if constexpr (std::is_same_v<Binding, charlm::OptionField<bool>>) {
                return train.add_flag(flag, binding(arguments.options), help);
            } else {
                return train.add_option(flag, binding(arguments.options), help);
            }
        },
        row.binding);
    if (!row.value_name.empty()) option->type_name(std::string(row.value_name));
    // A count or auto: the check of whole numbers, in its own words, where CLI11's type is text.
    if (row.flag == "--val-chars")
        option->check(CLI::Validator([](std::string& value) {
            if (value == "auto" || check_whole_number(value, false).empty()) return std::string();
            return fmt::format("wants auto, 0 (all of them) or a count of characters, not '{}'", value);
        }, ""));
    if (row.show_default && !std::holds_alternative<charlm::OptionField<bool>>(row.binding)) option->capture_default_str();
}

}  // namespace

Command add_train_command(CLI::App& app) {
    const auto arguments = std::make_shared<TrainArguments>();
    TrainArguments& train_arguments = *arguments;
    auto& train_options = train_arguments.options;
    auto* train = app.add_subcommand("train", "Train a recurrent model on a UTF-8 text file and save checkpoints; under "
                                              "'mpirun -np N', N processes train one model (README: More than one machine)");
    train->add_option("CORPUS", train_arguments.corpus,
                      "UTF-8 text to learn from; its last part is held out for validation. - reads standard input");
    train->add_option("--out", train_arguments.run_directory, "Run directory for checkpoints and metrics [default: runs/<corpus name>]");
    train->add_option("--resume", train_arguments.resume,
                      "Continue the run in RUN_DIR from its last.safetensors; options given again (--lr, --steps, ...) "
                      "take effect, and those the checkpoint fixes (--hidden, --seq, ...) must match")
        ->type_name("RUN_DIR");
    train->add_option("--corpus", train_arguments.moved_corpus,
                      "With --resume: where the run's corpus is now, if it moved (accepted when its content is the same)")
        ->type_name("PATH");
    train->add_flag("--force", train_options.overwrite, "Start over in a run directory that already holds a run");
    train->add_option("--init-from", train_arguments.init_from,
                      "Start a new run from this checkpoint's weights, with a fresh optimizer: the model's shape is the "
                      "checkpoint's (--cell, --layers, --hidden, --embed that contradict it are refused), its vocabulary "
                      "too, extended by the new text's characters; --dropout and the training options are this run's")
        ->type_name("CHECKPOINT");
    // The training options, from their table; --val and --quiet keep their places in --help among them.
    const std::map<std::string_view, std::function<void()>> declared_before = {
        {"--steps", [&] {
             train->add_option("--val", train_arguments.validation_file, "Validate on this file instead of holding out part of the corpus");
         }},
        {"--seed", [&] { train->add_flag("--quiet", train_arguments.quiet, "Print only warnings and the final summary"); }},
    };
    for (const charlm::TrainOptionSpec& row : charlm::train_option_table()) {
        if (const auto before = declared_before.find(row.flag); before != declared_before.end()) before->second();
        declare_training_option(*train, row, train_arguments);
    }
    add_threads_option(*train, train_arguments.threads, "CPU threads; 0 uses every core (under mpirun, this process's share)");
    add_precision_option(*train, train_arguments.precision);

    // Which training options the command line gave, by name: a resumed run applies or refuses exactly those.
    train->parse_complete_callback([train, arguments]() {
        for (const CLI::Option* option : train->get_options())
            if (option->count() > 0 && !option->get_lnames().empty() && option->get_lnames().front() != "help")
                arguments->given.push_back("--" + option->get_lnames().front());
    });
    return {train, [arguments](const Communicator& processes) { return run_train(*arguments, processes); }};
}

}  // namespace charlm::cli
