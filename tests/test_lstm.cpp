// Checks lstm.cpp: gradients against finite differences in double precision, with carried state, and the
// optimized passes against the plain ones at every thread count.
#include <gtest/gtest.h>

#include "charlm/lstm.hpp"
#include "test_helpers.hpp"

namespace charlm {
namespace {

using testing::expect_near;
using testing::random_matrix;
using testing::Threads;

struct LstmFixture : testing::CellTestData {
    LstmCache<double> cache;

    explicit LstmFixture(std::uint64_t seed) : CellTestData(4, seed, true) {}
    // A scalar loss of every output: sum of projection .* h over all steps.
    double loss() {
        Matrix<double> hidden = initial_hidden, cell = initial_cell;
        lstm_forward(input, steps, weights(), hidden, cell, cache);
        return (cache.hidden.array() * projection.array()).sum();
    }
};

TEST(Lstm, GradientsMatchFiniteDifferencesOverStepsWithCarriedState) {
    LstmFixture fixture(7);
    testing::expect_cell_gradients_match(
        fixture, [&] { return fixture.loss(); },
        [&](const CellGradients<double>& gradients, Matrix<double>& d_input) {
            lstm_backward(fixture.input, fixture.projection, fixture.steps, fixture.weights(), fixture.cache, gradients, d_input);
        });
}

TEST(Lstm, ForwardCarriesStateAcrossWindows) {
    // Two windows of 2 and 3 steps give the same outputs as one window of 5.
    LstmFixture whole(11);
    whole.loss();
    const Matrix<double> expected = whole.cache.hidden;

    Matrix<double> hidden = whole.initial_hidden, cell = whole.initial_cell;
    LstmCache<double> cache;
    const int B = whole.batch;
    Matrix<double> first = whole.input.topRows(2 * B), second = whole.input.bottomRows(3 * B);
    lstm_forward(first, 2, whole.weights(), hidden, cell, cache);
    EXPECT_TRUE(cache.hidden.isApprox(expected.topRows(2 * B), 1e-12));
    lstm_forward(second, 3, whole.weights(), hidden, cell, cache);
    EXPECT_TRUE(cache.hidden.isApprox(expected.bottomRows(3 * B), 1e-12));
    EXPECT_TRUE(hidden.isApprox(expected.bottomRows(B), 1e-12));
}

TEST(Lstm, MatchesTheGateEquationsForOneStep) {
    // One unit, one stream, one step, worked by hand: gates i, f, g, o.
    Matrix<double> input(1, 1), weight_ih(4, 1), weight_hh(4, 1), bias_ih(1, 4), bias_hh = Matrix<double>::Zero(1, 4);
    input << 0.5;
    weight_ih << 1, 2, 3, 4;
    weight_hh << 0.5, 0.5, 0.5, 0.5;
    bias_ih << 0.1, 0.2, 0.3, 0.4;
    Matrix<double> hidden(1, 1), cell(1, 1);
    hidden << 0.2;
    cell << -0.3;
    LstmCache<double> cache;
    lstm_forward(input, 1, CellWeights<double>{weight_ih, weight_hh, bias_ih, bias_hh}, hidden, cell, cache);
    auto sigmoid = [](double x) { return 1 / (1 + std::exp(-x)); };
    const double i = sigmoid(0.5 + 0.1 + 0.1), f = sigmoid(1.0 + 0.1 + 0.2), g = std::tanh(1.5 + 0.1 + 0.3),
                 o = sigmoid(2.0 + 0.1 + 0.4);
    const double expected_cell = f * -0.3 + i * g;
    EXPECT_NEAR(cell(0, 0), expected_cell, 1e-12);
    EXPECT_NEAR(hidden(0, 0), o * std::tanh(expected_cell), 1e-12);
}

// The LSTM as first written: Eigen products and one step of the whole batch at a time, with a separate
// gradient array. The optimized lstm_forward/lstm_backward must agree with it.
struct PlainLstm {
    Matrix<float> gates, cell, hidden, d_gates;

    void forward(const Matrix<float>& input, int steps, const CellWeights<float>& weights, Matrix<float>& hidden_state,
                 Matrix<float>& cell_state) {
        const Eigen::Index H = weights.weight_hh.cols(), B = hidden_state.rows();
        gates = input * weights.weight_ih.transpose();
        gates.rowwise() += weights.bias_ih.row(0) + weights.bias_hh.row(0);
        cell.resize(input.rows(), H);
        hidden.resize(input.rows(), H);
        Matrix<float> hidden_prev = hidden_state, cell_prev = cell_state;
        for (int t = 0; t < steps; ++t) {
            auto step = gates.middleRows(t * B, B);
            step += hidden_prev * weights.weight_hh.transpose();
            for (Eigen::Index b = 0; b < B; ++b)
                for (Eigen::Index j = 0; j < H; ++j) {
                    const float i = 1 / (1 + std::exp(-step(b, j))), f = 1 / (1 + std::exp(-step(b, H + j)));
                    const float g = std::tanh(step(b, 2 * H + j)), o = 1 / (1 + std::exp(-step(b, 3 * H + j)));
                    step(b, j) = i, step(b, H + j) = f, step(b, 2 * H + j) = g, step(b, 3 * H + j) = o;
                    cell(t * B + b, j) = f * cell_prev(b, j) + i * g;
                    hidden(t * B + b, j) = o * std::tanh(cell(t * B + b, j));
                }
            hidden_prev = hidden.middleRows(t * B, B);
            cell_prev = cell.middleRows(t * B, B);
        }
        hidden_state = hidden_prev;
        cell_state = cell_prev;
    }

    void backward(const Matrix<float>& input, const Matrix<float>& d_output, int steps, const CellWeights<float>& weights,
                  const Matrix<float>& initial_hidden, const Matrix<float>& initial_cell, const CellGradients<float>& gradients,
                  Matrix<float>& d_input) {
        const Eigen::Index H = weights.weight_hh.cols(), B = initial_hidden.rows();
        d_gates.resize(gates.rows(), gates.cols());
        Matrix<float> d_hidden_next = Matrix<float>::Zero(B, H), d_cell = Matrix<float>::Zero(B, H);
        for (int t = steps - 1; t >= 0; --t) {
            for (Eigen::Index b = 0; b < B; ++b)
                for (Eigen::Index j = 0; j < H; ++j) {
                    const Eigen::Index row = t * B + b;
                    const float i = gates(row, j), f = gates(row, H + j), g = gates(row, 2 * H + j), o = gates(row, 3 * H + j);
                    const float c_prev = t == 0 ? initial_cell(b, j) : cell(row - B, j), tanh_c = std::tanh(cell(row, j));
                    const float d_h = d_output(row, j) + d_hidden_next(b, j);
                    const float d_c = d_cell(b, j) + d_h * o * (1 - tanh_c * tanh_c);
                    d_gates(row, j) = d_c * g * i * (1 - i);
                    d_gates(row, H + j) = d_c * c_prev * f * (1 - f);
                    d_gates(row, 2 * H + j) = d_c * i * (1 - g * g);
                    d_gates(row, 3 * H + j) = d_h * tanh_c * o * (1 - o);
                    d_cell(b, j) = d_c * f;
                }
            d_hidden_next = d_gates.middleRows(t * B, B) * weights.weight_hh;
        }
        gradients.weight_ih += d_gates.transpose() * input;
        gradients.weight_hh += d_gates.topRows(B).transpose() * initial_hidden;
        gradients.weight_hh += d_gates.bottomRows(d_gates.rows() - B).transpose() * hidden.topRows(hidden.rows() - B);
        gradients.bias_ih.row(0) += d_gates.colwise().sum();
        gradients.bias_hh.row(0) += d_gates.colwise().sum();
        d_input = d_gates * weights.weight_ih;
    }
};

void check_lstm_against_plain(int threads, int batch, std::uint64_t version = 0, int steps = 6) {
    Threads thread_count(threads);
    const int input_size = 24, H = 40;
    std::mt19937_64 rng(9);
    const Matrix<float> input = random_matrix<float>(steps * batch, input_size, rng);
    const Matrix<float> weight_ih = random_matrix<float>(4 * H, input_size, rng) * 0.3f;
    const Matrix<float> weight_hh = random_matrix<float>(4 * H, H, rng) * 0.3f;
    const Matrix<float> bias_ih = random_matrix<float>(1, 4 * H, rng), bias_hh = random_matrix<float>(1, 4 * H, rng);
    const Matrix<float> initial_hidden = random_matrix<float>(batch, H, rng), initial_cell = random_matrix<float>(batch, H, rng);
    const Matrix<float> d_output = random_matrix<float>(steps * batch, H, rng);
    const CellWeights<float> weights{weight_ih, weight_hh, bias_ih, bias_hh, version};

    PlainLstm plain;
    Matrix<float> plain_hidden = initial_hidden, plain_cell = initial_cell;
    plain.forward(input, steps, weights, plain_hidden, plain_cell);
    LstmCache<float> cache;
    Matrix<float> hidden = initial_hidden, cell = initial_cell;
    lstm_forward(input, steps, weights, hidden, cell, cache);
    const std::string where = std::to_string(threads) + " threads, batch " + std::to_string(batch);
    expect_near<float>(cache.hidden, plain.hidden, 1e-5, "outputs, " + where);
    expect_near<float>(hidden, plain_hidden, 1e-5, "carried hidden state, " + where);
    expect_near<float>(cell, plain_cell, 1e-5, "carried cell state, " + where);

    auto zeros = [](const Matrix<float>& like) { return Matrix<float>::Zero(like.rows(), like.cols()).eval(); };
    Matrix<float> w_ih = zeros(weight_ih), w_hh = zeros(weight_hh), b_ih = zeros(bias_ih), b_hh = zeros(bias_hh), d_input;
    Matrix<float> p_w_ih = w_ih, p_w_hh = w_hh, p_b_ih = b_ih, p_b_hh = b_hh, p_d_input;
    plain.backward(input, d_output, steps, weights, initial_hidden, initial_cell, {p_w_ih, p_w_hh, p_b_ih, p_b_hh}, p_d_input);
    lstm_backward(input, d_output, steps, weights, cache, {w_ih, w_hh, b_ih, b_hh}, d_input);
    expect_near<float>(w_ih, p_w_ih, 1e-4, "weight_ih gradient, " + where);
    expect_near<float>(w_hh, p_w_hh, 1e-4, "weight_hh gradient, " + where);
    expect_near<float>(b_ih, p_b_ih, 1e-4, "bias_ih gradient, " + where);
    expect_near<float>(b_hh, p_b_hh, 1e-4, "bias_hh gradient, " + where);
    expect_near<float>(d_input, p_d_input, 1e-4, "input gradient, " + where);
    expect_near<float>(cache.gates, plain.d_gates, 1e-4, "gate gradients, " + where);
}

TEST(Lstm, OptimizedMatchesThePlainOneOnOneThread) { check_lstm_against_plain(1, 50); }
TEST(Lstm, OptimizedMatchesThePlainOneWithTheBatchSplitBetweenThreads) {
    check_lstm_against_plain(2, 50);
    check_lstm_against_plain(2, 17);  // uneven shares
    check_lstm_against_plain(2, 1);   // one stream: no split
}

TEST(Lstm, SharesWeighedByTheThreadsSpeedsGiveTheSameBits) {
    // The batch's split between threads follows their measured speeds, so it changes from call to
    // call; the results must not, or the same seed and thread count would not give the same run.
    Threads threads(2);
    const int steps = 5, batch = 40, input_size = 12, H = 20;
    std::mt19937_64 rng(31);
    const Matrix<float> input = random_matrix<float>(steps * batch, input_size, rng), d_output = random_matrix<float>(steps * batch, H, rng);
    const Matrix<float> weight_ih = random_matrix<float>(4 * H, input_size, rng), weight_hh = random_matrix<float>(4 * H, H, rng);
    const Matrix<float> bias_ih = random_matrix<float>(1, 4 * H, rng), bias_hh = random_matrix<float>(1, 4 * H, rng);
    const CellWeights<float> weights{weight_ih, weight_hh, bias_ih, bias_hh};
    struct Pass {
        LstmCache<float> cache;
        Matrix<float> hidden, cell, w_ih, w_hh, b_ih, b_hh, d_input;
    };
    auto run = [&](Pass& pass) {
        pass.hidden = Matrix<float>::Zero(batch, H);
        pass.cell = Matrix<float>::Zero(batch, H);
        pass.w_ih.setZero(4 * H, input_size);
        pass.w_hh.setZero(4 * H, H);
        pass.b_ih.setZero(1, 4 * H);
        pass.b_hh.setZero(1, 4 * H);
        lstm_forward(input, steps, weights, pass.hidden, pass.cell, pass.cache);
        lstm_backward(input, d_output, steps, weights, pass.cache, {pass.w_ih, pass.w_hh, pass.b_ih, pass.b_hh}, pass.d_input);
    };
    Pass even, skewed;
    skewed.cache.balance.split(batch, 2, 8);
    skewed.cache.balance.record(0, 3.0);  // the first thread three times slower: shares of 10 and 30 rows
    skewed.cache.balance.record(1, 1.0);
    skewed.cache.balance.update();
    run(even);
    run(skewed);
    auto same = [](const Matrix<float>& a, const Matrix<float>& b) { return (a.array() == b.array()).all(); };
    EXPECT_TRUE(same(skewed.cache.hidden, even.cache.hidden));
    EXPECT_TRUE(same(skewed.cell, even.cell));
    EXPECT_TRUE(same(skewed.cache.gates, even.cache.gates));  // the gates' gradients, after backward
    EXPECT_TRUE(same(skewed.w_hh, even.w_hh));
    EXPECT_TRUE(same(skewed.w_ih, even.w_ih));
    EXPECT_TRUE(same(skewed.b_ih, even.b_ih));
    EXPECT_TRUE(same(skewed.d_input, even.d_input));
}

TEST(Lstm, FrozenWeightsServeWindowsOfEverySizeInTurn) {
    // Evaluation's last window is short: one cache, frozen weights, many rows then one row then many.
    const int H = 16, input_size = 8;
    std::mt19937_64 rng(12);
    const Matrix<float> weight_ih = random_matrix<float>(4 * H, input_size, rng), weight_hh = random_matrix<float>(4 * H, H, rng);
    const Matrix<float> bias_ih = random_matrix<float>(1, 4 * H, rng), bias_hh = random_matrix<float>(1, 4 * H, rng);
    LstmCache<float> frozen_cache;
    for (int batch : {20, 1, 20}) {
        const Matrix<float> input = random_matrix<float>(3 * batch, input_size, rng);
        Matrix<float> hidden = Matrix<float>::Zero(batch, H), cell = Matrix<float>::Zero(batch, H);
        lstm_forward(input, 3, CellWeights<float>{weight_ih, weight_hh, bias_ih, bias_hh, 7}, hidden, cell, frozen_cache);
        LstmCache<float> fresh_cache;
        Matrix<float> fresh_hidden = Matrix<float>::Zero(batch, H), fresh_cell = Matrix<float>::Zero(batch, H);
        lstm_forward(input, 3, CellWeights<float>{weight_ih, weight_hh, bias_ih, bias_hh}, fresh_hidden, fresh_cell, fresh_cache);
        expect_near<float>(frozen_cache.hidden, fresh_cache.hidden, 1e-6, "batch " + std::to_string(batch));
    }
}

TEST(Lstm, OptimizedMatchesThePlainOneWithFrozenWeights) {
    // Frozen weights (a nonzero version) and one stream take the sampling path: packed input weights too.
    check_lstm_against_plain(1, 1, 1);
    check_lstm_against_plain(2, 50, 1);
}

TEST(Lstm, OptimizedMatchesThePlainOneForSingleStepsAgainstFrozenWeights) {
    // Sampling's shape: one step, a few rows, [x h] times the stacked input and recurrent weights.
    check_lstm_against_plain(1, 1, 1, 1);
    check_lstm_against_plain(2, 1, 1, 1);
    check_lstm_against_plain(1, 5, 1, 1);
    check_lstm_against_plain(2, 50, 1, 1);  // too many rows to stack: the usual path
}

}  // namespace
}  // namespace charlm
