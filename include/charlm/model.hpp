// The network: embedding -> stacked recurrent cells -> linear head -> softmax cross-entropy.
#pragma once

#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "charlm/batches.hpp"
#include "charlm/error.hpp"
#include "charlm/model_config.hpp"
#include "charlm/precision.hpp"
#include "charlm/tensor.hpp"

namespace charlm {

// The recurrent state carried between windows: per layer, (B, H).
template <typename Scalar>
struct ModelState {
    std::vector<Matrix<Scalar>> hidden;
    std::vector<Matrix<Scalar>> cell;  // empty where the cell has no cell state
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
    LossSum& operator+=(const LossSum& more) {
        total_nats += more.total_nats;
        count += more.count;
        return *this;
    }
};

// A cross-entropy in nats per character, as the two other figures people quote: perplexity (e^nats)
// and bits per character (nats / ln 2). Every report of a loss goes through these.
inline double perplexity_of(double nats_per_character) { return std::exp(nats_per_character); }
inline double bits_per_character_of(double nats_per_character) { return nats_per_character / std::log(2.0); }

template <typename Scalar>
class Model {
public:
    explicit Model(const ModelConfig& config);  // parameters zero; see initialize()
    Model(Model&&) noexcept;
    Model& operator=(Model&&) noexcept;
    ~Model();

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

    // Serving decodes many requests as the rows of one batch. With this set, forward() computes each
    // row to the bit as it would a batch of that row alone (a row's sums otherwise depend on how many
    // rows there are), so that a request's text never depends on the requests decoded beside it. Only
    // for one step against frozen weights: forward() refuses anything else while it is set.
    void set_rows_as_if_alone(bool alone) { rows_as_if_alone_ = alone; }

    // The precision of the products from the next forward() on (fp32 by default; a double model always
    // multiplies in double). Weights, gradients, states and losses stay Scalar: only products change.
    void set_precision(Precision precision) { precision_ = precision; }
    Precision precision() const { return precision_; }

    // With a generator, forward() drops units and weights at the config's rates (training), drawing
    // one word of it per window; without one (the default) it does not (evaluation and sampling).
    // `first_stream`: the place in the whole batch of the first of this process's streams (mpirun -np N),
    // by which the masks are keyed (DropoutKeys::stream), so that they do not depend on the process count.
    void set_dropout_generator(std::mt19937_64* rng, std::size_t first_stream = 0);
    // A resumed run may go on at other rates: takes dropout, embed_dropout, weight_drop and
    // dropout_mask from `rates`; throws UsageError for a rate outside [0, 1).
    void set_regularization(const ModelConfig& rates);
    bool regularized() const;  // whether any rate is above 0

    // inputs: T*B ids, step-major. Fills logits(): (T*B) x V. Carries `state` to the window's end.
    void forward(std::span<const TokenId> inputs, int steps, int batch_size, ModelState<Scalar>& state);
    const Matrix<Scalar>& logits() const;
    // Softmax cross-entropy of the last forward() against targets (kIgnoreTarget rows are skipped).
    LossSum loss(std::span<const TokenId> targets);
    // Gradients of the mean loss of the last loss() call, accumulated into parameters(). The mean is
    // over `mean_over_characters` where given: the whole batch's, when processes that each hold a
    // block of it sum their gradients (data parallelism); else over the last loss()'s own characters.
    void backward(std::size_t mean_over_characters = 0);

private:
    // One recurrent layer's parameters, PyTorch's rnn.*_l{layer}: (G*H, I), (G*H, H), (1, G*H), (1, G*H).
    struct LayerParameters {
        Parameter<Scalar>* weight_ih;
        Parameter<Scalar>* weight_hh;
        Parameter<Scalar>* bias_ih;
        Parameter<Scalar>* bias_hh;
    };
    struct Workspace;  // the recurrent layers' engines and the passes' buffers, in model.cpp
    // forward() of one step against frozen weights with no dropout, all in one parallel region.
    void step_in_team(ModelState<Scalar>& state);

    ModelConfig config_;
    std::vector<Parameter<Scalar>> parameters_;  // in PyTorch's order: what the optimizer and checkpoints see
    Parameter<Scalar>* embedding_;               // (V, E)
    std::vector<LayerParameters> layers_;
    Parameter<Scalar>* head_weight_;             // (V, H)
    Parameter<Scalar>* head_bias_;               // (1, V)
    bool weights_frozen_ = false;
    bool rows_as_if_alone_ = false;
    Precision precision_ = Precision::fp32;
    std::uint64_t freezes_ = 0;  // counts freezes: the engine keeps what it derived from the weights while it stays
    std::unique_ptr<Workspace> workspace_;
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
