// The training loop, its validation and checkpoints, and resuming a run where it stopped.
#include "charlm/train.hpp"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <omp.h>
#include <spdlog/spdlog.h>
#include <utf8.h>

#include "charlm/atomic_file.hpp"
#include "charlm/batches.hpp"
#include "charlm/checkpoint.hpp"
#include "charlm/error.hpp"
#include "charlm/eval.hpp"
#include "charlm/json_integer.hpp"
#include "charlm/optim.hpp"
#include "charlm/run_lock.hpp"
#include "charlm/terminal.hpp"

namespace charlm {

namespace {

volatile std::sig_atomic_t stop_requested = 0;
volatile std::sig_atomic_t loop_running = 0;  // a stop request is heard only while the loop runs

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
    // A fresh run in a directory that may hold an earlier run (--force): the earlier files stay as
    // they are until this run's first last.safetensors, which takes the directory over.
    bool fresh = false;
};

const char* to_string(StopReason reason) {
    switch (reason) {
        case StopReason::steps: return "steps";
        case StopReason::minutes: return "minutes";
        case StopReason::patience: return "patience";
        case StopReason::interrupted: return "interrupted";
    }
    return "?";
}

TrainResult run_loop(Session& session) {
    const TrainOptions& options = session.options;
    auto& model = session.model;
    const auto last_path = options.run_directory / "last.safetensors";
    const auto best_path = options.run_directory / "best.safetensors";
    // Temporaries of checkpoint writes that a killed process never renamed. The run directory's lock
    // is held, so none of them belongs to a live process.
    std::error_code ignored;
    for (const auto& entry : std::filesystem::directory_iterator(options.run_directory, ignored)) {
        const std::string name = entry.path().filename().string();
        for (const char* kept : {"last.safetensors", "best.safetensors", "corpus.txt", "validation.txt"})
            if (name.starts_with(fmt::format(".{}.tmp-", kept))) std::filesystem::remove(entry.path(), ignored);
    }
    // metrics.jsonl: a resumed run appends; a fresh one keeps its lines until it takes the directory over.
    const auto metrics_path = options.run_directory / "metrics.jsonl";
    std::ofstream metrics;
    std::string pending_metrics;
    auto open_metrics = [&](std::ios::openmode mode) {
        metrics.open(metrics_path, mode);
        if (!metrics) throw Error(fmt::format("{}: cannot write metrics.jsonl there", options.run_directory.string()));
    };
    if (!session.fresh) open_metrics(std::ios::app);

    BatchStream stream(session.corpus.train(), options.seq_length, options.batch_size);
    stream.set_position(session.state.data_position % stream.windows_per_pass());
    Batch batch;
    const bool has_validation = session.corpus.validation().size() >= 2;
    if (!has_validation)
        spdlog::warn("no validation text ({} has {} characters): no best.safetensors, and the summary shows the training loss",
                     options.validation_file ? options.validation_file->string()
                                             : fmt::format("--val-fraction {} of the corpus", options.validation_fraction),
                     session.corpus.validation().size());
    const LearningRateSchedule& schedule = options.learning_rate_schedule;
    if (options.steps > 0 && schedule.warmup_steps > options.steps)
        spdlog::warn("--warmup {} is longer than the run's {} steps: the learning rate never reaches --lr {}",
                     schedule.warmup_steps, options.steps, schedule.peak_learning_rate);
    if (model.config().dropout > 0 && model.config().layers == 1)
        spdlog::warn("--dropout {} does nothing with one layer: it drops units between layers, as PyTorch's nn.LSTM "
                     "does; use --layers 2 or more", model.config().dropout);

    spdlog::info("training {} {}x{} ({} parameters) on {} characters, validating on {}, {} windows of {}x{} per pass",
                 to_string(model.config().cell), model.config().layers, model.config().hidden_size,
                 model.config().parameter_count(), session.corpus.train().size(), session.corpus.validation().size(),
                 stream.windows_per_pass(), options.seq_length, options.batch_size);

    TrainResult result;
    result.validated = has_validation;
    result.last_checkpoint = last_path;
    if (has_validation) result.best_checkpoint = best_path;
    const auto start = Clock::now();
    auto last_report = start;
    double training_seconds = 0, loss_since_report = 0;
    std::int64_t steps_since_report = 0, steps_this_run = 0;
    const double characters_per_step = static_cast<double>(options.seq_length) * options.batch_size;
    // The state last.safetensors holds: the step it was saved at (or -1: nothing of this run yet).
    std::int64_t saved_step = session.state.step > 0 ? session.state.step : -1;
    // Past this the loss has exploded (char-rnn stops past three times its first loss): three times
    // the loss of a uniform guess, ln V, or of a fresh run's first step where that is higher. A resumed
    // run's first loss says nothing: it may already be low, or already have climbed.
    const double uniform_loss = std::log(static_cast<double>(session.corpus.vocab.size()));
    double exploded_loss = 3 * uniform_loss;

    auto save = [&](const std::filesystem::path& path, bool for_resume) {
        session.state.data_position = stream.position();
        session.state.rng_state = rng_to_string(session.rng);
        session.state.options = options.to_json();
        save_checkpoint(path, model, session.corpus.vocab, session.state, for_resume ? &session.optimizer : nullptr,
                        for_resume ? &session.carried : nullptr);
        if (!for_resume) return;
        saved_step = session.state.step;
        if (session.fresh) {  // this run's first last.safetensors: the directory is its own from now on
            session.fresh = false;
            if (!has_validation) std::filesystem::remove(best_path, ignored);  // an earlier run's; none of this one's
            write_file_atomically(metrics_path, pending_metrics);
            open_metrics(std::ios::app);
        }
    };
    auto log_metrics = [&](const nlohmann::json& record) {
        if (session.fresh) pending_metrics += record.dump() + '\n';
        else metrics << record.dump() << '\n' << std::flush;
    };
    auto stop_reason = [&]() -> std::optional<StopReason> {
        if (stop_requested) return StopReason::interrupted;
        if (options.steps > 0 && session.state.step >= options.steps) return StopReason::steps;
        if (options.minutes > 0 && seconds_since(start) >= options.minutes * 60) return StopReason::minutes;
        if (options.patience > 0 && session.state.evaluations_since_best >= options.patience) return StopReason::patience;
        return std::nullopt;
    };
    auto diverged = [&](const std::string& what, std::int64_t step) {
        const std::string kept =
            saved_step >= 0 ? fmt::format("{} keeps step {}; resume it with a lower rate: charlm train --resume {} --lr {:g}",
                                          last_path.string(), saved_step, quoted_for_shell(options.run_directory.string()),
                                          schedule.peak_learning_rate / 10)
                            : fmt::format("no checkpoint of this run was saved yet; start again with a lower --lr than {:g}",
                                          schedule.peak_learning_rate);
        return Error(fmt::format("training diverged: {} at step {}; {}", what, step, kept));
    };
    auto clear_status = [&]() {
        if (options.live_progress) std::fputs("\r\033[K", stderr);
    };
    auto last_status = start;

    loop_running = 1;  // from here a stop signal is heard, and answered with a save
    struct LoopEnd {
        ~LoopEnd() { loop_running = 0; }
    } loop_end;
    // Decided once per step, so that the step that ends the run is also the one validated and saved.
    std::optional<StopReason> stop = stop_reason();
    if (stop == StopReason::patience)
        spdlog::warn("the run stopped early by --patience {}: it had no better validation loss in {} validations; "
                     "give a larger --patience to go on",
                     options.patience, session.state.evaluations_since_best);
    while (!stop) {
        const auto step_start = Clock::now();
        stream.next(batch);
        model.set_dropout_generator(&session.rng);
        const double learning_rate = schedule.at(session.state.step + 1, options.steps);
        const StepOutcome outcome = train_step(model, session.optimizer, batch, session.carried, options.clip, learning_rate);
        const double loss = outcome.loss;
        auto shown = [](double value) { return std::isnan(value) ? std::string("NaN") : fmt::format("{}", value); };
        const std::int64_t step = session.state.step + 1;
        if (!std::isfinite(loss)) throw diverged(fmt::format("the loss became {}", shown(loss)), step);
        if (!std::isfinite(outcome.gradient_norm))
            throw diverged(fmt::format("the gradient became {}", shown(outcome.gradient_norm)), step);
        if (!outcome.finite) throw diverged(fmt::format("the update at learning rate {:g} made a weight infinite", learning_rate), step);
        if (steps_this_run == 0 && session.fresh) exploded_loss = 3 * std::max(loss, uniform_loss);
        if (loss > exploded_loss)
            throw diverged(fmt::format("the loss rose to {:.4g} nats/char, past {:.4g} (three times where it started)", loss,
                                       exploded_loss),
                           step);
        ++session.state.step;
        ++steps_this_run;
        training_seconds += seconds_since(step_start);
        loss_since_report += loss;
        ++steps_since_report;
        result.last_train_loss = loss;
        result.chars_per_second = characters_per_step * static_cast<double>(steps_this_run) / training_seconds;

        stop = stop_reason();
        // Ctrl-C saves at once, without a validation pass; every other end validates and saves.
        const bool evaluate_now = session.state.step % options.eval_every == 0 || (stop && *stop != StopReason::interrupted);
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
            if (has_validation) {
                model.set_dropout_generator(nullptr);
                const double validation_loss =
                    evaluate_loss(model, session.corpus.validation(), options.seq_length, options.batch_size).mean();
                // The update of the step just taken is judged here too: its weights are what would be saved.
                if (!std::isfinite(validation_loss) || validation_loss > exploded_loss)
                    throw diverged(fmt::format("the validation loss became {} nats/char, past {:.4g} (three times where "
                                               "training started)",
                                               fmt::format("{:.4g}", validation_loss), exploded_loss),
                                   session.state.step);
                line += fmt::format(" | val {:.4f}", validation_loss);
                record["validation_loss"] = validation_loss;
                const bool best = validation_loss < session.state.best_validation_loss;
                if (best) {
                    session.state.best_validation_loss = validation_loss;
                    session.state.evaluations_since_best = 0;
                    line += " (best)";
                } else {
                    ++session.state.evaluations_since_best;
                }
                // last.safetensors first: should best's write fail (a full disk), a resume still knows the
                // best loss reached, and never replaces a better best.safetensors with a worse one.
                save(last_path, true);
                if (best) save(best_path, false);
            } else {
                record["validation_loss"] = nullptr;
                save(last_path, true);
            }
            stop = stop ? stop : stop_reason();  // patience is known only now
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
        log_metrics(record);
        loss_since_report = 0;
        steps_since_report = 0;
        last_report = Clock::now();
    }
    clear_status();
    if (saved_step != session.state.step) save(last_path, true);  // stopped between validations (Ctrl-C)
    result.stopped_by = *stop;
    result.patience = options.patience;
    if (*stop == StopReason::patience)
        spdlog::info("stopped early: no better validation loss in {} validations", options.patience);
    if (*stop == StopReason::interrupted)
        spdlog::warn("stopped at step {}; continue with: charlm train --resume {}", session.state.step,
                     quoted_for_shell(options.run_directory.string()));
    result.steps = session.state.step;
    result.best_validation_loss = session.state.best_validation_loss;
    return result;
}

// Training keeps about seven floats per parameter besides the activations: the weight, its gradient,
// Adam's two moments, a packed copy of the recurrent weights, and the bytes of a checkpoint being
// written (weights and moments). A model that would not fit is refused before a byte is allocated,
// rather than killed by the kernel part way.
void check_model_fits_in_memory(ModelConfig model) {
    model.vocab_size = std::max(model.vocab_size, 256);  // a fresh run's is not known yet: a typical text's
    const double needed = 28.0 * static_cast<double>(model.parameter_count());
    const double memory = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGE_SIZE));
    if (memory > 0 && needed > 0.9 * memory)
        throw UsageError(fmt::format("a {}x{} model needs about {:.0f} GB for its parameters, gradients and optimizer "
                                     "state, and this machine has {:.0f} GB; make --hidden or --layers smaller",
                                     model.layers, model.hidden_size, needed / 1e9, memory / 1e9));
}

void validate(const TrainOptions& options) {
    auto positive = [](const char* name, double value) {
        if (!(value > 0)) throw UsageError(fmt::format("{} must be positive, not {}", name, value));
    };
    positive("--seq", options.seq_length);
    positive("--batch", options.batch_size);
    const LearningRateSchedule& schedule = options.learning_rate_schedule;
    positive("--lr", schedule.peak_learning_rate);
    if (!std::isfinite(schedule.peak_learning_rate) || !std::isfinite(options.clip) || !std::isfinite(options.minutes))
        throw UsageError("--lr, --clip and --minutes must be finite numbers");
    positive("--eval-every", options.eval_every);
    positive("--lr-decay-every", static_cast<double>(schedule.decay_every_steps));
    try {
        ModelConfig model = options.model;
        model.vocab_size = std::max(model.vocab_size, 2);  // a fresh run's comes from the corpus, later
        model.validate();
    } catch (const UsageError&) {
        throw;
    } catch (const Error& error) {
        throw UsageError(error.what());  // a bad --hidden or --cell: the user's options
    }
    if (schedule.kind == LearningRateSchedule::Kind::cosine && options.steps == 0)
        throw UsageError("--lr-schedule cosine decays over the run's --steps; give --steps");
    if (schedule.warmup_steps < 0) throw UsageError(fmt::format("--warmup must not be negative, not {}", schedule.warmup_steps));
    if (options.patience < 0) throw UsageError(fmt::format("--patience must not be negative, not {}", options.patience));
    if (!(schedule.decay_factor > 0 && schedule.decay_factor <= 1)) throw UsageError("--lr-decay must be in (0, 1]");
    if (!(options.clip >= 0)) throw UsageError("--clip must be zero (off) or positive");
    if (!(options.validation_fraction >= 0 && options.validation_fraction < 1))
        throw UsageError("--val-fraction must be at least 0 and below 1");
    if (options.steps < 0 || !(options.minutes >= 0)) throw UsageError("--steps and --minutes must not be negative");
    // Checkpoints record these paths in JSON, which holds UTF-8 only: refused now, not at the first save.
    for (const auto* path : {&options.corpus, &options.run_directory, options.validation_file ? &*options.validation_file : nullptr}) {
        const std::string name = path ? path->string() : std::string();
        if (!utf8::is_valid(name.begin(), name.end()))
            throw UsageError(fmt::format("{}: the path is not UTF-8, and a checkpoint records it; rename it", displayable(name)));
    }
    if (static_cast<double>(options.seq_length) * options.batch_size * std::max(options.model.hidden_size, 1) > 2e9)
        throw UsageError("--seq x --batch x --hidden is too large to fit in memory; make one of them smaller");
    check_model_fits_in_memory(options.model);
}

// --patience stops on the validation loss: without validation text it would never stop, or stop on nothing.
void check_patience_has_validation(const TrainOptions& options, const Corpus& corpus) {
    if (options.patience > 0 && corpus.validation().size() < 2)
        throw UsageError(fmt::format("--patience {} waits for a better validation loss, and this run has no validation text; "
                                     "give --val-fraction above 0 or --val FILE, or leave --patience out",
                                     options.patience));
}

// The file a resumed run reads for its corpus (or validation text): where it was, or where the user
// says it moved. Its size and SHA-256 must be the ones recorded, so neither an edited text nor a
// path in a crafted checkpoint feeds the run anything but the text it started on.
std::filesystem::path locate_recorded_file(const char* what, const char* flag, const std::filesystem::path& recorded_path,
                                           const FileFingerprint& recorded, const std::optional<std::filesystem::path>& moved_to) {
    const std::filesystem::path path = moved_to.value_or(recorded_path);
    const std::string hint = moved_to ? std::string()
                                      : fmt::format("; if it moved, give its new place with --resume RUN_DIR {} PATH", flag);
    std::error_code error;
    if (!std::filesystem::exists(path, error))
        throw Error(fmt::format("{}: the run's {} is not there{}", path.string(), what, hint));
    if (recorded.sha256.empty()) {
        spdlog::warn("{}: the checkpoint predates corpus hashes, so the {} cannot be checked against the one the run started on",
                     path.string(), what);
        return path;
    }
    const FileFingerprint now = fingerprint_file(path);
    if (now != recorded)
        throw Error(fmt::format("{}: not the {} the run started on ({} bytes, SHA-256 {:.12}..., where the run recorded {} "
                                "bytes, {:.12}...){}",
                                path.string(), what, now.size_bytes, now.sha256, recorded.size_bytes, recorded.sha256, hint));
    return path;
}

// How each training option behaves on --resume: given again, it takes effect, or it must match the checkpoint.
struct OptionOnResume {
    const char* flag;
    const char* json_pointer;  // into TrainOptions::to_json()
    bool may_change;
};
constexpr OptionOnResume kOptionsOnResume[] = {
    {"--lr", "/learning_rate", true},         {"--lr-schedule", "/lr_schedule", true},
    {"--warmup", "/warmup_steps", true},      {"--lr-decay-every", "/lr_decay_every", true},
    {"--lr-decay", "/lr_decay_factor", true}, {"--clip", "/clip", true},
    {"--steps", "/steps", true},              {"--minutes", "/minutes", true},
    {"--eval-every", "/eval_every", true},    {"--patience", "/patience", true},
    {"--dropout", "/model/dropout", true},    {"--cell", "/model/cell", false},
    {"--layers", "/model/layers", false},     {"--hidden", "/model/hidden_size", false},
    {"--embed", "/model/embed_size", false},  {"--seq", "/seq_length", false},
    {"--batch", "/batch_size", false},        {"--val-fraction", "/validation_fraction", false},
    {"--seed", "/seed", false},
};

// The stored options with the request's given ones laid over them, each change described in
// `changes`; refuses any option that the checkpoint fixes.
nlohmann::json options_for_resume(nlohmann::json stored, const ResumeRequest& request, std::vector<std::string>& changes) {
    const nlohmann::json requested = request.options.to_json();
    for (const std::string& flag : request.given) {
        const auto* option = std::find_if(std::begin(kOptionsOnResume), std::end(kOptionsOnResume),
                                          [&](const OptionOnResume& candidate) { return flag == candidate.flag; });
        if (option == std::end(kOptionsOnResume)) throw UsageError(fmt::format("{} cannot be given with --resume", flag));
        const nlohmann::json::json_pointer pointer(option->json_pointer);
        const nlohmann::json before = stored.contains(pointer) ? stored.at(pointer) : nlohmann::json(nullptr);
        const nlohmann::json& after = requested.at(pointer);
        if (before == after) continue;
        if (!option->may_change)
            throw UsageError(fmt::format("{} {} differs from the run's {}, which its checkpoint fixes; leave {} out to "
                                         "resume, or start a new run with --out",
                                         flag, after.dump(), before.dump(), flag));
        changes.push_back(fmt::format("{} {} (was {})", flag, after.dump(), before.dump()));
        stored[pointer] = after;
    }
    return stored;
}

}  // namespace

nlohmann::json TrainOptions::to_json() const {
    nlohmann::json json = {
        {"corpus", corpus.empty() ? std::string() : std::filesystem::absolute(corpus).string()},
        {"run_directory", run_directory.string()},
        {"model", model.to_json()},
        {"seq_length", seq_length},
        {"batch_size", batch_size},
        {"learning_rate", learning_rate_schedule.peak_learning_rate},
        {"lr_schedule", LearningRateSchedule::name(learning_rate_schedule.kind)},
        {"warmup_steps", learning_rate_schedule.warmup_steps},
        {"lr_decay_every", learning_rate_schedule.decay_every_steps},
        {"lr_decay_factor", learning_rate_schedule.decay_factor},
        {"patience", patience},
        {"clip", clip},
        {"validation_fraction", validation_fraction},
        {"steps", steps},
        {"minutes", minutes},
        {"eval_every", eval_every},
        {"seed", seed},
        {"corpus_size_bytes", corpus_fingerprint.size_bytes},
        {"corpus_sha256", corpus_fingerprint.sha256},
        {"train_characters", train_characters},
        {"threads", threads},
    };
    json["validation_file"] = validation_file ? nlohmann::json(std::filesystem::absolute(*validation_file).string()) : nlohmann::json(nullptr);
    json["validation_file_size_bytes"] = validation_fingerprint ? nlohmann::json(validation_fingerprint->size_bytes) : nlohmann::json(nullptr);
    json["validation_file_sha256"] = validation_fingerprint ? nlohmann::json(validation_fingerprint->sha256) : nlohmann::json(nullptr);
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
        LearningRateSchedule& schedule = options.learning_rate_schedule;
        schedule.peak_learning_rate = json.at("learning_rate").get<double>();
        options.clip = json.at("clip").get<double>();
        const std::string schedule_name = json.at("lr_schedule").get<std::string>();
        try {
            schedule.kind = LearningRateSchedule::parse(schedule_name);
        } catch (const UsageError&) {  // the file's fault, not the user's options
            throw Error(fmt::format("the checkpoint's training options name an unknown learning-rate schedule, '{}'", schedule_name));
        }
        schedule.warmup_steps = integer_value<std::int64_t>(json.at("warmup_steps"));
        schedule.decay_every_steps = integer_value<std::int64_t>(json.at("lr_decay_every"));
        schedule.decay_factor = json.at("lr_decay_factor").get<double>();
        options.patience = integer_value<int>(json.at("patience"));
        options.validation_fraction = json.at("validation_fraction").get<double>();
        options.steps = integer_value<std::int64_t>(json.at("steps"));
        options.minutes = json.at("minutes").get<double>();
        options.eval_every = integer_value<int>(json.at("eval_every"));
        options.seed = integer_value<std::uint64_t>(json.at("seed"));
        options.threads = json.contains("threads") ? integer_value<int>(json.at("threads")) : 0;
        // Absent from checkpoints written before the corpus was fingerprinted.
        if (json.contains("corpus_sha256")) {
            options.corpus_fingerprint = {integer_value<std::uint64_t>(json.at("corpus_size_bytes")),
                                          json.at("corpus_sha256").get<std::string>()};
            options.train_characters = integer_value<std::uint64_t>(json.at("train_characters"));
            if (options.validation_file && !json.at("validation_file_sha256").is_null())
                options.validation_fingerprint = FileFingerprint{integer_value<std::uint64_t>(json.at("validation_file_size_bytes")),
                                                                 json.at("validation_file_sha256").get<std::string>()};
        }
    } catch (const nlohmann::json::exception& error) {
        throw Error(fmt::format("the checkpoint's training options are incomplete ({})", error.what()));
    }
    return options;
}

TrainResult train(const TrainOptions& options_in) {
    TrainOptions options = options_in;
    validate(options);
    // A text that can be read again is checked before the run directory is touched; a pipe is read
    // once, into a copy in the run directory, which becomes the run's corpus once it proves good.
    const bool copy_corpus = can_be_read_only_once(options.corpus);
    const bool copy_validation = options.validation_file && can_be_read_only_once(*options.validation_file);
    std::optional<Corpus> corpus;
    if (!copy_corpus && !copy_validation) corpus = load_corpus(options, nullptr);

    std::error_code error;
    std::filesystem::create_directories(options.run_directory, error);
    if (error) throw Error(fmt::format("{}: cannot create the run directory ({})", options.run_directory.string(), error.message()));
    const RunLock lock(options.run_directory);
    if (!options.overwrite && std::filesystem::exists(options.run_directory / "last.safetensors", error))
        throw UsageError(fmt::format("{0} already holds a run; continue it with --resume {0}, start over with --force, "
                                     "or choose another directory with --out",
                                     quoted_for_shell(options.run_directory.string())));
    std::optional<AtomicFile> corpus_copy, validation_copy;
    std::vector<std::pair<std::string, std::string>> copied;  // (temporary path, what it copies), for messages
    auto copy = [&](std::optional<AtomicFile>& file, std::filesystem::path& path, const char* name) {
        const std::string source = path == "-" ? std::string("standard input") : path.string();
        file.emplace(options.run_directory / name);
        spool_to_file(path, *file);
        path = file->temporary_path();
        copied.emplace_back(path.string(), source);
    };
    if (copy_corpus && copy_validation && options.corpus == "-" && *options.validation_file == "-")
        throw UsageError("CORPUS and --val cannot both read standard input");
    if (copy_corpus) copy(corpus_copy, options.corpus, "corpus.txt");
    if (copy_validation) copy(validation_copy, *options.validation_file, "validation.txt");
    if (!corpus) {
        try {
            corpus = load_corpus(options, nullptr);
        } catch (const Error& error) {  // name what the user gave, not the copy's temporary name
            std::string message = error.what();
            for (const auto& [temporary, source] : copied)
                for (std::size_t at; (at = message.find(temporary)) != std::string::npos;) message.replace(at, temporary.size(), source);
            throw Error(message);
        }
    }
    check_patience_has_validation(options, *corpus);

    options.corpus_fingerprint = fingerprint_file(options.corpus);
    if (options.validation_file) options.validation_fingerprint = fingerprint_file(*options.validation_file);
    options.train_characters = corpus->train_size;
    for (const auto& [temporary, source] : copied)
        spdlog::info("copied {} into the run directory: the run reads its text more than once", source);
    if (corpus_copy) {
        corpus_copy->commit();
        options.corpus = options.run_directory / "corpus.txt";
    }
    if (validation_copy) {
        validation_copy->commit();
        options.validation_file = options.run_directory / "validation.txt";
    }
    options.model.vocab_size = static_cast<int>(corpus->vocab.size());
    options.model.validate();
    options.threads = omp_get_max_threads();

    Session session{options, std::move(*corpus), Model<float>(options.model), {}, {}, {}, std::mt19937_64(options.seed)};
    session.model.initialize(session.rng);
    session.optimizer = Adam(session.model.parameters());
    session.carried = session.model.initial_state(options.batch_size);
    session.fresh = true;
    return run_loop(session);
}

TrainResult resume_training(const ResumeRequest& request) {
    const auto& run_directory = request.run_directory;
    const auto last_path = run_directory / "last.safetensors";
    std::error_code error;
    if (std::filesystem::is_regular_file(run_directory, error))
        throw UsageError(fmt::format("{}: --resume takes the run's directory, not a file in it: --resume {}", run_directory.string(),
                                     quoted_for_shell(run_directory.parent_path().empty() ? "." : run_directory.parent_path().string())));
    if (!std::filesystem::is_directory(run_directory, error))
        throw Error(fmt::format("{}: no such run directory; give the --out of an earlier 'charlm train'", run_directory.string()));
    const RunLock lock(run_directory);
    Checkpoint checkpoint = load_checkpoint(last_path);
    if (!checkpoint.optimizer || !checkpoint.carried_state)
        throw Error(fmt::format("{}: has no optimizer state to resume from; it was not written by 'charlm train'", last_path.string()));
    std::vector<std::string> changes;
    TrainOptions options = TrainOptions::from_json(options_for_resume(checkpoint.training.options, request, changes));
    // The model is the checkpoint's: its tensors' shapes, not what its options JSON says, size the run.
    const double dropout = options.model.dropout;
    options.model = checkpoint.config;
    options.model.dropout = dropout;
    options.run_directory = run_directory;
    options.live_progress = request.live_progress;
    const int threads_before = options.threads;
    options.threads = omp_get_max_threads();
    validate(options);
    if (request.validation_file && !options.validation_file)
        throw UsageError("--val names where a moved validation file is now, and this run validates on part of its corpus; leave --val out");
    options.corpus = locate_recorded_file("corpus", "--corpus", options.corpus, options.corpus_fingerprint, request.corpus);
    if (options.validation_file)
        options.validation_file = locate_recorded_file("validation file", "--val", *options.validation_file,
                                                       options.validation_fingerprint.value_or(FileFingerprint{}),
                                                       request.validation_file);
    Corpus corpus = load_corpus(options, &checkpoint.vocab);
    check_patience_has_validation(options, corpus);
    if (checkpoint.carried_state->hidden.front().rows() != options.batch_size)
        throw Error(fmt::format("{}: carried state does not match the run's batch size", last_path.string()));
    Session session{options,
                    std::move(corpus),
                    std::move(*checkpoint.model),
                    std::move(*checkpoint.optimizer),
                    checkpoint.training,
                    std::move(*checkpoint.carried_state),
                    rng_from_string(checkpoint.training.rng_state)};
    session.model.set_dropout(options.model.dropout);
    // Warnings only now, once every check has passed: a refusal is one line.
    if (threads_before > 0 && threads_before != options.threads)
        spdlog::warn("the run trained with --threads {} and goes on with {}: its numbers will differ in the last bits "
                     "from one uninterrupted run (give --threads {} to keep them the same)",
                     threads_before, options.threads, threads_before);
    const std::int64_t steps_before = checkpoint.training.options.value("steps", options.steps);
    if (options.learning_rate_schedule.kind == LearningRateSchedule::Kind::cosine && options.steps != steps_before) {
        const std::int64_t next_step = checkpoint.training.step + 1;
        spdlog::warn("the cosine schedule now decays over {} steps, not {}: the learning rate moves from {:.3g} to {:.3g}",
                     options.steps, steps_before, options.learning_rate_schedule.at(next_step, steps_before),
                     options.learning_rate_schedule.at(next_step, options.steps));
    }
    spdlog::info("resuming {} at step {}{}", run_directory.string(), session.state.step,
                 changes.empty() ? std::string() : fmt::format("; changed: {}", fmt::join(changes, ", ")));
    if (options.steps > 0 && session.state.step >= options.steps)
        spdlog::warn("the run is already at step {}, not below --steps {}; nothing to do", session.state.step, options.steps);
    return run_loop(session);
}

StepOutcome train_step(Model<float>& model, Adam& optimizer, const Batch& batch, ModelState<float>& carried, double clip,
                       double learning_rate) {
    StepOutcome outcome;
    if (batch.starts_streams) carried.reset();
    model.zero_gradients();
    model.forward(batch.inputs, batch.seq_length, batch.batch_size, carried);
    outcome.loss = model.loss(batch.targets).mean();
    if (!std::isfinite(outcome.loss)) {
        outcome.finite = false;
        return outcome;
    }
    model.backward();
    outcome.gradient_norm = clip_gradient_norm(model.parameters(), clip);
    if (!std::isfinite(outcome.gradient_norm)) {
        outcome.finite = false;
        return outcome;
    }
    outcome.finite = optimizer.step(model.parameters(), learning_rate);
    return outcome;
}

bool request_training_stop() {
    stop_requested = 1;
    return loop_running != 0;
}

}  // namespace charlm
