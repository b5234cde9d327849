// The network's forward and backward passes, layer by layer, with PyTorch's parameter names.
#include "charlm/model.hpp"

#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "cells.hpp"
#include "dropout.hpp"
#include "charlm/error.hpp"
#include "charlm/uniform_draw.hpp"
#include "gemm.hpp"
#include "gemm_bf16.hpp"
#include "kernels.hpp"
#include "recurrent_layer.hpp"
#include "team.hpp"

namespace charlm {

// What the passes keep between forward() and backward(), sized on the first window of a shape.
template <typename Scalar>
struct Model<Scalar>::Workspace {
    struct Layer {
        explicit Layer(CellType cell) : engine(cell) {}
        RecurrentLayer<Scalar> engine;
        Matrix<Scalar> output_mask;          // (B or T*B, H): 0 or 1/(1-p), dropout's
        Matrix<Scalar> dropped;              // (T*B, H): output times mask, the next layer's input or the head's
        Matrix<Scalar> d_output;             // (T*B, H): the loss gradient of what it hands on, then of its output
        Matrix<Scalar> recurrent_mask;       // (G*H, H): weight drop's, of W_hh
        Matrix<Scalar> dropped_recurrent;    // (G*H, H): W_hh times mask, the weights the window ran with
        Matrix<Scalar> d_dropped_recurrent;  // (G*H, H): their gradient
    };
    std::vector<Layer> layers;
    Matrix<Scalar> no_cell_state;     // what a cell without one is handed for it
    std::vector<TokenId> inputs;      // T*B
    std::vector<TokenId> targets;     // T*B
    int steps = 0;
    std::size_t target_count = 0;
    std::mt19937_64* dropout_rng = nullptr;
    std::size_t first_stream = 0;  // of the whole batch, this process's first (set_dropout_generator)
    // What the last forward() dropped
    bool dropping_outputs = false, dropping_embedding = false, dropping_weights = false;
    Matrix<Scalar> embedding_mask;    // (B or T*B, E)
    Matrix<Scalar> embedded;          // (T*B, E): the inputs' embeddings times the mask, the first layer's input
    Matrix<Scalar> d_embedded;        // (T*B, E): their gradient
    PackedMatrix<Scalar> head_packed; // head weight^T while frozen
    Bf16Rows head_rounded;            // (B, H): at bf16, a team's step's top layer rounded for the head
    Bf16Rows d_logits_rounded;        // (T*B, V): at bf16, d_logits rounded for the head's two products
    Matrix<Scalar> logits;            // (T*B, V)
    Matrix<Scalar> d_logits;          // (T*B, V): probabilities, then their gradient
    std::vector<double> row_losses;   // T*B, each row's loss (unset where the target is ignored)

    // At bf16, layer l's output rounded as its time loop left it, where the products read that output (no dropout).
    const Bf16Rows* rounded_output(std::size_t l) const { return dropping_outputs ? nullptr : layers[l].engine.output_rounded(); }
    // And transposed, where a backward follows.
    Bf16RowsRef transposed_output(std::size_t l) const { return dropping_outputs ? Bf16RowsRef{} : layers[l].engine.output_transposed(); }
};

template <typename Scalar>
static Parameter<Scalar> make_parameter(std::string name, std::int64_t rows, std::int64_t cols, bool is_vector) {
    Parameter<Scalar> parameter;
    parameter.name = std::move(name);
    parameter.shape = is_vector ? std::vector<std::int64_t>{cols} : std::vector<std::int64_t>{rows, cols};
    parameter.value.setZero(rows, cols);
    parameter.gradient.setZero(rows, cols);
    return parameter;
}

template <typename Scalar>
Model<Scalar>::Model(const ModelConfig& config) : config_(config), workspace_(std::make_unique<Workspace>()) {
    config_.validate();
    const int V = config.vocab_size, E = config.embed_size, H = config.hidden_size, G = config_.gate_count();
    parameters_.reserve(3 + 4 * static_cast<std::size_t>(config.layers));  // never reallocated: the names below point in
    embedding_ = &parameters_.emplace_back(make_parameter<Scalar>("embedding.weight", V, E, false));
    for (int layer = 0; layer < config.layers; ++layer) {
        const int input_size = layer == 0 ? E : H;
        LayerParameters& named = layers_.emplace_back();
        named.weight_ih = &parameters_.emplace_back(make_parameter<Scalar>(fmt::format("rnn.weight_ih_l{}", layer), G * H, input_size, false));
        named.weight_hh = &parameters_.emplace_back(make_parameter<Scalar>(fmt::format("rnn.weight_hh_l{}", layer), G * H, H, false));
        named.bias_ih = &parameters_.emplace_back(make_parameter<Scalar>(fmt::format("rnn.bias_ih_l{}", layer), 1, G * H, true));
        named.bias_hh = &parameters_.emplace_back(make_parameter<Scalar>(fmt::format("rnn.bias_hh_l{}", layer), 1, G * H, true));
        workspace_->layers.emplace_back(config.cell);
    }
    head_weight_ = &parameters_.emplace_back(make_parameter<Scalar>("head.weight", V, H, false));
    head_bias_ = &parameters_.emplace_back(make_parameter<Scalar>("head.bias", 1, V, true));
}

template <typename Scalar>
Model<Scalar>::Model(Model&&) noexcept = default;
template <typename Scalar>
Model<Scalar>& Model<Scalar>::operator=(Model&&) noexcept = default;
template <typename Scalar>
Model<Scalar>::~Model() = default;

template <typename Scalar>
void Model<Scalar>::initialize(std::mt19937_64& rng) {
    // Uniform and normal draws from raw 64-bit words, so that a seed means the same weights everywhere.
    auto uniform = [&rng]() { return uniform_draw(rng); };
    auto fill_uniform = [&](Matrix<Scalar>& matrix, double bound) {
        for (Eigen::Index i = 0; i < matrix.size(); ++i)
            matrix.data()[i] = static_cast<Scalar>((2 * uniform() - 1) * bound);
    };
    auto& embedding = embedding_->value;
    for (Eigen::Index i = 0; i < embedding.size(); ++i) {  // Box-Muller
        double radius = std::sqrt(-2 * std::log(1 - uniform())), angle = 2 * M_PI * uniform();
        embedding.data()[i] = static_cast<Scalar>(radius * std::cos(angle));
    }
    const double bound = 1 / std::sqrt(static_cast<double>(config_.hidden_size));
    for (const LayerParameters& layer : layers_)
        for (Parameter<Scalar>* parameter : {layer.weight_ih, layer.weight_hh, layer.bias_ih, layer.bias_hh})
            fill_uniform(parameter->value, bound);
    fill_uniform(head_weight_->value, bound);
    fill_uniform(head_bias_->value, bound);
}

template <typename Scalar>
Parameter<Scalar>* Model<Scalar>::find_parameter(const std::string& name) {
    for (auto& parameter : parameters_)
        if (parameter.name == name) return &parameter;
    return nullptr;
}

template <typename Scalar>
void Model<Scalar>::zero_gradients() {
    for (auto& parameter : parameters_) parameter.gradient.setZero();
}

template <typename Scalar>
ModelState<Scalar> Model<Scalar>::initial_state(int batch_size) const {
    ModelState<Scalar> state;
    for (int layer = 0; layer < config_.layers; ++layer) {
        state.hidden.push_back(Matrix<Scalar>::Zero(batch_size, config_.hidden_size));
        if (config_.has_cell_state()) state.cell.push_back(Matrix<Scalar>::Zero(batch_size, config_.hidden_size));
    }
    return state;
}

template <typename Scalar>
void Model<Scalar>::set_dropout_generator(std::mt19937_64* rng, std::size_t first_stream) {
    workspace_->dropout_rng = rng;
    workspace_->first_stream = first_stream;
}

template <typename Scalar>
const Matrix<Scalar>& Model<Scalar>::logits() const {
    return workspace_->logits;
}

template <typename Scalar>
bool Model<Scalar>::regularized() const {
    return config_.dropout > 0 || config_.embed_dropout > 0 || config_.weight_drop > 0;
}

template <typename Scalar>
void Model<Scalar>::forward(std::span<const TokenId> inputs, int steps, int batch_size, ModelState<Scalar>& state) {
    Workspace& w = *workspace_;
    const Eigen::Index TB = static_cast<Eigen::Index>(steps) * batch_size;
    if (static_cast<Eigen::Index>(inputs.size()) != TB) throw Error("window has the wrong number of inputs");
    if (state.hidden.size() != layers_.size() || state.cell.size() != (config_.has_cell_state() ? layers_.size() : 0))
        throw Error("the carried state does not fit the model");
    if (rows_as_if_alone_ && (steps != 1 || !weights_frozen_))
        throw Error("rows computed as if alone need one step against frozen weights");
    const RowSums row_sums = rows_as_if_alone_ ? RowSums::as_if_alone : RowSums::fastest;
    w.inputs.assign(inputs.begin(), inputs.end());
    w.steps = steps;
    const bool training = w.dropout_rng != nullptr;
    w.dropping_outputs = training && config_.dropout > 0;
    w.dropping_embedding = training && config_.embed_dropout > 0;
    w.dropping_weights = training && config_.weight_drop > 0;
    // One word of the run's generator per window; every mask of the window is drawn from it (dropout.hpp).
    const std::uint64_t window_key = training && regularized() ? (*w.dropout_rng)() : 0;
    const Eigen::Index mask_rows = config_.dropout_mask == DropoutMask::locked ? batch_size : TB;
    const MaskRows rows_are = config_.dropout_keys == DropoutKeys::stream ? MaskRows{batch_size, w.first_stream} : MaskRows{};
    // What the engine derives from the weights (packed copies, layer 0's table) is kept while frozen.
    const std::uint64_t version = weights_frozen_ && !w.dropping_weights ? freezes_ : 0;

    if (w.dropping_embedding) {  // dense rows instead of the table, whose rows cannot carry a stream's mask
        const Matrix<Scalar>& embedding = embedding_->value;
        draw_dropout_mask(w.embedding_mask, mask_rows, embedding.cols(), config_.embed_dropout, mask_key(window_key, 0), rows_are);
        w.embedded.resize(TB, embedding.cols());
        for (Eigen::Index row = 0; row < TB; ++row)
            w.embedded.row(row) = embedding.row(w.inputs[static_cast<std::size_t>(row)]).cwiseProduct(w.embedding_mask.row(row % mask_rows));
    }
    // One step of a few rows, or of rows as if alone, against frozen weights (sampling, serving): every
    // product is a packed one, and the whole step runs in one parallel region (step_in_team()).
    if (version != 0 && steps == 1 && !training && (TB <= kMinRowsPerThread || rows_as_if_alone_)) {
        step_in_team(state);
        return;
    }

    const Matrix<Scalar>* below = nullptr;  // the layer below's output, after dropout
    for (std::size_t l = 0; l < layers_.size(); ++l) {
        const LayerParameters& p = layers_[l];
        typename Workspace::Layer& layer = w.layers[l];
        LayerInput<Scalar> input = l > 0                  ? LayerInput<Scalar>(*below)
                                   : w.dropping_embedding ? LayerInput<Scalar>(w.embedded)
                                                          : LayerInput<Scalar>(w.inputs, embedding_->value);
        if (l > 0) input.rounded = w.rounded_output(l - 1);
        if (w.dropping_weights) {
            const Matrix<Scalar>& weight_hh = p.weight_hh->value;
            draw_dropout_mask(layer.recurrent_mask, weight_hh.rows(), weight_hh.cols(), config_.weight_drop, mask_key(window_key, 2 * l + 1));
            apply_dropout_mask(weight_hh, layer.recurrent_mask, layer.dropped_recurrent);
        }
        const Matrix<Scalar>& weight_hh = w.dropping_weights ? layer.dropped_recurrent : p.weight_hh->value;
        layer.engine.forward(input, steps,
                             {p.weight_ih->value, weight_hh, p.bias_ih->value, p.bias_hh->value, version, row_sums, precision_, !weights_frozen_},
                             state.hidden[l], state.cell.empty() ? w.no_cell_state : state.cell[l]);
        below = &layer.engine.output();
        if (w.dropping_outputs) {
            draw_dropout_mask(layer.output_mask, mask_rows, below->cols(), config_.dropout, mask_key(window_key, 2 * l + 2), rows_are);
            apply_dropout_mask(*below, layer.output_mask, layer.dropped);
            below = &layer.dropped;
        }
    }

    // head: (T*B, V) = (T*B, H) . (H, V)
    const Matrix<Scalar>& top = *below;
    w.logits.resize(TB, config_.vocab_size);
    if (weights_frozen_ && (TB == 1 || rows_as_if_alone_)) {  // sampling: a packed copy, made once per freeze
        w.head_packed.ensure_packed(head_weight_->value, Transpose::yes, freezes_, precision_);
        w.head_packed.multiply(top, Scalar(0), w.logits, row_sums);
    } else if (const Bf16Rows* rounded = w.rounded_output(layers_.size() - 1)) {
        if constexpr (std::is_same_v<Scalar, float>)
            gemm_bf16(middle_rows(*rounded, 0, TB), Transpose::no, head_weight_->value, Transpose::yes, 0.0f, w.logits);
    } else {
        gemm<Scalar>(top, Transpose::no, head_weight_->value, Transpose::yes, Scalar(0), w.logits, precision_);
    }
    w.logits.rowwise() += head_bias_->value.row(0);
}

// forward() of one step against frozen weights with no dropout, in one parallel region: each layer's
// phases and the head's meet at a spinning barrier (team.hpp), which costs a fraction of the microseconds
// that a region of their own each costs. Each product is split by the weights' panels, copies and cells by
// rows, as forward() splits them: the same bits.
template <typename Scalar>
void Model<Scalar>::step_in_team(ModelState<Scalar>& state) {
    Workspace& w = *workspace_;
    const RowSums row_sums = rows_as_if_alone_ ? RowSums::as_if_alone : RowSums::fastest;
    const auto B = static_cast<Eigen::Index>(w.inputs.size());
    const bool bf16 = std::is_same_v<Scalar, float> && precision_ == Precision::bf16;
    const auto input_of = [&](std::size_t l) {
        return l > 0 ? LayerInput<Scalar>(w.layers[l - 1].engine.output()) : LayerInput<Scalar>(w.inputs, embedding_->value);
    };
    const auto weights_of = [&](std::size_t l) {
        const LayerParameters& p = layers_[l];
        return LayerWeights<Scalar>{p.weight_ih->value, p.weight_hh->value, p.bias_ih->value, p.bias_hh->value, freezes_, row_sums, precision_};
    };
    const auto cell_state_of = [&](std::size_t l) -> Matrix<Scalar>& { return state.cell.empty() ? w.no_cell_state : state.cell[l]; };
    // Outside the team: what may allocate or throw, and the multiply-adds that say whether a team pays.
    Eigen::Index work = 0;
    for (std::size_t l = 0; l < layers_.size(); ++l) {
        w.layers[l].engine.prepare_step(input_of(l), weights_of(l), state.hidden[l], cell_state_of(l));
        work += B * (input_of(l).size() + config_.hidden_size) * layers_[l].weight_hh->value.rows();
    }
    const Matrix<Scalar>& top = w.layers.back().engine.output();
    w.head_packed.ensure_packed(head_weight_->value, Transpose::yes, freezes_, precision_);
    w.logits.resize(B, config_.vocab_size);
    w.head_packed.check_shapes(B, top.cols(), w.logits);
    if (bf16) w.head_rounded.resize(B, top.cols());
    work += B * top.cols() * config_.vocab_size;

    // As a packed product splits its panels among the threads: where the work is worth a region.
    run_in_team(work >= kLeastWorkForTeam, [&](const Team& team) {
        for (std::size_t l = 0; l < layers_.size(); ++l)
            w.layers[l].engine.step_in_team(input_of(l), weights_of(l), state.hidden[l], cell_state_of(l), team);
        if constexpr (std::is_same_v<Scalar, float>) {
            const Eigen::Index first = team.first(B);
            if (bf16) w.head_rounded.round_rows(top.middleRows(first, team.end(B) - first), first);
        }
        team.sync();
        if (bf16) w.head_packed.multiply_share(middle_rows(w.head_rounded, 0, B), Scalar(0), w.logits, team);
        else w.head_packed.multiply_share(top, Scalar(0), w.logits, row_sums, team);
    });
    w.logits.rowwise() += head_bias_->value.row(0);
}

template <typename Scalar>
void Model<Scalar>::set_regularization(const ModelConfig& rates) {
    ModelConfig config = config_;
    config.take_regularization(rates);
    config.validate();
    config_ = config;
}

template <typename Scalar>
LossSum Model<Scalar>::loss(std::span<const TokenId> targets) {
    Workspace& w = *workspace_;
    const Eigen::Index TB = w.logits.rows(), V = w.logits.cols();
    if (static_cast<Eigen::Index>(targets.size()) != TB) throw Error("window has the wrong number of targets");
    w.targets.assign(targets.begin(), targets.end());
    w.d_logits.resize(TB, V);
    w.row_losses.resize(static_cast<std::size_t>(TB));
    // Rows in parallel; their losses are summed in order afterwards, so the total does not depend on threads.
    // The softmax in the kernels' level (kernels.hpp), as the products are: a portable build's own code is SSE2's.
    const auto softmax_cross_entropy = kernels().of<Scalar>().softmax_cross_entropy;
#pragma omp parallel for schedule(static)
    for (Eigen::Index row = 0; row < TB; ++row) {
        const TokenId target = w.targets[static_cast<std::size_t>(row)];
        if (target == kIgnoreTarget) continue;
        w.row_losses[static_cast<std::size_t>(row)] =
            static_cast<double>(softmax_cross_entropy(w.logits.row(row).data(), w.d_logits.row(row).data(), V, target));
    }
    LossSum sum;
    for (std::size_t row = 0; row < w.row_losses.size(); ++row) {
        if (w.targets[row] == kIgnoreTarget) continue;
        sum.total_nats += w.row_losses[row];
        ++sum.count;
    }
    w.target_count = sum.count;
    return sum;
}

template <typename Scalar>
void Model<Scalar>::backward(std::size_t mean_over_characters) {
    Workspace& w = *workspace_;
    const Eigen::Index TB = w.logits.rows();
    const std::size_t mean_over = mean_over_characters > 0 ? mean_over_characters : w.target_count;
    const Scalar scale = mean_over ? Scalar(1) / static_cast<Scalar>(mean_over) : Scalar(0);
    // softmax cross-entropy: d logits = (p - onehot) / count
#pragma omp parallel for schedule(static)
    for (Eigen::Index row = 0; row < TB; ++row) {
        const TokenId target = w.targets[static_cast<std::size_t>(row)];
        if (target == kIgnoreTarget) {
            w.d_logits.row(row).setZero();
        } else {
            w.d_logits(row, target) -= 1;
            w.d_logits.row(row) *= scale;
        }
    }
    const Matrix<Scalar>& top = w.dropping_outputs ? w.layers.back().dropped : w.layers.back().engine.output();
    w.layers.back().d_output.resize(TB, config_.hidden_size);
    const Bf16Rows* top_rounded = w.rounded_output(layers_.size() - 1);
    if constexpr (std::is_same_v<Scalar, float>) {
        if (top_rounded != nullptr) {  // at bf16: d_logits rounded once for both products, the top layer's output as it was
            w.d_logits_rounded.resize(TB, w.d_logits.cols());
            w.d_logits_rounded.round_rows(w.d_logits, 0);
            const Bf16RowsRef d_logits = middle_rows(w.d_logits_rounded, 0, TB);
            gemm_bf16(d_logits, Transpose::yes, middle_rows(*top_rounded, 0, TB), Transpose::no, 1.0f, head_weight_->gradient);
            gemm_bf16(d_logits, Transpose::no, head_weight_->value, Transpose::no, 0.0f, w.layers.back().d_output);
        }
    }
    if (top_rounded == nullptr) {
        // (V, H) = (V, T*B) . (T*B, H)
        gemm<Scalar>(w.d_logits, Transpose::yes, top, Transpose::no, Scalar(1), head_weight_->gradient, precision_);
        // (T*B, H) = (T*B, V) . (V, H)
        gemm<Scalar>(w.d_logits, Transpose::no, head_weight_->value, Transpose::no, Scalar(0), w.layers.back().d_output, precision_);
    }
    column_sums<Scalar>(w.d_logits, Scalar(1), head_bias_->gradient);

    for (std::size_t l = layers_.size(); l-- > 0;) {
        const LayerParameters& p = layers_[l];
        typename Workspace::Layer& layer = w.layers[l];
        if (w.dropping_outputs) apply_dropout_mask_in_place(layer.d_output, layer.output_mask);  // now of the output itself
        LayerInput<Scalar> input = l > 0 ? LayerInput<Scalar>(w.dropping_outputs ? w.layers[l - 1].dropped : w.layers[l - 1].engine.output())
                                   : w.dropping_embedding ? LayerInput<Scalar>(w.embedded)
                                                          : LayerInput<Scalar>(w.inputs, embedding_->value);
        if (l > 0) {
            input.rounded = w.rounded_output(l - 1);
            input.transposed = w.transposed_output(l - 1);
        }
        // Through the table, the first layer's input gradient is the embedding's, accumulated as a weight's is.
        Matrix<Scalar>& d_input = l > 0 ? w.layers[l - 1].d_output : w.dropping_embedding ? w.d_embedded : embedding_->gradient;
        if (w.dropping_weights) layer.d_dropped_recurrent.setZero(p.weight_hh->value.rows(), p.weight_hh->value.cols());
        layer.engine.backward(input, layer.d_output, w.steps,
                              {p.weight_ih->value, w.dropping_weights ? layer.dropped_recurrent : p.weight_hh->value, p.bias_ih->value,
                               p.bias_hh->value, 0, RowSums::fastest, precision_},
                              {p.weight_ih->gradient, w.dropping_weights ? layer.d_dropped_recurrent : p.weight_hh->gradient,
                               p.bias_ih->gradient, p.bias_hh->gradient},
                              d_input);
        if (w.dropping_weights) {
            apply_dropout_mask_in_place(layer.d_dropped_recurrent, layer.recurrent_mask);
            p.weight_hh->gradient += layer.d_dropped_recurrent;
        }
    }
    if (w.dropping_embedding) {  // each row's gradient through its mask, to its character's embedding
        apply_dropout_mask_in_place(w.d_embedded, w.embedding_mask);
        for (Eigen::Index row = 0; row < TB; ++row) embedding_->gradient.row(w.inputs[static_cast<std::size_t>(row)]) += w.d_embedded.row(row);
    }
}

template class Model<float>;
template class Model<double>;

}  // namespace charlm
