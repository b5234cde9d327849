// Scores a text under a model: cross-entropy in nats per character, perplexity and bits per character.
#pragma once

#include <filesystem>
#include <span>

#include <nlohmann/json.hpp>

#include "charlm/model.hpp"

namespace charlm {

// Summed loss over every (input, target) pair of `ids`, read as B streams in windows of T steps.
LossSum evaluate_loss(Model<float>& model, TokenSpan ids, int seq_length = 100, int batch_size = 32);

struct EvalResult {
    double nats_per_character = 0;
    double perplexity = 0;
    double bits_per_character = 0;
    std::size_t characters_scored = 0;    // predictions made: known characters minus one
    std::size_t unknown_characters = 0;   // dropped from the text before scoring
    nlohmann::json to_json() const;
};

// Characters outside the vocabulary are removed from the text before scoring and counted.
// The text is read as up to 32 streams of at least ~1k characters each, in windows of 100 steps.
EvalResult evaluate_text(Model<float>& model, const Vocab& vocab, const std::u32string& text);
// The same for a file, streamed into ids of one byte per character (for up to 256 distinct ones), so
// that scoring a gigabyte takes about a gigabyte. Throws Error for an unreadable or non-UTF-8 file.
EvalResult evaluate_file(Model<float>& model, const Vocab& vocab, const std::filesystem::path& path);

}  // namespace charlm
