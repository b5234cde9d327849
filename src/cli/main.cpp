// The charlm command line: parse and check options, call the library, print results. No math here.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <iostream>
#include <set>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "charlm/bench.hpp"
#include "charlm/checkpoint.hpp"
#include "charlm/error.hpp"
#include "charlm/eval.hpp"
#include "charlm/plot.hpp"
#include "charlm/sample.hpp"
#include "charlm/threads.hpp"
#include "charlm/train.hpp"

namespace {

// Every command's --threads: set, and a word on stderr where the environment allows fewer.
void use_threads(int threads) {
    const charlm::ThreadCount count = charlm::set_thread_count(threads);
    if (count.limited_by)
        spdlog::warn("--threads {} asks for more than {} allows; using {}", count.requested, count.limited_by, count.used);
}

void on_stop_signal(int signal_number) {
    charlm::request_training_stop();
    std::signal(signal_number, SIG_DFL);  // a second Ctrl-C quits at once
}

struct TrainArguments {
    std::string corpus;
    std::string validation_file;
    std::string run_directory;
    std::string resume;
    std::string moved_corpus;
    std::string cell = "lstm";
    charlm::TrainOptions options;
    int threads = 0;
    bool quiet = false;
    std::vector<std::string> given;  // the training options given on the command line, by name
};

std::string describe_stop(const charlm::TrainResult& result, const charlm::TrainOptions& options) {
    switch (result.stopped_by) {
        case charlm::StopReason::steps: return "";
        case charlm::StopReason::minutes: return " (--minutes reached)";
        case charlm::StopReason::patience: return fmt::format(" (stopped early: no better validation loss in {} validations)", options.patience);
        case charlm::StopReason::interrupted: return " (interrupted)";
    }
    return "";
}

int run_train(TrainArguments& arguments) {
    auto given = [&](const std::string& name) {
        return std::find(arguments.given.begin(), arguments.given.end(), name) != arguments.given.end();
    };
    // 0 means "no bound" inside the library; on the command line it is a mistake, not the default.
    if (given("--steps") && arguments.options.steps <= 0)
        throw charlm::UsageError(fmt::format("--steps must be at least 1, not {}; leave it out for 2000", arguments.options.steps));
    if (given("--minutes") && !(arguments.options.minutes > 0))
        throw charlm::UsageError(fmt::format("--minutes must be positive, not {}", arguments.options.minutes));
    use_threads(arguments.threads);
    std::signal(SIGINT, on_stop_signal);
    std::signal(SIGTERM, on_stop_signal);
    if (arguments.quiet) spdlog::set_level(spdlog::level::warn);
    const bool live_progress = !arguments.quiet && ::isatty(STDERR_FILENO);
    charlm::TrainResult result;
    charlm::TrainOptions& options = arguments.options;
    if (!arguments.resume.empty()) {
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
        request.live_progress = live_progress;
        result = charlm::resume_training(request);
    } else {
        if (!arguments.moved_corpus.empty())
            throw charlm::UsageError("--corpus says where a resumed run's corpus moved; to start a run, give CORPUS alone");
        if (arguments.corpus.empty()) throw charlm::UsageError("give a CORPUS text file to train on, or --resume RUN_DIR");
        if (arguments.corpus == "-" && ::isatty(STDIN_FILENO))
            throw charlm::UsageError("CORPUS - reads standard input, which is a terminal; pipe a text in: cat corpus.txt | charlm train -");
        options.corpus = arguments.corpus;
        if (!arguments.validation_file.empty()) options.validation_file = arguments.validation_file;
        options.model.cell = charlm::parse_cell_type(arguments.cell);
        const std::string run_name = arguments.corpus == "-" ? std::string("stdin") : std::filesystem::path(arguments.corpus).stem().string();
        options.run_directory = arguments.run_directory.empty() ? std::filesystem::path("runs") / run_name
                                                                : std::filesystem::path(arguments.run_directory);
        if (options.steps == 0 && options.minutes == 0) options.steps = 2000;
        options.live_progress = live_progress;
        result = charlm::train(options);
    }
    const std::string stopped = describe_stop(result, options);
    if (!result.validated) {
        fmt::print("trained {} steps{}; no validation text, so no best checkpoint; last train loss {:.4f} nats/char\n"
                   "checkpoint: {} (to resume)\n",
                   result.steps, stopped, result.last_train_loss, result.last_checkpoint.string());
    } else {
        const double best = result.best_validation_loss;
        fmt::print("trained {} steps{}; best validation loss {:.4f} nats/char (perplexity {:.3f}, {:.4f} bits/char)\n"
                   "checkpoints: {} (best), {} (to resume)\n",
                   result.steps, stopped, best, std::exp(best), best / std::log(2.0), result.best_checkpoint.string(),
                   result.last_checkpoint.string());
    }
    return result.stopped_by == charlm::StopReason::interrupted ? 130 : 0;
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
};

std::string read_prompt_file(const std::string& path) {
    if (path == "-") return {std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
    return charlm::encode_utf8(charlm::read_text_file(path));
}

int run_sample(SampleArguments& arguments) {
    charlm::validate(arguments.options);
    if (arguments.count < 1) throw charlm::Error("--count must be at least 1");
    use_threads(arguments.threads);
    charlm::Checkpoint checkpoint = charlm::load_checkpoint(arguments.checkpoint);
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
    return std::fflush(stdout) == 0 ? 0 : 1;
}

int run_info(const std::string& checkpoint_path, bool json) {
    const charlm::Checkpoint checkpoint = charlm::load_checkpoint(checkpoint_path);
    const nlohmann::json description = charlm::describe_checkpoint(checkpoint);
    if (json) {
        fmt::print("{}\n", description.dump());
        return 0;
    }
    std::string vocabulary;
    for (char32_t c : checkpoint.vocab.code_points())
        vocabulary += c == U'\n' ? "\\n" : c == U'\t' ? "\\t" : c < 0x20 ? "?" : charlm::encode_utf8(c);
    const double best = checkpoint.training.best_validation_loss;
    fmt::print("model       {} {} layers x {} hidden, embedding {}{}\n", description["cell"].get<std::string>(),
               checkpoint.config.layers, checkpoint.config.hidden_size, checkpoint.config.embed_size,
               checkpoint.config.dropout > 0 ? fmt::format(", dropout {}", checkpoint.config.dropout) : "");
    fmt::print("parameters  {}\n", checkpoint.config.parameter_count());
    fmt::print("vocabulary  {} characters: {}\n", checkpoint.vocab.size(), vocabulary);
    fmt::print("trained     {} steps\n", checkpoint.training.step);
    fmt::print("best val    {}\n", std::isfinite(best) ? fmt::format("{:.4f} nats/char (perplexity {:.3f})", best, std::exp(best))
                                                       : std::string("none yet"));
    fmt::print("resumable   {}\n", checkpoint.optimizer ? "yes (optimizer state included)" : "no (weights only)");
    return 0;
}

struct EvalArguments {
    std::string checkpoint;
    std::string file;
    charlm::EvalOptions options;
    bool json = false;
    int threads = 0;
};

int run_bench(charlm::BenchOptions options, const std::string& corpus, const std::vector<std::string>& models, bool json) {
    options.corpus = corpus;
    if (!models.empty()) options.models = charlm::select_bench_models(models);
    const nlohmann::json result = charlm::run_benchmark(options);
    if (json) fmt::print("{}\n", result.dump());
    else fmt::print("{}", charlm::format_benchmark_table(result));
    return 0;
}

int run_eval(EvalArguments& arguments) {
    use_threads(arguments.threads);
    charlm::Checkpoint checkpoint = charlm::load_checkpoint(arguments.checkpoint);
    const charlm::EvalResult result = charlm::evaluate_file(*checkpoint.model, checkpoint.vocab, arguments.file, arguments.options);
    if (result.unknown_characters > 0)
        spdlog::warn("{} characters of {} ({:.3g}% of its text) are not in the model's vocabulary and were left out",
                     result.unknown_characters, arguments.file, 100 * result.unknown_fraction);
    if (arguments.json) {
        fmt::print("{}\n", result.to_json().dump());
    } else {
        fmt::print("nats/char   {:.4f}\nperplexity  {:.4f}\nbits/char   {:.4f}\ncharacters  {} scored, {} unknown left out\n",
                   result.nats_per_character, result.perplexity, result.bits_per_character, result.characters_scored,
                   result.unknown_characters);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    auto logger = spdlog::stderr_color_mt("charlm");
    logger->set_pattern("[%T] %^%v%$");
    spdlog::set_default_logger(logger);

    CLI::App app{"charlm: train a character-level language model on any text, then sample from it and score it.\n"
                 "Start with 'charlm train FILE.txt', then 'charlm sample runs/FILE/best.safetensors --prompt \"...\"'."};
    app.require_subcommand(1);
    app.set_version_flag("--version", "charlm 0.1.0");
    app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // the last --x wins, as in most tools

    TrainArguments train_arguments;
    auto& train_options = train_arguments.options;
    auto* train = app.add_subcommand("train", "Train a recurrent model on a UTF-8 text file and save checkpoints");
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
    train->add_option("--cell", train_arguments.cell, "Recurrent cell: lstm, gru or rnn (tanh)")->capture_default_str();
    train->add_option("--layers", train_options.model.layers, "Stacked recurrent layers")->capture_default_str();
    train->add_option("--hidden", train_options.model.hidden_size, "Hidden units per layer")->capture_default_str();
    train->add_option("--embed", train_options.model.embed_size, "Character embedding size")->capture_default_str();
    train->add_option("--seq", train_options.seq_length, "Steps of backpropagation through time per window")->capture_default_str();
    train->add_option("--batch", train_options.batch_size, "Parallel streams of text per window")->capture_default_str();
    train->add_option("--dropout", train_options.model.dropout, "Dropout between layers while training")->capture_default_str();
    train->add_option("--lr", train_options.learning_rate, "Adam learning rate (the peak, after warmup)")->capture_default_str();
    train->add_option("--lr-schedule", train_options.lr_schedule,
                      "constant; cosine: down to lr/10 at --steps; step: times --lr-decay every --lr-decay-every steps")
        ->capture_default_str();
    train->add_option("--warmup", train_options.warmup_steps, "Steps of linear learning-rate warmup")->capture_default_str();
    train->add_option("--lr-decay-every", train_options.lr_decay_every, "Steps between decays of the step schedule")->capture_default_str();
    train->add_option("--lr-decay", train_options.lr_decay_factor, "Factor of each decay of the step schedule")->capture_default_str();
    train->add_option("--clip", train_options.clip, "Clip the global gradient norm to this; 0 turns clipping off")->capture_default_str();
    train->add_option("--val-fraction", train_options.validation_fraction, "Fraction of the corpus held out for validation")->capture_default_str();
    train->add_option("--val", train_arguments.validation_file, "Validate on this file instead of holding out part of the corpus");
    train->add_option("--steps", train_options.steps, "Stop after this many steps in all, resumed ones included [default: 2000 unless --minutes]");
    train->add_option("--minutes", train_options.minutes, "Stop after this many minutes of wall-clock time");
    train->add_option("--eval-every", train_options.eval_every, "Validate and save checkpoints every N steps")->capture_default_str();
    train->add_option("--patience", train_options.patience, "Stop after N validations without a new best; 0 never")->capture_default_str();
    train->add_flag("--quiet", train_arguments.quiet, "Print only warnings and the final summary");
    train->add_option("--seed", train_options.seed, "Seed for the initial weights")->capture_default_str();
    train->add_option("--threads", train_arguments.threads, "CPU threads; 0 uses every core")->check(CLI::NonNegativeNumber)->capture_default_str();

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
    sample->add_option("--stop", sample_arguments.stop, "End a sample as soon as it has generated this text");
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
    sample->add_option("--threads", sample_arguments.threads, "CPU threads; 0 uses every core")->check(CLI::NonNegativeNumber)->capture_default_str();

    EvalArguments eval_arguments;
    auto* eval = app.add_subcommand("eval", "Score a text: nats per character, perplexity, bits per character");
    eval->add_option("CHECKPOINT", eval_arguments.checkpoint, "A .safetensors file written by 'charlm train'")->required();
    eval->add_option("FILE", eval_arguments.file, "UTF-8 text to score")->required();
    eval->add_flag("--json", eval_arguments.json, "Print one JSON object");
    eval->add_flag("--allow-unknown", eval_arguments.options.allow_unknown,
                   fmt::format("Score a text even when more than {:g}% of its characters are not in the model's vocabulary "
                               "(they are left out)", 100 * charlm::kMostUnknownFraction));
    eval->add_option("--threads", eval_arguments.threads, "CPU threads; 0 uses every core")->check(CLI::NonNegativeNumber)->capture_default_str();

    std::string info_checkpoint;
    bool info_json = false;
    auto* info = app.add_subcommand("info", "Describe a checkpoint: model, parameters, vocabulary, training");
    info->add_option("CHECKPOINT", info_checkpoint, "A .safetensors file written by 'charlm train'")->required();
    info->add_flag("--json", info_json, "Print one JSON object");

    std::string plot_run_directory, plot_output;
    auto* plot = app.add_subcommand("plot", "Draw a run's train and validation loss to a PNG (needs gnuplot)");
    plot->add_option("RUN_DIR", plot_run_directory, "A run directory with metrics.jsonl")->required();
    plot->add_option("--output", plot_output, "PNG to write [default: RUN_DIR/loss.png]");

    charlm::BenchOptions bench_options;
    std::string bench_corpus = bench_options.corpus.string();
    std::vector<std::string> bench_models;
    bool bench_json = false;
    auto* bench = app.add_subcommand("bench", "Measure training, evaluation and sampling speed on the reference LSTMs");
    bench->add_option("--threads", bench_options.threads, "CPU threads; 0 uses every core")->check(CLI::NonNegativeNumber)->capture_default_str();
    bench->add_option("--model", bench_models, "Measure only these, e.g. --model 2x128 --model 3x512 [default: 2x128, 2x256, 3x512]")
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    bench->add_option("--seconds", bench_options.seconds_per_measurement, "Seconds of each measurement")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    bench->add_option("--corpus", bench_corpus, "Text for the vocabulary and the windows")->capture_default_str();
    bench->add_flag("--json", bench_json, "Print one JSON object instead of a table");

    try {
        app.parse(argc, argv);
    } catch (const CLI::Success& success) {
        return app.exit(success);
    } catch (const CLI::ParseError& error) {
        std::string message = error.what();
        std::replace(message.begin(), message.end(), '\n', ' ');
        const std::string help_command = app.get_subcommands().empty()
                                             ? std::string("charlm --help")
                                             : "charlm " + app.get_subcommands().front()->get_name() + " --help";
        fmt::print(stderr, "charlm: error: {}; see '{}'\n", message, help_command);
        return 2;  // every parse error is a usage error, whatever CLI11's own code for it
    }
    sample_arguments.seed_given = seed_option->count() > 0;
    sample_arguments.given = {.temperature = sample->count("--temperature") > 0, .top_k = sample->count("--top-k") > 0,
                              .top_p = sample->count("--top-p") > 0};

    try {
        if (*train) return run_train(train_arguments);
        if (*sample) return run_sample(sample_arguments);
        if (*eval) return run_eval(eval_arguments);
        if (*info) return run_info(info_checkpoint, info_json);
        if (*bench) return run_bench(bench_options, bench_corpus, bench_models, bench_json);
        if (*plot) {
            const std::filesystem::path output = plot_output.empty() ? std::filesystem::path(plot_run_directory) / "loss.png"
                                                                     : std::filesystem::path(plot_output);
            charlm::plot_losses(plot_run_directory, output);
            fmt::print("{}\n", output.string());
            return 0;
        }
    } catch (const charlm::UsageError& error) {
        std::fflush(stdout);
        fmt::print(stderr, "charlm: error: {}\n", error.what());
        return 2;
    } catch (const charlm::Error& error) {
        std::fflush(stdout);
        fmt::print(stderr, "charlm: error: {}\n", error.what());
        return 1;
    } catch (const std::bad_alloc&) {
        fmt::print(stderr, "charlm: error: out of memory; try a smaller model, --batch or --seq\n");
        return 1;
    } catch (const std::exception& error) {
        fmt::print(stderr, "charlm: error: {}\n", error.what());
        return 1;
    }
    return 0;
}
