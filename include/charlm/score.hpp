// Scoring a text: what the model expected at each character, how surprised it was, and what its neurons
// did meanwhile. A model operation (charlm eval --html, and /v1/score through the decoder); no serving here.
#pragma once

#include <string>
#include <vector>

#include "charlm/model.hpp"
#include "charlm/text.hpp"

namespace charlm {

// A neuron of the model: a unit of a layer's hidden state h, or of the LSTM's cell state c.
struct Neuron {
    int layer = 0;
    int unit = 0;
    bool cell = false;
    bool operator==(const Neuron&) const = default;
};
// Throws UsageError where the model has no such neuron (a layer or unit past its size, a cell state
// of a cell that has none).
void check_neuron(const ModelConfig& config, const Neuron& neuron);

// A character and the natural log of the probability the model gave it.
struct CharacterLogprob {
    char32_t character = 0;
    float logprob = 0;
};

struct ScoreRequest {
    std::u32string text;          // characters of the vocabulary only, at least 2
    int top = 5;                  // most likely characters reported at each position
    std::vector<Neuron> neurons;  // whose activations to report (check_neuron)
    int most_varying = 16;        // how many of the neurons that vary most on the text to list
};

struct NeuronTrace {
    Neuron neuron;
    std::vector<float> activations;  // per character: the value after reading it
};

struct NeuronSpread {
    Neuron neuron;
    double standard_deviation = 0;
};

struct ScoreResult {
    LossSum loss;                                   // over every character but the first
    std::vector<float> losses;                      // per character: -ln p of it; NaN for the first
    std::vector<std::vector<CharacterLogprob>> top; // per character: what the model expected there (empty for the first)
    std::vector<NeuronTrace> neurons;               // as asked, in order
    std::vector<NeuronSpread> most_varying;         // hidden and cell states ranked apart, in turns, largest deviation first
};

// Scores `request.text` one character a step, as a batch of one whose row computes as if alone
// (Model::set_rows_as_if_alone), so that the figures are /v1/score's to the bit. `threads` as
// set_thread_count takes it; the scoring runs on a thread of its own, so that the caller's OpenMP
// setting stays as it was. Throws UsageError for a request the model cannot serve.
ScoreResult score_text(Model<float>& model, const Vocab& vocab, const ScoreRequest& request, int threads = 0);

}  // namespace charlm
