// The network: embedding -> stacked recurrent cells -> linear head -> softmax cross-entropy.
#pragma once

#include <random>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "charlm/batches.hpp"
#include "charlm/error.hpp"
#include "charlm/gru.hpp"
#include "charlm/lstm.hpp"
#include "charlm/rnn.hpp"
#include "charlm/tensor.hpp"

namespace charlm {

enum class CellType { lstm, gru, rnn };
std::string to_string(CellType cell);
CellType parse_cell_type(const std::string& name);  // throws UsageError for an unknown name

struct ModelConfig {
    CellType cell = CellType::lstm;
    int vocab_size = 0;
    int embed_size = 64;
    int hidden_size = 256;
    int layers = 2;
    double dropout = 0.0;  // between layers, in training only (as nn.LSTM's dropout)

    void validate() const;  // throws UsageError naming the bad field (the sizes are the user's options)
    std::size_t parameter_count() const;
    nlohmann::json to_json() const;
    static ModelConfig from_json(const nlohmann::json& json);  // validates; a bad config is an Error (a bad file), never a UsageError
};

// The recurrent state carried between windows: per layer, B x H.
template <typename Scalar>
struct ModelState {
    std::vector<Matrix<Scalar>> hidden;
    std::vector<Matrix<Scalar>> cell;
    void reset() {
        for (auto& h : hidden) h.setZero();
        for (auto& c : cell) c.setZero();
    }
};

// Sum of per-character losses, so that windows of any size average exactly.
struct LossSum {
    double total_nats = 0;
    std::size_t count = 0;
    double mean() const { return count ? total_nats / static_cast<double>(count) : 0.0; }
};

// A cross-entropy in nats per character, as the two other figures people quote: perplexity (e^nats)
// and bits per character (nats / ln 2). Every report of a loss goes through these.
inline double perplexity_of(double nats_per_character) { return std::exp(nats_per_character); }
inline double bits_per_character_of(double nats_per_character) { return nats_per_character / std::log(2.0); }

template <typename Scalar>
class Model {
public:
    explicit Model(const ModelConfig& config);  // parameters zero; see initialize()

    // PyTorch's defaults: embedding N(0, 1), recurrent and head weights U(-1/sqrt(fan), 1/sqrt(fan)).
    void initialize(std::mt19937_64& rng);

    const ModelConfig& config() const { return config_; }
    std::vector<Parameter<Scalar>>& parameters() { return parameters_; }
    const std::vector<Parameter<Scalar>>& parameters() const { return parameters_; }
    Parameter<Scalar>* find_parameter(const std::string& name);
    void zero_gradients();

    ModelState<Scalar> initial_state(int batch_size) const;

    // A promise that the weights stay as they are until set_weights_frozen(false): forward() then keeps
    // what it derives from them (packed copies) instead of redoing it on every call. Sampling, one
    // forward() per character, holds a freeze while it lives; evaluation, one per window, while it runs.
    void set_weights_frozen(bool frozen) {
        weights_frozen_ = frozen;
        if (frozen) ++freezes_;
    }
    bool weights_frozen() const { return weights_frozen_; }

    // With a generator, forward() drops units between layers at the config's rate (training);
    // without one (the default) it does not (evaluation and sampling).
    void set_dropout_generator(std::mt19937_64* rng) { dropout_rng_ = rng; }
    // A resumed run may go on at another rate; throws Error for a rate outside [0, 1).
    void set_dropout(double rate);

    // inputs: T*B ids, step-major. Fills logits(): (T*B) x V. Carries `state` to the window's end.
    void forward(std::span<const TokenId> inputs, int steps, int batch_size, ModelState<Scalar>& state);
    const Matrix<Scalar>& logits() const { return logits_; }
    // Softmax cross-entropy of the last forward() against targets (kIgnoreTarget rows are skipped).
    LossSum loss(std::span<const TokenId> targets);
    // Gradients of the mean loss of the last loss() call, accumulated into parameters().
    void backward();

private:
    CellWeights<Scalar> layer_weights(int layer) const;
    CellGradients<Scalar> layer_gradients(int layer);
    LayerInput<Scalar> layer_input(int layer) const;
    const Matrix<Scalar>& layer_output(int layer) const;
    bool dropping(int layer) const { return dropping_ && layer + 1 < config_.layers; }

    // One recurrent layer's forward record; only the member of the config's cell is used.
    struct LayerCache {
        LstmCache<Scalar> lstm;
        GruCache<Scalar> gru;
        RnnCache<Scalar> rnn;
        Matrix<Scalar> dropout_mask;  // (T*B) x H, 0 or 1/(1-p)
        Matrix<Scalar> dropped;       // (T*B) x H, output times mask: the next layer's input
    };

    ModelConfig config_;
    std::vector<Parameter<Scalar>> parameters_;  // embedding, 4 per layer, head weight, head bias
    bool weights_frozen_ = false;
    std::uint64_t freezes_ = 0;                  // the CellWeights::version of the current freeze
    // workspaces, sized on the first window of a shape
    std::vector<TokenId> inputs_;
    std::vector<TokenId> targets_;
    int steps_ = 0;
    int batch_size_ = 0;
    std::size_t target_count_ = 0;
    std::vector<LayerCache> caches_;          // per layer
    std::mt19937_64* dropout_rng_ = nullptr;
    bool dropping_ = false;                   // whether the last forward() dropped units
    PackedMatrix<Scalar> head_packed_;        // head weight^T while frozen
    Matrix<Scalar> logits_;                   // (T*B) x V
    Matrix<Scalar> d_logits_;                 // (T*B) x V: probabilities, then their gradient
    std::vector<double> row_losses_;          // T*B, each row's loss (unset where the target is ignored)
    std::vector<Matrix<Scalar>> d_outputs_;   // per layer: (T*B) x H, gradient of its output
};

// Holds a model's weights frozen (Model::set_weights_frozen) while it lives, then puts back what was
// there before: evaluation and sampling, which only read the weights, pack them once through it.
template <typename Scalar>
class WeightsFreeze {
public:
    explicit WeightsFreeze(Model<Scalar>& model) : model_(model), was_frozen_(model.weights_frozen()) {
        if (!was_frozen_) model_.set_weights_frozen(true);
    }
    ~WeightsFreeze() {
        if (!was_frozen_) model_.set_weights_frozen(false);
    }
    WeightsFreeze(const WeightsFreeze&) = delete;
    WeightsFreeze& operator=(const WeightsFreeze&) = delete;

private:
    Model<Scalar>& model_;
    bool was_frozen_;
};

}  // namespace charlm
