// Checks recurrent_layer.cpp and the cells: every cell against its plain reference (reference_cells.hpp)
// forward and backward, bit for bit whatever the batch's split between threads, and by finite
// differences in double precision at sizes that take full chunks of units and both threads' shares.
#include <gtest/gtest.h>

#include "charlm/threads.hpp"

#include "nn/cell_units.hpp"
#include "nn/kernels.hpp"
#include "nn/recurrent_layer.hpp"
#include "reference_cells.hpp"
#include "nn/row_shares.hpp"
#include "nn/team.hpp"
#include "test_helpers.hpp"

namespace charlm {
namespace {

using testing::expect_near;
using testing::random_matrix;
using testing::Threads;

// One layer's inputs, weights, starting state and output gradient, all random.
template <typename Scalar>
struct LayerData {
    int steps = 0;
    Matrix<Scalar> input, weight_ih, weight_hh, bias_ih, bias_hh, initial_hidden, initial_cell, d_output;

    LayerData() = default;
    LayerData(CellType cell, int step_count, int batch, int input_size, int hidden_size, std::uint64_t seed) : steps(step_count) {
        ModelConfig config;
        config.cell = cell;
        const int G = config.gate_count() * hidden_size;
        std::mt19937_64 rng(seed);
        input = random_matrix<Scalar>(steps * batch, input_size, rng);
        weight_ih = random_matrix<Scalar>(G, input_size, rng);
        weight_hh = random_matrix<Scalar>(G, hidden_size, rng);
        bias_ih = random_matrix<Scalar>(1, G, rng);
        bias_hh = random_matrix<Scalar>(1, G, rng);
        initial_hidden = random_matrix<Scalar>(batch, hidden_size, rng);
        if (config.has_cell_state()) initial_cell = random_matrix<Scalar>(batch, hidden_size, rng);
        d_output = random_matrix<Scalar>(steps * batch, hidden_size, rng);
    }
    LayerWeights<Scalar> weights(std::uint64_t version = 0) const { return {weight_ih, weight_hh, bias_ih, bias_hh, version}; }
    template <typename Other>
    LayerData<Other> cast() const {
        LayerData<Other> other;
        other.steps = steps;
        for (auto [to, from] : {std::pair{&other.input, &input}, {&other.weight_ih, &weight_ih}, {&other.weight_hh, &weight_hh},
                                {&other.bias_ih, &bias_ih}, {&other.bias_hh, &bias_hh}, {&other.initial_hidden, &initial_hidden},
                                {&other.initial_cell, &initial_cell}, {&other.d_output, &d_output}})
            *to = from->template cast<Other>();
        return other;
    }
};

// What a forward and a backward pass of the engine give.
template <typename Scalar>
struct EngineResult {
    Matrix<Scalar> output, final_hidden, final_cell, gate_gradients;
    Matrix<Scalar> weight_ih, weight_hh, bias_ih, bias_hh, d_input;  // gradients

    std::vector<std::pair<std::string, const Matrix<Scalar>*>> all() const {
        return {{"output", &output},       {"final hidden", &final_hidden}, {"final cell", &final_cell},
                {"weight_ih", &weight_ih}, {"weight_hh", &weight_hh},       {"bias_ih", &bias_ih},
                {"bias_hh", &bias_hh},     {"input", &d_input},             {"gate gradients", &gate_gradients}};
    }
};

template <typename Scalar>
Matrix<Scalar> zeros_like(const Matrix<Scalar>& like) {
    return Matrix<Scalar>::Zero(like.rows(), like.cols());
}

template <typename Scalar>
EngineResult<Scalar> run_engine(RecurrentLayer<Scalar>& layer, const LayerData<Scalar>& data, std::uint64_t version = 0) {
    EngineResult<Scalar> result;
    result.final_hidden = data.initial_hidden;
    result.final_cell = data.initial_cell;
    layer.forward(data.input, data.steps, data.weights(version), result.final_hidden, result.final_cell);
    result.output = layer.output();
    result.weight_ih = zeros_like(data.weight_ih);
    result.weight_hh = zeros_like(data.weight_hh);
    result.bias_ih = zeros_like(data.bias_ih);
    result.bias_hh = zeros_like(data.bias_hh);
    layer.backward(data.input, data.d_output, data.steps, data.weights(version),
                   {result.weight_ih, result.weight_hh, result.bias_ih, result.bias_hh}, result.d_input);
    result.gate_gradients = layer.gate_gradients();
    return result;
}

template <typename Scalar>
EngineResult<Scalar> run_engine(CellType cell, const LayerData<Scalar>& data, std::uint64_t version = 0) {
    RecurrentLayer<Scalar> layer(cell);
    return run_engine(layer, data, version);
}

class RecurrentLayerTest : public ::testing::TestWithParam<CellType> {};

// The engine in `Scalar` against the plain reference in double, on `threads` threads.
template <typename Scalar>
void expect_engine_matches_reference(CellType cell, int threads, int batch, int steps, std::uint64_t version, double tolerance) {
    Threads scope(threads);
    const LayerData<double> data(cell, steps, batch, 24, 40, 9);
    testing::ReferenceLayer reference{cell};
    const testing::ReferenceWeights weights{data.weight_ih, data.weight_hh, data.bias_ih, data.bias_hh};
    reference.forward(data.input, steps, weights, data.initial_hidden, data.initial_cell);
    reference.backward(data.input, data.d_output, weights);
    const EngineResult<Scalar> engine = run_engine<Scalar>(cell, data.cast<Scalar>(), version);

    const std::string where = to_string(cell) + ", " + std::to_string(threads) + " threads, batch " + std::to_string(batch) + ", " +
                              std::to_string(steps) + " steps, version " + std::to_string(version);
    auto expect = [&](const Matrix<Scalar>& actual, const Matrix<double>& expected, const std::string& what) {
        expect_near<double>(actual.template cast<double>(), expected, tolerance, what + ", " + where);
    };
    expect(engine.output, reference.hidden, "outputs");
    expect(engine.final_hidden, reference.final_hidden, "carried hidden state");
    if (ModelConfig{.cell = cell}.has_cell_state()) expect(engine.final_cell, reference.final_cell, "carried cell state");
    expect(engine.weight_ih, reference.gradients.weight_ih, "weight_ih gradient");
    expect(engine.weight_hh, reference.gradients.weight_hh, "weight_hh gradient");
    expect(engine.bias_ih, reference.gradients.bias_ih, "bias_ih gradient");
    expect(engine.bias_hh, reference.gradients.bias_hh, "bias_hh gradient");
    expect(engine.d_input, reference.d_input, "input gradient");
}

TEST_P(RecurrentLayerTest, MatchesThePlainCellInDoublePrecision) {
    for (int threads : {1, 2})
        for (int batch : {50, 17, 1}) expect_engine_matches_reference<double>(GetParam(), threads, batch, 6, 0, 1e-10);
}

// Float against double, as a fraction of the scale: 2e-5 at every level. Each of the six steps sums 64 terms
// (24 inputs, 40 units) in float, u = 6e-8 a rounding, and the rnn chains six tanh steps, so the float results
// come 1e-5 from double give or take the order of the sums, which is the level's and oneDNN's: the rnn came
// 1.1e-5 away at sse2 (no FMA: each product term and each step of Eigen's tanh polynomial rounds twice),
// 1.02e-5 at arm64's generic level under qemu (oneDNN's aarch64 sgemm, NEON's 4-float packets), and at avx2 on a
// Zen 3 without AVX-512 (oneDNN's AVX2 sgemm) 1.12e-5 for its outputs and 1.42e-5 for its input gradient, where
// on AVX-512 machines avx2 and up stayed under 1e-5. A cell or a product that is wrong is 1e-3 away or more.
double float_tolerance() { return 2e-5; }

TEST_P(RecurrentLayerTest, MatchesThePlainCellInSinglePrecision) {
    // What training runs: oneDNN's products and the packed kernels in float, against double.
    for (int threads : {1, 2})
        for (int batch : {50, 17, 1}) expect_engine_matches_reference<float>(GetParam(), threads, batch, 6, 0, float_tolerance());
}

TEST_P(RecurrentLayerTest, MatchesThePlainCellWithFrozenWeights) {
    // A nonzero version keeps packed weights between calls; one stream takes packed input weights too,
    // and one step of a few rows takes sampling's [x h] times the stacked weights where the cell allows.
    for (int threads : {1, 2}) {
        expect_engine_matches_reference<float>(GetParam(), threads, 1, 6, 1, float_tolerance());
        expect_engine_matches_reference<float>(GetParam(), threads, 50, 6, 1, float_tolerance());
        for (int batch : {1, 5, 50}) expect_engine_matches_reference<float>(GetParam(), threads, batch, 1, 1, float_tolerance());
    }
}

TEST_P(RecurrentLayerTest, GivesTheSameBitsWhateverTheSplitBetweenThreads) {
    // The batch's split follows the threads' measured speeds, so it changes from call to call; the
    // results must not, or the same seed and thread count would not give the same run.
    Threads scope(2);
    const LayerData<float> data(GetParam(), 5, 40, 12, 20, 31);
    const EngineResult<float> expected = run_engine(GetParam(), data);  // split evenly at first
    for (double slower_first : {3.0, 1.0 / 3}) {
        // A balance that has seen the first thread 3 times slower (then faster): shares of 10 and 30 rows
        // (then 30 and 10). Each pass is given it afresh, since a pass's own timings move the split.
        RowBalance uneven;
        uneven.split(40, 2, kMinRowsPerThread);
        uneven.record(0, slower_first);
        uneven.record(1, 1.0);
        uneven.update();
        const Eigen::Index first_share = slower_first > 1 ? 10 : 30;
        RecurrentLayer<float> skewed(GetParam());
        EngineResult<float> result;
        result.final_hidden = data.initial_hidden;
        result.final_cell = data.initial_cell;
        skewed.balance() = uneven;
        skewed.forward(data.input, data.steps, data.weights(), result.final_hidden, result.final_cell);
        // What the pass left in the layer's balance is the split it used (update() changes speeds only).
        ASSERT_EQ(skewed.balance().count(0), first_share) << "the forward pass did not split the batch unevenly";
        result.output = skewed.output();
        result.weight_ih = zeros_like(data.weight_ih);
        result.weight_hh = zeros_like(data.weight_hh);
        result.bias_ih = zeros_like(data.bias_ih);
        result.bias_hh = zeros_like(data.bias_hh);
        skewed.balance() = uneven;
        skewed.backward(data.input, data.d_output, data.steps, data.weights(),
                        {result.weight_ih, result.weight_hh, result.bias_ih, result.bias_hh}, result.d_input);
        ASSERT_EQ(skewed.balance().count(0), first_share) << "the backward pass did not split the batch unevenly";
        result.gate_gradients = skewed.gate_gradients();
        const auto results = result.all(), expectations = expected.all();
        for (std::size_t i = 0; i < expectations.size(); ++i) {
            const auto& [name, matrix] = results[i];
            ASSERT_EQ(matrix->rows(), expectations[i].second->rows()) << name;
            EXPECT_TRUE((matrix->array() == expectations[i].second->array()).all()) << name << " differs in its bits";
        }
    }
}

// Checks every weight's and the input's gradient against central differences of the loss
// sum(output .* d_output), which is the loss whose output gradient is d_output: each element of a matrix
// of at most `max_checks`, else about that many spread over its rows and columns.
void expect_gradients_match_finite_differences(CellType cell, LayerData<double>& data, RecurrentLayer<double>& layer,
                                               Eigen::Index max_checks = 400) {
    auto loss = [&] {
        Matrix<double> hidden = data.initial_hidden, cell_state = data.initial_cell;
        layer.forward(data.input, data.steps, data.weights(), hidden, cell_state);
        return (layer.output().array() * data.d_output.array()).sum();
    };
    const EngineResult<double> analytic = run_engine(layer, data);
    testing::expect_gradient_matches(to_string(cell) + " weight_ih", data.weight_ih, analytic.weight_ih, loss, max_checks);
    testing::expect_gradient_matches(to_string(cell) + " weight_hh", data.weight_hh, analytic.weight_hh, loss, max_checks);
    testing::expect_gradient_matches(to_string(cell) + " bias_ih", data.bias_ih, analytic.bias_ih, loss, max_checks);
    testing::expect_gradient_matches(to_string(cell) + " bias_hh", data.bias_hh, analytic.bias_hh, loss, max_checks);
    testing::expect_gradient_matches(to_string(cell) + " input", data.input, analytic.d_input, loss, max_checks);
}

TEST_P(RecurrentLayerTest, GradientsMatchFiniteDifferencesInFullChunksWithTheBatchSplitBetweenTwoThreads) {
    // 40 units are two full chunks of kChunkUnits and a tail of 8, and 17 streams at two threads are two
    // shares (8 and 9 rows) of at least kMinRowsPerThread: the chunked passes and the split time loops,
    // forward and backward, are what the finite differences check.
    Threads scope(2);
    LayerData<double> data(GetParam(), 5, 2 * kMinRowsPerThread + 1, 4, 2 * kChunkUnits + 8, 13);
    ASSERT_EQ(row_share_count(17, kMinRowsPerThread), 2) << "the batch must really be split";
    RecurrentLayer<double> layer(GetParam());
    run_engine(layer, data);
    ASSERT_GE(layer.balance().count(0), kMinRowsPerThread) << "the passes split the batch";
    ASSERT_GE(layer.balance().count(1), kMinRowsPerThread);
    // About 120 checks a matrix, spread over every gate, both chunks and the tail: the test runs at each level
    // of the kernels, under the sanitizers too, where the LSTM's 1,700 checks took 20 s a level.
    expect_gradients_match_finite_differences(GetParam(), data, layer, 120);
}

TEST_P(RecurrentLayerTest, GradientsMatchFiniteDifferencesOnOneThreadWithCarriedState) {
    Threads scope(1);
    LayerData<double> data(GetParam(), 5, 3, 4, 6, 7);
    RecurrentLayer<double> layer(GetParam());
    expect_gradients_match_finite_differences(GetParam(), data, layer);
}

TEST_P(RecurrentLayerTest, CarriesStateAcrossWindows) {
    // Two windows of 2 and 3 steps give the same outputs as one window of 5.
    const LayerData<double> whole(GetParam(), 5, 3, 4, 6, 11);
    const EngineResult<double> expected = run_engine(GetParam(), whole);
    const Eigen::Index B = whole.initial_hidden.rows();
    RecurrentLayer<double> layer(GetParam());
    Matrix<double> hidden = whole.initial_hidden, cell = whole.initial_cell;
    const Matrix<double> first = whole.input.topRows(2 * B), second = whole.input.bottomRows(3 * B);
    layer.forward(first, 2, whole.weights(), hidden, cell);
    EXPECT_TRUE(layer.output().isApprox(expected.output.topRows(2 * B), 1e-12));
    layer.forward(second, 3, whole.weights(), hidden, cell);
    EXPECT_TRUE(layer.output().isApprox(expected.output.bottomRows(3 * B), 1e-12));
    EXPECT_TRUE(hidden.isApprox(expected.final_hidden, 1e-12));
    if (cell.size() > 0) {
        EXPECT_TRUE(cell.isApprox(expected.final_cell, 1e-12));
    }
}

TEST_P(RecurrentLayerTest, FrozenWeightsServeWindowsOfEverySizeInTurn) {
    // Evaluation's last window is short: one layer, frozen weights, many rows then one row then many.
    RecurrentLayer<float> frozen(GetParam());
    const LayerData<float> weights(GetParam(), 3, 1, 8, 16, 12);
    for (int batch : {20, 1, 20}) {
        LayerData<float> data(GetParam(), 3, batch, 8, 16, 100 + static_cast<std::uint64_t>(batch));
        for (auto [to, from] : {std::pair{&data.weight_ih, &weights.weight_ih}, {&data.weight_hh, &weights.weight_hh},
                                {&data.bias_ih, &weights.bias_ih}, {&data.bias_hh, &weights.bias_hh}})
            *to = *from;  // the same weights throughout, as a freeze promises
        Matrix<float> hidden = data.initial_hidden, cell = data.initial_cell;
        frozen.forward(data.input, 3, data.weights(7), hidden, cell);
        const EngineResult<float> fresh = run_engine(GetParam(), data);
        expect_near<float>(frozen.output(), fresh.output, 1e-6, to_string(GetParam()) + ", batch " + std::to_string(batch));
    }
}

TEST_P(RecurrentLayerTest, OneStepInATeamGivesForwardsBitsForEveryTeamInputAndPrecision) {
    // Sampling's and serving's step runs its phases in one team (Model's decoding step): each member its
    // rows of the copies and cells and its panels of the products. Whatever the team, the rows and the
    // input (dense rows, stacked with h or not; tokens through the table, or gathered where the table
    // would be too large), it must give forward()'s bits, which every promise about a served completion
    // rests on. The bf16 products run on every machine (emulated where the CPU has no AVX512_BF16).
    const CellType cell = GetParam();
    const int gates = ModelConfig{.cell = cell}.gate_count();
    constexpr int kHidden = 16, kInput = 6, kVocab = 11;
    // Tokens whose table would pass kMostTableEntries (input_projection.cpp) go through gathered rows.
    const int large_vocab = static_cast<int>((Eigen::Index{1} << 24) / (gates * kHidden)) + 1;
    for (const Precision precision : {Precision::fp32, Precision::bf16})
        for (const RowSums sums : {RowSums::fastest, RowSums::as_if_alone})
            for (const int batch : {1, 3, 8, 13})
                for (const int vocab : {0, kVocab, large_vocab}) {  // 0: dense rows
                    if (vocab == large_vocab && (batch != 3 || precision != Precision::bf16)) continue;  // big: once is enough
                    // Where the model takes a team: more rows than a packed product takes are rows as if alone.
                    if (batch > kMinRowsPerThread && sums == RowSums::fastest) continue;
                    const LayerData<float> data(cell, 1, batch, kInput, kHidden, 50 + static_cast<std::uint64_t>(batch));
                    std::mt19937_64 rng(7);
                    const Matrix<float> embedding = random_matrix<float>(std::max(vocab, 1), kInput, rng);
                    std::vector<TokenId> tokens(static_cast<std::size_t>(batch));
                    for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<TokenId>((i * 7919 + 3) % std::max(vocab, 1));
                    const LayerInput<float> input = vocab == 0 ? LayerInput<float>(data.input) : LayerInput<float>(tokens, embedding);
                    LayerWeights<float> weights = data.weights(5);
                    weights.row_sums = sums;
                    weights.precision = precision;
                    RecurrentLayer<float> whole(cell);
                    Matrix<float> hidden = data.initial_hidden, cell_state = data.initial_cell;
                    whole.forward(input, 1, weights, hidden, cell_state);
                    for (const int team_size : {1, 2, 3}) {
                        const std::string where = to_string(cell) + (precision == Precision::bf16 ? ", bf16" : ", fp32") +
                                                  (sums == RowSums::as_if_alone ? ", as if alone" : "") + ", batch " +
                                                  std::to_string(batch) + ", vocabulary " + std::to_string(vocab) + ", team of " +
                                                  std::to_string(team_size);
                        Threads scope(team_size);
                        RecurrentLayer<float> split(cell);
                        Matrix<float> split_hidden = data.initial_hidden, split_cell = data.initial_cell;
                        split.prepare_step(input, weights, split_hidden, split_cell);
                        int team_seen = 0;
                        run_in_team(team_size > 1, [&](const Team& team) {
                            if (team.member == 0) team_seen = team.size;
                            split.step_in_team(input, weights, split_hidden, split_cell, team);
                        });
                        if (full_teams_guaranteed()) {
                            ASSERT_EQ(team_seen, team_size) << where;
                        }
                        EXPECT_TRUE((split.output().array() == whole.output().array()).all()) << "outputs differ in their bits, " << where;
                        EXPECT_TRUE((split_hidden.array() == hidden.array()).all()) << "the carried h differs, " << where;
                        EXPECT_TRUE((split_cell.array() == cell_state.array()).all()) << "the carried c differs, " << where;
                    }
                }
}

TEST_P(RecurrentLayerTest, AForwardThatNoBackwardFollowsGivesTheSameBitsAndRefusesABackward) {
    // Evaluation and sampling tell the layer that no backward follows (LayerWeights::backward_follows): where
    // the input goes through the table a step at a time, it keeps only the step's gates, in cache. The
    // outputs and the carried state must be the bits of a forward that keeps every step's, for tokens and
    // dense rows, at each precision, a batch split between threads or not; and a backward must be refused.
    const CellType cell = GetParam();
    constexpr int kSteps = 4, kHidden = 40, kInput = 6, kVocab = 11;
    Threads scope(2);
    for (const Precision precision : {Precision::fp32, Precision::bf16})
        for (const int batch : {3, 2 * static_cast<int>(kMinRowsPerThread) + 1})
            for (const bool tokens : {true, false}) {
                const std::string where = to_string(cell) + (precision == Precision::bf16 ? ", bf16" : ", fp32") + ", batch " +
                                          std::to_string(batch) + (tokens ? ", tokens" : ", dense rows");
                const LayerData<float> data(cell, kSteps, batch, kInput, kHidden, 60 + static_cast<std::uint64_t>(batch));
                std::mt19937_64 rng(3);
                const Matrix<float> embedding = random_matrix<float>(kVocab, kInput, rng);
                std::vector<TokenId> ids(static_cast<std::size_t>(kSteps * batch));
                for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<TokenId>((i * 7919 + 5) % kVocab);
                const LayerInput<float> input = tokens ? LayerInput<float>(ids, embedding) : LayerInput<float>(data.input);
                LayerWeights<float> weights = data.weights(9);
                weights.precision = precision;
                RecurrentLayer<float> kept(cell), step_only(cell);
                Matrix<float> hidden = data.initial_hidden, cell_state = data.initial_cell;
                kept.forward(input, kSteps, weights, hidden, cell_state);
                weights.backward_follows = false;
                Matrix<float> hidden_alone = data.initial_hidden, cell_alone = data.initial_cell;
                step_only.forward(input, kSteps, weights, hidden_alone, cell_alone);
                EXPECT_TRUE((step_only.output().array() == kept.output().array()).all()) << "outputs differ in their bits, " << where;
                EXPECT_TRUE((hidden_alone.array() == hidden.array()).all()) << "the carried h differs, " << where;
                EXPECT_TRUE((cell_alone.array() == cell_state.array()).all()) << "the carried c differs, " << where;
                if (!tokens) continue;  // dense rows keep every step's gates, as their window's product writes them
                Matrix<float> d_weight_ih = zeros_like(data.weight_ih), d_weight_hh = zeros_like(data.weight_hh);
                Matrix<float> d_bias_ih = zeros_like(data.bias_ih), d_bias_hh = zeros_like(data.bias_hh), d_embedding;
                EXPECT_THROW(step_only.backward(input, data.d_output, kSteps, weights, {d_weight_ih, d_weight_hh, d_bias_ih, d_bias_hh}, d_embedding),
                             Error)
                    << where;
            }
}

INSTANTIATE_TEST_SUITE_P(Cells, RecurrentLayerTest, ::testing::Values(CellType::lstm, CellType::gru, CellType::rnn),
                         [](const ::testing::TestParamInfo<CellType>& info) { return to_string(info.param); });

// The hand-worked steps: one unit, one stream, one step of each cell's equations.
double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

struct OneStep {
    Matrix<double> input{{0.5}}, hidden{{0.2}}, cell{{-0.3}};
    Matrix<double> weight_ih, weight_hh, bias_ih, bias_hh;
    void run(CellType type) {
        RecurrentLayer<double> layer(type);
        layer.forward(input, 1, {weight_ih, weight_hh, bias_ih, bias_hh}, hidden, cell);
        EXPECT_EQ(layer.output()(0, 0), hidden(0, 0));
    }
};

TEST(Lstm, MatchesTheGateEquationsForOneStep) {
    OneStep step;
    step.weight_ih = Matrix<double>{{1}, {2}, {3}, {4}};
    step.weight_hh = Matrix<double>{{0.5}, {0.5}, {0.5}, {0.5}};
    step.bias_ih = Matrix<double>{{0.1, 0.2, 0.3, 0.4}};
    step.bias_hh = Matrix<double>::Zero(1, 4);
    step.run(CellType::lstm);
    const double i = sigmoid(0.5 + 0.1 + 0.1), f = sigmoid(1.0 + 0.1 + 0.2), g = std::tanh(1.5 + 0.1 + 0.3), o = sigmoid(2.0 + 0.1 + 0.4);
    const double expected_cell = f * -0.3 + i * g;
    EXPECT_NEAR(step.cell(0, 0), expected_cell, 1e-12);
    EXPECT_NEAR(step.hidden(0, 0), o * std::tanh(expected_cell), 1e-12);
}

TEST(Gru, MatchesTheGateEquationsForOneStep) {
    // r != 1 and b_hn != 0, so a cell that summed the two biases before the reset gate would miss.
    OneStep step;
    step.weight_ih = Matrix<double>{{1}, {2}, {3}};
    step.weight_hh = Matrix<double>{{0.5}, {-0.4}, {0.7}};
    step.bias_ih = Matrix<double>{{0.1, 0.2, 0.3}};
    step.bias_hh = Matrix<double>{{-0.2, 0.1, 0.6}};
    step.run(CellType::gru);
    const double r = sigmoid(0.5 + 0.1 + 0.1 - 0.2), z = sigmoid(1.0 + 0.2 - 0.08 + 0.1), n = std::tanh(1.5 + 0.3 + r * (0.14 + 0.6));
    EXPECT_NEAR(step.hidden(0, 0), (1 - z) * n + z * 0.2, 1e-12);
    const double summed_biases = (1 - z) * std::tanh(1.5 + 0.3 + 0.6 + r * 0.14) + z * 0.2;
    EXPECT_GT(std::abs(step.hidden(0, 0) - summed_biases), 1e-3);
}

TEST(Rnn, MatchesTheEquationForOneStep) {
    OneStep step;
    step.weight_ih = Matrix<double>{{1.5}};
    step.weight_hh = Matrix<double>{{-0.7}};
    step.bias_ih = Matrix<double>{{0.1}};
    step.bias_hh = Matrix<double>{{0.25}};
    step.run(CellType::rnn);
    EXPECT_NEAR(step.hidden(0, 0), std::tanh(0.75 + 0.1 - 0.14 + 0.25), 1e-12);
}

}  // namespace
}  // namespace charlm
