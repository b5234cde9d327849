// charlm train: its options, the checks of what they ask together, the run, and the summary on stdout.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string_view>

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
    std::string cell = "lstm";
    std::string dropout_mask = "locked";
    std::string learning_rate_schedule = "constant";
    std::string validation_characters = "auto";
    charlm::TrainOptions options = default_train_options();
    int threads = 0;
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
    options.learning_rate_schedule.kind = charlm::LearningRateSchedule::parse(arguments.learning_rate_schedule);
    options.model.dropout_mask = charlm::parse_dropout_mask(arguments.dropout_mask);
    if (arguments.validation_characters != "auto") options.validation_characters = std::stoull(arguments.validation_characters);
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
        request.options.model.cell = charlm::parse_cell_type(arguments.cell);
        // These act on this invocation, or were checked above; the rest are the run's options.
        const std::set<std::string> not_options = {"--threads", "--quiet", "--out", "--force", "--resume", "--corpus", "--val"};
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
    options.model.cell = charlm::parse_cell_type(arguments.cell);
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

// Training's threads where several processes share a machine: by default the cores this process may
// run on (mpirun binds each to its own where there are enough), shared with the other processes on the
// machine where it may run on all of them, so that N processes do not start N teams of every core.
int default_threads_per_process(const charlm::Communicator& processes) {
    const int usable = omp_get_num_procs();
    const long machine = ::sysconf(_SC_NPROCESSORS_ONLN);
    if (processes.local_size() == 1 || usable < machine) return usable;
    return std::max(1, usable / processes.local_size());
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
        if (result.full_validation_loss) {
            const double full = *result.full_validation_loss;
            fmt::print("on all {} held-out chars, step {}{}: {:.4f} nats/char (perplexity {:.3f}, {:.4f} bits/char)\n",
                       charlm::format_count(result.held_out_characters), result.steps,
                       weights(result.full_validation_is_averaged), full, charlm::perplexity_of(full),
                       charlm::bits_per_character_of(full));
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
    const int status = result.stopped_by == charlm::StopReason::interrupted ? 130 : 0;
    if (!processes.is_first()) return status;
    print_training_summary(result);
    return status;
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
    train->add_option("--cell", train_arguments.cell, "Recurrent cell: lstm, gru or rnn (tanh)")->capture_default_str();
    train->add_option("--layers", train_options.model.layers, "Stacked recurrent layers")->capture_default_str();
    train->add_option("--hidden", train_options.model.hidden_size, "Hidden units per layer")->capture_default_str();
    train->add_option("--embed", train_options.model.embed_size, "Character embedding size")->capture_default_str();
    train->add_option("--seq", train_options.seq_length, "Steps of backpropagation through time per window")->capture_default_str();
    train->add_option("--batch", train_options.batch_size, "Parallel streams of text per window")->capture_default_str();
    train->add_option("--dropout", train_options.model.dropout, "Dropout of each layer's output while training, the top layer's included")
        ->capture_default_str();
    train->add_option("--ema", train_options.average_decay,
                      "Average the weights over training, with this decay per step once warmed up (the decay is "
                      "min(DECAY, (1+step)/(10+step)), so 0.999 spans about the last 1000 steps, and fewer in a run of "
                      "fewer steps); validation scores both, best.safetensors keeps the better; 0 turns it off")
        ->capture_default_str();
    train->add_option("--embed-dropout", train_options.model.embed_dropout, "Dropout of the character embeddings while training")
        ->capture_default_str();
    train->add_option("--weight-drop", train_options.model.weight_drop,
                      "DropConnect on the recurrent weights W_hh while training, one mask per window (AWD-LSTM's weight drop)")
        ->capture_default_str();
    train->add_option("--dropout-mask", train_arguments.dropout_mask,
                      "How --dropout and --embed-dropout draw masks: locked (one per stream per window, variational) or step (new each step)")
        ->capture_default_str();
    auto& schedule = train_options.learning_rate_schedule;
    train->add_option("--lr", schedule.peak_learning_rate, "Adam learning rate (the peak, after warmup)")->capture_default_str();
    train->add_option("--lr-schedule", train_arguments.learning_rate_schedule,
                      "constant; cosine: down to lr/10 at --steps; step: times --lr-decay every --lr-decay-every steps")
        ->capture_default_str();
    train->add_option("--warmup", schedule.warmup_steps, "Steps of linear learning-rate warmup")->capture_default_str();
    train->add_option("--lr-decay-every", schedule.decay_every_steps, "Steps between decays of the step schedule")->capture_default_str();
    train->add_option("--lr-decay", schedule.decay_factor, "Factor of each decay of the step schedule")->capture_default_str();
    train->add_option("--clip", train_options.clip, "Clip the global gradient norm to this; 0 turns clipping off")->capture_default_str();
    train->add_option("--val-fraction", train_options.validation_fraction, "Fraction of the corpus held out for validation")->capture_default_str();
    train->add_option("--val", train_arguments.validation_file, "Validate on this file instead of holding out part of the corpus");
    train->add_option("--steps", train_options.steps, "Stop after this many steps in all, resumed ones included [default: 2000 unless --minutes]");
    train->add_option("--minutes", train_options.minutes, "Stop after this many minutes of wall-clock time");
    train->add_option("--eval-every", train_options.eval_every, "Validate and save checkpoints every N steps")->capture_default_str();
    train->add_option("--val-chars", train_arguments.validation_characters,
                      "Held-out characters each validation scores, the same ones each time: auto (a quarter of the "
                      "characters trained between validations, --eval-every x --seq x --batch / 4), 0 for all of them, or "
                      "a count. The run's end scores them all")
        ->type_name("N")
        ->check(CLI::Validator([](std::string& value) {
            if (value == "auto" || check_whole_number(value, false).empty()) return std::string();
            return fmt::format("wants auto, 0 (all of them) or a count of characters, not '{}'", value);
        }, ""))
        ->capture_default_str();
    train->add_option("--patience", train_options.patience, "Stop after N validations without a new best; 0 never")->capture_default_str();
    train->add_flag("--keep-checkpoints", train_options.keep_checkpoints,
                    "At each validation, also keep its weights as RUN_DIR/step-001200-val-1.4822.safetensors (the step and "
                    "the validation loss); given or not on each --resume");
    train->add_flag("--quiet", train_arguments.quiet, "Print only warnings and the final summary");
    train->add_option("--seed", train_options.seed, "Seed for the initial weights")->capture_default_str();
    add_threads_option(*train, train_arguments.threads, "CPU threads; 0 uses every core (under mpirun, this process's share)");

    // Which training options the command line gave, by name: a resumed run applies or refuses exactly those.
    train->parse_complete_callback([train, arguments]() {
        for (const CLI::Option* option : train->get_options())
            if (option->count() > 0 && !option->get_lnames().empty() && option->get_lnames().front() != "help")
                arguments->given.push_back("--" + option->get_lnames().front());
    });
    return {train, [arguments](const Communicator& processes) { return run_train(*arguments, processes); }};
}

}  // namespace charlm::cli
