// Checks input_projection.cpp: token ids, looked up in the table or gathered, project and take gradients as
// their embedding rows do as a dense input, at every thread count and with frozen weights.
#include <gtest/gtest.h>

#include "charlm/error.hpp"
#include "nn/input_projection.hpp"
#include "test_helpers.hpp"

namespace charlm {
namespace {

using testing::expect_near;
using testing::random_matrix;
using testing::Threads;

constexpr int kInputSize = 6, kWidth = 4 * 40;  // wide enough for the per-token sums to split columns

struct Weights {
    Matrix<float> weight_ih, weight_hh, bias_ih, bias_hh;
    explicit Weights(std::mt19937_64& rng)
        : weight_ih(random_matrix<float>(kWidth, kInputSize, rng)), weight_hh(Matrix<float>::Zero(kWidth, kWidth / 4)),
          bias_ih(Matrix<float>::Zero(1, kWidth)), bias_hh(Matrix<float>::Zero(1, kWidth)) {}
    LayerWeights<float> at(std::uint64_t version) const { return {weight_ih, weight_hh, bias_ih, bias_hh, version}; }
};

std::vector<TokenId> random_tokens(int count, int vocab, std::mt19937_64& rng) {
    std::vector<TokenId> tokens(static_cast<std::size_t>(count));
    for (auto& token : tokens) token = static_cast<TokenId>(rng() % static_cast<std::uint64_t>(vocab));
    return tokens;
}

Matrix<float> embedded_rows(const std::vector<TokenId>& tokens, const Matrix<float>& embedding) {
    Matrix<float> rows(static_cast<Eigen::Index>(tokens.size()), embedding.cols());
    for (std::size_t row = 0; row < tokens.size(); ++row) rows.row(static_cast<Eigen::Index>(row)) = embedding.row(tokens[row]);
    return rows;
}

// Tokens against the same rows given densely: the projection, the weight gradient and the embedding's
// gradient (the rows' gradients summed per token), each accumulated onto a gradient already there.
void check_tokens_against_rows(int threads, int vocab, int rows, std::uint64_t version, bool expect_table) {
    Threads scope(threads);
    std::mt19937_64 rng(static_cast<std::uint64_t>(vocab * 1000 + rows));
    const Weights weights(rng);
    const Matrix<float> embedding = random_matrix<float>(vocab, kInputSize, rng);
    const std::vector<TokenId> tokens = random_tokens(rows, vocab, rng);
    const Matrix<float> dense = embedded_rows(tokens, embedding);
    const std::string where = std::to_string(threads) + " threads, vocabulary " + std::to_string(vocab) + ", " +
                              std::to_string(rows) + " rows, version " + std::to_string(version);

    ProjectionCache<float> token_cache, dense_cache;
    Matrix<float> token_projection(rows, kWidth), dense_projection(rows, kWidth);
    const LayerInput<float> token_input(tokens, embedding);
    EXPECT_EQ(project_input<float>(token_input, weights.at(version), token_cache, token_projection), expect_table) << where;
    EXPECT_EQ(token_cache.through_table, expect_table) << where;
    if (expect_table) {  // in two pieces, as the time loop looks up a step's share at a time
        const Eigen::Index first_piece = rows / 3;
        lookup_rows<float>(token_input, token_cache, 0, token_projection.topRows(first_piece));
        lookup_rows<float>(token_input, token_cache, first_piece, token_projection.bottomRows(rows - first_piece));
    }
    EXPECT_FALSE(project_input<float>(dense, weights.at(version), dense_cache, dense_projection)) << where;
    expect_near<float>(token_projection, dense_projection, 1e-5, "projection, " + where);

    const Matrix<float> d_projection = random_matrix<float>(rows, kWidth, rng);
    const Matrix<float> earlier_weight_gradient = random_matrix<float>(kWidth, kInputSize, rng);
    const Matrix<float> earlier_embedding_gradient = random_matrix<float>(vocab, kInputSize, rng);
    Matrix<float> token_weight_gradient = earlier_weight_gradient, embedding_gradient = earlier_embedding_gradient;
    project_input_backward<float>(LayerInput<float>(tokens, embedding), d_projection, weights.at(version), token_cache,
                                  token_weight_gradient, embedding_gradient);
    Matrix<float> dense_weight_gradient = earlier_weight_gradient, d_rows;
    project_input_backward<float>(dense, d_projection, weights.at(version), dense_cache, dense_weight_gradient, d_rows);
    Matrix<float> expected_embedding_gradient = earlier_embedding_gradient;
    for (std::size_t row = 0; row < tokens.size(); ++row) expected_embedding_gradient.row(tokens[row]) += d_rows.row(static_cast<Eigen::Index>(row));
    expect_near<float>(token_weight_gradient, dense_weight_gradient, 1e-4, "weight gradient, " + where);
    expect_near<float>(embedding_gradient, expected_embedding_gradient, 1e-4, "embedding gradient, " + where);
}

TEST(LayerInput, TokensThroughTheTableMatchTheirRowsOnOneThread) { check_tokens_against_rows(1, 5, 40, 0, true); }

TEST(LayerInput, TokensThroughTheTableMatchTheirRowsWithTheWorkSplitBetweenThreads) {
    check_tokens_against_rows(2, 5, 600, 0, true);  // columns summed by two threads
    check_tokens_against_rows(2, 9, 19, 0, true);   // shares too small to split
}

TEST(LayerInput, TokensOfAVocabularyLargerThanTheWindowAreGathered) {
    check_tokens_against_rows(1, 30, 40, 0, false);
    check_tokens_against_rows(2, 300, 599, 0, false);
}

TEST(LayerInput, FrozenWeightsKeepOneTableForEveryWindow) {
    check_tokens_against_rows(1, 30, 1, 3, true);  // sampling: one row, a table of the whole vocabulary
    check_tokens_against_rows(2, 30, 600, 3, true);
}

TEST(LayerInput, AFrozenTableIsKeptUntilTheVersionChanges) {
    // A version stands for one set of weights: the table made for it serves until another comes.
    std::mt19937_64 rng(8);
    Weights weights(rng);
    const Matrix<float> embedding = random_matrix<float>(10, kInputSize, rng);
    ProjectionCache<float> cache;
    Matrix<float> projection(20, kWidth), table_weights;  // 20 rows: twice the vocabulary, a table even unfrozen
    const std::vector<std::pair<std::uint64_t, bool>> calls{{1, true}, {1, false}, {2, true}, {0, true}, {0, true}};
    for (const auto& [version, made_again] : calls) {
        weights.weight_ih.array() += 0.5f;
        if (made_again) table_weights = weights.weight_ih;
        const std::vector<TokenId> tokens = random_tokens(20, 10, rng);
        const LayerInput<float> input(tokens, embedding);
        ASSERT_TRUE(project_input<float>(input, weights.at(version), cache, projection));
        lookup_rows<float>(input, cache, 0, projection);
        const Matrix<float> expected = embedded_rows(tokens, embedding) * table_weights.transpose();
        expect_near<float>(projection, expected, 1e-5, "version " + std::to_string(version));
    }
}

TEST(LayerInput, RefusesMismatchedShapes) {
    std::mt19937_64 rng(9);
    const Weights weights(rng);
    const Matrix<float> rows = random_matrix<float>(4, kInputSize + 1, rng);
    ProjectionCache<float> cache;
    Matrix<float> projection(4, kWidth);
    EXPECT_THROW(project_input<float>(rows, weights.at(0), cache, projection), Error);
}

}  // namespace
}  // namespace charlm
