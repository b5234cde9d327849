// The training loop: its steps, the checkpoints between them, how it stops, and what the progress sinks hear.
#include "loop.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <csignal>
#include <sstream>
#include <utility>

#include <fmt/format.h>

#include "charlm/clock.hpp"
#include "charlm/display.hpp"
#include "charlm/error.hpp"
#include "charlm/eval.hpp"
#include "metrics_log.hpp"
#include "run_directory.hpp"
#include "step.hpp"
#include "training_loop.hpp"

namespace charlm {

namespace training {

namespace {

volatile std::sig_atomic_t stop_requested = 0;
volatile std::sig_atomic_t loop_running = 0;  // a stop request is heard only while the loop runs

// The loss past which training has exploded (char-rnn stops past three times its first loss): three
// times `starting_loss`, or that of a uniform guess (ln V) where that is higher.
double exploded_loss_past(double starting_loss, double uniform_loss) {
    return 3 * std::max(starting_loss, uniform_loss);
}

}  // namespace

bool stop_was_requested() { return stop_requested != 0; }

TrainingLoop::TrainingLoop(Session& session, TrainingProgress& progress)
    : session_(session),
      options_(session.options),
      processes_(*session.processes),
      progress_(progress),
      last_path_(session.options.run_directory / run_files::kLastCheckpoint),
      best_path_(session.options.run_directory / run_files::kBestCheckpoint),
      stream_(session.corpus.train(), session.options.seq_length, session.options.batch_size, session.streams),
      has_validation_(session.corpus.validation().size() >= 2),
      saved_step_(session.state.step > 0 ? session.state.step : -1),
      uniform_loss_(std::log(static_cast<double>(session.corpus.vocab.size()))),
      exploded_loss_(exploded_loss_past(uniform_loss_, uniform_loss_)) {
    stream_.set_position(session.state.data_position % stream_.windows_per_pass());
    if (processes_.is_first()) metrics_log_.emplace(options_.run_directory, session.fresh);
    // Dropout's masks come from one key a window, drawn from the run's generator (which checkpoints keep), and
    // keyed by the stream's place in the whole batch: every process draws the same keys. A run begun before that
    // (DropoutKeys::local) keyed them by the place in each process's own block, and gave each process other than
    // the first a generator of its own, derived from the run's, so that no two blocks shared masks: it goes on so.
    if (!processes_.is_first() && session.model.config().dropout_keys == DropoutKeys::local) {
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
    if (!stop) {
        progress_.run_started(description());
        if (!session_.precision_note.empty()) progress_.note(session_.precision_note);
    }
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
    std::optional<LossSum> final_validation;
    if (*stop != StopReason::interrupted && steps_this_run_ > 0) final_validation = score_held_out_text_at_end();
    if (final_validation_cut_short_)
        progress_.warning(fmt::format("stopped during the scoring of the held-out text at the run's end, which has no figure; the "
                                      "checkpoints of step {} were saved before it",
                                      session_.state.step));
    if (*stop == StopReason::patience)
        progress_.note(fmt::format("stopped early: no better validation loss in {} validations", options_.patience));
    if (*stop == StopReason::interrupted)
        progress_.warning(fmt::format("stopped at step {}; continue with: charlm train --resume {}", session_.state.step,
                                      quoted_for_shell(options_.run_directory.string())));
    const TrainResult finished = final_result(*stop, final_validation);
    if (metrics_log_) metrics_log_->run_finished(finished);
    progress_.run_finished(finished);
    return finished;
}

// Temporaries of checkpoint writes that a killed process never renamed. The run directory's lock is
// held, so none of them belongs to a live process.
void TrainingLoop::remove_stale_temporaries() const {
    if (!processes_.is_first()) return;
    std::error_code ignored;
    for (const auto& entry : std::filesystem::directory_iterator(options_.run_directory, ignored))
        if (run_files::is_stale_temporary(entry.path().filename().string())) std::filesystem::remove(entry.path(), ignored);
}

void TrainingLoop::warn_about_options_that_do_nothing() {
    // A run begins with validation text, or with --val-fraction 0 (a held-out part too small is refused).
    const std::size_t held_out = session_.corpus.validation().size();
    if (!has_validation_)
        progress_.warning(fmt::format(
            "no validation text ({}): no best.safetensors, and the summary shows the training loss{}",
            options_.validation_fraction == 0 && !options_.validation_file
                ? std::string("--val-fraction 0")
                : fmt::format("{} has {} character{}", options_.validation_file ? options_.validation_file->string() : "the held-out part",
                              held_out, held_out == 1 ? "" : "s"),
            session_.average ? fmt::format("; the average of the weights (--ema {}) is kept for a resume but never scored, so "
                                           "--ema 0 saves its time", options_.average_decay)
                             : std::string()));
    const LearningRateSchedule& schedule = options_.learning_rate_schedule;
    if (options_.steps > 0 && schedule.warmup_steps > options_.steps)
        progress_.warning(fmt::format("--warmup {} is longer than the run's {} steps: the learning rate never reaches --lr {}",
                                      schedule.warmup_steps, options_.steps, schedule.peak_learning_rate));
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
    session_.model.set_dropout_generator(&session_.rng, static_cast<std::size_t>(session_.streams.first));
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
    if (steps_this_run_ == 0 && session_.fresh) exploded_loss_ = exploded_loss_past(outcome.loss, uniform_loss_);
    if (exploded(outcome.loss))
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

// Every process calls it at the same step; process 0 alone writes. A kept checkpoint goes to `kept_path`.
void TrainingLoop::save(CheckpointKind kind, const std::filesystem::path& kept_path) {
    const bool for_resume = kind == CheckpointKind::last;
    const std::filesystem::path& path = for_resume ? last_path_ : kind == CheckpointKind::best ? best_path_ : kept_path;
    // last.safetensors holds every stream's carried state, whichever process ran it: the run resumes
    // on any process count.
    const ModelState<float> carried = for_resume && processes_.size() > 1 ? gather_carried_state(session_.model, session_.carried, options_.batch_size, processes_)
                                                                                   : ModelState<float>{};
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

StepProgress TrainingLoop::step_progress(double learning_rate) const {
    StepProgress progress;
    progress.step = session_.state.step;
    progress.total_steps = options_.steps;
    progress.epoch = static_cast<double>(session_.state.step) * options_.seq_length * options_.batch_size /
                     static_cast<double>(session_.corpus.train().size());
    progress.train_loss = loss_since_report_ / static_cast<double>(steps_since_report_);
    progress.learning_rate = learning_rate;
    progress.chars_per_second = chars_per_second_;
    progress.precision = session_.model.precision();
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
    last_train_loss_ = report.train_loss;
    loss_since_report_ = 0;
    steps_since_report_ = 0;
    last_report_ = Clock::now();
}

TrainResult TrainingLoop::final_result(StopReason stopped_by, std::optional<LossSum> final_validation) const {
    TrainResult result;
    result.steps = session_.state.step;
    result.last_train_loss = steps_since_report_ > 0 ? std::optional<double>(loss_since_report_ / static_cast<double>(steps_since_report_))
                                                     : last_train_loss_;
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
        if (final_validation) {
            result.final_validation_loss = final_validation->mean();
            result.final_validation_characters = final_validation->count;
            result.final_validation_is_averaged = averaged_is_better_;
        }
        result.final_validation_cut_short = final_validation_cut_short_;
    }
    return result;
}

}  // namespace training

TrainResult run_training_loop(Session& session, TrainingProgress& progress) {
    return training::TrainingLoop(session, progress).run();
}

bool request_training_stop() {
    training::stop_requested = 1;
    return training::loop_running != 0;
}

}  // namespace charlm
