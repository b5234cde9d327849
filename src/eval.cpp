// Evaluation: the training forward pass and loss, summed over the whole text or a chosen part of it.
#include "charlm/eval.hpp"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "charlm/error.hpp"

namespace charlm {

LossSum evaluate_loss(Model<float>& model, TokenSpan ids, int seq_length, int batch_size, const EvaluationSelection& selection) {
    LossSum total;
    ModelState<float> state;
    const WeightsFreeze<float> freeze(model);  // the weights stay as they are: packed once, not once per window
    for_each_evaluation_window(ids, seq_length, batch_size, [&](const Batch& window) {
        if (window.starts_streams) state = model.initial_state(window.batch_size);
        model.forward(window.inputs, window.seq_length, window.batch_size, state);
        LossSum window_loss = model.loss(window.targets);
        total.total_nats += window_loss.total_nats;
        total.count += window_loss.count;
    }, selection);
    return total;
}

nlohmann::json EvalResult::to_json() const {
    return {{"nats_per_character", nats_per_character}, {"perplexity", perplexity},
            {"bits_per_character", bits_per_character}, {"characters_scored", characters_scored},
            {"unknown_characters", unknown_characters}, {"unknown_fraction", unknown_fraction}};
}

namespace {

// `name`: the text as the user knows it, for an error message ("" for a text in memory).
EvalResult score(Model<float>& model, TokenSpan ids, std::size_t unknown_characters, const EvalOptions& options,
                 const std::string& name) {
    EvalResult result;
    result.unknown_characters = unknown_characters;
    const std::size_t all_characters = ids.size() + unknown_characters;
    result.unknown_fraction = all_characters ? static_cast<double>(unknown_characters) / static_cast<double>(all_characters) : 0.0;
    if (ids.size() < 2)
        throw Error("the text has fewer than two characters in the model's vocabulary; nothing to score");
    // Refused before the scoring, which takes a while on a large file.
    if (result.unknown_fraction > kMostUnknownFraction && !options.allow_unknown)
        throw Error(fmt::format("{}{:.3g}% of the characters ({} of {}) are not in the model's vocabulary (evaluation accepts "
                                "up to {:g}%), so a score of the rest would say little about the text; pass --allow-unknown "
                                "to score it anyway",
                                name.empty() ? "" : name + ": ", 100 * result.unknown_fraction, unknown_characters,
                                all_characters, 100 * kMostUnknownFraction));
    // Each stream starts from the zero state; keep streams long (at least ~1k characters) so that
    // cold starts barely count, and use up to 32 of them for speed on long texts.
    const int batch_size = static_cast<int>(std::clamp<std::size_t>(ids.size() / 1024, 1, 32));
    const LossSum loss = evaluate_loss(model, ids, 100, batch_size);
    result.characters_scored = loss.count;
    result.nats_per_character = loss.mean();
    result.perplexity = perplexity_of(result.nats_per_character);
    result.bits_per_character = bits_per_character_of(result.nats_per_character);
    return result;
}

}  // namespace

EvalResult evaluate_text(Model<float>& model, const Vocab& vocab, const std::u32string& text, const EvalOptions& options) {
    std::size_t unknown_characters = 0;
    const std::vector<TokenId> ids = vocab.encode_known(text, unknown_characters);
    return score(model, ids, unknown_characters, options, "");
}

EvalResult evaluate_file(Model<float>& model, const Vocab& vocab, const std::filesystem::path& path, const EvalOptions& options) {
    std::size_t unknown_characters = 0;
    const CompactIds ids = CompactIds::encode_file(path, vocab, &unknown_characters);
    return score(model, ids.span(), unknown_characters, options, path.string());
}

}  // namespace charlm
