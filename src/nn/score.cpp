// Scoring a text one character a step: TextScorer gathers the figures, score_text drives the model (see score.hpp).
#include "charlm/score.hpp"

#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <numeric>
#include <optional>
#include <thread>

#include <fmt/format.h>

#include "charlm/error.hpp"
#include "charlm/threads.hpp"
#include "nn/text_scorer.hpp"

namespace charlm {

void check_neuron(const ModelConfig& config, const Neuron& neuron) {
    if (neuron.layer < 0 || neuron.layer >= config.layers)
        throw UsageError(fmt::format("no layer {}: the model has layers 0 to {}", neuron.layer, config.layers - 1));
    if (neuron.unit < 0 || neuron.unit >= config.hidden_size)
        throw UsageError(fmt::format("no unit {}: a layer has units 0 to {}", neuron.unit, config.hidden_size - 1));
    if (neuron.cell && !config.has_cell_state())
        throw UsageError(fmt::format("a {} has no cell state; ask for \"hidden\"", to_string(config.cell)));
}

// ---- one step's logits ---------------------------------------------------------------------------------

double log_partition(std::span<const float> logits) {
    const float most = *std::max_element(logits.begin(), logits.end());
    double sum = 0;
    for (float logit : logits) sum += std::exp(static_cast<double>(logit - most));
    return static_cast<double>(most) + std::log(sum);
}

std::vector<CharacterLogprob> most_likely(std::span<const float> logits, double partition, int count, const Vocab& vocab,
                                          std::vector<TokenId>& order) {
    const std::size_t kept = std::min(static_cast<std::size_t>(std::max(count, 0)), logits.size());
    order.resize(logits.size());
    std::iota(order.begin(), order.end(), TokenId{0});
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(kept), order.end(), [&](TokenId a, TokenId b) {
        return logits[static_cast<std::size_t>(a)] != logits[static_cast<std::size_t>(b)]
                   ? logits[static_cast<std::size_t>(a)] > logits[static_cast<std::size_t>(b)]
                   : a < b;
    });
    std::vector<CharacterLogprob> top(kept);
    for (std::size_t i = 0; i < kept; ++i)
        top[i] = {vocab.code_point_of(order[i]), static_cast<float>(logits[static_cast<std::size_t>(order[i])] - partition)};
    return top;
}

// ---- the text's figures, step by step --------------------------------------------------------------------

TextScorer::TextScorer(const ModelConfig& config, const Vocab& vocab, ScoreRequest request)
    : vocab_(vocab), request_(std::move(request)) {
    if (request_.text.size() < 2) throw UsageError("a text to score needs at least 2 characters");
    for (const Neuron& neuron : request_.neurons) check_neuron(config, neuron);
    text_ = vocab_.encode(request_.text);
    const std::size_t neurons = static_cast<std::size_t>(config.layers) * static_cast<std::size_t>(config.hidden_size) *
                                (config.has_cell_state() ? 2 : 1);
    means_.assign(neurons, 0.0);
    spreads_.assign(neurons, 0.0);
    result_.losses.reserve(request_.text.size());
    result_.losses.push_back(std::numeric_limits<float>::quiet_NaN());
    result_.top.emplace_back();
    for (const Neuron& neuron : request_.neurons) {
        result_.neurons.push_back({neuron, {}});
        result_.neurons.back().activations.reserve(request_.text.size());
    }
}

void TextScorer::after_step(std::span<const float> logits, const ModelState<float>& state, Eigen::Index row) {
    // The state now holds what the model made of character fed_ - 1.
    const std::size_t layers = state.hidden.size();
    const auto units = state.hidden.front().cols();
    auto value = [&](const Neuron& n) {
        const auto& matrix = n.cell ? state.cell[static_cast<std::size_t>(n.layer)] : state.hidden[static_cast<std::size_t>(n.layer)];
        return matrix(row, n.unit);
    };
    for (NeuronTrace& trace : result_.neurons) trace.activations.push_back(value(trace.neuron));
    const double seen = static_cast<double>(fed_);
    std::size_t index = 0;
    for (int kind = 0; kind < (state.cell.empty() ? 1 : 2); ++kind)
        for (std::size_t l = 0; l < layers; ++l)
            for (Eigen::Index u = 0; u < units; ++u, ++index) {
                const double x = (kind ? state.cell[l] : state.hidden[l])(row, u);
                const double delta = x - means_[index];
                means_[index] += delta / seen;
                spreads_[index] += delta * (x - means_[index]);
            }
    if (fed_ < text_.size()) {  // the logits predict the next character
        const double partition = log_partition(logits);
        const TokenId target = text_[fed_];
        const double loss = partition - static_cast<double>(logits[static_cast<std::size_t>(target)]);
        result_.loss.total_nats += loss;
        ++result_.loss.count;
        result_.losses.push_back(static_cast<float>(loss));
        result_.top.push_back(most_likely(logits, partition, request_.top, vocab_, order_));
        return;
    }
    rank_most_varying(layers, static_cast<std::size_t>(units), !state.cell.empty());
    finished_ = true;
}

// The text is read: rank the neurons by how much they varied, hidden and cell states apart (a cell
// state is unbounded and would fill the list), and list them in turns, the larger first.
void TextScorer::rank_most_varying(std::size_t layers, std::size_t units, bool has_cell) {
    const double seen = static_cast<double>(fed_);
    const std::size_t per_kind = layers * units;
    const std::size_t kinds = has_cell ? 2 : 1;
    const auto wanted = static_cast<std::size_t>(std::max(request_.most_varying, 0));
    std::vector<std::vector<std::size_t>> ranked(kinds);
    for (std::size_t kind = 0; kind < kinds; ++kind) {
        std::vector<std::size_t>& order = ranked[kind];
        order.resize(per_kind);
        std::iota(order.begin(), order.end(), kind * per_kind);
        const std::size_t listed = std::min(per_kind, (wanted + kinds - 1 - kind) / kinds);  // hidden gets the odd one
        std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(listed), order.end(),
                          [&](std::size_t a, std::size_t b) { return spreads_[a] != spreads_[b] ? spreads_[a] > spreads_[b] : a < b; });
        order.resize(listed);
    }
    for (std::size_t rank = 0; result_.most_varying.size() < std::min(wanted, kinds * per_kind); ++rank)
        for (std::size_t kind = 0; kind < kinds; ++kind) {
            if (rank >= ranked[kind].size()) continue;
            const std::size_t n = ranked[kind][rank];
            const Neuron neuron{static_cast<int>((n % per_kind) / units), static_cast<int>(n % units), n >= per_kind};
            result_.most_varying.push_back({neuron, std::sqrt(spreads_[n] / seen)});
        }
}

// ---- a text alone ----------------------------------------------------------------------------------------

ScoreResult score_text(Model<float>& model, const Vocab& vocab, const ScoreRequest& request, int threads) {
    TextScorer scorer(model.config(), vocab, request);
    std::optional<std::string> failure;
    // OpenMP's thread count is each thread's own setting: a thread of its own leaves the caller's alone.
    std::thread reader([&] {
        set_thread_count(threads);
        const WeightsFreeze<float> freeze(model);
        model.set_rows_as_if_alone(true);  // the figures of a row in a batch, as /v1/score gives them
        try {
            ModelState<float> state = model.initial_state(1);
            while (!scorer.finished()) {
                const TokenId input = scorer.next_input();
                model.forward(std::span<const TokenId>(&input, 1), 1, 1, state);
                const Matrix<float>& logits = model.logits();
                scorer.after_step(std::span<const float>(logits.row(0).data(), static_cast<std::size_t>(logits.cols())), state, 0);
            }
        } catch (const std::exception& error) {
            failure = error.what();
        }
        model.set_rows_as_if_alone(false);
    });
    reader.join();
    if (failure) throw Error(fmt::format("decoding failed: {}", *failure));
    return std::move(scorer.result());
}

}  // namespace charlm
