// The training loop, its validation and checkpoints, and resuming a run where it stopped.
#include "charlm/train.hpp"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <csignal>
#include <regex>
#include <sstream>
#include <utility>

#include <fmt/format.h>
#include <omp.h>
#include <utf8.h>

#include "charlm/atomic_file.hpp"
#include "charlm/batches.hpp"
#include "charlm/checkpoint.hpp"
#include "charlm/error.hpp"
#include "charlm/eval.hpp"
#include "charlm/json_integer.hpp"
#include "charlm/optim.hpp"
#include "charlm/run_lock.hpp"
#include "charlm/display.hpp"
#include "metrics_log.hpp"

namespace charlm {

namespace {

volatile std::sig_atomic_t stop_requested = 0;
volatile std::sig_atomic_t loop_running = 0;  // a stop request is heard only while the loop runs

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

// The ids live in files of the run directory, corpus.ids (and validation.ids for a --val file), each
// encoded once and mapped, so that a corpus larger than memory trains with only the windows in use
// resident. The train and validation parts are views of them.
struct Corpus {
    Vocab vocab;
    MappedIds ids;             // the corpus file's
    MappedIds validation_ids;  // the --val file's, when there is one
    std::size_t train_size = 0;
    bool separate_validation = false;

    TokenSpan train() const { return ids.span().subspan(0, train_size); }
    TokenSpan validation() const {
        return separate_validation ? validation_ids.span() : ids.span().subspan(train_size, ids.size() - train_size);
    }
};

// The part of a corpus of `characters` that trains; refused where it cannot fill one window.
std::size_t training_size(const TrainOptions& options, std::size_t characters) {
    const std::size_t size = options.validation_file ? characters : characters - validation_size(characters, options.validation_fraction);
    if (size < static_cast<std::size_t>(options.seq_length) + 1)
        throw Error(fmt::format("{}: the training text has {} characters, shorter than one window of --seq {} plus one; "
                                "use a longer text or a smaller --seq",
                                options.corpus.string(), size, options.seq_length));
    return size;
}

// The pass over the text before the run directory is touched: the vocabulary (a resumed run's is
// `vocab`; a run started from a checkpoint's weights extends its vocabulary, `extended`, by the
// text's), and for a fresh run the count that refuses a text too short to train. The files are
// streamed, never held whole; map_corpus() then gives the ids.
Corpus load_corpus(const TrainOptions& options, const Vocab* vocab, const Vocab* extended = nullptr) {
    Corpus corpus;
    std::vector<std::filesystem::path> files{options.corpus};
    if (options.validation_file) files.push_back(*options.validation_file);
    std::vector<std::size_t> character_counts;
    corpus.vocab = vocab ? *vocab : Vocab::from_files(files, &character_counts);
    if (corpus.vocab.size() == 0)
        throw Error(fmt::format("{}: the text has no characters; give a longer text", options.corpus.string()));
    if (corpus.vocab.size() < 2)
        throw Error(fmt::format("{}: the text has only one distinct character, {}; there is nothing to learn",
                                options.corpus.string(), describe_code_point(corpus.vocab.code_point_of(0))));
    if (!vocab) training_size(options, character_counts.front());
    if (extended) corpus.vocab = extended->extended_by(corpus.vocab);
    return corpus;
}

// The ids of the run's texts, in the run directory: a file there is mapped where it holds this text's
// ids under this vocabulary (a resumed run's, or an earlier run's of the same text), else the text is
// encoded into it again, never trusted. With `resumed`, the text must hold no character outside the
// checkpoint's vocabulary. Of several processes, the first alone encodes: the others map what it wrote
// (`encoded_by_another`), and refuse where they cannot read it.
void map_corpus(Corpus& corpus, const TrainOptions& options, bool resumed, TrainingProgress& progress, bool encoded_by_another = false) {
    auto map = [&](const std::filesystem::path& text, FileFingerprint fingerprint, const char* name) {
        const std::filesystem::path path = options.run_directory / name;
        if (fingerprint.sha256.empty()) fingerprint = fingerprint_file(text);  // a checkpoint older than corpus hashes
        std::string why_not;
        if (std::optional<MappedIds> ids = MappedIds::open(path, fingerprint, corpus.vocab, &why_not)) return std::move(*ids);
        if (encoded_by_another)
            throw Error(fmt::format("{}: {}; process 0 wrote it there, and every machine must see the run directory (a "
                                    "filesystem they share)",
                                    path.string(), why_not));
        std::error_code missing;
        if (std::filesystem::exists(path, missing) && !std::filesystem::is_regular_file(path, missing))
            throw Error(fmt::format("{}: is not a file, and the run keeps the corpus's ids there; move it away", path.string()));
        if (std::filesystem::exists(path, missing))
            progress.note(fmt::format("{}: {}; encoding {} again", path.string(), why_not, text.string()));
        try {
            return MappedIds::encode(path, text, fingerprint, corpus.vocab);
        } catch (const Error& error) {
            if (!resumed) throw;
            throw Error(fmt::format("{}: {} of the checkpoint being resumed", text.string(), error.what()));
        }
    };
    corpus.ids = map(options.corpus, options.corpus_fingerprint, "corpus.ids");
    if (options.validation_file) {
        corpus.validation_ids = map(*options.validation_file, options.validation_fingerprint.value_or(FileFingerprint{}), "validation.ids");
        corpus.separate_validation = true;
    } else if (!encoded_by_another) {  // an earlier run's (--force), validated on a file of its own: nobody's now
        std::error_code ignored;
        if (std::filesystem::is_regular_file(options.run_directory / "validation.ids", ignored))
            std::filesystem::remove(options.run_directory / "validation.ids", ignored);
    }
    corpus.train_size = training_size(options, corpus.ids.size());
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

// The held-out characters (predictions) that each periodic validation scores under `options`.
std::size_t periodic_validation_pairs(TokenSpan held_out, const TrainOptions& options) {
    return evaluation_pair_count(held_out, options.batch_size, {.max_characters = periodic_validation_characters(options)});
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
    std::optional<ParameterAverage> average;  // --ema's
    // A fresh run in a directory that may hold an earlier run (--force): the earlier files stay as
    // they are until this run's first last.safetensors, which takes the directory over.
    bool fresh = false;
    // The processes that share each batch, and this one's block of its streams (`carried` holds its rows).
    const Communicator* processes = &single_process();
    StreamBlock streams;
};

// One invocation's training loop over a session: the steps, the evaluations and checkpoints between
// them, and what it tells the progress sinks. run() reads top to bottom; the rest are its parts.
class TrainingLoop {
public:
    TrainingLoop(Session& session, TrainingProgress& progress);
    TrainResult run();

private:
    void remove_stale_temporaries() const;
    void warn_about_options_that_do_nothing();
    RunDescription description() const;
    void agree_on_stop();
    std::optional<StopReason> stop_reason() const;
    double take_step();
    void check_for_divergence(const StepOutcome& outcome, double learning_rate, std::int64_t step);
    Error diverged(const std::string& what, std::int64_t step) const;
    bool report_due(bool evaluate_now) const;
    void validate_and_save(ProgressReport& report);
    void warn_if_overfitting(double validation_loss);
    void check_parameters_agree() const;
    std::optional<double> score_all_held_out_text();
    LossSum evaluate_held_out(std::size_t max_characters);
    void save(CheckpointKind kind, const std::filesystem::path& kept_path = {});
    ModelState<float> whole_carried_state() const;
    StepProgress step_progress(double learning_rate) const;
    void report_progress(ProgressReport& report, double learning_rate);
    TrainResult final_result(StopReason stopped_by, std::optional<double> full_validation_loss) const;

    Session& session_;
    const TrainOptions& options_;
    const Communicator& processes_;
    TrainingProgress& progress_;  // the caller's sink
    std::optional<MetricsLog> metrics_log_;  // and the run directory's, told the same checkpoints and reports (process 0's)
    const std::filesystem::path last_path_, best_path_;
    BatchStream stream_;
    Batch batch_;
    const bool has_validation_;
    std::optional<std::string> overfitting_warning_;  // said after its validation's report, which shows the figure it names
    Clock::time_point start_, last_report_;  // when the steps began; the last report
    bool interrupted_ = false, out_of_time_ = false;  // a stop signal, and --minutes up, on any process
    double training_seconds_ = 0, loss_since_report_ = 0, chars_per_second_ = 0;
    std::optional<double> last_train_loss_;  // none until this invocation takes a step
    std::int64_t steps_since_report_ = 0, steps_this_run_ = 0;
    // The state last.safetensors holds: the step it was saved at (or -1: nothing of this run yet).
    std::int64_t saved_step_;
    // Past this the loss has exploded (char-rnn stops past three times its first loss): three times
    // the loss of a uniform guess, ln V, or of a fresh run's first step where that is higher. A resumed
    // run's first loss says nothing: it may already be low, or already have climbed.
    const double uniform_loss_;
    double exploded_loss_;
    bool averaged_is_better_ = false;  // at the last validation, the averaged weights scored lower (--ema)
};

// The averaged parameters (--ema) in the model's place while it lives; the last step's come back after.
class AveragedWeights {
public:
    explicit AveragedWeights(Session& session) : session_(session) { session_.average->swap_with(session_.model.parameters()); }
    ~AveragedWeights() { session_.average->swap_with(session_.model.parameters()); }
    AveragedWeights(const AveragedWeights&) = delete;
    AveragedWeights& operator=(const AveragedWeights&) = delete;

private:
    Session& session_;
};

TrainingLoop::TrainingLoop(Session& session, TrainingProgress& progress)
    : session_(session),
      options_(session.options),
      processes_(*session.processes),
      progress_(progress),
      last_path_(session.options.run_directory / "last.safetensors"),
      best_path_(session.options.run_directory / "best.safetensors"),
      stream_(session.corpus.train(), session.options.seq_length, session.options.batch_size, session.streams),
      has_validation_(session.corpus.validation().size() >= 2),
      saved_step_(session.state.step > 0 ? session.state.step : -1),
      uniform_loss_(std::log(static_cast<double>(session.corpus.vocab.size()))),
      exploded_loss_(3 * uniform_loss_) {
    stream_.set_position(session.state.data_position % stream_.windows_per_pass());
    if (processes_.is_first()) metrics_log_.emplace(options_.run_directory, session.fresh);
    // Dropout's masks: process 0 draws from the run's generator, which checkpoints keep; each other
    // process from one of its own, derived from it, so that no two blocks of streams share masks.
    if (!processes_.is_first()) {
        std::mt19937_64 run_generator = session.rng;
        std::seed_seq derived{run_generator(), run_generator(), static_cast<std::uint64_t>(processes_.rank())};
        session.rng.seed(derived);
    }
}

TrainResult TrainingLoop::run() {
    remove_stale_temporaries();
    warn_about_options_that_do_nothing();
    start_ = last_report_ = Clock::now();

    // From here a stop signal is heard, and answered with a save; a request left by an earlier loop in
    // this process is not this one's.
    stop_requested = 0;
    loop_running = 1;
    struct LoopEnd {
        ~LoopEnd() { loop_running = 0; }
    } loop_end;
    // Decided once per step, so that the step that ends the run is also the one validated and saved.
    agree_on_stop();
    std::optional<StopReason> stop = stop_reason();
    if (stop == StopReason::patience)
        progress_.warning(fmt::format("the run stopped early by --patience {}: it had no better validation loss in {} "
                                      "validations; give a larger --patience to go on",
                                      options_.patience, session_.state.evaluations_since_best));
    // A resumed run already at its --steps (or out of patience) takes no step: nothing to announce.
    if (!stop) progress_.run_started(description());
    while (!stop) {
        const double learning_rate = take_step();
        agree_on_stop();
        stop = stop_reason();
        // Ctrl-C saves at once, without a validation pass; every other end validates and saves.
        const bool evaluate_now = session_.state.step % options_.eval_every == 0 || (stop && *stop != StopReason::interrupted);
        if (!report_due(evaluate_now)) {
            progress_.step_taken(step_progress(learning_rate));
            continue;
        }
        ProgressReport progress_report;
        if (evaluate_now) {
            validate_and_save(progress_report);
            stop = stop ? stop : stop_reason();  // patience is known only now
        }
        report_progress(progress_report, learning_rate);
    }
    if (saved_step_ != session_.state.step) save(CheckpointKind::last);  // stopped between validations (Ctrl-C)
    // A stop request wants the process ended now, not after a pass over the held-out text.
    std::optional<double> full_validation_loss;
    if (*stop != StopReason::interrupted && steps_this_run_ > 0) full_validation_loss = score_all_held_out_text();
    if (*stop == StopReason::patience)
        progress_.note(fmt::format("stopped early: no better validation loss in {} validations", options_.patience));
    if (*stop == StopReason::interrupted)
        progress_.warning(fmt::format("stopped at step {}; continue with: charlm train --resume {}", session_.state.step,
                                      quoted_for_shell(options_.run_directory.string())));
    const TrainResult finished = final_result(*stop, full_validation_loss);
    if (metrics_log_) metrics_log_->run_finished(finished);
    progress_.run_finished(finished);
    return finished;
}

// Temporaries of checkpoint writes that a killed process never renamed. The run directory's lock is
// held, so none of them belongs to a live process.
void TrainingLoop::remove_stale_temporaries() const {
    if (!processes_.is_first()) return;
    std::error_code ignored;
    for (const auto& entry : std::filesystem::directory_iterator(options_.run_directory, ignored)) {
        const std::string name = entry.path().filename().string();
        for (const char* kept : {"last.safetensors", "best.safetensors", "corpus.txt", "validation.txt", "corpus.ids", "validation.ids"})
            if (name.starts_with(fmt::format(".{}.tmp-", kept))) std::filesystem::remove(entry.path(), ignored);
        if (name.starts_with(".step-") && name.find(".safetensors.tmp-") != std::string::npos)  // --keep-checkpoints'
            std::filesystem::remove(entry.path(), ignored);
    }
}

void TrainingLoop::warn_about_options_that_do_nothing() {
    if (!has_validation_)
        progress_.warning(fmt::format(
            "no validation text ({} has {} character{}): no best.safetensors, and the summary shows the training loss{}",
            options_.validation_file ? options_.validation_file->string()
                                     : fmt::format("--val-fraction {} of the corpus", options_.validation_fraction),
            session_.corpus.validation().size(), session_.corpus.validation().size() == 1 ? "" : "s",
            session_.average ? fmt::format("; the average of the weights (--ema {}) is kept for a resume but never scored, so "
                                           "--ema 0 saves its time", options_.average_decay)
                             : std::string()));
    const LearningRateSchedule& schedule = options_.learning_rate_schedule;
    if (options_.steps > 0 && schedule.warmup_steps > options_.steps)
        progress_.warning(fmt::format("--warmup {} is longer than the run's {} steps: the learning rate never reaches --lr {}",
                                      schedule.warmup_steps, options_.steps, schedule.peak_learning_rate));
    if (options_.keep_checkpoints && !has_validation_)
        progress_.warning("--keep-checkpoints keeps a checkpoint per validation, named by its loss, and this run has no "
                          "validation text: it keeps none");
}

RunDescription TrainingLoop::description() const {
    RunDescription run;
    run.model = session_.model.config();
    run.train_characters = session_.corpus.train().size();
    run.validation_characters = session_.corpus.validation().size();
    run.periodic_validation_characters = periodic_validation_pairs(session_.corpus.validation(), options_);
    run.windows_per_pass = stream_.windows_per_pass();
    run.seq_length = options_.seq_length;
    run.batch_size = options_.batch_size;
    run.resumed = !session_.fresh;
    run.first_step = session_.state.step;
    return run;
}

// A stop signal, and the end of --minutes, as every process sees them: one process stopping alone
// would leave the others waiting for it in the next step's sums.
void TrainingLoop::agree_on_stop() {
    std::array<double, 2> flags{stop_requested ? 1.0 : 0.0, options_.minutes > 0 && seconds_since(start_) >= options_.minutes * 60 ? 1.0 : 0.0};
    processes_.sum(flags);
    interrupted_ = flags[0] > 0;
    out_of_time_ = flags[1] > 0;
}

std::optional<StopReason> TrainingLoop::stop_reason() const {
    if (interrupted_) return StopReason::interrupted;
    if (options_.steps > 0 && session_.state.step >= options_.steps) return StopReason::steps;
    if (out_of_time_) return StopReason::minutes;
    if (options_.patience > 0 && session_.state.evaluations_since_best >= options_.patience) return StopReason::patience;
    return std::nullopt;
}

// One step on the next window; returns the learning rate it took. Throws where training diverged,
// before the step counts.
double TrainingLoop::take_step() {
    const auto step_start = Clock::now();
    stream_.next(batch_);
    session_.model.set_dropout_generator(&session_.rng);
    const std::int64_t step = session_.state.step + 1;
    const double learning_rate = options_.learning_rate_schedule.at(step, options_.steps);
    const StepOutcome outcome =
        train_step(session_.model, session_.optimizer, batch_, session_.carried, options_.clip, learning_rate, processes_);
    check_for_divergence(outcome, learning_rate, step);
    if (session_.average) session_.average->update(session_.model.parameters(), step);
    session_.state.step = step;
    ++steps_this_run_;
    training_seconds_ += seconds_since(step_start);
    loss_since_report_ += outcome.loss;
    ++steps_since_report_;
    last_train_loss_ = outcome.loss;
    const double characters_per_step = static_cast<double>(options_.seq_length) * options_.batch_size;
    chars_per_second_ = characters_per_step * static_cast<double>(steps_this_run_) / training_seconds_;
    return learning_rate;
}

// A fresh run's first step also sets the bar that later losses must stay under.
void TrainingLoop::check_for_divergence(const StepOutcome& outcome, double learning_rate, std::int64_t step) {
    const auto shown = [](double value) { return std::isnan(value) ? std::string("NaN") : fmt::format("{}", value); };
    if (!std::isfinite(outcome.loss)) throw diverged(fmt::format("the loss became {}", shown(outcome.loss)), step);
    if (!std::isfinite(outcome.gradient_norm))
        throw diverged(fmt::format("the gradient became {}", shown(outcome.gradient_norm)), step);
    if (!outcome.finite) throw diverged(fmt::format("the update at learning rate {:g} made a weight infinite", learning_rate), step);
    if (steps_this_run_ == 0 && session_.fresh) exploded_loss_ = 3 * std::max(outcome.loss, uniform_loss_);
    if (outcome.loss > exploded_loss_)
        throw diverged(fmt::format("the loss rose to {:.4g} nats/char, past {:.4g} (three times where it started)",
                                   outcome.loss, exploded_loss_),
                       step);
}

Error TrainingLoop::diverged(const std::string& what, std::int64_t step) const {
    const double peak = options_.learning_rate_schedule.peak_learning_rate;
    const std::string kept =
        saved_step_ >= 0 ? fmt::format("{} keeps step {}; resume it with a lower rate: charlm train --resume {} --lr {:g}",
                                       last_path_.string(), saved_step_, quoted_for_shell(options_.run_directory.string()),
                                       peak / 10)
                         : fmt::format("no checkpoint of this run was saved yet; start again with a lower --lr than {:g}", peak);
    return shared(Error(fmt::format("training diverged: {} at step {}; {}", what, step, kept)));  // from figures every process shares
}

// A sink that shows every step needs reports only at evaluations; a log gets one every ten seconds too.
bool TrainingLoop::report_due(bool evaluate_now) const {
    return evaluate_now || (!progress_.shows_every_step() && seconds_since(last_report_) >= 10);
}

// The validation pass, where the run has validation text, and the checkpoints it leads to.
void TrainingLoop::validate_and_save(ProgressReport& report) {
    report.evaluated = true;
    check_parameters_agree();
    if (!has_validation_) {
        save(CheckpointKind::last);
        return;
    }
    session_.model.set_dropout_generator(nullptr);
    // The same part of the held-out text every time, so that the figures compare with each other.
    const TokenSpan held_out = session_.corpus.validation();
    const LossSum validation = evaluate_held_out(periodic_validation_characters(options_));
    const double validation_loss = validation.mean();
    // The update of the step just taken is judged here too: its weights are what would be saved.
    if (!std::isfinite(validation_loss) || validation_loss > exploded_loss_)
        throw diverged(fmt::format("the validation loss became {} nats/char, past {:.4g} (three times where training started)",
                                   fmt::format("{:.4g}", validation_loss), exploded_loss_),
                       session_.state.step);
    report.validation_loss = validation_loss;
    report.validation_characters = validation.count;
    report.held_out_characters = held_out.size() - 1;
    // The averaged weights on the same characters; the lower of the two figures is the step's.
    std::optional<double> averaged_loss;
    if (session_.average) {
        AveragedWeights averaged(session_);
        averaged_loss = evaluate_held_out(periodic_validation_characters(options_)).mean();
        report.averaged_validation_loss = averaged_loss;
    }
    averaged_is_better_ = averaged_loss && std::isfinite(*averaged_loss) && *averaged_loss < validation_loss;
    const double step_loss = averaged_is_better_ ? *averaged_loss : validation_loss;
    report.new_best = step_loss < session_.state.best_validation_loss;
    report.best_is_averaged = report.new_best && averaged_is_better_;
    if (report.new_best) {
        session_.state.best_validation_loss = step_loss;
        session_.state.best_validation_characters = validation.count;
        session_.state.best_is_averaged = averaged_is_better_;
        session_.state.best_step = session_.state.step;
        session_.state.evaluations_since_best = 0;
    } else {
        ++session_.state.evaluations_since_best;
        warn_if_overfitting(step_loss);
    }
    // last.safetensors first: should best's write fail (a full disk), a resume still knows the best
    // loss reached, and never replaces a better best.safetensors with a worse one.
    save(CheckpointKind::last);
    // best.safetensors and a kept checkpoint hold the weights that scored lower: the averaged ones, or the step's.
    std::optional<AveragedWeights> averaged;
    if (averaged_is_better_ && (report.new_best || options_.keep_checkpoints)) averaged.emplace(session_);
    if (report.new_best) save(CheckpointKind::best);
    if (options_.keep_checkpoints)
        save(CheckpointKind::kept, options_.run_directory / kept_checkpoint_name(session_.state.step, step_loss));
}

// kOverfittingValidations validations in a row without a new best, the last of them well above the
// best: the model is learning its training text by heart. Said once per such stretch, with what helps,
// after the report line of the validation that showed it.
void TrainingLoop::warn_if_overfitting(double validation_loss) {
    constexpr std::int64_t kOverfittingValidations = 3;
    constexpr double kRise = 0.02;  // nats/char: far above the noise of one validation
    const TrainingState& state = session_.state;
    if (state.evaluations_since_best != kOverfittingValidations || !(validation_loss > state.best_validation_loss + kRise)) return;
    overfitting_warning_ = fmt::format(
        "{} validations in a row without a new best, and the validation loss is now {:.4f} against its best {:.4f}{}: the "
        "model is overfitting its training text, and best.safetensors keeps the best; more dropout (--dropout, --weight-drop), a smaller model or fewer "
        "--steps would help, and --patience N stops such a run (docs/quality.md)",
        kOverfittingValidations, validation_loss, state.best_validation_loss,
        state.best_step > 0 ? fmt::format(" at step {}", state.best_step) : std::string());
}

// The last step's loss on all the held-out text, where the validations scored part of it: once, at the
// run's end, so that the run has a figure to compare with `charlm eval` and with runs validated whole.
std::optional<double> TrainingLoop::score_all_held_out_text() {
    if (!has_validation_) return std::nullopt;
    const TokenSpan held_out = session_.corpus.validation();
    const std::size_t periodic = periodic_validation_pairs(held_out, options_);
    if (periodic == held_out.size() - 1) return std::nullopt;
    // It may take a while on a large text: say what it is waiting for.
    progress_.note(fmt::format("scoring all {} held-out characters at step {} (each validation scored {} of them)",
                               format_count(held_out.size() - 1), session_.state.step, format_count(periodic)));
    session_.model.set_dropout_generator(nullptr);
    std::optional<AveragedWeights> averaged;  // the weights the last validation preferred
    if (averaged_is_better_) averaged.emplace(session_);
    return evaluate_held_out(0).mean();
}

// The loss of the held-out text (at most `max_characters` of it: 0 for all), every process scoring a
// block of the pass's streams, summed: every process gets the same figure, and it is the figure one
// process would get, up to the order of the sums.
LossSum TrainingLoop::evaluate_held_out(std::size_t max_characters) {
    const TokenSpan held_out = session_.corpus.validation();
    EvaluationSelection selection{.max_characters = max_characters};
    const int streams = evaluation_stream_count(held_out, options_.batch_size);
    const int sharing = std::min(processes_.size(), streams);  // a short text may have fewer streams than processes
    LossSum mine;
    if (processes_.rank() < sharing) {
        const StreamBlock block = stream_block(streams, processes_.rank(), sharing);
        selection.first_stream = block.first;
        selection.stream_count = block.count;
        mine = evaluate_loss(session_.model, held_out, options_.seq_length, options_.batch_size, selection);
    }
    std::array<double, 2> sums{mine.total_nats, static_cast<double>(mine.count)};
    processes_.sum(sums);
    return {sums[0], static_cast<std::size_t>(sums[1])};
}

// Every process calls it at the same step; process 0 alone writes. A kept checkpoint goes to `kept_path`.
void TrainingLoop::save(CheckpointKind kind, const std::filesystem::path& kept_path) {
    const bool for_resume = kind == CheckpointKind::last;
    const std::filesystem::path& path = for_resume ? last_path_ : kind == CheckpointKind::best ? best_path_ : kept_path;
    // last.safetensors holds every stream's carried state, whichever process ran it: the run resumes
    // on any process count.
    const ModelState<float> carried = for_resume && processes_.size() > 1 ? whole_carried_state() : ModelState<float>{};
    if (processes_.is_first()) {
        session_.state.data_position = stream_.position();
        session_.state.rng_state = rng_to_string(session_.rng);
        session_.state.options = options_.to_json();
        save_checkpoint(path, session_.model, session_.corpus.vocab, session_.state, for_resume ? &session_.optimizer : nullptr,
                        !for_resume ? nullptr : processes_.size() > 1 ? &carried : &session_.carried,
                        for_resume && session_.average ? &session_.average->values() : nullptr);
        // An earlier run's best at this run's first last.safetensors, which takes the directory over:
        // where this save is a validation's, this run's own best follows at once; where it is not
        // (stopped before its first validation), none may be left that a user would take for this run's.
        std::error_code ignored;
        if (for_resume && session_.fresh) std::filesystem::remove(best_path_, ignored);
    }
    if (for_resume) {
        saved_step_ = session_.state.step;
        session_.fresh = false;
    }
    if (!processes_.is_first()) return;
    const SavedCheckpoint saved{kind, path, session_.state.step};
    metrics_log_->checkpoint_saved(saved);  // the first last.safetensors of a fresh run takes metrics.jsonl over too
    progress_.checkpoint_saved(saved);
}

// The carried state of all the batch's streams, on process 0 (the others get it empty): each
// process's block of rows in rank order.
ModelState<float> TrainingLoop::whole_carried_state() const {
    const int B = options_.batch_size;
    ModelState<float> whole = processes_.is_first() ? session_.model.initial_state(B) : ModelState<float>{};
    auto gather = [&](const std::vector<Matrix<float>>& mine, std::vector<Matrix<float>>& all) {
        for (std::size_t layer = 0; layer < mine.size(); ++layer) {
            const Eigen::Index H = mine[layer].cols();
            std::vector<int> counts;
            for (int rank = 0; rank < processes_.size(); ++rank)
                counts.push_back(stream_block(B, rank, processes_.size()).count * static_cast<int>(H));
            std::span<float> destination = processes_.is_first() ? std::span<float>(all[layer].data(), static_cast<std::size_t>(all[layer].size()))
                                                                 : std::span<float>();
            processes_.gather(std::span<const float>(mine[layer].data(), static_cast<std::size_t>(mine[layer].size())), destination, counts);
        }
    };
    gather(session_.carried.hidden, whole.hidden);
    gather(session_.carried.cell, whole.cell);
    return whole;
}

// Every process updates its own copy of the parameters from the same summed gradient: they must stay
// identical. A cheap checksum at each validation tells, rather than let them drift apart unseen.
void TrainingLoop::check_parameters_agree() const {
    if (processes_.size() == 1) return;
    std::uint64_t checksum = 14695981039346656037ull;
    for (const auto& parameter : session_.model.parameters()) {
        const auto* words = reinterpret_cast<const std::uint32_t*>(parameter.value.data());
        for (Eigen::Index i = 0; i < parameter.value.size(); ++i) checksum = (checksum ^ words[i]) * 1099511628211ull;
    }
    const std::vector<std::string> checksums = processes_.gather_all(fmt::format("{:016x}", checksum));
    for (std::size_t rank = 1; rank < checksums.size(); ++rank)
        if (checksums[rank] != checksums[0])
            throw shared(Error(fmt::format("at step {} the parameters of process {} differ from process 0's (checksum {} against {}): "
                                           "the processes no longer train one model; resume from the last checkpoint",
                                           session_.state.step, rank, checksums[rank], checksums[0])));
}

StepProgress TrainingLoop::step_progress(double learning_rate) const {
    StepProgress progress;
    progress.step = session_.state.step;
    progress.total_steps = options_.steps;
    progress.epoch = static_cast<double>(session_.state.step) * options_.seq_length * options_.batch_size /
                     static_cast<double>(session_.corpus.train().size());
    progress.train_loss = loss_since_report_ / static_cast<double>(steps_since_report_);
    progress.learning_rate = learning_rate;
    progress.chars_per_second = chars_per_second_;
    progress.elapsed_seconds = seconds_since(start_);
    if (options_.steps > 0) {
        const double remaining = static_cast<double>(options_.steps - session_.state.step) * progress.elapsed_seconds /
                                 static_cast<double>(steps_this_run_);
        progress.remaining_seconds =
            options_.minutes > 0 ? std::max(0.0, std::min(remaining, options_.minutes * 60 - progress.elapsed_seconds)) : remaining;
    }
    return progress;
}

// The report's step figures are taken now, after its validation and saves, whose time they include.
void TrainingLoop::report_progress(ProgressReport& report, double learning_rate) {
    static_cast<StepProgress&>(report) = step_progress(learning_rate);
    if (metrics_log_) metrics_log_->progress_reported(report);
    progress_.progress_reported(report);
    if (overfitting_warning_) progress_.warning(*std::exchange(overfitting_warning_, std::nullopt));
    loss_since_report_ = 0;
    steps_since_report_ = 0;
    last_report_ = Clock::now();
}

TrainResult TrainingLoop::final_result(StopReason stopped_by, std::optional<double> full_validation_loss) const {
    TrainResult result;
    result.steps = session_.state.step;
    result.last_train_loss = last_train_loss_;
    result.validated = has_validation_;
    result.best_validation_loss = session_.state.best_validation_loss;
    result.averaged = session_.average.has_value();
    result.best_is_averaged = session_.state.best_is_averaged;
    result.chars_per_second = chars_per_second_;
    result.stopped_by = stopped_by;
    result.patience = options_.patience;
    result.last_checkpoint = last_path_;
    if (has_validation_) {
        result.best_checkpoint = best_path_;
        const TokenSpan held_out = session_.corpus.validation();
        // What the best figure was scored on: a resume may have changed --val-chars since.
        result.validation_characters = session_.state.best_validation_characters > 0 ? session_.state.best_validation_characters
                                                                                       : periodic_validation_pairs(held_out, options_);
        result.held_out_characters = held_out.size() - 1;
        result.full_validation_loss = full_validation_loss;
        result.full_validation_is_averaged = full_validation_loss && averaged_is_better_;
    }
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
    if (schedule.warmup_steps < 0) throw UsageError(fmt::format("--warmup must be 0 or more steps, not {}", schedule.warmup_steps));
    if (!(options.average_decay >= 0 && options.average_decay < 1))
        throw UsageError(fmt::format("--ema must be at least 0 (off) and below 1, not {}; 0.999 averages over about the last 1000 steps",
                                     options.average_decay));
    if (options.patience < 0) throw UsageError(fmt::format("--patience must be 0 (off) or more validations, not {}", options.patience));
    if (!(schedule.decay_factor > 0 && schedule.decay_factor <= 1)) throw UsageError(fmt::format("--lr-decay must be in (0, 1], not {}", schedule.decay_factor));
    if (!(options.clip >= 0)) throw UsageError("--clip must be zero (off) or positive");
    if (!(options.validation_fraction >= 0 && options.validation_fraction < 1))
        throw UsageError("--val-fraction must be at least 0 and below 1");
    if (options.steps < 0 || !(options.minutes >= 0)) throw UsageError("--steps and --minutes must not be negative");
    // Checkpoints record these paths in JSON, which holds UTF-8 only: refused now, not at the first save.
    for (const auto* path : {&options.corpus, &options.run_directory, options.validation_file ? &*options.validation_file : nullptr,
                             options.init_from ? &options.init_from->checkpoint : nullptr}) {
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
                                           const FileFingerprint& recorded, const std::optional<std::filesystem::path>& moved_to,
                                           TrainingProgress& progress) {
    const std::filesystem::path path = moved_to.value_or(recorded_path);
    const std::string hint = moved_to ? std::string()
                                      : fmt::format("; if it moved, give its new place with --resume RUN_DIR {} PATH", flag);
    std::error_code error;
    if (!std::filesystem::exists(path, error))
        throw Error(fmt::format("{}: the run's {} is not there{}", path.string(), what, hint));
    if (recorded.sha256.empty()) {
        progress.warning(fmt::format("{}: the checkpoint predates corpus hashes, so the {} cannot be checked against the one "
                                     "the run started on",
                                     path.string(), what));
        return path;
    }
    const FileFingerprint now = fingerprint_file(path);
    if (now != recorded)
        throw Error(fmt::format("{}: not the {} the run started on ({} bytes, SHA-256 {:.12}..., where the run recorded {} "
                                "bytes, {:.12}...){}",
                                path.string(), what, now.size_bytes, now.sha256, recorded.size_bytes, recorded.sha256, hint));
    return path;
}

// A resume that changes what each validation scores (--val-chars, or --eval-every where it is automatic)
// makes figures that compare neither with the earlier ones nor with the best so far, which still decides
// whether best.safetensors is replaced.
void warn_if_validations_change(const TrainOptions& before, const TrainOptions& after, TokenSpan held_out,
                                double best_validation_loss, TrainingProgress& progress) {
    if (!std::isfinite(best_validation_loss)) return;  // no validation yet: nothing to compare with
    const std::size_t now = periodic_validation_pairs(held_out, after), earlier = periodic_validation_pairs(held_out, before);
    if (now == earlier) return;
    const std::size_t all = held_out.size() - 1;
    progress.warning(fmt::format("each validation now scores {} of the {} held-out characters, not {}: its figures do not compare "
                                 "with the earlier ones, nor with the best so far ({:.4f}), which a new best must still beat; "
                                 "give --val-chars {} to keep them as they were",
                                 now, all, earlier, best_validation_loss, earlier == all ? 0 : periodic_validation_characters(before)));
}

// How each training option behaves on --resume: given again, it takes effect, or it must match the checkpoint.
struct OptionOnResume {
    const char* flag;
    const char* json_pointer;  // into TrainOptions::to_json(); null for an option of the invocation, not the run
    bool may_change;
};
constexpr OptionOnResume kOptionsOnResume[] = {
    {"--lr", "/learning_rate", true},         {"--lr-schedule", "/lr_schedule", true},
    {"--warmup", "/warmup_steps", true},      {"--lr-decay-every", "/lr_decay_every", true},
    {"--lr-decay", "/lr_decay_factor", true}, {"--clip", "/clip", true},
    {"--steps", "/steps", true},              {"--minutes", "/minutes", true},
    {"--eval-every", "/eval_every", true},    {"--val-chars", "/validation_characters", true},
    {"--patience", "/patience", true},        {"--dropout", "/model/dropout", true},
    {"--embed-dropout", "/model/embed_dropout", true}, {"--weight-drop", "/model/weight_drop", true},
    {"--dropout-mask", "/model/dropout_mask", true},   {"--ema", "/ema", true},
    {"--cell", "/model/cell", false},         {"--layers", "/model/layers", false},
    {"--hidden", "/model/hidden_size", false}, {"--embed", "/model/embed_size", false},
    {"--seq", "/seq_length", false},          {"--batch", "/batch_size", false},
    {"--val-fraction", "/validation_fraction", false}, {"--seed", "/seed", false},
    {"--keep-checkpoints", nullptr, true},  // this invocation's choice, which the run does not record
};

// An option's value as the command line writes it: 0 and 0.25, not 0.0 and 0.25; step, not "step".
std::string option_value_text(const nlohmann::json& value) {
    if (value.is_number_float()) return fmt::format("{}", value.get<double>());
    if (value.is_string()) return value.get<std::string>();
    return value.dump();
}

// The stored options with the request's given ones laid over them, each change described in
// `changes`; refuses any option that the checkpoint fixes.
nlohmann::json options_for_resume(nlohmann::json stored, const ResumeRequest& request, std::vector<std::string>& changes) {
    const nlohmann::json requested = request.options.to_json();
    for (const std::string& flag : request.given) {
        const auto* option = std::find_if(std::begin(kOptionsOnResume), std::end(kOptionsOnResume),
                                          [&](const OptionOnResume& candidate) { return flag == candidate.flag; });
        if (option == std::end(kOptionsOnResume)) throw UsageError(fmt::format("{} cannot be given with --resume", flag));
        if (!option->json_pointer) continue;
        const nlohmann::json::json_pointer pointer(option->json_pointer);
        const nlohmann::json before = stored.contains(pointer) ? stored.at(pointer) : nlohmann::json(nullptr);
        const nlohmann::json& after = requested.at(pointer);
        if (before == after) continue;
        if (!option->may_change)
            throw UsageError(fmt::format("{} {} differs from the run's {}, which its checkpoint fixes; leave {} out to "
                                         "resume, or start a new run with --out",
                                         flag, option_value_text(after), option_value_text(before), flag));
        changes.push_back(fmt::format("{} {} (was {})", flag, option_value_text(after), option_value_text(before)));
        stored[pointer] = after;
    }
    return stored;
}

// Collective: each process's `facts` (a JSON object) against process 0's. Where any process's differ,
// every process throws the same error, naming the first such process and the first fact that differs,
// then `advice`.
void check_processes_agree(const Communicator& processes, const nlohmann::json& facts, const char* what, const char* advice) {
    if (processes.size() == 1) return;
    const std::vector<std::string> all = processes.gather_all(nlohmann::json{{"host", processes.host()}, {"facts", facts}}.dump());
    const nlohmann::json first = nlohmann::json::parse(all[0]);
    for (std::size_t rank = 1; rank < all.size(); ++rank) {
        const nlohmann::json theirs = nlohmann::json::parse(all[rank]);
        for (const auto& [key, value] : first.at("facts").items()) {
            const nlohmann::json their_value = theirs.at("facts").value(key, nlohmann::json(nullptr));
            if (their_value == value) continue;
            throw shared(UsageError(fmt::format("process {} of {} (on {}) {} than process 0 (on {}): its {} is {}, not {}; {}", rank,
                                                all.size(), theirs.at("host").get<std::string>(), what,
                                                first.at("host").get<std::string>(), key, their_value.dump(), value.dump(), advice)));
        }
    }
}

// The options every process of a run must share: all but where each finds the text (which may
// differ from machine to machine, so long as the text is the same) and its own thread count.
nlohmann::json options_to_share(const TrainOptions& options) {
    nlohmann::json json = options.to_json();
    for (const char* key : {"corpus", "validation_file", "threads", "corpus_size_bytes", "corpus_sha256", "train_characters",
                            "validation_file_size_bytes", "validation_file_sha256"})
        json.erase(key);
    // Where each finds --init-from's checkpoint may differ too; that they start from the same weights,
    // the check of the parameters at each validation tells.
    json["init_from"] = options.init_from.has_value();
    return json;
}

// What the processes must agree on about the text: the same bytes, hence the same vocabulary and ids.
nlohmann::json corpus_facts(const TrainOptions& options, const Corpus& corpus) {
    return {{"corpus SHA-256", options.corpus_fingerprint.sha256},
            {"validation file SHA-256", options.validation_fingerprint ? options.validation_fingerprint->sha256 : std::string()},
            {"vocabulary size", corpus.vocab.size()}};
}

constexpr const char* kSameCommandAdvice = "start every process with the same command";
constexpr const char* kSameCorpusAdvice =
    "every process must read the same text: copy it to each machine at the same path, or keep it on a filesystem they share";

// A pipe is read once, by one process: the others would wait for text that never comes. A shell's
// process substitution (/dev/fd/63) is not even passed on to them.
void check_text_can_be_shared(const TrainOptions& options, const Communicator& processes) {
    if (processes.size() == 1) return;
    for (const auto* path : {&options.corpus, options.validation_file ? &*options.validation_file : nullptr})
        if (path && (can_be_read_only_once(*path) || is_under_dev_or_proc(*path)))
            throw UsageError(fmt::format("{}: {} processes cannot all read a pipe or standard input; save the text to a file first",
                                         *path == "-" ? std::string("standard input") : path->string(), processes.size()));
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
        {"ema", average_decay},
        {"clip", clip},
        {"validation_fraction", validation_fraction},
        {"steps", steps},
        {"minutes", minutes},
        {"eval_every", eval_every},
        {"validation_characters", validation_characters ? nlohmann::json(*validation_characters) : nlohmann::json("auto")},
        {"seed", seed},
        {"corpus_size_bytes", corpus_fingerprint.size_bytes},
        {"corpus_sha256", corpus_fingerprint.sha256},
        {"train_characters", train_characters},
        {"threads", threads},
        {"processes", processes},
    };
    json["validation_file"] = validation_file ? nlohmann::json(std::filesystem::absolute(*validation_file).string()) : nlohmann::json(nullptr);
    json["validation_file_size_bytes"] = validation_fingerprint ? nlohmann::json(validation_fingerprint->size_bytes) : nlohmann::json(nullptr);
    json["validation_file_sha256"] = validation_fingerprint ? nlohmann::json(validation_fingerprint->sha256) : nlohmann::json(nullptr);
    json["init_from"] = init_from ? nlohmann::json{{"checkpoint", std::filesystem::absolute(init_from->checkpoint).string()},
                                                   {"step", init_from->step}}
                                  : nlohmann::json(nullptr);
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
        options.average_decay = json.value("ema", 0.0);
        options.validation_fraction = json.at("validation_fraction").get<double>();
        options.steps = integer_value<std::int64_t>(json.at("steps"));
        options.minutes = json.at("minutes").get<double>();
        options.eval_every = integer_value<int>(json.at("eval_every"));
        // Runs from before --val-chars validated on all the held-out text: the best loss they recorded
        // compares only with figures of all of it.
        const nlohmann::json validation_characters = json.value("validation_characters", nlohmann::json(0));
        if (validation_characters != "auto") options.validation_characters = integer_value<std::uint64_t>(validation_characters);
        options.seed = integer_value<std::uint64_t>(json.at("seed"));
        options.threads = json.contains("threads") ? integer_value<int>(json.at("threads")) : 0;
        options.processes = json.contains("processes") ? integer_value<int>(json.at("processes")) : 1;
        // Absent from checkpoints written before the corpus was fingerprinted.
        if (json.contains("corpus_sha256")) {
            options.corpus_fingerprint = {integer_value<std::uint64_t>(json.at("corpus_size_bytes")),
                                          json.at("corpus_sha256").get<std::string>()};
            options.train_characters = integer_value<std::uint64_t>(json.at("train_characters"));
            if (options.validation_file && !json.at("validation_file_sha256").is_null())
                options.validation_fingerprint = FileFingerprint{integer_value<std::uint64_t>(json.at("validation_file_size_bytes")),
                                                                 json.at("validation_file_sha256").get<std::string>()};
        }
        // Absent from checkpoints written before --init-from; null where the run started from scratch.
        if (json.contains("init_from") && !json.at("init_from").is_null())
            options.init_from = InitFrom{json.at("init_from").at("checkpoint").get<std::string>(), {},
                                         integer_value<std::int64_t>(json.at("init_from").at("step"))};
    } catch (const nlohmann::json::exception& error) {
        throw Error(fmt::format("the checkpoint's training options are incomplete ({})", error.what()));
    }
    return options;
}

namespace {

// Checkpoints that an earlier run in the directory kept (--keep-checkpoints) are the user's to keep, and
// --force leaves them; named as this run's are, they are worth a word.
void warn_about_earlier_kept_checkpoints(const std::filesystem::path& run_directory, TrainingProgress& progress) {
    static const std::regex kept_name(R"(step-\d{6,}-val-\d+\.\d{4}\.safetensors)");
    std::size_t count = 0;
    std::error_code ignored;
    for (const auto& entry : std::filesystem::directory_iterator(run_directory, ignored))
        if (std::regex_match(entry.path().filename().string(), kept_name)) ++count;
    if (count > 0)
        progress.warning(fmt::format("{} holds {} checkpoint{} that an earlier run kept (step-...-val-....safetensors); they "
                                     "stay beside this run's: move them away, or choose another directory with --out",
                                     run_directory.string(), count, count == 1 ? "" : "s"));
}

// A fresh run's text, read and checked, with its fingerprints in `options`; process 0 also takes the
// run directory (`lock`). A pipe is copied into the run directory, which `options` then names. A run
// started from a checkpoint's weights extends its vocabulary, `extended`.
Corpus prepare_fresh_run(TrainOptions& options, TrainingProgress& progress, const Communicator& processes,
                         std::optional<RunLock>& lock, const Vocab* extended) {
    // A text that can be read again is checked before the run directory is touched; a pipe is read
    // once, into a copy in the run directory, which becomes the run's corpus once it proves good.
    const bool copy_corpus = can_be_read_only_once(options.corpus);
    const bool copy_validation = options.validation_file && can_be_read_only_once(*options.validation_file);
    std::optional<Corpus> corpus;
    if (!copy_corpus && !copy_validation) corpus = load_corpus(options, nullptr, extended);
    if (processes.is_first()) {  // the others never write there
        std::error_code error;
        std::filesystem::create_directories(options.run_directory, error);
        if (error) throw Error(fmt::format("{}: cannot create the run directory ({})", options.run_directory.string(), error.message()));
        lock.emplace(options.run_directory);
        if (!options.overwrite && std::filesystem::exists(options.run_directory / "last.safetensors", error))
            throw UsageError(fmt::format("{0} already holds a run; continue it with --resume {0}, start over with --force, "
                                         "or choose another directory with --out",
                                         quoted_for_shell(options.run_directory.string())));
        warn_about_earlier_kept_checkpoints(options.run_directory, progress);
    }
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
            corpus = load_corpus(options, nullptr, extended);
        } catch (const Error& error) {  // name what the user gave, not the copy's temporary name
            std::string message = error.what();
            for (const auto& [temporary, source] : copied)
                for (std::size_t at; (at = message.find(temporary)) != std::string::npos;) message.replace(at, temporary.size(), source);
            throw Error(message);
        }
    }
    options.corpus_fingerprint = fingerprint_file(options.corpus);
    if (options.validation_file) options.validation_fingerprint = fingerprint_file(*options.validation_file);
    for (const auto& [temporary, source] : copied)
        progress.note(fmt::format("copied {} into the run directory: the run reads its text more than once", source));
    if (corpus_copy) {
        corpus_copy->commit();
        options.corpus = options.run_directory / "corpus.txt";
    }
    if (validation_copy) {
        validation_copy->commit();
        options.validation_file = options.run_directory / "validation.txt";
    }
    if (processes.is_first()) map_corpus(*corpus, options, false, progress);
    return std::move(*corpus);
}

// --init-from's checkpoint, read before the run directory is touched. Its shape becomes the run's
// (options.model, with the regularization given for this run); a shape option given that contradicts it is
// refused, one given with the same value is no contradiction.
Checkpoint load_checkpoint_to_start_from(TrainOptions& options) {
    TrainOptions::InitFrom& init_from = *options.init_from;
    Checkpoint checkpoint = load_checkpoint(init_from.checkpoint);
    const ModelConfig& given = options.model;
    const ModelConfig& trained = checkpoint.config;
    struct ShapeOption {
        const char* flag;
        std::string given, trained;
    };
    const ShapeOption shape[] = {
        {"--cell", to_string(given.cell), to_string(trained.cell)},
        {"--layers", std::to_string(given.layers), std::to_string(trained.layers)},
        {"--hidden", std::to_string(given.hidden_size), std::to_string(trained.hidden_size)},
        {"--embed", std::to_string(given.embed_size), std::to_string(trained.embed_size)},
    };
    for (const ShapeOption& option : shape)
        if (option.given != option.trained && std::ranges::find(init_from.given, option.flag) != init_from.given.end())
            throw UsageError(fmt::format("{} {} contradicts --init-from {}, whose model has {} {}; the run takes the model's shape "
                                         "from its checkpoint: leave {} out",
                                         option.flag, option.given, init_from.checkpoint.string(), option.flag, option.trained,
                                         option.flag));
    const ModelConfig rates = options.model;
    options.model = trained;
    options.model.take_regularization(rates);
    init_from.step = checkpoint.training.step;
    return checkpoint;
}

// What a run started from a checkpoint's weights says before it begins: where from, and the characters
// its texts add to the checkpoint's vocabulary, named where they are few.
std::string describe_start(const TrainOptions::InitFrom& init_from, const Vocab& trained, const Vocab& vocab) {
    const std::string start =
        fmt::format("starting from {} (step {}) with a fresh optimizer", init_from.checkpoint.string(), init_from.step);
    const std::size_t added = vocab.size() - trained.size();
    if (added == 0) return fmt::format("{}; the text adds no characters to its {}", start, trained.size());
    constexpr std::size_t kMostNamed = 8;
    std::vector<std::string> named;
    for (std::size_t id = trained.size(); id < vocab.size() && named.size() < kMostNamed; ++id)
        named.push_back(describe_code_point(vocab.code_point_of(static_cast<TokenId>(id))));
    return fmt::format("{}; the text adds {} character{} to its {}: {}{}", start, added, added == 1 ? "" : "s", trained.size(),
                       fmt::join(named, ", "), added > named.size() ? fmt::format(" and {} more", added - named.size()) : "");
}

}  // namespace

std::string kept_checkpoint_name(std::int64_t step, double validation_loss) {
    return fmt::format("step-{:06d}-val-{:.4f}.safetensors", step, validation_loss);
}

Model<float> model_with_new_characters(const Model<float>& trained, int vocab_size, const ModelConfig& rates, std::mt19937_64& rng) {
    ModelConfig config = trained.config();
    if (vocab_size < config.vocab_size)
        throw Error(fmt::format("a model of {} characters cannot start from one of {}", vocab_size, config.vocab_size));
    config.vocab_size = vocab_size;
    config.take_regularization(rates);
    Model<float> model(config);
    model.initialize(rng);  // every weight drawn as a fresh run's, so that the new rows are drawn so too
    // The trained weights over them: whole, or the trained characters' rows of the embedding and the
    // head's weight and the first columns of the head's bias (the new characters' ids come last).
    for (std::size_t i = 0; i < model.parameters().size(); ++i) {
        const Matrix<float>& from = trained.parameters()[i].value;
        model.parameters()[i].value.topLeftCorner(from.rows(), from.cols()) = from;
    }
    return model;
}

TrainResult train(const TrainOptions& options_in, TrainingProgress& progress, const Communicator& processes) {
    TrainOptions options = options_in;
    options.threads = omp_get_max_threads();
    options.processes = processes.size();
    std::optional<Checkpoint> trained;  // --init-from's: its shape is the run's, and validate() judges that
    run_on_every_process(processes, [&] {
        if (options.init_from) trained = load_checkpoint_to_start_from(options);
        validate(options);
        check_text_can_be_shared(options, processes);
        static_cast<void>(stream_block(options.batch_size, processes.rank(), processes.size()));  // enough streams for all
    });
    check_processes_agree(processes, options_to_share(options), "was given other training options", kSameCommandAdvice);
    std::optional<RunLock> lock;
    std::optional<Corpus> corpus;
    run_on_every_process(processes, [&] {
        corpus = prepare_fresh_run(options, progress, processes, lock, trained ? &trained->vocab : nullptr);
    });
    check_processes_agree(processes, corpus_facts(options, *corpus), "reads another text", kSameCorpusAdvice);
    run_on_every_process(processes, [&] {  // the ids are in the run directory now
        if (!processes.is_first()) map_corpus(*corpus, options, false, progress, /*encoded_by_another=*/true);
        check_patience_has_validation(options, *corpus);
        options.train_characters = corpus->train_size;
        options.model.vocab_size = static_cast<int>(corpus->vocab.size());
        options.model.validate();
    });

    if (trained) progress.note(describe_start(*options.init_from, trained->vocab, corpus->vocab));
    Session session{options, std::move(*corpus), Model<float>(options.model), {}, {}, {}, std::mt19937_64(options.seed)};
    if (trained) session.model = model_with_new_characters(*trained->model, options.model.vocab_size, options.model, session.rng);
    else session.model.initialize(session.rng);
    trained.reset();  // its weights are the session's now, and its optimizer's moments are not this run's
    session.optimizer = Adam(session.model.parameters());
    if (options.average_decay > 0) session.average.emplace(session.model.parameters(), options.average_decay);
    session.processes = &processes;
    session.streams = stream_block(options.batch_size, processes.rank(), processes.size());
    session.carried = session.model.initial_state(session.streams.count);
    session.fresh = true;
    return TrainingLoop(session, progress).run();
}

std::uint64_t periodic_validation_characters(const TrainOptions& options) {
    if (options.validation_characters) return *options.validation_characters;
    const double between_validations = static_cast<double>(options.eval_every) * options.seq_length * options.batch_size;
    return std::max<std::uint64_t>(1, static_cast<std::uint64_t>(kAutomaticValidationShare * between_validations));
}

void check_options_take_effect(const TrainOptions& options, const std::vector<std::string>& given) {
    const auto was_given = [&](const char* flag) { return std::find(given.begin(), given.end(), flag) != given.end(); };
    if (was_given("--dropout-mask") && options.model.dropout == 0 && options.model.embed_dropout == 0)
        throw UsageError("--dropout-mask says how --dropout and --embed-dropout draw their masks, and both are 0; give a rate, "
                         "or leave --dropout-mask out");
    const LearningRateSchedule& schedule = options.learning_rate_schedule;
    if (schedule.kind == LearningRateSchedule::Kind::step) return;
    for (const char* flag : {"--lr-decay-every", "--lr-decay"})
        if (std::find(given.begin(), given.end(), flag) != given.end())
            throw UsageError(fmt::format("{} sets the step schedule's decay, and this run's --lr-schedule is {}; add "
                                         "--lr-schedule step, or leave {} out",
                                         flag, LearningRateSchedule::name(schedule.kind), flag));
}

TrainResult resume_training(const ResumeRequest& request, TrainingProgress& progress, const Communicator& processes) {
    const auto& run_directory = request.run_directory;
    const auto last_path = run_directory / "last.safetensors";
    std::optional<RunLock> lock;
    std::optional<Checkpoint> checkpoint;
    std::optional<Corpus> corpus;
    TrainOptions options;
    std::vector<std::string> changes;
    int threads_before = 0, processes_before = 1;
    run_on_every_process(processes, [&] {
        std::error_code error;
        if (std::filesystem::is_regular_file(run_directory, error))
            throw UsageError(fmt::format("{}: --resume takes the run's directory, not a file in it: --resume {}", run_directory.string(),
                                         quoted_for_shell(run_directory.parent_path().empty() ? "." : run_directory.parent_path().string())));
        if (!std::filesystem::is_directory(run_directory, error))
            throw Error(fmt::format("{}: no such run directory; give the --out of an earlier 'charlm train'", run_directory.string()));
        if (processes.is_first()) lock.emplace(run_directory);
        checkpoint = load_checkpoint(last_path);
        if (!checkpoint->optimizer || !checkpoint->carried_state)
            throw Error(fmt::format("{}: has no optimizer state to resume from; it was not written by 'charlm train'", last_path.string()));
        options = TrainOptions::from_json(options_for_resume(checkpoint->training.options, request, changes));
        // The model is the checkpoint's: its tensors' shapes, not what its options JSON says, size the run.
        const ModelConfig rates = options.model;
        options.model = checkpoint->config;
        options.model.take_regularization(rates);
        options.run_directory = run_directory;
        options.keep_checkpoints = request.options.keep_checkpoints;
        threads_before = options.threads;
        processes_before = options.processes;
        options.threads = omp_get_max_threads();
        options.processes = processes.size();
        validate(options);
        check_options_take_effect(options, request.given);
        static_cast<void>(stream_block(options.batch_size, processes.rank(), processes.size()));  // enough streams for all
        if (request.validation_file && !options.validation_file)
            throw UsageError("--val names where a moved validation file is now, and this run validates on part of its corpus; leave --val out");
        options.corpus = locate_recorded_file("corpus", "--corpus", options.corpus, options.corpus_fingerprint, request.corpus, progress);
        if (options.validation_file)
            options.validation_file = locate_recorded_file("validation file", "--val", *options.validation_file,
                                                           options.validation_fingerprint.value_or(FileFingerprint{}),
                                                           request.validation_file, progress);
        check_text_can_be_shared(options, processes);
        corpus = load_corpus(options, &checkpoint->vocab);
        if (processes.is_first()) map_corpus(*corpus, options, true, progress);
        if (checkpoint->carried_state->hidden.front().rows() != options.batch_size)
            throw Error(fmt::format("{}: carried state does not match the run's batch size", last_path.string()));
    });
    nlohmann::json shared_options = options_to_share(options);
    shared_options["checkpoint step"] = checkpoint->training.step;  // each process read the same last.safetensors
    check_processes_agree(processes, shared_options, "resumes another run or with other options", kSameCommandAdvice);
    check_processes_agree(processes, corpus_facts(options, *corpus), "reads another text", kSameCorpusAdvice);
    run_on_every_process(processes, [&] {  // the ids are in the run directory now
        if (!processes.is_first()) map_corpus(*corpus, options, true, progress, /*encoded_by_another=*/true);
        check_patience_has_validation(options, *corpus);
    });

    Session session{options,
                    std::move(*corpus),
                    std::move(*checkpoint->model),
                    std::move(*checkpoint->optimizer),
                    checkpoint->training,
                    {},
                    rng_from_string(checkpoint->training.rng_state)};
    session.model.set_regularization(options.model);
    if (options.average_decay > 0) {
        // A run that averaged goes on from its average; one that starts averaging now, from its weights.
        if (checkpoint->average) {
            session.average.emplace();
            session.average->values() = std::move(*checkpoint->average);
            session.average->set_decay(options.average_decay);
        } else {
            session.average.emplace(session.model.parameters(), options.average_decay);
            progress.note(fmt::format("--ema {}: the average of the parameters starts at step {}", options.average_decay,
                                      checkpoint->training.step));
        }
    }
    session.processes = &processes;
    session.streams = stream_block(options.batch_size, processes.rank(), processes.size());
    // This process's streams' rows of the whole batch's carried state.
    const ModelState<float>& whole = *checkpoint->carried_state;
    for (const auto& hidden : whole.hidden) session.carried.hidden.emplace_back(hidden.middleRows(session.streams.first, session.streams.count));
    for (const auto& cell : whole.cell) session.carried.cell.emplace_back(cell.middleRows(session.streams.first, session.streams.count));
    // Warnings only now, once every check has passed: a refusal is one line.
    warn_if_validations_change(TrainOptions::from_json(checkpoint->training.options), options, session.corpus.validation(),
                               session.state.best_validation_loss, progress);
    if (threads_before > 0 && threads_before != options.threads)
        progress.warning(fmt::format("the run trained with --threads {} and goes on with {}: its numbers will differ in the "
                                     "last bits from one uninterrupted run (give --threads {} to keep them the same)",
                                     threads_before, options.threads, threads_before));
    if (processes_before != options.processes)
        progress.warning(fmt::format("the run trained on {} process{} and goes on with {}: {}", processes_before,
                                     processes_before == 1 ? "" : "es", options.processes,
                                     session.model.regularized() ? "with dropout each process draws its own masks, so the run "
                                                                 "takes another path from here than one uninterrupted run "
                                                                 "(of the same kind)"
                                                               : "the same path, but its numbers will differ in the last "
                                                                 "bits from one uninterrupted run"));
    const std::int64_t steps_before = checkpoint->training.options.value("steps", options.steps);
    if (options.learning_rate_schedule.kind == LearningRateSchedule::Kind::cosine && options.steps != steps_before) {
        const std::int64_t next_step = checkpoint->training.step + 1;
        progress.warning(fmt::format("the cosine schedule now decays over {} steps, not {}: the learning rate moves from {:.3g} "
                                     "to {:.3g}",
                                     options.steps, steps_before, options.learning_rate_schedule.at(next_step, steps_before),
                                     options.learning_rate_schedule.at(next_step, options.steps)));
    }
    progress.note(fmt::format("resuming {} at step {}{}", run_directory.string(), session.state.step,
                              changes.empty() ? std::string() : fmt::format("; changed: {}", fmt::join(changes, ", "))));
    if (options.steps > 0 && session.state.step >= options.steps)
        progress.warning(fmt::format("the run is already at step {}, not below --steps {}; nothing to do", session.state.step,
                                     options.steps));
    return TrainingLoop(session, progress).run();
}

StepOutcome train_step(Model<float>& model, Adam& optimizer, const Batch& batch, ModelState<float>& carried, double clip,
                       double learning_rate, const Communicator& processes) {
    StepOutcome outcome;
    if (batch.starts_streams) carried.reset();
    model.zero_gradients();
    model.forward(batch.inputs, batch.seq_length, batch.batch_size, carried);
    // The whole batch's loss, which every process then judges alike: one returning early alone would
    // leave the others waiting for its gradients.
    LossSum loss = model.loss(batch.targets);
    if (processes.size() > 1) {
        std::array<double, 2> sums{loss.total_nats, static_cast<double>(loss.count)};
        processes.sum(sums);
        loss = {sums[0], static_cast<std::size_t>(sums[1])};
    }
    outcome.loss = loss.mean();
    if (!std::isfinite(outcome.loss)) {
        outcome.finite = false;
        return outcome;
    }
    model.backward(loss.count);
    // Each process's gradient is its block's share of the whole batch's mean: summed, they are that
    // mean, identical everywhere, and so are the norm, the clipping and Adam's update that follow.
    if (processes.size() > 1)
        for (auto& parameter : model.parameters())
            processes.sum(std::span<float>(parameter.gradient.data(), static_cast<std::size_t>(parameter.gradient.size())));
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
