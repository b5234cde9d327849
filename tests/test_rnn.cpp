// Checks rnn.cpp: gradients against finite differences in double precision, with carried state.
#include <gtest/gtest.h>

#include "charlm/rnn.hpp"
#include "charlm/row_shares.hpp"
#include "../src/units.hpp"
#include "test_helpers.hpp"

namespace charlm {
namespace {

struct RnnFixture : testing::CellTestData {
    RnnCache<double> cache;

    explicit RnnFixture(std::uint64_t seed, int batch_rows = 3, int hidden_units = 6)
        : CellTestData(1, seed, false, batch_rows, hidden_units) {}
    // A scalar loss of every output: sum of projection .* h over all steps.
    double loss() {
        Matrix<double> hidden = initial_hidden;
        rnn_forward(input, steps, weights(), hidden, cache);
        return (cache.hidden.array() * projection.array()).sum();
    }
};

TEST(Rnn, GradientsMatchFiniteDifferencesOverStepsWithCarriedState) {
    RnnFixture fixture(7);
    testing::expect_cell_gradients_match(
        fixture, [&] { return fixture.loss(); },
        [&](const CellGradients<double>& gradients, Matrix<double>& d_input) {
            rnn_backward(fixture.input, fixture.projection, fixture.steps, fixture.weights(), fixture.cache, gradients, d_input);
        });
}

TEST(Rnn, GradientsMatchFiniteDifferencesInFullChunksWithTheBatchSplitBetweenTwoThreads) {
    // The shapes of real use: 40 units are two full chunks of kChunkUnits and a tail of 8, and 17 streams
    // at two threads are two shares (8 and 9 rows) of at least kMinRowsPerThread, so the chunked passes
    // and the split time loops, forward and backward, are what the finite differences check.
    testing::Threads scope(2);
    RnnFixture fixture(17, 2 * kMinRowsPerThread + 1, 2 * kChunkUnits + 8);
    ASSERT_EQ(row_share_count(fixture.batch, kMinRowsPerThread), 2) << "the batch must really be split";
    fixture.loss();
    ASSERT_GE(fixture.cache.balance.count(0), kMinRowsPerThread) << "the forward pass split the batch";
    ASSERT_GE(fixture.cache.balance.count(1), kMinRowsPerThread);
    EXPECT_EQ(fixture.cache.balance.count(0) + fixture.cache.balance.count(1), fixture.batch);
    testing::expect_cell_gradients_match(
        fixture, [&] { return fixture.loss(); },
        [&](const CellGradients<double>& gradients, Matrix<double>& d_input) {
            rnn_backward(fixture.input, fixture.projection, fixture.steps, fixture.weights(), fixture.cache, gradients, d_input);
        });
}

TEST(Rnn, SplittingTheBatchBetweenThreadsChangesNothing) {
    // 20 streams: two shares of 10; 20 units: a chunk of 16 and a tail of 4.
    RnnFixture fixture(5, 20, 20);
    testing::expect_batch_split_changes_nothing(
        fixture, [&] { return fixture.loss(); },
        [&](const CellGradients<double>& gradients, Matrix<double>& d_input) {
            rnn_backward(fixture.input, fixture.projection, fixture.steps, fixture.weights(), fixture.cache, gradients, d_input);
        });
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
