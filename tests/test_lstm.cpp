// Checks lstm.cpp: gradients against finite differences in double precision, with carried state.
#include <gtest/gtest.h>

#include "charlm/lstm.hpp"
#include "test_helpers.hpp"

namespace charlm {
namespace {

using testing::expect_gradient_matches;
using testing::fill_random;

struct LstmFixture {
    int steps = 5, batch = 3, input_size = 4, hidden_size = 6;
    Matrix<double> input, weight_ih, weight_hh, bias_ih, bias_hh, initial_hidden, initial_cell, projection;
    LstmCache<double> cache;

    explicit LstmFixture(std::uint64_t seed) {
        std::mt19937_64 rng(seed);
        const int G = 4 * hidden_size;
        input.resize(steps * batch, input_size);
        weight_ih.resize(G, input_size);
        weight_hh.resize(G, hidden_size);
        bias_ih.resize(1, G);
        bias_hh.resize(1, G);
        initial_hidden.resize(batch, hidden_size);
        initial_cell.resize(batch, hidden_size);
        projection.resize(steps * batch, hidden_size);
        for (auto* matrix : {&input, &weight_ih, &weight_hh, &bias_ih, &bias_hh, &initial_hidden, &initial_cell, &projection})
            fill_random(*matrix, rng, 0.8);
    }
    CellWeights<double> weights() const { return {weight_ih, weight_hh, bias_ih, bias_hh}; }
    // A scalar loss of every output: sum of projection .* h over all steps.
    double loss() {
        Matrix<double> hidden = initial_hidden, cell = initial_cell;
        lstm_forward(input, steps, weights(), hidden, cell, cache);
        return (cache.hidden.array() * projection.array()).sum();
    }
};

TEST(Lstm, GradientsMatchFiniteDifferencesOverStepsWithCarriedState) {
    LstmFixture fixture(7);
    fixture.loss();
    Matrix<double> d_weight_ih = Matrix<double>::Zero(fixture.weight_ih.rows(), fixture.weight_ih.cols());
    Matrix<double> d_weight_hh = Matrix<double>::Zero(fixture.weight_hh.rows(), fixture.weight_hh.cols());
    Matrix<double> d_bias_ih = Matrix<double>::Zero(1, fixture.bias_ih.cols());
    Matrix<double> d_bias_hh = Matrix<double>::Zero(1, fixture.bias_hh.cols());
    Matrix<double> d_input;
    lstm_backward(fixture.input, fixture.projection, fixture.steps, fixture.weights(), fixture.cache,
                  CellGradients<double>{d_weight_ih, d_weight_hh, d_bias_ih, d_bias_hh}, d_input);
    auto loss = [&] { return fixture.loss(); };
    expect_gradient_matches("weight_ih", fixture.weight_ih, d_weight_ih, loss);
    expect_gradient_matches("weight_hh", fixture.weight_hh, d_weight_hh, loss);
    expect_gradient_matches("bias_ih", fixture.bias_ih, d_bias_ih, loss);
    expect_gradient_matches("bias_hh", fixture.bias_hh, d_bias_hh, loss);
    expect_gradient_matches("input", fixture.input, d_input, loss);
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

}  // namespace
}  // namespace charlm
