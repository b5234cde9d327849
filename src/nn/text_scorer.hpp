// What one step's logits say about a character (its log-probability, the most likely ones), and the
// reader that gathers a text's ScoreResult one step at a time as a row of any batch. No threads here:
// score_text and the server's decoder drive it.
#pragma once

#include <span>
#include <vector>

#include "charlm/score.hpp"

namespace charlm {

// ln of the softmax's denominator over a row of logits, in double: ln p(id) = logit[id] - this.
double log_partition(std::span<const float> logits);

// The `count` most likely ids of a row, most likely first (ties by id), with their log-probabilities;
// `order` is scratch, sized here.
std::vector<CharacterLogprob> most_likely(std::span<const float> logits, double partition, int count, const Vocab& vocab,
                                          std::vector<TokenId>& order);

class TextScorer {
public:
    // Throws UsageError for a text of fewer than 2 characters or a neuron the model has not.
    TextScorer(const ModelConfig& config, const Vocab& vocab, ScoreRequest request);

    TokenId next_input() { return text_[fed_++]; }
    // After the step that read next_input(): `logits` and row `row` of `state` are this text's.
    void after_step(std::span<const float> logits, const ModelState<float>& state, Eigen::Index row);
    bool finished() const { return finished_; }
    ScoreResult& result() { return result_; }

private:
    void rank_most_varying(std::size_t layers, std::size_t units, bool has_cell);

    const Vocab& vocab_;
    ScoreRequest request_;
    std::vector<TokenId> text_;
    std::size_t fed_ = 0;
    bool finished_ = false;
    ScoreResult result_;
    std::vector<double> means_, spreads_;  // Welford's running mean and sum of squared deviations, per neuron
    std::vector<TokenId> order_;           // scratch for most_likely()
};

}  // namespace charlm
