// The training loop, its validation and checkpoints, and resuming a run where it stopped.
#include "charlm/train.hpp"

#include <chrono>
#include <cmath>
#include <csignal>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "charlm/batches.hpp"
#include "charlm/checkpoint.hpp"
#include "charlm/error.hpp"
#include "charlm/eval.hpp"
#include "charlm/json_integer.hpp"
#include "charlm/optim.hpp"

namespace charlm {

namespace {

volatile std::sig_atomic_t stop_requested = 0;

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string format_duration(double seconds) {
    const auto total = static_cast<long long>(seconds + 0.5);
    if (total >= 3600) return fmt::format("{}h{:02}m", total / 3600, total % 3600 / 60);
    if (total >= 60) return fmt::format("{}m{:02}s", total / 60, total % 60);
    return fmt::format("{}s", total);
}

// The ids live compactly (CompactIds); the train and validation parts are views of them.
struct Corpus {
    Vocab vocab;
    CompactIds ids;             // the corpus file
    CompactIds validation_ids;  // the --val file, when there is one
    std::size_t train_size = 0;
    bool separate_validation = false;

    TokenSpan train() const { return ids.span().subspan(0, train_size); }
    TokenSpan validation() const {
        return separate_validation ? validation_ids.span() : ids.span().subspan(train_size, ids.size() - train_size);
    }
};

// With `vocab` given (a resumed run), the text must not hold characters outside it. The files are
// streamed, never held whole, so that a gigabyte of text needs about a gigabyte of memory.
Corpus load_corpus(const TrainOptions& options, const Vocab* vocab) {
    Corpus corpus;
    std::vector<std::filesystem::path> files{options.corpus};
    if (options.validation_file) files.push_back(*options.validation_file);
    corpus.vocab = vocab ? *vocab : Vocab::from_files(files);
    if (corpus.vocab.size() == 0)
        throw Error(fmt::format("{}: the text has no characters; give a longer text", options.corpus.string()));
    if (corpus.vocab.size() < 2)
        throw Error(fmt::format("{}: the text has only one distinct character, {}; there is nothing to learn",
                                options.corpus.string(), describe_code_point(corpus.vocab.code_point_of(0))));
    auto encode = [&](const std::filesystem::path& path) {
        try {
            return CompactIds::encode_file(path, corpus.vocab);
        } catch (const Error& error) {
            if (!vocab) throw;
            throw Error(fmt::format("{}: {} of the checkpoint being resumed", path.string(), error.what()));
        }
    };
    corpus.ids = encode(options.corpus);
    if (options.validation_file) {
        corpus.validation_ids = encode(*options.validation_file);
        corpus.separate_validation = true;
        corpus.train_size = corpus.ids.size();
    } else {
        corpus.train_size = corpus.ids.size() - validation_size(corpus.ids.size(), options.validation_fraction);
    }
    if (corpus.train_size < static_cast<std::size_t>(options.seq_length) + 1)
        throw Error(fmt::format("{}: the training text has {} characters, shorter than one window of --seq {} plus one; "
                                "use a longer text or a smaller --seq",
                                options.corpus.string(), corpus.train_size, options.seq_length));
    return corpus;
}

std::string rng_to_string(const std::mt19937_64& rng) {
    std::ostringstream out;
    out << rng;
    return out.str();
}

std::mt19937_64 rng_from_string(const std::string& text) {
    std::mt19937_64 rng;
    std::istringstream in(text);
    in >> rng;
    if (in.fail()) throw Error("the checkpoint's random generator state is corrupt");
    return rng;
}

// Everything one run of the loop works on; a fresh run and a resumed one differ only in how it starts.
struct Session {
    TrainOptions options;
    Corpus corpus;
    Model<float> model;
    Adam optimizer;
    TrainingState state;
    ModelState<float> carried;
    std::mt19937_64 rng;
};

TrainResult run_loop(Session& session) {
    const TrainOptions& options = session.options;
    auto& model = session.model;
    const auto last_path = options.run_directory / "last.safetensors";
    const auto best_path = options.run_directory / "best.safetensors";
    // Temporaries of checkpoint writes that a killed process never renamed.
    std::error_code ignored;
    for (const auto& entry : std::filesystem::directory_iterator(options.run_directory, ignored)) {
        const std::string name = entry.path().filename().string();
        if (name.starts_with(".last.safetensors.tmp-") || name.starts_with(".best.safetensors.tmp-"))
            std::filesystem::remove(entry.path(), ignored);
    }
    std::ofstream metrics(options.run_directory / "metrics.jsonl", std::ios::app);
    if (!metrics) throw Error(fmt::format("{}: cannot write metrics.jsonl there", options.run_directory.string()));

    LearningRateSchedule schedule;
    schedule.kind = LearningRateSchedule::parse(options.lr_schedule);
    schedule.base = options.learning_rate;
    schedule.warmup_steps = options.warmup_steps;
    schedule.total_steps = options.steps;
    schedule.decay_every = options.lr_decay_every;
    schedule.decay_factor = options.lr_decay_factor;

    BatchStream stream(session.corpus.train(), options.seq_length, options.batch_size);
    stream.set_position(session.state.data_position % stream.windows_per_pass());
    Batch batch;
    const bool has_validation = session.corpus.validation().size() >= 2;
    if (!has_validation) spdlog::warn("no validation text; best.safetensors follows the training loss instead");

    spdlog::info("training {} {}x{} ({} parameters) on {} characters, validating on {}, {} windows of {}x{} per pass",
                 to_string(model.config().cell), model.config().layers, model.config().hidden_size,
                 model.config().parameter_count(), session.corpus.train().size(), session.corpus.validation().size(),
                 stream.windows_per_pass(), options.seq_length, options.batch_size);

    TrainResult result;
    result.last_checkpoint = last_path;
    result.best_checkpoint = best_path;
    const auto start = Clock::now();
    auto last_report = start;
    double training_seconds = 0, loss_since_report = 0;
    std::int64_t steps_since_report = 0, steps_this_run = 0;
    const double characters_per_step = static_cast<double>(options.seq_length) * options.batch_size;

    auto save = [&](const std::filesystem::path& path, bool for_resume) {
        session.state.data_position = stream.position();
        session.state.rng_state = rng_to_string(session.rng);
        session.state.options = options.to_json();
        save_checkpoint(path, model, session.corpus.vocab, session.state, for_resume ? &session.optimizer : nullptr,
                        for_resume ? &session.carried : nullptr);
    };
    auto done = [&]() {
        if (options.steps > 0 && session.state.step >= options.steps) return true;
        if (options.minutes > 0 && seconds_since(start) >= options.minutes * 60) return true;
        if (options.patience > 0 && session.state.evaluations_since_best >= options.patience) return true;
        return stop_requested != 0;
    };
    auto clear_status = [&]() {
        if (options.live_progress) std::fputs("\r\033[K", stderr);
    };
    auto last_status = start;

    while (!done()) {
        const auto step_start = Clock::now();
        stream.next(batch);
        model.set_dropout_generator(&session.rng);
        const double learning_rate = schedule.at(session.state.step + 1);
        const double loss = train_step(model, session.optimizer, batch, session.carried, options.clip, learning_rate);
        if (!std::isfinite(loss))
            throw Error(fmt::format("training diverged: the loss became {} at step {}; {} keeps the last good checkpoint; "
                                    "try a lower --lr or --clip",
                                    loss, session.state.step + 1, options.run_directory.string()));
        ++session.state.step;
        ++steps_this_run;
        training_seconds += seconds_since(step_start);
        loss_since_report += loss;
        ++steps_since_report;
        result.last_train_loss = loss;
        result.chars_per_second = characters_per_step * static_cast<double>(steps_this_run) / training_seconds;

        const bool evaluate_now = session.state.step % options.eval_every == 0 || done();
        if (options.live_progress && !evaluate_now && seconds_since(last_status) > 0.1) {
            const double elapsed = seconds_since(start);
            std::string status = fmt::format("\r\033[Kstep {}{} | train {:.4f} | {:.1f}k chars/s | {}", session.state.step,
                                             options.steps > 0 ? fmt::format("/{}", options.steps) : "",
                                             loss_since_report / static_cast<double>(steps_since_report),
                                             result.chars_per_second / 1000, format_duration(elapsed));
            if (options.steps > 0)
                status += fmt::format(" | ETA {}", format_duration(static_cast<double>(options.steps - session.state.step) *
                                                                   elapsed / static_cast<double>(steps_this_run)));
            std::fputs(status.c_str(), stderr);
            std::fflush(stderr);
            last_status = Clock::now();
        }
        if (!evaluate_now && (options.live_progress || seconds_since(last_report) < 10)) continue;
        clear_status();

        const double train_loss = loss_since_report / static_cast<double>(steps_since_report);
        std::string line = fmt::format("step {}{} | train {:.4f}", session.state.step,
                                       options.steps > 0 ? fmt::format("/{}", options.steps) : "", train_loss);
        nlohmann::json record = {{"step", session.state.step}, {"train_loss", train_loss},
                                 {"learning_rate", learning_rate}};
        if (evaluate_now) {
            model.set_dropout_generator(nullptr);
            const double validation_loss =
                has_validation ? evaluate_loss(model, session.corpus.validation(), options.seq_length, options.batch_size).mean()
                               : train_loss;
            line += fmt::format(" | val {:.4f}", validation_loss);
            record["validation_loss"] = has_validation ? nlohmann::json(validation_loss) : nlohmann::json(nullptr);
            if (validation_loss < session.state.best_validation_loss) {
                session.state.best_validation_loss = validation_loss;
                session.state.evaluations_since_best = 0;
                save(best_path, false);
                line += " (best)";
            } else {
                ++session.state.evaluations_since_best;
            }
            save(last_path, true);
        }
        const double elapsed = seconds_since(start);
        line += fmt::format(" | lr {:.2e} | {:.1f}k chars/s | {}", learning_rate, result.chars_per_second / 1000,
                            format_duration(elapsed));
        if (options.steps > 0 && steps_this_run > 0) {
            const double remaining = static_cast<double>(options.steps - session.state.step) * elapsed / static_cast<double>(steps_this_run);
            line += fmt::format(" | ETA {}", format_duration(options.minutes > 0 ? std::min(remaining, options.minutes * 60 - elapsed) : remaining));
        }
        spdlog::info(line);
        record["chars_per_second"] = result.chars_per_second;
        record["elapsed_seconds"] = elapsed;
        metrics << record.dump() << '\n' << std::flush;
        loss_since_report = 0;
        steps_since_report = 0;
        last_report = Clock::now();
    }
    clear_status();
    if (options.patience > 0 && session.state.evaluations_since_best >= options.patience) {
        result.stopped_early = true;
        spdlog::info("stopped early: no better validation loss in {} evaluations", options.patience);
    }
    if (stop_requested) {
        save(last_path, true);
        result.interrupted = true;
        spdlog::warn("stopped at step {}; continue with: charlm train --resume {}", session.state.step,
                     options.run_directory.string());
    }
    result.steps = session.state.step;
    result.best_validation_loss = session.state.best_validation_loss;
    return result;
}

void validate(const TrainOptions& options) {
    auto positive = [](const char* name, double value) {
        if (!(value > 0)) throw Error(fmt::format("{} must be positive, not {}", name, value));
    };
    positive("--seq", options.seq_length);
    positive("--batch", options.batch_size);
    positive("--lr", options.learning_rate);
    positive("--eval-every", options.eval_every);
    positive("--lr-decay-every", static_cast<double>(options.lr_decay_every));
    const auto schedule = LearningRateSchedule::parse(options.lr_schedule);
    if (schedule == LearningRateSchedule::Kind::cosine && options.steps == 0)
        throw Error("--lr-schedule cosine decays over the run's --steps; give --steps");
    if (options.warmup_steps < 0 || options.patience < 0) throw Error("--warmup and --patience must not be negative");
    if (!(options.lr_decay_factor > 0 && options.lr_decay_factor <= 1)) throw Error("--lr-decay must be in (0, 1]");
    if (!(options.clip >= 0)) throw Error("--clip must be zero (off) or positive");
    if (!(options.validation_fraction >= 0 && options.validation_fraction < 1))
        throw Error("--val-fraction must be at least 0 and below 1");
    if (options.steps < 0 || !(options.minutes >= 0)) throw Error("--steps and --minutes must not be negative");
    if (static_cast<double>(options.seq_length) * options.batch_size * std::max(options.model.hidden_size, 1) > 2e9)
        throw Error("--seq x --batch x --hidden is too large to fit in memory; make one of them smaller");
}

}  // namespace

nlohmann::json TrainOptions::to_json() const {
    nlohmann::json json = {
        {"corpus", std::filesystem::absolute(corpus).string()},
        {"run_directory", run_directory.string()},
        {"model", model.to_json()},
        {"seq_length", seq_length},
        {"batch_size", batch_size},
        {"learning_rate", learning_rate},
        {"lr_schedule", lr_schedule},
        {"warmup_steps", warmup_steps},
        {"lr_decay_every", lr_decay_every},
        {"lr_decay_factor", lr_decay_factor},
        {"patience", patience},
        {"clip", clip},
        {"validation_fraction", validation_fraction},
        {"steps", steps},
        {"minutes", minutes},
        {"eval_every", eval_every},
        {"seed", seed},
    };
    json["validation_file"] = validation_file ? nlohmann::json(std::filesystem::absolute(*validation_file).string()) : nlohmann::json(nullptr);
    return json;
}

TrainOptions TrainOptions::from_json(const nlohmann::json& json) {
    TrainOptions options;
    try {
        options.corpus = json.at("corpus").get<std::string>();
        if (!json.at("validation_file").is_null()) options.validation_file = json.at("validation_file").get<std::string>();
        options.run_directory = json.at("run_directory").get<std::string>();
        options.model = ModelConfig::from_json(json.at("model"));
        options.seq_length = integer_value<int>(json.at("seq_length"));
        options.batch_size = integer_value<int>(json.at("batch_size"));
        options.learning_rate = json.at("learning_rate").get<double>();
        options.clip = json.at("clip").get<double>();
        options.lr_schedule = json.at("lr_schedule").get<std::string>();
        options.warmup_steps = integer_value<std::int64_t>(json.at("warmup_steps"));
        options.lr_decay_every = integer_value<std::int64_t>(json.at("lr_decay_every"));
        options.lr_decay_factor = json.at("lr_decay_factor").get<double>();
        options.patience = integer_value<int>(json.at("patience"));
        options.validation_fraction = json.at("validation_fraction").get<double>();
        options.steps = integer_value<std::int64_t>(json.at("steps"));
        options.minutes = json.at("minutes").get<double>();
        options.eval_every = integer_value<int>(json.at("eval_every"));
        options.seed = integer_value<std::uint64_t>(json.at("seed"));
    } catch (const nlohmann::json::exception& error) {
        throw Error(fmt::format("the checkpoint's training options are incomplete ({})", error.what()));
    }
    return options;
}

TrainResult train(const TrainOptions& options_in) {
    TrainOptions options = options_in;
    validate(options);
    Corpus corpus = load_corpus(options, nullptr);
    options.model.vocab_size = static_cast<int>(corpus.vocab.size());
    options.model.validate();
    std::error_code error;
    if (!options.overwrite && std::filesystem::exists(options.run_directory / "last.safetensors", error))
        throw Error(fmt::format("{0} already holds a run; continue it with --resume {0}, start over with --force, "
                                "or choose another directory with --out",
                                options.run_directory.string()));
    std::filesystem::create_directories(options.run_directory, error);
    if (error) throw Error(fmt::format("{}: cannot create the run directory ({})", options.run_directory.string(), error.message()));

    Session session{options, std::move(corpus), Model<float>(options.model), {}, {}, {}, std::mt19937_64(options.seed)};
    session.model.initialize(session.rng);
    session.optimizer = Adam(session.model.parameters());
    session.carried = session.model.initial_state(options.batch_size);
    // A fresh run starts a fresh metrics log; checkpoints are replaced only when the new ones are written.
    std::filesystem::remove(options.run_directory / "metrics.jsonl", error);
    return run_loop(session);
}

TrainResult resume_training(const std::filesystem::path& run_directory, std::int64_t steps, double minutes,
                            bool live_progress) {
    const auto last_path = run_directory / "last.safetensors";
    Checkpoint checkpoint = load_checkpoint(last_path);
    if (!checkpoint.optimizer || !checkpoint.carried_state)
        throw Error(fmt::format("{}: has no optimizer state to resume from; it was not written by 'charlm train'", last_path.string()));
    TrainOptions options = TrainOptions::from_json(checkpoint.training.options);
    options.run_directory = run_directory;
    if (steps > 0) options.steps = steps;
    if (minutes > 0) options.minutes = minutes;
    options.live_progress = live_progress;
    validate(options);
    Corpus corpus = load_corpus(options, &checkpoint.vocab);
    if (checkpoint.carried_state->hidden.front().rows() != options.batch_size)
        throw Error(fmt::format("{}: carried state does not match the run's batch size", last_path.string()));
    Session session{options,
                    std::move(corpus),
                    std::move(*checkpoint.model),
                    std::move(*checkpoint.optimizer),
                    checkpoint.training,
                    std::move(*checkpoint.carried_state),
                    rng_from_string(checkpoint.training.rng_state)};
    spdlog::info("resuming {} at step {}", run_directory.string(), session.state.step);
    if (options.steps > 0 && session.state.step >= options.steps)
        spdlog::warn("the run is already at step {}, not below --steps {}; nothing to do", session.state.step, options.steps);
    return run_loop(session);
}

double train_step(Model<float>& model, Adam& optimizer, const Batch& batch, ModelState<float>& carried, double clip,
                  double learning_rate) {
    if (batch.starts_streams) carried.reset();
    model.zero_gradients();
    model.forward(batch.inputs, batch.seq_length, batch.batch_size, carried);
    const double loss = model.loss(batch.targets).mean();
    if (!std::isfinite(loss)) return loss;
    model.backward();
    clip_gradient_norm(model.parameters(), clip);
    optimizer.step(model.parameters(), learning_rate);
    return loss;
}

void request_training_stop() { stop_requested = 1; }

}  // namespace charlm
