// The charlm command line: parse and check options, call the library, print results. No math here.
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <array>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <optional>
#include <regex>
#include <set>
#include <string_view>
#include <thread>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <omp.h>

#include "charlm/atomic_file.hpp"
#include "charlm/bench.hpp"
#include "charlm/checkpoint.hpp"
#include "charlm/decode.hpp"
#include "charlm/communicator.hpp"
#include "charlm/error.hpp"
#include "charlm/eval.hpp"
#include "charlm/plot.hpp"
#include "charlm/sample.hpp"
#include "charlm/server.hpp"
#include "charlm/display.hpp"
#include "cli/terminal.hpp"
#include "charlm/threads.hpp"
#include "charlm/train.hpp"

namespace {

// Every command's --threads: set, and a word on stderr where the environment allows fewer.
// Far past any machine's cores; libgomp crashed starting a team of 100000.
constexpr int kMostThreads = 1024;

void use_threads(int threads) {
    const charlm::ThreadCount count = charlm::set_thread_count(threads);
    if (count.limited_by)
        spdlog::warn("--threads {} asks for more than {} allows; using {}", count.requested, count.limited_by, count.used);
    // More threads than cores: each parallel region waits for its slowest thread, which waits for a core.
    const int cores = omp_get_num_procs();
    if (count.used > cores)
        spdlog::warn("--threads {} is more than the {} core{} this process may run on: the threads beyond them wait for a core at "
                     "every step, which makes the work slower, not faster; give --threads {} or leave it out",
                     count.used, cores, cores == 1 ? "" : "s", cores);
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

// Ctrl-C, SIGTERM or a closed terminal: training saves and stops after the current step; before the
// loop has begun (reading the corpus from a pipe, say) there is nothing to save, and the process ends
// as the signal would end it. A second signal quits at once.
void on_stop_signal(int signal_number) {
    std::signal(signal_number, SIG_DFL);
    if (!charlm::request_training_stop()) std::raise(signal_number);
}

// The handler runs on a stack of its own (the kernel gives a process's signal to its main thread
// where it can). On the interrupted stack, a SIGTERM that landed inside oneDNN's sgemm corrupted its
// heap (free() of an invalid pointer inside dnnl_sgemm; then exit 134), 5 times in 70 early SIGTERMs;
// on its own stack, none in 70. oneDNN's JIT kernels are the likely reason: data kept below the
// stack pointer, past the red zone that a signal frame leaves alone.
void install_stop_handler() {
    static std::array<char, 1 << 16> handler_stack;
    stack_t stack{};
    stack.ss_sp = handler_stack.data();
    stack.ss_size = handler_stack.size();
    ::sigaltstack(&stack, nullptr);
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    action.sa_flags = SA_ONSTACK | SA_RESTART;
    ::sigemptyset(&action.sa_mask);
    for (const int signal_number : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(signal_number, &action, nullptr);
    // mpirun keeps SIGINT and SIGTERM for itself (it ends the job: SIGTERM to every process a second
    // later, SIGKILL a second after that) but passes SIGUSR1 on: the way to stop a run of several
    // processes that lets them all save and exit 130, mpirun with them.
    if (charlm::DistributedRun::launched_with_others()) ::sigaction(SIGUSR1, &action, nullptr);
}

// Training's progress on stderr: log lines through spdlog, coloured where the terminal takes it, and on
// a terminal a status line redrawn in place after each step, cleared before anything else is written.
class TerminalProgress final : public charlm::TrainingProgress {
public:
    explicit TerminalProgress(bool live_status) : live_status_(live_status) {}
    // Also where training throws: the error's one line must start a line of its own.
    ~TerminalProgress() override { clear_status(); }
    TerminalProgress(const TerminalProgress&) = delete;
    TerminalProgress& operator=(const TerminalProgress&) = delete;

    void warning(const std::string& message) override {
        clear_status();
        spdlog::warn("{}", message);
    }
    void note(const std::string& message) override {
        clear_status();
        spdlog::info("{}", message);
    }
    void run_started(const charlm::RunDescription& run) override { note(charlm::describe_run(run)); }
    // At most ten redraws a second: a small model takes hundreds of steps a second, more than anyone reads.
    void step_taken(const charlm::StepProgress& progress) override {
        if (!live_status_ || progress.elapsed_seconds - drawn_at_seconds_ <= 0.1) return;
        // Cut to the terminal's width: a line that wraps leaves a trail, since \033[K clears one row.
        std::string line = charlm::format_status_line(progress);
        winsize size{};
        if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 1 && line.size() >= size.ws_col)
            line.resize(size.ws_col - 1u);
        fmt::print(stderr, "\r\033[K{}", line);
        std::fflush(stderr);
        status_shown_ = true;
        drawn_at_seconds_ = progress.elapsed_seconds;
    }
    void progress_reported(const charlm::ProgressReport& report) override { note(charlm::format_report_line(report)); }
    void run_finished(const charlm::TrainResult&) override { clear_status(); }  // the summary follows on stdout
    bool shows_every_step() const override { return live_status_; }

private:
    void clear_status() {
        if (!status_shown_) return;
        std::fputs("\r\033[K", stderr);
        status_shown_ = false;
    }

    bool live_status_;
    bool status_shown_ = false;
    double drawn_at_seconds_ = 0;
};

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

int run_train(TrainArguments& arguments, const charlm::Communicator& processes) {
    std::optional<charlm::ResumeRequest> resume;
    // Every process checks the same arguments; where they were given different ones, none goes on alone.
    charlm::run_on_every_process(processes, [&] { resume = training_request(arguments); });
    if (arguments.quiet) spdlog::set_level(spdlog::level::warn);
    // With several processes the first alone talks: the others' words would repeat its own.
    if (!processes.is_first()) spdlog::set_level(spdlog::level::err);
    use_threads(arguments.threads == 0 && processes.size() > 1 ? default_threads_per_process(processes) : arguments.threads);
    install_stop_handler();
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
    return status;
}

// Dynamic evaluation scores a few thousand characters a second: a log line every 10 seconds says how far it is.
charlm::AdaptProgressCallback adapt_progress_log() {
    const auto started = std::chrono::steady_clock::now();
    return [started, logged_seconds = 0.0](const charlm::AdaptProgress& progress) mutable {
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        if (seconds - logged_seconds < 10 || progress.characters_scored >= progress.characters_total) return;
        logged_seconds = seconds;
        spdlog::info("adapting: {} of {} characters, {:.4f} nats/char so far (plain {:.4f}), {} chars/s",
                     charlm::format_count(progress.characters_scored), charlm::format_count(progress.characters_total),
                     progress.adapted.mean(), progress.plain.mean(),
                     charlm::format_count(static_cast<std::size_t>(static_cast<double>(progress.characters_scored) / seconds)));
    };
}

struct SampleArguments {
    std::string checkpoint;
    std::string prompt;
    std::string prompt_file;
    std::string stop;
    long long length = 500;
    int count = 1;
    std::uint64_t seed = 0;
    bool seed_given = false;
    bool skip_unknown = false;
    bool json = false;
    charlm::SampleOptions options;
    charlm::ExplicitSampleOptions given;  // which drawing options were on the command line
    int threads = 1;
    std::string adapt_to;                 // a text to adapt the weights to first, as eval --adapt reads it
    charlm::AdaptOptions adapt_options;
};

std::string read_prompt_file(const std::string& path) {
    if (path == "-") return {std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
    return charlm::encode_utf8(charlm::read_text_file(path));
}

int run_sample(SampleArguments& arguments) {
    charlm::validate(arguments.options);
    if (arguments.count < 1) throw charlm::UsageError(fmt::format("--count must be at least 1, not {}", arguments.count));
    if (!arguments.adapt_to.empty()) charlm::validate(arguments.adapt_options);
    if (arguments.adapt_to == "-" && arguments.prompt_file == "-")
        throw charlm::UsageError("--adapt-to and --prompt-file cannot both read standard input; give one of them a file");
    use_threads(arguments.threads);
    charlm::Checkpoint checkpoint = charlm::load_checkpoint(arguments.checkpoint);
    if (!arguments.adapt_to.empty()) {
        const std::string file = arguments.adapt_to == "-" ? "/dev/stdin" : arguments.adapt_to;
        // Characters the model never saw are left out and counted, whatever their share: this text only
        // steers the weights, and no figure of it is the command's result.
        const charlm::EvalResult adapted = charlm::evaluate_file(
            *checkpoint.model, checkpoint.vocab, file,
            {.allow_unknown = true, .adapt = arguments.adapt_options, .adapt_progress = adapt_progress_log()});
        if (adapted.unknown_characters > 0)
            spdlog::warn("{} characters of {} ({:.3g}% of its text) are not in the model's vocabulary and were left out",
                         adapted.unknown_characters, arguments.adapt_to, 100 * adapted.unknown_fraction);
        spdlog::info("adapted to {}: {:.4f} nats/char as it read it (trained weights: {:.4f})", arguments.adapt_to,
                     adapted.nats_per_character, adapted.plain_nats_per_character);
    }
    const std::string prompt_bytes = arguments.prompt_file.empty() ? arguments.prompt : read_prompt_file(arguments.prompt_file);
    std::u32string prompt = charlm::decode_utf8(prompt_bytes, arguments.prompt_file.empty() ? "--prompt" : arguments.prompt_file);
    if (arguments.skip_unknown) {
        std::size_t unknown = 0;
        prompt = checkpoint.vocab.decode(checkpoint.vocab.encode_known(prompt, unknown));
        if (unknown > 0) spdlog::warn("left {} prompt characters out that the model never saw", unknown);
    }
    charlm::check_prompt(checkpoint.vocab, prompt);  // before anything reaches stdout
    arguments.options.stop = charlm::decode_utf8(arguments.stop, "--stop");
    for (const std::string& warning : charlm::sample_warnings(arguments.options, arguments.given, checkpoint.vocab))
        spdlog::warn("{}", warning);
    const std::uint64_t first_seed = arguments.seed_given ? arguments.seed : std::random_device{}();
    if (!arguments.seed_given && !arguments.options.greedy) {
        // On stderr, so that stdout stays the sample; the seed is what makes it repeatable (greedy needs none).
        const std::uint64_t last_seed = first_seed + static_cast<std::uint64_t>(arguments.count) - 1;
        if (arguments.count == 1) spdlog::info("seed {} (repeat with --seed {})", first_seed, first_seed);
        else spdlog::info("seeds {} to {} (repeat with --seed {})", first_seed, last_seed, first_seed);
    }
    const bool to_terminal = ::isatty(STDOUT_FILENO);
    const std::string shown_prompt = charlm::encode_utf8(prompt);
    for (int index = 0; index < arguments.count; ++index) {
        const std::uint64_t seed = first_seed + static_cast<std::uint64_t>(index);
        if (arguments.json) {
            // One JSON object needs the whole text; the library streams it, and only this mode keeps it.
            std::string text;
            charlm::generate(*checkpoint.model, checkpoint.vocab, prompt, static_cast<std::size_t>(arguments.length),
                             arguments.options, seed, [&](char32_t c) { text += charlm::encode_utf8(c); });
            const nlohmann::json record = {{"prompt", shown_prompt}, {"text", text}, {"seed", seed}};
            fmt::print("{}\n", record.dump());
            continue;
        }
        if (index > 0) std::fputs("\n", stdout);
        std::fputs(shown_prompt.c_str(), stdout);
        charlm::generate(*checkpoint.model, checkpoint.vocab, prompt, static_cast<std::size_t>(arguments.length),
                         arguments.options, seed, [&](char32_t c) {
                             const std::string bytes = charlm::encode_utf8(c);
                             std::fwrite(bytes.data(), 1, bytes.size(), stdout);
                             if (to_terminal || c == U'\n') std::fflush(stdout);
                         });
        std::fputc('\n', stdout);
    }
    return 0;  // main() checks that stdout took everything
}

int run_info(const std::string& checkpoint_path, bool json) {
    const charlm::Checkpoint checkpoint = charlm::load_checkpoint(checkpoint_path);
    const nlohmann::json description = charlm::describe_checkpoint(checkpoint);
    if (json) fmt::print("{}\n", description.dump());
    else fmt::print("{}", charlm::format_checkpoint_description(description));
    return 0;
}

struct EvalArguments {
    std::string checkpoint;
    std::string file;
    charlm::EvalOptions options;
    bool json = false;
    int threads = 0;
    std::string html;                 // a report of the scored text, the page's score view in one file
    long long html_characters = 20000;
    bool adapt = false;               // dynamic evaluation, with these settings
    charlm::AdaptOptions adapt_options;
};

// The first `most` characters of a file that the vocabulary knows, for the report.
std::u32string known_beginning(const std::string& path, const charlm::Vocab& vocab, std::size_t most) {
    std::u32string text;
    try {
        charlm::for_each_text_piece(path, [&](std::u32string_view piece) {
            for (char32_t c : piece) {
                if (text.size() >= most) throw std::out_of_range("enough");
                if (vocab.contains(c)) text += c;
            }
        });
    } catch (const std::out_of_range&) {
    }
    return text;
}

void write_html_report(const EvalArguments& arguments, charlm::Checkpoint& checkpoint, const charlm::EvalResult& result) {
    charlm::ScoreRequest request;
    request.text = known_beginning(arguments.file, checkpoint.vocab, static_cast<std::size_t>(arguments.html_characters));
    if (request.text.size() < 2) throw charlm::Error(fmt::format("{} has too few known characters for a report", arguments.file));
    // With no server to ask, the report carries the activations of the neurons it lists.
    request.most_varying = 24;
    spdlog::info("scoring the first {} characters for {}", request.text.size(), arguments.html);
    request.neurons.clear();
    charlm::ScoreResult first = charlm::score_text(*checkpoint.model, checkpoint.vocab, request, arguments.threads);
    for (const charlm::NeuronSpread& spread : first.most_varying) request.neurons.push_back(spread.neuron);
    request.most_varying = 0;
    charlm::ScoreResult traced = charlm::score_text(*checkpoint.model, checkpoint.vocab, request, arguments.threads);
    traced.most_varying = first.most_varying;
    nlohmann::ordered_json score = charlm::score_to_json(traced, request.text);
    score["model"] = std::filesystem::path(arguments.checkpoint).filename().string();
    const std::size_t total = result.characters_scored + 1;
    const nlohmann::ordered_json whole_file = nlohmann::ordered_json::parse(result.to_json().dump());
    charlm::write_file_atomically(arguments.html, charlm::score_report_html(score, std::filesystem::path(arguments.file).filename().string(),
                                                                            total, whole_file));
    spdlog::info("wrote {} ({} of {} characters shown)", arguments.html, request.text.size(), total);
}

int run_bench(charlm::BenchOptions options, const std::string& corpus, const std::vector<std::string>& models, bool json) {
    options.corpus = corpus;
    if (!models.empty()) options.models = charlm::select_bench_models(models);
    const nlohmann::json result = charlm::run_benchmark(options);
    if (json) fmt::print("{}\n", result.dump());
    else fmt::print("{}", charlm::format_benchmark_table(result));
    return 0;
}

int run_eval(EvalArguments& arguments) {
    if (!arguments.html.empty() && arguments.file == "-")
        throw charlm::UsageError("--html reads the file twice, so it needs a file, not standard input");
    if (!arguments.html.empty()) {  // before the scoring, which may take a while
        const std::filesystem::path folder = std::filesystem::absolute(arguments.html).parent_path();
        if (!std::filesystem::is_directory(folder))
            throw charlm::Error(fmt::format("cannot write {}: the folder {} does not exist", arguments.html, folder.string()));
        if (std::filesystem::is_directory(arguments.html))
            throw charlm::UsageError(fmt::format("--html {} is a folder; give the report's file name", arguments.html));
        std::error_code error;
        for (const std::string& input : {arguments.file, arguments.checkpoint})
            if (std::filesystem::equivalent(arguments.html, input, error))
                throw charlm::UsageError(fmt::format("--html {} is the {} itself, which the report would overwrite; give another name",
                                                     arguments.html, input == arguments.file ? "text scored" : "checkpoint"));
    }
    if (arguments.adapt) {
        charlm::validate(arguments.adapt_options);
        arguments.options.adapt = arguments.adapt_options;
        arguments.options.adapt_progress = adapt_progress_log();
    }
    use_threads(arguments.threads);
    charlm::Checkpoint checkpoint = charlm::load_checkpoint(arguments.checkpoint);
    const std::string file = arguments.file == "-" ? "/dev/stdin" : arguments.file;  // read once, streamed: a pipe will do
    const charlm::EvalResult result = charlm::evaluate_file(*checkpoint.model, checkpoint.vocab, file, arguments.options);
    if (result.unknown_characters > 0)
        spdlog::warn("{} characters of {} ({:.3g}% of its text) are not in the model's vocabulary and were left out",
                     result.unknown_characters, arguments.file, 100 * result.unknown_fraction);
    if (!arguments.html.empty()) write_html_report(arguments, checkpoint, result);  // before the figures: a failure prints none
    if (arguments.json) {
        fmt::print("{}\n", result.to_json().dump());
    } else if (result.adaptation) {
        const double plain = result.plain_nats_per_character;
        const charlm::AdaptOptions& adapted = *result.adaptation;
        fmt::print("            plain     adapted\nnats/char   {:<9.4f} {:.4f}\nperplexity  {:<9.4f} {:.4f}\nbits/char   {:<9.4f} {:.4f}\n"
                   "characters  {} scored, {} unknown left out\n"
                   "adaptation  {:.4f} nats/char gained with --adapt-lr {:g} --adapt-decay {:g} --adapt-window {}\n",
                   plain, result.nats_per_character, charlm::perplexity_of(plain), result.perplexity,
                   charlm::bits_per_character_of(plain), result.bits_per_character, result.characters_scored,
                   result.unknown_characters, plain - result.nats_per_character, adapted.learning_rate, adapted.decay, adapted.window);
    } else {
        fmt::print("nats/char   {:.4f}\nperplexity  {:.4f}\nbits/char   {:.4f}\ncharacters  {} scored, {} unknown left out\n",
                   result.nats_per_character, result.perplexity, result.bits_per_character, result.characters_scored,
                   result.unknown_characters);
    }
    return 0;
}

struct ServeArguments {
    std::string checkpoint;
    charlm::ServerOptions options;
};

// Serves until SIGINT, SIGTERM or SIGHUP, which are taken by sigwait() here rather than by a handler:
// blocked before the server's threads start, so that every thread inherits the block.
int run_serve(const ServeArguments& arguments) {
    sigset_t stop_signals;
    ::sigemptyset(&stop_signals);
    for (const int signal_number : {SIGINT, SIGTERM, SIGHUP}) ::sigaddset(&stop_signals, signal_number);
    ::pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    // A thread of its own takes the signals from the start. The first one while the checkpoint loads
    // ends the process at once (nothing is served yet; a checkpoint that is a pipe or /dev/zero would
    // never finish loading); after that, the first stops the server, which waits for open connections
    // up to --timeout, and a second ends the process at once.
    static std::atomic<bool> serving{false};  // static: the detached thread may outlive this call
    static std::atomic<int> first_signal{0};
    static sigset_t waited;
    waited = stop_signals;
    std::thread signals([] {
        for (int received = 0;; ++received) {
            int signal_number = 0;
            ::sigwait(&waited, &signal_number);
            if (!serving || received > 0) {
                fmt::print(stderr, "charlm: stopped ({})\n", ::strsignal(signal_number));
                std::_Exit(130);
            }
            first_signal = signal_number;
            first_signal.notify_all();
        }
    });
    signals.detach();
    use_threads(arguments.options.threads);
    charlm::Server server(arguments.options);
    server.start();  // /health answers "loading" while the checkpoint loads
    charlm::Checkpoint checkpoint = charlm::load_checkpoint(arguments.checkpoint);
    const charlm::ModelConfig config = checkpoint.config;
    server.load(std::move(checkpoint), std::filesystem::path(arguments.checkpoint).filename().string());
    serving = true;
    const std::string& host = arguments.options.host;
    if (host.rfind("127.", 0) != 0 && host != "localhost" && host != "::1")
        spdlog::warn("listening on {}: whoever can reach this machine can use the server (it has no authentication)", host);
    spdlog::info("serving {} {}x{} ({} characters) with {} slots; Ctrl-C stops", charlm::to_string(config.cell), config.layers,
                 config.hidden_size, config.vocab_size, arguments.options.slots);
    fmt::print("{}\n", server.url());
    std::fflush(stdout);
    first_signal.wait(0);
    spdlog::info("stopping ({}); open connections close within --timeout; again to quit at once", ::strsignal(first_signal.load()));
    server.stop();
    return 0;
}

// ---- CLI11's parse errors in charlm's words: what the value should be, and where to read more ----

// Whole numbers in decimal only. CLI11 alone reads "010" as octal 8 and "0x10" as 16, wraps "-1" into
// 2^64 - 1 for an unsigned option, and saturates a number past 2^63 - 1 without a word; this check runs
// first, within the 64 bits CLI11 converts through, and hands CLI11 the number in plain decimal.
// Narrower options (int) are range-checked by CLI11 itself: see ConversionError below.
std::string check_whole_number(std::string& value, bool may_be_negative) {
    std::string_view digits = value;
    if (digits.starts_with('+')) digits.remove_prefix(1);
    const bool negative = digits.starts_with('-');
    const std::string_view magnitude = digits.substr(negative ? 1 : 0);
    if (magnitude.empty() || !std::all_of(magnitude.begin(), magnitude.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return fmt::format("wants a whole number, not '{}'", value);
    if (negative && !may_be_negative) return fmt::format("wants a whole number of 0 or more, not '{}'", value);
    const char* end = digits.data() + digits.size();
    long long signed_number = 0;
    unsigned long long unsigned_number = 0;
    const bool fits = may_be_negative ? std::from_chars(digits.data(), end, signed_number).ec == std::errc()
                                      : std::from_chars(digits.data(), end, unsigned_number).ec == std::errc();
    if (!fits) return fmt::format("cannot take {}: it is out of range", value);
    value = may_be_negative ? std::to_string(signed_number) : std::to_string(unsigned_number);
    return {};
}

std::string check_number(const std::string& value) {
    std::string_view text = value;
    if (!text.empty() && text.front() == '+') text.remove_prefix(1);
    double number = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), number);
    if (error == std::errc::result_out_of_range) return fmt::format("cannot take {}: it is out of range", value);
    if (error != std::errc() || end != text.data() + text.size()) return fmt::format("wants a number, not '{}'", value);
    return {};
}

// Gives every option of `app` and its commands a check of its value's kind (from the type name CLI11
// gave it: INT, UINT, FLOAT), ahead of CLI11's own conversion, and replaces the messages of CLI11's
// NonNegativeNumber and PositiveNumber, which spell out their upper bound, DBL_MAX, in 309 digits.
void check_values_in_plain_words(CLI::App& app) {
    for (CLI::App* command : app.get_subcommands([](CLI::App*) { return true; })) check_values_in_plain_words(*command);
    for (CLI::Option* option : app.get_options()) {
        const std::string type = option->get_type_name().substr(0, option->get_type_name().find(':'));
        if (type == "INT" || type == "UINT")
            option->transform(CLI::Validator([unsigned_only = type == "UINT"](std::string& value) {
                return check_whole_number(value, !unsigned_only);
            }, ""));
        else if (type == "FLOAT")
            option->transform(CLI::Validator([](std::string& value) { return check_number(value); }, ""));
        // Range keeps the name it is given as its description, not its name: found by that.
        for (int index = 0;; ++index) {
            CLI::Validator* validator = nullptr;
            try {
                validator = option->get_validator(index);
            } catch (const CLI::OptionNotFound&) {
                break;
            }
            const bool positive = validator->get_description() == "POSITIVE";
            if (!positive && validator->get_description() != "NONNEGATIVE") continue;
            validator->operation([positive](std::string& value) {
                const double number = std::strtod(value.c_str(), nullptr);
                if (positive ? number > 0 : number >= 0) return std::string();
                return fmt::format("must be {} 0, not {}", positive ? "above" : "at least", value);
            });
        }
    }
}

// Edit distance, for "did you mean": a typo of one or two letters is far more likely than a new word.
std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diagonal = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t above = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diagonal = above;
        }
    }
    return row[b.size()];
}

std::string closest_suggestion(const std::string& word, const std::vector<std::string>& candidates) {
    std::string best;
    std::size_t best_distance = std::max<std::size_t>(2, word.size() / 3) + 1;
    for (const auto& candidate : candidates) {
        const std::size_t distance = edit_distance(word, candidate);
        if (distance < best_distance) best = candidate, best_distance = distance;
    }
    return best.empty() ? std::string() : fmt::format(" (did you mean {}?)", best);
}

std::vector<std::string> command_names(CLI::App& app) {
    std::vector<std::string> names;
    for (CLI::App* command : app.get_subcommands([](CLI::App*) { return true; })) names.push_back(command->get_name());
    return names;
}

// The text after CLI11's "NAME: " or before " is required", split off; CLI11 2.x words its messages so.
std::pair<std::string, std::string> name_and_rest(const std::string& message, const std::string& separator) {
    const auto at = message.find(separator);
    if (at == std::string::npos) return {"", message};
    return {message.substr(0, at), message.substr(at + separator.size())};
}

// One line for a parse error: what is wrong in words a user knows, without CLI11's type names.
std::string plain_parse_error(const CLI::ParseError& error, CLI::App& app, CLI::App* command) {
    const std::string message = error.what();
    const std::string command_name = command ? "charlm " + command->get_name() : std::string("charlm");
    if (dynamic_cast<const CLI::RequiredError*>(&error)) {
        if (!command) {
            const auto remaining = app.remaining();
            const auto names = command_names(app);
            if (remaining.empty()) return fmt::format("give a command: {}", fmt::join(names, ", "));
            if (remaining.front().starts_with("-"))
                return fmt::format("unknown option {}; give a command first: {}", remaining.front(), fmt::join(names, ", "));
            return fmt::format("unknown command '{}'{}; the commands are {}", remaining.front(),
                               closest_suggestion(remaining.front(), names), fmt::join(names, ", "));
        }
        const auto [name, rest] = name_and_rest(message, " is required");
        const CLI::Option* option = command->get_option_no_throw(name);
        if (option && rest.empty()) {
            std::string description = option->get_description();
            if (description.size() > 1 && !std::isupper(static_cast<unsigned char>(description[1])))  // "A file", not "UTF-8"
                description[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(description[0])));
            return fmt::format("{} needs {}: {}", command_name, name, description);
        }
    }
    if (dynamic_cast<const CLI::ExtrasError*>(&error)) {
        const auto remaining = app.remaining(true);
        if (!remaining.empty()) {
            const std::string& first = remaining.front();
            if (first.starts_with("-") && first.size() > 1 && !std::isdigit(static_cast<unsigned char>(first[1]))) {
                std::vector<std::string> names;
                for (const CLI::Option* option : (command ? command : &app)->get_options())
                    for (const auto& long_name : option->get_lnames()) names.push_back("--" + long_name);
                const std::string word = first.substr(0, first.find('='));
                return fmt::format("{} has no option {}{}", command_name, word, closest_suggestion(word, names));
            }
            std::vector<std::string> positionals;
            for (const CLI::Option* option : (command ? command : &app)->get_options())
                if (option->get_positional()) positionals.push_back(option->get_name());
            return fmt::format("unexpected argument '{}'; {} takes {}", first, command_name,
                               positionals.empty() ? std::string("options only") : fmt::format("{} and options", fmt::join(positionals, ", ")));
        }
    }
    if (dynamic_cast<const CLI::ConversionError*>(&error)) {
        // Only a number out of the option's range gets here: check_values_in_plain_words refused every other.
        const auto [prefix, assignment] = name_and_rest(message, "Could not convert: ");
        const auto [name, value] = name_and_rest(assignment, " = ");
        const CLI::Option* option = name.empty() ? nullptr : (command ? command : &app)->get_option_no_throw(name);
        if (option && option->get_expected_max() == 0) return fmt::format("{} is a flag; give it without a value", name);
        if (option) return fmt::format("{} cannot take {}: it is out of range", name, value);
    }
    if (dynamic_cast<const CLI::ValidationError*>(&error)) {
        const auto [name, rest] = name_and_rest(message, ": ");
        // CLI11's Range says "Value 7 not in range 0 to 5".
        const std::regex range(R"(^Value (.*) not in range (.*) to (.*)$)");
        std::smatch match;
        if (std::regex_match(rest, match, range))
            return fmt::format("{} must be between {} and {}, not {}", name, match[2].str(), match[3].str(), match[1].str());
        // check_values_in_plain_words words its messages to follow the option's name.
        for (const char* verb : {"wants ", "must ", "cannot "})
            if (rest.starts_with(verb)) return fmt::format("{} {}", name, rest);
    }
    if (dynamic_cast<const CLI::ArgumentMismatch*>(&error)) {
        const auto [name, rest] = name_and_rest(message, ": ");
        if (rest.find("required") != std::string::npos && rest.ends_with("missing")) return fmt::format("{} needs a value", name);
    }
    if (dynamic_cast<const CLI::ExcludesError*>(&error)) {
        const auto [first, second] = name_and_rest(message, " excludes ");
        if (!second.empty()) return fmt::format("give {} or {}, not both", first, second);
    }
    std::string plain = message;
    std::replace(plain.begin(), plain.end(), '\n', ' ');
    if (!plain.empty()) plain[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(plain[0])));
    return plain;
}

// Prints an error's one line and returns the exit status. Of several processes, an error that every
// one met is printed by the first alone; one that only this process met ends them all, the others
// waiting for it otherwise forever, and says which process it was.
int report_failure(const std::string& message, int status, bool shared, const charlm::Communicator& processes) {
    std::fflush(stdout);
    if (processes.size() == 1 || (shared && processes.is_first())) fmt::print(stderr, "charlm: error: {}\n", message);
    if (processes.size() == 1 || shared) return status;
    fmt::print(stderr, "charlm: error: process {} of {} (on {}): {}\n", processes.rank(), processes.size(), processes.host(), message);
    std::fflush(stderr);
    processes.abort(status);
    return status;  // not reached: GCC does not carry [[noreturn]] through a virtual call
}

}  // namespace

int main(int argc, char** argv) {
    auto logger = spdlog::stderr_color_mt("charlm", charlm::log_color_mode(std::getenv("NO_COLOR"), ::isatty(STDERR_FILENO)));
    logger->set_pattern("[%T] %^%v%$");
    spdlog::set_default_logger(logger);

    CLI::App app{"charlm: train a character-level language model on any text, then sample from it and score it.\n"
                 "Start with 'charlm train FILE.txt', then 'charlm sample runs/FILE/best.safetensors --prompt \"...\"'."};
    app.require_subcommand(1);
    app.set_version_flag("--version", "charlm 0.1.0");
    app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // the last --x wins, as in most tools

    TrainArguments train_arguments;
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
    train->add_option("--threads", train_arguments.threads, "CPU threads; 0 uses every core (under mpirun, this process's share)")
        ->check(CLI::Range(0, kMostThreads))
        ->capture_default_str();

    // Which training options the command line gave, by name: a resumed run applies or refuses exactly those.
    train->parse_complete_callback([&]() {
        for (const CLI::Option* option : train->get_options())
            if (option->count() > 0 && !option->get_lnames().empty() && option->get_lnames().front() != "help")
                train_arguments.given.push_back("--" + option->get_lnames().front());
    });

    SampleArguments sample_arguments;
    auto* sample = app.add_subcommand("sample", "Generate text from a checkpoint, streamed to stdout");
    sample->add_option("CHECKPOINT", sample_arguments.checkpoint, "A .safetensors file written by 'charlm train'")->required();
    sample->add_option("--prompt", sample_arguments.prompt, "Text that primes the model; it is printed first");
    sample->add_option("--prompt-file", sample_arguments.prompt_file, "Read the prompt from a file; - reads standard input")
        ->excludes(sample->get_option("--prompt"));
    sample->add_flag("--skip-unknown", sample_arguments.skip_unknown, "Leave out prompt characters the model never saw");
    sample->add_option("--count", sample_arguments.count, "Samples to draw, with seeds SEED, SEED+1, ...")->capture_default_str();
    sample->add_option("--stop", sample_arguments.stop, "End a sample as soon as it has generated this text")
        ->check([](const std::string& text) { return text.empty() ? std::string("needs the text to stop at") : std::string(); });
    sample->add_flag("--json", sample_arguments.json, "One JSON object per sample: prompt, text, seed");
    sample->add_option("--length", sample_arguments.length, "Characters to generate")
        ->check(CLI::Range(0LL, 1LL << 40))
        ->capture_default_str();
    sample->add_option("--temperature", sample_arguments.options.temperature,
                       "Below 1 is safer and more repetitive, above 1 wilder")->capture_default_str();
    sample->add_option("--top-k", sample_arguments.options.top_k, "Draw only from the k most likely characters; 0 for all")->capture_default_str();
    sample->add_option("--top-p", sample_arguments.options.top_p, "Draw only from the most likely characters whose probability adds up to p")->capture_default_str();
    sample->add_flag("--greedy", sample_arguments.options.greedy, "Always take the most likely character (repeats itself)");
    auto* seed_option = sample->add_option("--seed", sample_arguments.seed, "Seed for reproducible samples [default: random]");
    sample->add_option("--threads", sample_arguments.threads, "CPU threads; 0 uses every core")->check(CLI::Range(0, kMostThreads))->capture_default_str();
    auto* adapt_to = sample->add_option("--adapt-to", sample_arguments.adapt_to,
                                        "First adapt the weights to this text, as 'charlm eval --adapt' reads it, then sample in "
                                        "its style; - reads standard input")
                         ->type_name("FILE");
    sample->add_option("--adapt-lr", sample_arguments.adapt_options.learning_rate,
                       "With --adapt-to: each weight's step per window (its gradient divided by the gradient's RMS so far)")
        ->needs(adapt_to)
        ->capture_default_str();
    sample->add_option("--adapt-decay", sample_arguments.adapt_options.decay,
                       "With --adapt-to: share of the distance to the trained weights taken back after each step, in [0, 1]")
        ->needs(adapt_to)
        ->capture_default_str();
    sample->add_option("--adapt-window", sample_arguments.adapt_options.window, "With --adapt-to: characters per step")
        ->needs(adapt_to)
        ->capture_default_str();

    EvalArguments eval_arguments;
    auto* eval = app.add_subcommand("eval", "Score a text: nats per character, perplexity, bits per character");
    eval->add_option("CHECKPOINT", eval_arguments.checkpoint, "A .safetensors file written by 'charlm train'")->required();
    eval->add_option("FILE", eval_arguments.file, "UTF-8 text to score; - reads standard input")->required();
    eval->add_flag("--json", eval_arguments.json, "Print one JSON object");
    eval->add_flag("--allow-unknown", eval_arguments.options.allow_unknown,
                   fmt::format("Score a text even when more than {:g}% of its characters are not in the model's vocabulary "
                               "(they are left out)", 100 * charlm::kMostUnknownFraction));
    eval->add_option("--threads", eval_arguments.threads, "CPU threads; 0 uses every core")->check(CLI::Range(0, kMostThreads))->capture_default_str();

    eval->add_option("--html", eval_arguments.html,
                     "Also write REPORT.html: the text tinted by surprise, top predictions, the neurons that vary most")
        ->option_text("REPORT.html");
    eval->add_option("--html-chars", eval_arguments.html_characters, "Characters the report shows, from the start of the file")
        ->check(CLI::Range(2LL, 200'000LL))
        ->needs(eval->get_option("--html"))
        ->capture_default_str();
    auto* adapt = eval->add_flag("--adapt", eval_arguments.adapt,
                                 "Dynamic evaluation: read the text as one stream and, after scoring each window, learn from it "
                                 "(a step on its gradients divided by their RMS so far, decaying toward the trained weights); "
                                 "prints the plain and the adapted figures")
                      ->excludes(eval->get_option("--html"));
    eval->add_option("--adapt-lr", eval_arguments.adapt_options.learning_rate,
                     "With --adapt: each weight's step per window (its gradient divided by the gradient's RMS so far)")
        ->needs(adapt)
        ->capture_default_str();
    eval->add_option("--adapt-decay", eval_arguments.adapt_options.decay,
                     "With --adapt: share of the distance to the trained weights taken back after each step, in [0, 1]")
        ->needs(adapt)
        ->capture_default_str();
    eval->add_option("--adapt-window", eval_arguments.adapt_options.window,
                     "With --adapt: characters per step (how far back gradients reach, how often the weights change)")
        ->needs(adapt)
        ->capture_default_str();

    ServeArguments serve_arguments;
    auto& serve_options = serve_arguments.options;
    auto* serve = app.add_subcommand("serve", "Serve a checkpoint over HTTP: a page to generate and look inside, and an "
                                              "OpenAI-style API (docs/serve.md)");
    serve->add_option("CHECKPOINT", serve_arguments.checkpoint, "A .safetensors file written by 'charlm train'")->required();
    serve->add_option("--host", serve_options.host, "Address to listen on; another than 127.0.0.1 lets other machines in")->capture_default_str();
    serve->add_option("--port", serve_options.port, "Port; 0 takes a free one (the printed URL says which)")
        ->check(CLI::Range(0, 65535))
        ->capture_default_str();
    serve->add_option("--threads", serve_options.threads, "CPU threads for the model; 0 uses every core")->check(CLI::Range(0, kMostThreads))->capture_default_str();
    serve->add_option("--parallel", serve_options.slots, "Completions decoded at once, as one batch")->check(CLI::Range(1, 256))->capture_default_str();
    serve->add_option("--queue", serve_options.queued, "Completions that may wait for a slot; past that, 503")->check(CLI::Range(0, 4096))->capture_default_str();
    serve->add_option("--max-tokens", serve_options.max_tokens, "The most characters one completion may ask for")
        ->check(CLI::Range(std::size_t{1}, std::size_t{1'000'000}))
        ->capture_default_str();
    serve->add_option("--max-text", serve_options.max_score_characters, "The longest prompt or scored text, in characters")
        ->check(CLI::Range(std::size_t{2}, std::size_t{200'000}))
        ->capture_default_str();
    serve->add_option("--timeout", serve_options.timeout_seconds, "Seconds a client may send or take nothing before it is dropped")
        ->check(CLI::Range(1, 3600))
        ->capture_default_str();

    std::string info_checkpoint;
    bool info_json = false;
    auto* info = app.add_subcommand("info", "Describe a checkpoint: model, parameters, vocabulary, training");
    info->add_option("CHECKPOINT", info_checkpoint, "A .safetensors file written by 'charlm train'")->required();
    info->add_flag("--json", info_json, "Print one JSON object");

    std::vector<std::string> plot_run_directories;
    std::string plot_output, plot_axis;
    auto* plot = app.add_subcommand("plot", "Draw a run's train and validation loss to a PNG, or compare several runs' "
                                            "validation losses (needs gnuplot)");
    plot->add_option("RUN_DIR", plot_run_directories, "Run directories with metrics.jsonl; with more than one, their validation "
                                                      "losses are compared")
        ->required();
    plot->add_option("--output", plot_output, "PNG to write [default: RUN_DIR/loss.png for one run]");
    plot->add_option("--by", plot_axis, "Compare validation losses by step or minutes of training [default: minutes]")
        ->check(CLI::IsMember({"step", "minutes"}));

    charlm::BenchOptions bench_options;
    std::string bench_corpus = bench_options.corpus.string();
    std::vector<std::string> bench_models;
    bool bench_json = false;
    auto* bench = app.add_subcommand("bench", "Measure training, evaluation and sampling speed on the reference LSTMs");
    bench->add_option("--threads", bench_options.threads, "CPU threads; 0 uses every core")->check(CLI::Range(0, kMostThreads))->capture_default_str();
    bench->add_option("--model", bench_models, "Measure only these, e.g. --model 2x128 --model 3x512 [default: 2x128, 2x256, 3x512]")
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    bench->add_option("--seconds", bench_options.seconds_per_measurement, "Seconds of each measurement")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    bench->add_option("--corpus", bench_corpus, "Text for the vocabulary and the windows")->capture_default_str();
    bench->add_flag("--json", bench_json, "Print one JSON object instead of a table");

    check_values_in_plain_words(app);
    try {
        app.parse(argc, argv);
    } catch (const CLI::Success& success) {
        return charlm::DistributedRun::launched_rank() == 0 ? app.exit(success) : 0;
    } catch (const CLI::ParseError& error) {
        CLI::App* command = app.get_subcommands().empty() ? nullptr : app.get_subcommands().front();
        const std::string help_command = command ? "charlm " + command->get_name() + " --help" : std::string("charlm --help");
        if (charlm::DistributedRun::launched_rank() == 0)  // under mpirun, every process met the same
            fmt::print(stderr, "charlm: error: {}; see '{}'\n", plain_parse_error(error, app, command), help_command);
        return 2;  // every parse error is a usage error, whatever CLI11's own code for it
    }
    // Only training runs as several processes: N samples or scores would be N answers to one question,
    // and N separate trainings (a build without MPI) no faster than one.
    if (charlm::DistributedRun::launched_with_others()) {
        std::string refusal;
        if (!*train)
            refusal = fmt::format("'charlm {}' runs as one process; run it without mpirun (only 'charlm train' runs on several)",
                                  app.get_subcommands().front()->get_name());
        else if (!charlm::DistributedRun::built_with_mpi())
            refusal = "this charlm was built without MPI, so each process would train a model of its own; install libopenmpi-dev "
                      "and rebuild (scripts/setup.sh), or run charlm without mpirun";
        if (!refusal.empty()) {
            if (charlm::DistributedRun::launched_rank() == 0) fmt::print(stderr, "charlm: error: {}\n", refusal);
            return 2;
        }
    }
    std::optional<charlm::DistributedRun> distributed;
    if (*train) distributed.emplace(argc, argv);
    const charlm::Communicator& processes = distributed ? distributed->communicator() : charlm::single_process();
    sample_arguments.seed_given = seed_option->count() > 0;
    sample_arguments.given = {.temperature = sample->count("--temperature") > 0, .top_k = sample->count("--top-k") > 0,
                              .top_p = sample->count("--top-p") > 0};

    int status = 0;
    try {
        if (*train) status = run_train(train_arguments, processes);
        else if (*sample) status = run_sample(sample_arguments);
        else if (*eval) status = run_eval(eval_arguments);
        else if (*serve) status = run_serve(serve_arguments);
        else if (*info) status = run_info(info_checkpoint, info_json);
        else if (*bench) status = run_bench(bench_options, bench_corpus, bench_models, bench_json);
        else if (*plot) {
            const bool comparing = plot_run_directories.size() > 1 || !plot_axis.empty();
            if (comparing && plot_output.empty())
                throw charlm::UsageError("comparing runs writes one PNG for all of them: say where with --output FILE.png");
            const std::filesystem::path output = plot_output.empty() ? std::filesystem::path(plot_run_directories.front()) / "loss.png"
                                                                     : std::filesystem::path(plot_output);
            if (comparing) {
                const std::vector<std::filesystem::path> runs(plot_run_directories.begin(), plot_run_directories.end());
                charlm::plot_validation_losses(runs, output, plot_axis == "step" ? charlm::PlotAxis::step : charlm::PlotAxis::minutes);
            } else {
                charlm::plot_losses(plot_run_directories.front(), output);
            }
            fmt::print("{}\n", output.string());
        }
    } catch (const charlm::UsageError& error) {
        return report_failure(error.what(), 2, error.shared_by_every_process(), processes);
    } catch (const charlm::Error& error) {
        return report_failure(error.what(), 1, error.shared_by_every_process(), processes);
    } catch (const std::bad_alloc&) {
        return report_failure("out of memory; try a smaller model, --batch or --seq", 1, false, processes);
    } catch (const std::exception& error) {
        return report_failure(error.what(), 1, false, processes);
    }
    // Results that never reached stdout (a full disk, a closed pipe) are a failure, not a success.
    if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
        fmt::print(stderr, "charlm: error: cannot write the results to standard output ({})\n", std::strerror(errno));
        return 1;
    }
    return status;
}
