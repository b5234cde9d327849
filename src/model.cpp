// The network's forward and backward passes, layer by layer, with PyTorch's parameter names.
#include "charlm/model.hpp"

#include <cmath>

#include <fmt/format.h>

#include "charlm/error.hpp"
#include "charlm/gemm.hpp"
#include "charlm/json_integer.hpp"

namespace charlm {

std::string to_string(CellType cell) {
    switch (cell) {
        case CellType::lstm: return "lstm";
        case CellType::gru: return "gru";
        case CellType::rnn: return "rnn";
    }
    return "unknown";
}

CellType parse_cell_type(const std::string& name) {
    if (name == "lstm") return CellType::lstm;
    if (name == "gru") return CellType::gru;
    if (name == "rnn") return CellType::rnn;
    throw UsageError(fmt::format("unknown cell type '{}'; use lstm, gru or rnn", name));
}

static int gate_count(CellType cell) {
    switch (cell) {
        case CellType::lstm: return 4;
        case CellType::gru: return 3;
        case CellType::rnn: return 1;
    }
    return 0;
}

// A UsageError, since the sizes almost always come from the user's options; from_json() below turns it
// into a plain Error for sizes read from a file.
void ModelConfig::validate() const {
    // Bounds keep every matrix far below what a 64-bit index or this machine's memory can hold.
    auto check = [](const char* name, long long value, long long most) {
        if (value < 1 || value > most)
            throw UsageError(fmt::format("{} must be between 1 and {}, not {}", name, most, value));
    };
    check("vocabulary size", vocab_size, 1 << 21);
    check("embedding size", embed_size, 1 << 14);
    check("hidden size", hidden_size, 1 << 14);
    check("layers", layers, 64);
    if (!(dropout >= 0 && dropout < 1)) throw UsageError(fmt::format("dropout must be at least 0 and below 1, not {}", dropout));
    if (parameter_count() > (std::size_t{1} << 31))
        throw UsageError(fmt::format("the model would have {} parameters; the most is 2^31", parameter_count()));
}

std::size_t ModelConfig::parameter_count() const {
    const std::size_t V = static_cast<std::size_t>(vocab_size), E = static_cast<std::size_t>(embed_size),
                      H = static_cast<std::size_t>(hidden_size), G = static_cast<std::size_t>(gate_count(cell));
    std::size_t count = V * E + V * H + V;
    for (int layer = 0; layer < layers; ++layer) {
        std::size_t input_size = layer == 0 ? E : H;
        count += G * H * (input_size + H + 2);
    }
    return count;
}

nlohmann::json ModelConfig::to_json() const {
    return {{"cell", to_string(cell)}, {"vocab_size", vocab_size}, {"embed_size", embed_size},
            {"hidden_size", hidden_size}, {"layers", layers}, {"dropout", dropout}};
}

ModelConfig ModelConfig::from_json(const nlohmann::json& json) {
    ModelConfig config;
    try {
        config.cell = parse_cell_type(json.at("cell").get<std::string>());
        config.vocab_size = integer_value<int>(json.at("vocab_size"));
        config.embed_size = integer_value<int>(json.at("embed_size"));
        config.hidden_size = integer_value<int>(json.at("hidden_size"));
        config.layers = integer_value<int>(json.at("layers"));
        config.dropout = json.value("dropout", 0.0);
    } catch (const nlohmann::json::exception& error) {
        throw Error(fmt::format("model config is incomplete or has the wrong types ({})", error.what()));
    } catch (const UsageError& error) {
        throw Error(error.what());  // a bad file is not a mistake in the command line
    }
    try {
        config.validate();
    } catch (const UsageError& error) {
        throw Error(error.what());
    }
    return config;
}

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
Model<Scalar>::Model(const ModelConfig& config) : config_(config) {
    config_.validate();
    const int V = config.vocab_size, E = config.embed_size, H = config.hidden_size, G = gate_count(config.cell);
    parameters_.push_back(make_parameter<Scalar>("embedding.weight", V, E, false));
    for (int layer = 0; layer < config.layers; ++layer) {
        const int input_size = layer == 0 ? E : H;
        parameters_.push_back(make_parameter<Scalar>(fmt::format("rnn.weight_ih_l{}", layer), G * H, input_size, false));
        parameters_.push_back(make_parameter<Scalar>(fmt::format("rnn.weight_hh_l{}", layer), G * H, H, false));
        parameters_.push_back(make_parameter<Scalar>(fmt::format("rnn.bias_ih_l{}", layer), 1, G * H, true));
        parameters_.push_back(make_parameter<Scalar>(fmt::format("rnn.bias_hh_l{}", layer), 1, G * H, true));
    }
    parameters_.push_back(make_parameter<Scalar>("head.weight", V, H, false));
    parameters_.push_back(make_parameter<Scalar>("head.bias", 1, V, true));
    caches_.resize(static_cast<std::size_t>(config.layers));
    d_outputs_.resize(static_cast<std::size_t>(config.layers));
}

template <typename Scalar>
void Model<Scalar>::initialize(std::mt19937_64& rng) {
    // Uniform and normal draws from raw 64-bit words, so that a seed means the same weights everywhere.
    auto uniform = [&rng]() { return static_cast<double>(rng() >> 11) * 0x1.0p-53; };
    auto fill_uniform = [&](Matrix<Scalar>& matrix, double bound) {
        for (Eigen::Index i = 0; i < matrix.size(); ++i)
            matrix.data()[i] = static_cast<Scalar>((2 * uniform() - 1) * bound);
    };
    auto& embedding = parameters_.front().value;
    for (Eigen::Index i = 0; i < embedding.size(); ++i) {  // Box-Muller
        double radius = std::sqrt(-2 * std::log(1 - uniform())), angle = 2 * M_PI * uniform();
        embedding.data()[i] = static_cast<Scalar>(radius * std::cos(angle));
    }
    const double recurrent_bound = 1 / std::sqrt(static_cast<double>(config_.hidden_size));
    for (std::size_t i = 1; i + 2 < parameters_.size(); ++i) fill_uniform(parameters_[i].value, recurrent_bound);
    fill_uniform(parameters_[parameters_.size() - 2].value, recurrent_bound);
    fill_uniform(parameters_.back().value, recurrent_bound);
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
        state.cell.push_back(Matrix<Scalar>::Zero(batch_size, config_.hidden_size));
    }
    return state;
}

template <typename Scalar>
CellWeights<Scalar> Model<Scalar>::layer_weights(int layer) const {
    const std::size_t first = 1 + 4 * static_cast<std::size_t>(layer);
    return {parameters_[first].value, parameters_[first + 1].value, parameters_[first + 2].value,
            parameters_[first + 3].value, weights_frozen_ ? freezes_ : 0};
}

template <typename Scalar>
CellGradients<Scalar> Model<Scalar>::layer_gradients(int layer) {
    const std::size_t first = 1 + 4 * static_cast<std::size_t>(layer);
    return {parameters_[first].gradient, parameters_[first + 1].gradient, parameters_[first + 2].gradient,
            parameters_[first + 3].gradient};
}

template <typename Scalar>
LayerInput<Scalar> Model<Scalar>::layer_input(int layer) const {
    if (layer == 0) return {inputs_, parameters_.front().value};  // the embedding's rows, by token
    return dropping(layer - 1) ? caches_[static_cast<std::size_t>(layer - 1)].dropped : layer_output(layer - 1);
}

template <typename Scalar>
const Matrix<Scalar>& Model<Scalar>::layer_output(int layer) const {
    const LayerCache& cache = caches_[static_cast<std::size_t>(layer)];
    switch (config_.cell) {
        case CellType::gru: return cache.gru.hidden;
        case CellType::rnn: return cache.rnn.hidden;
        default: return cache.lstm.hidden;
    }
}

template <typename Scalar>
void Model<Scalar>::forward(std::span<const TokenId> inputs, int steps, int batch_size, ModelState<Scalar>& state) {
    const Eigen::Index TB = static_cast<Eigen::Index>(steps) * batch_size;
    if (static_cast<Eigen::Index>(inputs.size()) != TB) throw Error("window has the wrong number of inputs");
    inputs_.assign(inputs.begin(), inputs.end());
    steps_ = steps;
    batch_size_ = batch_size;

    dropping_ = dropout_rng_ != nullptr && config_.dropout > 0;
    for (int layer = 0; layer < config_.layers; ++layer) {
        const auto l = static_cast<std::size_t>(layer);
        LayerCache& cache = caches_[l];
        switch (config_.cell) {
            case CellType::lstm:
                lstm_forward(layer_input(layer), steps, layer_weights(layer), state.hidden[l], state.cell[l], cache.lstm);
                break;
            case CellType::gru: gru_forward(layer_input(layer), steps, layer_weights(layer), state.hidden[l], cache.gru); break;
            case CellType::rnn: rnn_forward(layer_input(layer), steps, layer_weights(layer), state.hidden[l], cache.rnn); break;
        }
        if (dropping(layer)) {
            // Inverted dropout: survivors are scaled by 1/(1-p) so evaluation needs no change.
            const auto keep = static_cast<Scalar>(1 - config_.dropout), scale = Scalar(1) / keep;
            const Matrix<Scalar>& output = layer_output(layer);
            cache.dropout_mask.resize(output.rows(), output.cols());
            for (Eigen::Index i = 0; i < cache.dropout_mask.size(); ++i)
                cache.dropout_mask.data()[i] = static_cast<Scalar>((*dropout_rng_)() >> 40) * Scalar(0x1.0p-24) < keep ? scale : Scalar(0);
            cache.dropped = output.cwiseProduct(cache.dropout_mask);
        }
    }

    // head: (T*B) x V = (T*B) x H . H x V
    const auto& head_weight = parameters_[parameters_.size() - 2].value;
    const auto& head_bias = parameters_.back().value;
    logits_.resize(TB, config_.vocab_size);
    if (weights_frozen_ && TB == 1) {  // sampling: a packed copy, made once per freeze
        head_packed_.ensure_packed(head_weight, Transpose::yes, freezes_);
        head_packed_.multiply(layer_output(config_.layers - 1), Scalar(0), logits_);
    } else {
        gemm<Scalar>(layer_output(config_.layers - 1), Transpose::no, head_weight, Transpose::yes, Scalar(0), logits_);
    }
    logits_.rowwise() += head_bias.row(0);
}

template <typename Scalar>
void Model<Scalar>::set_dropout(double rate) {
    ModelConfig config = config_;
    config.dropout = rate;
    config.validate();
    config_ = config;
}

template <typename Scalar>
LossSum Model<Scalar>::loss(std::span<const TokenId> targets) {
    const Eigen::Index TB = logits_.rows(), V = logits_.cols();
    if (static_cast<Eigen::Index>(targets.size()) != TB) throw Error("window has the wrong number of targets");
    targets_.assign(targets.begin(), targets.end());
    d_logits_.resize(TB, V);
    row_losses_.resize(static_cast<std::size_t>(TB));
    // Rows in parallel; their losses are summed in order afterwards, so the total does not depend on threads.
#pragma omp parallel for schedule(static)
    for (Eigen::Index row = 0; row < TB; ++row) {
        const TokenId target = targets_[static_cast<std::size_t>(row)];
        if (target == kIgnoreTarget) continue;
        const Scalar max_logit = logits_.row(row).maxCoeff();
        d_logits_.row(row) = (logits_.row(row).array() - max_logit).exp();
        const Scalar partition = d_logits_.row(row).sum();
        d_logits_.row(row) /= partition;
        row_losses_[static_cast<std::size_t>(row)] = static_cast<double>(std::log(partition) + max_logit - logits_(row, target));
    }
    LossSum sum;
    for (std::size_t row = 0; row < row_losses_.size(); ++row) {
        if (targets_[row] == kIgnoreTarget) continue;
        sum.total_nats += row_losses_[row];
        ++sum.count;
    }
    target_count_ = sum.count;
    return sum;
}

template <typename Scalar>
void Model<Scalar>::backward() {
    const Eigen::Index TB = logits_.rows();
    const Scalar scale = target_count_ ? Scalar(1) / static_cast<Scalar>(target_count_) : Scalar(0);
    // softmax cross-entropy: d logits = (p - onehot) / count
#pragma omp parallel for schedule(static)
    for (Eigen::Index row = 0; row < TB; ++row) {
        const TokenId target = targets_[static_cast<std::size_t>(row)];
        if (target == kIgnoreTarget) {
            d_logits_.row(row).setZero();
        } else {
            d_logits_(row, target) -= 1;
            d_logits_.row(row) *= scale;
        }
    }
    auto& head_weight = parameters_[parameters_.size() - 2];
    auto& head_bias = parameters_.back();
    const auto& top_hidden = layer_output(config_.layers - 1);
    // V x H = V x (T*B) . (T*B) x H
    gemm<Scalar>(d_logits_, Transpose::yes, top_hidden, Transpose::no, Scalar(1), head_weight.gradient);
    column_sums<Scalar>(d_logits_, Scalar(1), head_bias.gradient);
    // (T*B) x H = (T*B) x V . V x H
    d_outputs_.back().resize(TB, config_.hidden_size);
    gemm<Scalar>(d_logits_, Transpose::no, head_weight.value, Transpose::no, Scalar(0), d_outputs_.back());

    for (int layer = config_.layers - 1; layer >= 0; --layer) {
        const auto l = static_cast<std::size_t>(layer);
        // The first layer's input gradient is the embedding's; it accumulates as a weight's does.
        Matrix<Scalar>& d_input = layer == 0 ? parameters_.front().gradient : d_outputs_[l - 1];
        switch (config_.cell) {
            case CellType::lstm:
                lstm_backward(layer_input(layer), d_outputs_[l], steps_, layer_weights(layer), caches_[l].lstm,
                              layer_gradients(layer), d_input);
                break;
            case CellType::gru:
                gru_backward(layer_input(layer), d_outputs_[l], steps_, layer_weights(layer), caches_[l].gru,
                             layer_gradients(layer), d_input);
                break;
            case CellType::rnn:
                rnn_backward(layer_input(layer), d_outputs_[l], steps_, layer_weights(layer), caches_[l].rnn,
                             layer_gradients(layer), d_input);
                break;
        }
        if (layer > 0 && dropping(layer - 1)) d_input.array() *= caches_[l - 1].dropout_mask.array();
    }
}

template class Model<float>;
template class Model<double>;

}  // namespace charlm
