// The training loop's validations: the periodic ones and their checkpoints, and the run's last scoring of the held-out text.
#include <array>
#include <cmath>
#include <optional>

#include <fmt/format.h>

#include "charlm/display.hpp"
#include "charlm/eval.hpp"
#include "training_loop.hpp"

namespace charlm {

namespace training {

// The validation pass, where the run has validation text, and the checkpoints it leads to.
void TrainingLoop::validate_and_save(ProgressReport& report) {
    report.evaluated = true;
    check_parameters_agree(session_.model, session_.state.step, processes_);
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
    if (exploded(validation_loss))
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

// The last step's loss on more of the held-out text than the validations scored: once, at the run's
// end, so that the run has a figure to compare with `charlm eval` and with runs validated whole. All of
// it where that is cheap beside the training (--final-val auto), else the evenly spread part that is:
// on a corpus of gigabytes, all of it would cost hours at the end of every run. A stop request during
// it ends it at once, with no figure: the checkpoints were saved before it began.
std::optional<LossSum> TrainingLoop::score_held_out_text_at_end() {
    if (!has_validation_ || options_.final_validation == FinalValidation::none) return std::nullopt;
    const TokenSpan held_out = session_.corpus.validation();
    const std::size_t all = held_out.size() - 1;
    const std::size_t periodic = periodic_validation_pairs(held_out, options_);
    const std::size_t most = final_validation_characters(options_, session_.state.step);
    const std::size_t covered = evaluation_pair_count(held_out, options_.batch_size, {.max_characters = most});
    if (covered <= periodic) return std::nullopt;  // the last validation scored as much, at this step
    // It may take a while on a large text: say what it is waiting for.
    progress_.note(covered == all ? fmt::format("scoring all {} held-out characters at step {} (each validation scored {} of them)",
                                                format_count(all), session_.state.step, format_count(periodic))
                                  : fmt::format("scoring {} of the {} held-out characters at step {}, spread evenly (each validation "
                                                "scored {}; --final-val all scores all of them)",
                                                format_count(covered), format_count(all), session_.state.step, format_count(periodic)));
    session_.model.set_dropout_generator(nullptr);
    std::optional<AveragedWeights> averaged;  // the weights the last validation preferred
    if (averaged_is_better_) averaged.emplace(session_);
    const LossSum loss = evaluate_held_out(most, /*stoppable=*/true);
    // Every process's word on it: one stopped alone scored only part of its block.
    std::array<double, 1> stopped{stop_was_requested() ? 1.0 : 0.0};
    processes_.sum(stopped);
    if (stopped[0] > 0) {
        final_validation_cut_short_ = true;
        return std::nullopt;
    }
    return loss;
}

// The loss of the held-out text (at most `max_characters` of it: 0 for all), shared by the processes (evaluate_loss,
// eval.hpp). `stoppable`: a stop request ends this process's part early (the caller then discards the figure).
LossSum TrainingLoop::evaluate_held_out(std::size_t max_characters, bool stoppable) {
    return evaluate_loss(session_.model, session_.corpus.validation(), options_.seq_length, options_.batch_size,
                         {.max_characters = max_characters}, stoppable ? EvaluationStop(stop_was_requested) : EvaluationStop(),
                         processes_);
}

}  // namespace training

// The held-out characters (predictions) that each periodic validation scores under `options`.
std::size_t periodic_validation_pairs(TokenSpan held_out, const TrainOptions& options) {
    return evaluation_pair_count(held_out, options.batch_size, {.max_characters = periodic_validation_characters(options)});
}

}  // namespace charlm
