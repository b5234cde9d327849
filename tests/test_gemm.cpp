// Checks gemm.cpp and the optimized LSTM against plain Eigen: every fast kernel against the obvious version.
#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>

#include "charlm/error.hpp"
#include "charlm/gemm.hpp"
#include "charlm/lstm.hpp"
#include "test_helpers.hpp"

namespace charlm {
namespace {

using testing::fill_random;

template <typename Scalar>
Matrix<Scalar> random_matrix(Eigen::Index rows, Eigen::Index cols, std::mt19937_64& rng) {
    Matrix<Scalar> matrix(rows, cols);
    fill_random(matrix, rng, 1.0);
    return matrix;
}

// Sets the thread count for one test and puts the previous one back.
class Threads {
public:
    explicit Threads(int count) : previous_(omp_get_max_threads()) { omp_set_num_threads(count); }
    ~Threads() { omp_set_num_threads(previous_); }

private:
    int previous_;
};

template <typename Scalar>
void expect_near(const Matrix<Scalar>& actual, const Matrix<Scalar>& expected, double tolerance, const std::string& what) {
    ASSERT_EQ(actual.rows(), expected.rows()) << what;
    ASSERT_EQ(actual.cols(), expected.cols()) << what;
    const double scale = std::max(1.0, static_cast<double>(expected.cwiseAbs().maxCoeff()));
    EXPECT_LE(static_cast<double>((actual - expected).cwiseAbs().maxCoeff()), tolerance * scale) << what;
}

template <typename Scalar>
void check_packed_products(double tolerance) {
    std::mt19937_64 rng(3);
    // Row counts around the 6-row block, depths and widths around the panel width (32 floats with AVX-512).
    for (Eigen::Index rows : {1, 5, 6, 7, 13, 25})
        for (Eigen::Index depth : {1, 3, 17, 64})
            for (Eigen::Index cols : {1, 5, 16, 31, 32, 33, 100}) {
                const std::string shape = std::to_string(rows) + "x" + std::to_string(depth) + "x" + std::to_string(cols);
                const Matrix<Scalar> left = random_matrix<Scalar>(rows, depth, rng);
                const Matrix<Scalar> right = random_matrix<Scalar>(depth, cols, rng);
                const Matrix<Scalar> start = random_matrix<Scalar>(rows, cols, rng);
                PackedMatrix<Scalar> packed, packed_transposed;
                packed.pack(right, Transpose::no);
                const Matrix<Scalar> right_transposed = right.transpose();
                packed_transposed.pack(right_transposed, Transpose::yes);
                EXPECT_EQ(packed.rows(), depth);
                EXPECT_EQ(packed.cols(), cols);

                Matrix<Scalar> product = start;
                packed.multiply(left, Scalar(0), product);
                expect_near<Scalar>(product, left * right, tolerance, "beta 0 " + shape);
                product = start;
                packed_transposed.multiply(left, Scalar(1), product);
                expect_near<Scalar>(product, start + left * right, tolerance, "beta 1, packed transposed " + shape);
            }
}

TEST(Gemm, PackedProductMatchesEigenInFloat) { check_packed_products<float>(1e-5); }
TEST(Gemm, PackedProductMatchesEigenInDouble) { check_packed_products<double>(1e-12); }

TEST(Gemm, PackedProductReadsAndWritesBlocksOfLargerMatrices) {
    // The time loop multiplies a share of one step's rows, in place inside the window's arrays.
    std::mt19937_64 rng(4);
    const Matrix<float> hidden = random_matrix<float>(20, 40, rng), weight = random_matrix<float>(96, 40, rng);
    Matrix<float> gates = random_matrix<float>(20, 96, rng);
    const Matrix<float> expected_block = gates.middleRows(5, 9) + hidden.middleRows(3, 9) * weight.transpose();
    const Matrix<float> untouched_top = gates.topRows(5), untouched_bottom = gates.bottomRows(6);
    PackedMatrix<float> packed;
    packed.pack(weight, Transpose::yes);
    packed.multiply(hidden.middleRows(3, 9), 1.0f, gates.middleRows(5, 9));
    expect_near<float>(gates.middleRows(5, 9), expected_block, 1e-5, "block");
    EXPECT_EQ(gates.topRows(5), untouched_top);
    EXPECT_EQ(gates.bottomRows(6), untouched_bottom);
}

TEST(Gemm, LargePackedProductSplitAmongThreadsMatchesEigen) {
    // One row against 512 x 2048 splits its panels among the threads (sampling a big model).
    Threads threads(2);
    std::mt19937_64 rng(5);
    const Matrix<float> left = random_matrix<float>(1, 512, rng), right = random_matrix<float>(512, 2048, rng);
    PackedMatrix<float> packed;
    packed.pack(right, Transpose::no);
    Matrix<float> product(1, 2048);
    packed.multiply(left, 0.0f, product);
    expect_near<float>(product, left * right, 1e-5, "1x512x2048");
}

template <typename Scalar>
void check_gemm(double tolerance) {
    std::mt19937_64 rng(6);
    for (Eigen::Index m : {1, 7, 130})
        for (Eigen::Index k : {1, 9, 70})
            for (Eigen::Index n : {1, 33, 65}) {
                const std::string shape = std::to_string(m) + "x" + std::to_string(k) + "x" + std::to_string(n);
                const Matrix<Scalar> a = random_matrix<Scalar>(m, k, rng), b = random_matrix<Scalar>(k, n, rng);
                const Matrix<Scalar> a_t = a.transpose(), b_t = b.transpose(), start = random_matrix<Scalar>(m, n, rng);
                const Matrix<Scalar> expected = a * b;
                Matrix<Scalar> c(m, n);
                gemm<Scalar>(a, Transpose::no, b, Transpose::no, Scalar(0), c);
                expect_near<Scalar>(c, expected, tolerance, "NN " + shape);
                gemm<Scalar>(a_t, Transpose::yes, b, Transpose::no, Scalar(0), c);
                expect_near<Scalar>(c, expected, tolerance, "TN " + shape);
                gemm<Scalar>(a, Transpose::no, b_t, Transpose::yes, Scalar(0), c);
                expect_near<Scalar>(c, expected, tolerance, "NT " + shape);
                c = start;
                gemm<Scalar>(a_t, Transpose::yes, b_t, Transpose::yes, Scalar(1), c);
                expect_near<Scalar>(c, start + expected, tolerance, "TT beta 1 " + shape);
            }
}

TEST(Gemm, MatchesEigenInFloat) { check_gemm<float>(1e-5); }
TEST(Gemm, MatchesEigenInDouble) { check_gemm<double>(1e-12); }

TEST(Gemm, RejectsMismatchedShapes) {
    Matrix<float> a(3, 4), b(5, 6), c(3, 6);
    EXPECT_THROW(gemm<float>(a, Transpose::no, b, Transpose::no, 0.0f, c), Error);
    PackedMatrix<float> packed;
    packed.pack(b, Transpose::no);
    EXPECT_THROW(packed.multiply(a, 0.0f, c), Error);
}

TEST(Gemm, RowSharesCoverEveryRowOnce) {
    Threads threads(2);
    for (Eigen::Index rows : {1, 7, 16, 25, 50}) {
        std::vector<std::atomic<int>> visits(static_cast<std::size_t>(rows));
        std::atomic<int> calls = 0;
        for_each_row_share(rows, 8, [&](Eigen::Index first, Eigen::Index count) {
            ++calls;
            for (Eigen::Index row = first; row < first + count; ++row) ++visits[static_cast<std::size_t>(row)];
        });
        for (const auto& visit : visits) EXPECT_EQ(visit.load(), 1) << rows << " rows";
        EXPECT_EQ(calls.load(), rows >= 16 ? 2 : 1) << rows << " rows";
    }
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

void check_lstm_against_plain(int threads, int batch, std::uint64_t version = 0) {
    Threads thread_count(threads);
    const int steps = 6, input_size = 24, H = 40;
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

TEST(Gemm, OptimizedLstmMatchesThePlainOneOnOneThread) { check_lstm_against_plain(1, 50); }
TEST(Gemm, OptimizedLstmMatchesThePlainOneWithTheBatchSplitBetweenThreads) {
    check_lstm_against_plain(2, 50);
    check_lstm_against_plain(2, 17);  // uneven shares
    check_lstm_against_plain(2, 1);   // one stream: no split
}

TEST(Gemm, OptimizedLstmMatchesThePlainOneWithFrozenWeights) {
    // Frozen weights (a nonzero version) and one stream take the sampling path: packed input weights too.
    check_lstm_against_plain(1, 1, 1);
    check_lstm_against_plain(2, 50, 1);
}

}  // namespace
}  // namespace charlm
