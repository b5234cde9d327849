// Evaluation: the training forward pass and loss, summed over the whole text or a chosen part of it;
// and dynamic evaluation, which adapts the weights to the text as it reads it.
#include "charlm/eval.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>

#include <fmt/format.h>

#include "charlm/error.hpp"
#include "charlm/ids_file.hpp"
#include "charlm/optim.hpp"

namespace charlm {

LossSum evaluate_loss(Model<float>& model, TokenSpan ids, int seq_length, int batch_size, const EvaluationSelection& selection,
                      const EvaluationStop& stop) {
    LossSum total;
    ModelState<float> state;
    const WeightsFreeze<float> freeze(model);  // the weights stay as they are: packed once, not once per window
    struct Stopped {};
    try {
        for_each_evaluation_window(ids, seq_length, batch_size, [&](const Batch& window) {
            if (stop && stop()) throw Stopped{};  // the windows' maker has no way out but this
            if (window.starts_streams) state = model.initial_state(window.batch_size);
            model.forward(window.inputs, window.seq_length, window.batch_size, state);
            total += model.loss(window.targets);
        }, selection);
    } catch (const Stopped&) {
    }
    return total;
}

LossSum evaluate_loss(Model<float>& model, TokenSpan ids, int seq_length, int batch_size, EvaluationSelection selection,
                      const EvaluationStop& stop, const Communicator& processes) {
    const int streams = evaluation_stream_count(ids, batch_size);
    const int sharing = std::min(processes.size(), streams);
    LossSum mine;
    if (processes.rank() < sharing) {
        const StreamBlock block = stream_block(streams, processes.rank(), sharing);
        selection.first_stream = block.first;
        selection.stream_count = block.count;
        mine = evaluate_loss(model, ids, seq_length, batch_size, selection, stop);
    }
    return summed_across(processes, mine);
}

LossSum summed_across(const Communicator& processes, const LossSum& mine) {
    if (processes.size() == 1) return mine;
    std::array<double, 2> sums{mine.total_nats, static_cast<double>(mine.count)};
    processes.sum(sums);
    return {sums[0], static_cast<std::size_t>(sums[1])};
}

nlohmann::json AdaptOptions::to_json() const {
    return {{"learning_rate", learning_rate}, {"decay", decay}, {"window", window}};
}

void validate(const AdaptOptions& options) {
    if (!(options.learning_rate >= 0) || !std::isfinite(options.learning_rate))
        throw UsageError(fmt::format("--adapt-lr must be a number of at least 0, not {}", options.learning_rate));
    if (!(options.decay >= 0 && options.decay <= 1))
        throw UsageError(fmt::format("--adapt-decay must be in [0, 1], not {}; 0 never decays, 1 goes back to the trained "
                                     "weights after every window",
                                     options.decay));
    if (options.window < 1) throw UsageError(fmt::format("--adapt-window must be at least 1 character, not {}", options.window));
}

namespace {

// A model with `model`'s weights, and workspaces of its own.
Model<float> copy_of(const Model<float>& model) {
    Model<float> copy(model.config());
    copy.set_precision(model.precision());
    for (std::size_t i = 0; i < copy.parameters().size(); ++i) copy.parameters()[i].value = model.parameters()[i].value;
    return copy;
}

}  // namespace

AdaptedLoss evaluate_loss_adapting(Model<float>& model, TokenSpan ids, const AdaptOptions& options, const AdaptProgressCallback& progress) {
    validate(options);
    // The trained weights score the plain figure and anchor the decay. Neither model is frozen: the
    // adapting one changes after every window, and the trained one must score through the same code,
    // so that weights that never move (learning rate 0, decay 1) give exactly the plain figure.
    Model<float> trained = copy_of(model);
    model.set_weights_frozen(false);
    WeightAdaptation adaptation(trained.parameters());
    AdaptedLoss total;
    AdaptProgress where{.characters_total = evaluation_pair_count(ids, 1)};
    ModelState<float> trained_state, state;
    const double uniform_loss = std::log(static_cast<double>(model.config().vocab_size));
    for_each_evaluation_window(ids, options.window, 1, [&](const Batch& window) {
        if (window.starts_streams) {
            trained_state = trained.initial_state(1);
            state = model.initial_state(1);
        }
        trained.forward(window.inputs, window.seq_length, window.batch_size, trained_state);
        const LossSum plain = trained.loss(window.targets);
        total.plain += plain;
        // Scored before the model learns from it: a window's figure never depends on the window itself.
        model.forward(window.inputs, window.seq_length, window.batch_size, state);
        const LossSum scored = model.loss(window.targets);
        total.adapted += scored;
        const auto diverged = [&](const std::string& what) {
            return Error(fmt::format("dynamic evaluation diverged: {} in the window after character {} of {}; lower --adapt-lr "
                                     "(now {:g}) or raise --adapt-decay (now {:g})",
                                     what, where.characters_scored, where.characters_total, options.learning_rate, options.decay));
        };
        // Far worse than a uniform guess and than the trained weights: the steps have thrown the weights
        // away, and a figure of them (finite or not) would be garbage.
        if (!std::isfinite(scored.total_nats) || scored.mean() > 3 * std::max(uniform_loss, plain.mean()))
            throw diverged(fmt::format("the loss became {:.4g} nats/char (the trained weights: {:.4f})", scored.mean(), plain.mean()));
        model.zero_gradients();
        model.backward();
        // The state carried on was computed under the weights before the step: truncated BPTT's
        // approximation, as in training.
        if (!adaptation.step(model.parameters(), options.learning_rate, options.decay))
            throw diverged("a weight stopped being finite");
        where.characters_scored += scored.count;
        where.plain = total.plain;
        where.adapted = total.adapted;
        if (progress) progress(where);
    });
    return total;
}

nlohmann::json EvalResult::to_json() const {
    nlohmann::json json = {{"nats_per_character", nats_per_character}, {"perplexity", perplexity},
                           {"bits_per_character", bits_per_character}, {"characters_scored", characters_scored},
                           {"unknown_characters", unknown_characters}, {"unknown_fraction", unknown_fraction},
                           {"adapted", adaptation.has_value()}};
    if (adaptation) {
        json["plain"] = {{"nats_per_character", plain_nats_per_character}, {"perplexity", perplexity_of(plain_nats_per_character)},
                         {"bits_per_character", bits_per_character_of(plain_nats_per_character)}};
        json["adaptation"] = adaptation->to_json();
    }
    return json;
}

namespace {

// The counts of a text's known and unknown characters, refused where too few are known or too many
// unknown. `name`: the text as the user knows it, for an error message.
EvalResult counted(std::size_t known_characters, std::size_t unknown_characters, const EvalOptions& options, const std::string& name) {
    EvalResult result;
    result.unknown_characters = unknown_characters;
    const std::size_t all_characters = known_characters + unknown_characters;
    result.unknown_fraction = all_characters ? static_cast<double>(unknown_characters) / static_cast<double>(all_characters) : 0.0;
    if (known_characters < 2)
        throw Error("the text has fewer than two characters in the model's vocabulary; nothing to score");
    // Refused before the scoring, which takes a while on a large file.
    if (result.unknown_fraction > kMostUnknownFraction && !options.allow_unknown)
        throw Error(fmt::format("{}{:.3g}% of the characters ({} of {}) are not in the model's vocabulary (evaluation accepts "
                                "up to {:g}%), so a score of the rest would say little about the text; pass --allow-unknown "
                                "to score it anyway",
                                name.empty() ? "" : name + ": ", 100 * result.unknown_fraction, unknown_characters,
                                all_characters, 100 * kMostUnknownFraction));
    return result;
}

// Scores `ids`, whose counts `result` holds, and fills in its figures.
EvalResult score(Model<float>& model, TokenSpan ids, EvalResult result, const EvalOptions& options, const Communicator& processes) {
    LossSum loss;
    if (options.adapt) {
        const AdaptedLoss both = evaluate_loss_adapting(model, ids, *options.adapt, options.adapt_progress);
        loss = both.adapted;
        result.adaptation = options.adapt;
        result.plain_nats_per_character = both.plain.mean();
    } else {
        // Each stream starts from the zero state; keep streams long (at least ~1k characters) so that
        // cold starts barely count, and use up to 32 of them for speed on long texts.
        const int batch_size = static_cast<int>(std::clamp<std::size_t>(ids.size() / 1024, 1, 32));
        loss = evaluate_loss(model, ids, 100, batch_size, {}, {}, processes);
    }
    result.characters_scored = loss.count;
    result.nats_per_character = loss.mean();
    result.perplexity = perplexity_of(result.nats_per_character);
    result.bits_per_character = bits_per_character_of(result.nats_per_character);
    return result;
}

}  // namespace

EvalResult evaluate_file(Model<float>& model, const Vocab& vocab, const std::filesystem::path& path, const EvalOptions& options,
                         const Communicator& processes) {
    MappedIds ids;
    EvalResult result;
    // Every process encodes the text itself. One that fails alone (a full TMPDIR on its machine) must
    // not leave the others waiting for it in the scoring's sums: all stop, with its error.
    run_on_every_process(processes, [&] {
        if (options.adapt && processes.size() > 1)
            throw UsageError("--adapt reads the text as one stream, which one process runs; run it without mpirun");
        std::filesystem::path folder = options.ids_folder;
        if (folder.empty()) {
            std::error_code error;
            folder = std::filesystem::temp_directory_path(error);
            if (error) throw Error(fmt::format("TMPDIR ({}) is not a folder, and evaluation keeps the text's ids there; set it to one",
                                               std::getenv("TMPDIR") ? std::getenv("TMPDIR") : ""));
        }
        std::size_t unknown_characters = 0;
        ids = MappedIds::encode_unnamed(path, vocab, unknown_characters, folder);
        result = counted(ids.size(), unknown_characters, options, path.string());
    });
    return score(model, ids.span(), std::move(result), options, processes);
}

}  // namespace charlm
