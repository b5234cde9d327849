// Scores a text under a model: cross-entropy in nats per character, perplexity and bits per character.
#pragma once

#include <filesystem>
#include <span>

#include <nlohmann/json.hpp>

#include "charlm/batches.hpp"
#include "charlm/model.hpp"

namespace charlm {

// Summed loss over every (input, target) pair of `ids`, read as B streams in windows of T steps, or
// over the part of them that `selection` names (see for_each_evaluation_window).
LossSum evaluate_loss(Model<float>& model, TokenSpan ids, int seq_length = 100, int batch_size = 32,
                      const EvaluationSelection& selection = {});

// Past this share of a text's characters outside the vocabulary, evaluation refuses unless allowed
// (EvalOptions::allow_unknown). A score of what is left says little about such a text: with a tenth
// of its characters cut out, the model reads spliced contexts it never saw, and a text that is mostly
// another script or encoding scores a few characters of punctuation. A few stray characters (curly
// quotes in a plain-ASCII model's text) stay well below it.
constexpr double kMostUnknownFraction = 0.10;

struct EvalOptions {
    bool allow_unknown = false;  // score whatever share of the text is unknown (it is still counted)
};

struct EvalResult {
    double nats_per_character = 0;
    double perplexity = 0;
    double bits_per_character = 0;
    std::size_t characters_scored = 0;    // predictions made: known characters minus one
    std::size_t unknown_characters = 0;   // dropped from the text before scoring
    double unknown_fraction = 0;          // unknown_characters over all the text's characters
    nlohmann::json to_json() const;
};

// Characters outside the vocabulary are removed from the text before scoring and counted. Throws
// Error where fewer than two characters are known, and where more than kMostUnknownFraction of them
// are unknown unless options.allow_unknown.
// The text is read as up to 32 streams of at least ~1k characters each, in windows of 100 steps.
EvalResult evaluate_text(Model<float>& model, const Vocab& vocab, const std::u32string& text, const EvalOptions& options = {});
// The same for a file, streamed into ids of one byte per character (for up to 256 distinct ones), so
// that scoring a gigabyte takes about a gigabyte. Throws Error for an unreadable or non-UTF-8 file.
EvalResult evaluate_file(Model<float>& model, const Vocab& vocab, const std::filesystem::path& path,
                         const EvalOptions& options = {});

}  // namespace charlm
