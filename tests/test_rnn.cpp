// Checks rnn.cpp: gradients against finite differences in double precision, with carried state.
#include <gtest/gtest.h>

#include "charlm/rnn.hpp"
#include "test_helpers.hpp"

namespace charlm {
namespace {

using testing::expect_gradient_matches;
using testing::fill_random;

struct RnnFixture {
    int steps = 5, batch = 3, input_size = 4, hidden_size = 6;
    Matrix<double> input, weight_ih, weight_hh, bias_ih, bias_hh, initial_hidden, projection;
    RnnCache<double> cache;

    explicit RnnFixture(std::uint64_t seed) {
        std::mt19937_64 rng(seed);
        input.resize(steps * batch, input_size);
        weight_ih.resize(hidden_size, input_size);
        weight_hh.resize(hidden_size, hidden_size);
        bias_ih.resize(1, hidden_size);
        bias_hh.resize(1, hidden_size);
        initial_hidden.resize(batch, hidden_size);
        projection.resize(steps * batch, hidden_size);
        for (auto* matrix : {&input, &weight_ih, &weight_hh, &bias_ih, &bias_hh, &initial_hidden, &projection})
            fill_random(*matrix, rng, 0.8);
    }
    CellWeights<double> weights() const { return {weight_ih, weight_hh, bias_ih, bias_hh}; }
    // A scalar loss of every output: sum of projection .* h over all steps.
    double loss() {
        Matrix<double> hidden = initial_hidden;
        rnn_forward(input, steps, weights(), hidden, cache);
        return (cache.hidden.array() * projection.array()).sum();
    }
};

TEST(Rnn, GradientsMatchFiniteDifferencesOverStepsWithCarriedState) {
    RnnFixture fixture(7);
    fixture.loss();
    Matrix<double> d_weight_ih = Matrix<double>::Zero(fixture.weight_ih.rows(), fixture.weight_ih.cols());
    Matrix<double> d_weight_hh = Matrix<double>::Zero(fixture.weight_hh.rows(), fixture.weight_hh.cols());
    Matrix<double> d_bias_ih = Matrix<double>::Zero(1, fixture.bias_ih.cols());
    Matrix<double> d_bias_hh = Matrix<double>::Zero(1, fixture.bias_hh.cols());
    Matrix<double> d_input;
    rnn_backward(fixture.input, fixture.projection, fixture.steps, fixture.weights(), fixture.cache,
                 CellGradients<double>{d_weight_ih, d_weight_hh, d_bias_ih, d_bias_hh}, d_input);
    auto loss = [&] { return fixture.loss(); };
    expect_gradient_matches("weight_ih", fixture.weight_ih, d_weight_ih, loss);
    expect_gradient_matches("weight_hh", fixture.weight_hh, d_weight_hh, loss);
    expect_gradient_matches("bias_ih", fixture.bias_ih, d_bias_ih, loss);
    expect_gradient_matches("bias_hh", fixture.bias_hh, d_bias_hh, loss);
    expect_gradient_matches("input", fixture.input, d_input, loss);
}

TEST(Rnn, ForwardCarriesStateAcrossWindows) {
    // Two windows of 2 and 3 steps give the same outputs as one window of 5.
    RnnFixture whole(11);
    whole.loss();
    const Matrix<double> expected = whole.cache.hidden;

    Matrix<double> hidden = whole.initial_hidden;
    RnnCache<double> cache;
    const int B = whole.batch;
    Matrix<double> first = whole.input.topRows(2 * B), second = whole.input.bottomRows(3 * B);
    rnn_forward(first, 2, whole.weights(), hidden, cache);
    EXPECT_TRUE(cache.hidden.isApprox(expected.topRows(2 * B), 1e-12));
    rnn_forward(second, 3, whole.weights(), hidden, cache);
    EXPECT_TRUE(cache.hidden.isApprox(expected.bottomRows(3 * B), 1e-12));
    EXPECT_TRUE(hidden.isApprox(expected.bottomRows(B), 1e-12));
}

TEST(Rnn, MatchesTheEquationForOneStep) {
    // One unit, one stream, one step, worked by hand.
    Matrix<double> input(1, 1), weight_ih(1, 1), weight_hh(1, 1), bias_ih(1, 1), bias_hh(1, 1);
    input << 0.5;
    weight_ih << 1.5;
    weight_hh << -0.7;
    bias_ih << 0.1;
    bias_hh << 0.2;
    Matrix<double> hidden(1, 1);
    hidden << 0.4;
    RnnCache<double> cache;
    rnn_forward(input, 1, CellWeights<double>{weight_ih, weight_hh, bias_ih, bias_hh}, hidden, cache);
    EXPECT_NEAR(hidden(0, 0), std::tanh(0.75 + 0.1 - 0.28 + 0.2), 1e-12);
    EXPECT_NEAR(cache.hidden(0, 0), hidden(0, 0), 1e-15);
}

}  // namespace
}  // namespace charlm
