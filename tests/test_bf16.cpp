// Checks the bf16 products (gemm_bf16.cpp, PackedMatrix at bf16, Model::set_precision) on every
// machine: where the CPU has AVX512_BF16 the kernels run its instructions and are also compared with
// the emulation bit for bit; elsewhere the emulation runs every test.
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <random>
#include <thread>

#include <gtest/gtest.h>
#include <omp.h>

#include "charlm/batches.hpp"
#include "charlm/checkpoint.hpp"
#include "charlm/eval.hpp"
#include "charlm/model.hpp"
#include "charlm/optim.hpp"
#include "charlm/precision.hpp"
#include "charlm/threads.hpp"
#include "charlm/train.hpp"
#include "nn/cell_units.hpp"
#include "nn/gemm.hpp"
#include "nn/gemm_bf16.hpp"
#include "nn/recurrent_layer.hpp"
#include "nn/row_shares.hpp"
#include "test_helpers.hpp"
#include "text_helpers.hpp"

namespace charlm {
namespace {

using testing::random_matrix;
using testing::Threads;

// bf16 keeps 8 significant bits: rounding to nearest moves a value by at most half a unit in the
// last place, 2^-9 of it. A product of two rounded operands is then off by at most
// (1 + 2^-9)^2 - 1 < 2^-8 of its size, and a sum of products by at most 2^-8 of the sum of their
// sizes, sum |a_k| |b_k| (plus fp32's own rounding, K * 2^-24 of the same, far smaller).
constexpr double kBf16ProductError = 1.0 / 256;

// Sets the kernels for one test and puts the previous ones back.
class Kernels {
public:
    explicit Kernels(Bf16Kernels kernels) : previous_(set_bf16_kernels(kernels)) {}
    ~Kernels() { set_bf16_kernels(previous_); }

private:
    Bf16Kernels previous_;
};

// The kernels this machine runs: the emulation always, the instructions where the CPU has them.
std::vector<Bf16Kernels> kernels_here() {
    if (cpu_runs_bf16()) return {Bf16Kernels::hardware, Bf16Kernels::emulated};
    return {Bf16Kernels::emulated};
}
std::string name_of(Bf16Kernels kernels) { return kernels == Bf16Kernels::hardware ? "instructions" : "emulation"; }

TEST(Bf16, RoundsToNearestWithTiesToEven) {
    EXPECT_EQ(to_bf16(1.0f), 0x3f80);
    EXPECT_EQ(round_to_bf16(1.0f + 0x1p-8f), 1.0f) << "a tie goes to the even neighbour, 1";
    EXPECT_EQ(round_to_bf16(1.0f + 3 * 0x1p-8f), 1.0f + 0x1p-6f) << "a tie goes to the even neighbour, 1 + 2^-6";
    EXPECT_EQ(round_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 1.0f + 0x1p-7f) << "past the tie, up";
    EXPECT_EQ(round_to_bf16(-1.0f - 0x1p-9f), -1.0f) << "under the tie, down in size";
    EXPECT_EQ(round_to_bf16(0x1.fffffep127f), INFINITY) << "the largest float rounds past bf16's largest";
    EXPECT_TRUE(std::isnan(round_to_bf16(NAN)));
}

// c = a * b + beta * c as vdpbf16ps sums it: per row and column, for each pair of k, the odd
// product and then the even one, each added in fp32 (the products of bf16 values are exact in fp32).
Matrix<float> reference_product(const Matrix<float>& a, const Matrix<float>& b, float beta, const Matrix<float>& start) {
    Matrix<float> c(a.rows(), b.cols());
    for (Eigen::Index i = 0; i < a.rows(); ++i)
        for (Eigen::Index j = 0; j < b.cols(); ++j) {
            float sum = 0;
            for (Eigen::Index k = 0; k < a.cols(); k += 2) {
                if (k + 1 < a.cols()) sum += round_to_bf16(a(i, k + 1)) * round_to_bf16(b(k + 1, j));
                sum += round_to_bf16(a(i, k)) * round_to_bf16(b(k, j));
            }
            c(i, j) = beta != 0 ? sum + start(i, j) : sum;
        }
    return c;
}

TEST(Bf16, PackedProductSumsAsTheInstructionDoesBitForBit) {
    std::mt19937_64 rng(3);
    for (Bf16Kernels kernels : kernels_here()) {
        Kernels scope(kernels);
        // Row counts around the 6-row block, odd and even depths, widths around the 64-column panel.
        for (Eigen::Index rows : {1, 5, 6, 7, 13})
            for (Eigen::Index depth : {1, 2, 3, 17, 64})
                for (Eigen::Index cols : {1, 5, 63, 64, 65, 130}) {
                    const std::string shape = name_of(kernels) + " " + std::to_string(rows) + "x" + std::to_string(depth) + "x" +
                                              std::to_string(cols);
                    const Matrix<float> left = random_matrix<float>(rows, depth, rng), right = random_matrix<float>(depth, cols, rng);
                    const Matrix<float> start = random_matrix<float>(rows, cols, rng);
                    const Matrix<float> right_transposed = right.transpose();
                    PackedMatrix<float> packed, packed_transposed;
                    packed.pack(right, Transpose::no, 0, Precision::bf16);
                    packed_transposed.pack(right_transposed, Transpose::yes, 0, Precision::bf16);
                    Matrix<float> product = start;
                    packed.multiply(left, 0.0f, product);
                    EXPECT_TRUE((product.array() == reference_product(left, right, 0, start).array()).all()) << "beta 0 " << shape;
                    product = start;
                    packed_transposed.multiply(left, 1.0f, product);
                    EXPECT_TRUE((product.array() == reference_product(left, right, 1, start).array()).all())
                        << "beta 1, packed transposed " << shape;
                }
    }
}

TEST(Bf16, APackedCopyKnowsItsPrecision) {
    std::mt19937_64 rng(4);
    const Matrix<float> b = random_matrix<float>(5, 7, rng);
    PackedMatrix<float> packed;
    packed.pack(b, Transpose::no, 3, Precision::bf16);
    EXPECT_TRUE(packed.packed_from(3, Precision::bf16));
    EXPECT_FALSE(packed.packed_from(3, Precision::fp32)) << "an fp32 product must not use a bf16 copy";
    PackedMatrix<double> in_double;
    in_double.pack(b.cast<double>(), Transpose::no, 3, Precision::bf16);
    EXPECT_TRUE(in_double.packed_from(3, Precision::fp32)) << "double always multiplies in double";
}

TEST(Bf16, EveryRowOfAPackedProductComesOutAsIfAloneInAnyShare) {
    // At bf16 every block sums a row the same way, so a row is the same bits in any share, even of 1 to 3 rows.
    std::mt19937_64 rng(21);
    const Matrix<float> a = random_matrix<float>(37, 70, rng), b = random_matrix<float>(70, 45, rng), start = random_matrix<float>(37, 45, rng);
    PackedMatrix<float> packed;
    packed.pack(b, Transpose::no, 0, Precision::bf16);
    for (float beta : {0.0f, 1.0f}) {
        Matrix<float> whole = start;
        packed.multiply(a, beta, whole);
        for (const auto& [first, count] : std::vector<std::pair<Eigen::Index, Eigen::Index>>{{0, 1}, {1, 2}, {3, 3}, {6, 9}, {15, 22}}) {
            Matrix<float> share = start.middleRows(first, count);
            packed.multiply(a.middleRows(first, count), beta, share);
            EXPECT_TRUE((share.array() == whole.middleRows(first, count).array()).all()) << "rows " << first << "+" << count << ", beta " << beta;
        }
    }
}

TEST(Bf16, GemmIsTheProductOfTheRoundedOperandsUpToTheOrderOfItsSums) {
    // oneDNN sums in an order of its own; against the exact product of the rounded operands, a sum of
    // K fp32 terms is off by at most K * 2^-24 of the sum of their sizes (Higham's gamma_K), doubled here
    // for the final addition of beta * c.
    std::mt19937_64 rng(6);
    Threads threads(2);
    for (Bf16Kernels kernels : kernels_here()) {
        Kernels scope(kernels);
        for (Eigen::Index m : {1, 7, 130})
            for (Eigen::Index k : {1, 9, 70})
                for (Eigen::Index n : {1, 33, 65}) {
                    const std::string shape = name_of(kernels) + " " + std::to_string(m) + "x" + std::to_string(k) + "x" + std::to_string(n);
                    const Matrix<float> a = random_matrix<float>(m, k, rng), b = random_matrix<float>(k, n, rng);
                    const Matrix<float> a_t = a.transpose(), b_t = b.transpose(), start = random_matrix<float>(m, n, rng);
                    const Matrix<double> rounded_a = a.unaryExpr([](float x) { return round_to_bf16(x); }).cast<double>();
                    const Matrix<double> rounded_b = b.unaryExpr([](float x) { return round_to_bf16(x); }).cast<double>();
                    const Matrix<double> exact = rounded_a * rounded_b;
                    const Matrix<double> sizes = rounded_a.cwiseAbs() * rounded_b.cwiseAbs() + start.cast<double>().cwiseAbs();
                    const double gamma = 2.0 * static_cast<double>(k + 1) * 0x1p-24;
                    auto expect = [&](const Matrix<float>& c, const Matrix<double>& expected, const std::string& what) {
                        const Matrix<double> error = (c.cast<double>() - expected).cwiseAbs();
                        EXPECT_TRUE((error.array() <= gamma * sizes.array()).all()) << what << " " << shape << ": off by " << error.maxCoeff();
                    };
                    Matrix<float> c(m, n);
                    gemm<float>(a, Transpose::no, b, Transpose::no, 0.0f, c, Precision::bf16);
                    expect(c, exact, "NN");
                    gemm<float>(a_t, Transpose::yes, b, Transpose::no, 0.0f, c, Precision::bf16);
                    expect(c, exact, "TN");
                    gemm<float>(a, Transpose::no, b_t, Transpose::yes, 0.0f, c, Precision::bf16);
                    expect(c, exact, "NT");
                    c = start;
                    gemm<float>(a_t, Transpose::yes, b_t, Transpose::yes, 1.0f, c, Precision::bf16);
                    expect(c, exact + start.cast<double>(), "TT beta 1");
                }
    }
}

TEST(Bf16, OperandsRoundedOnceGiveTheBitsOfProductsThatRoundThemselves) {
    // The backward pass rounds each step's gate gradients once, as the cell leaves them, for the step's
    // packed product and the weight gradients' products: those must be the products of the float rows.
    // Rows of odd length too, where the rounded copy pads each row; and row ranges that start past 0.
    std::mt19937_64 rng(8);
    Threads threads(2);
    for (Bf16Kernels kernels : kernels_here()) {
        Kernels scope(kernels);
        for (Eigen::Index k : {9, 64})
            for (Eigen::Index n : {33, 130}) {
                const std::string shape = name_of(kernels) + " k " + std::to_string(k) + " n " + std::to_string(n);
                const Matrix<float> a = random_matrix<float>(40, k, rng), b = random_matrix<float>(k, n, rng);
                const Matrix<float> b_t = b.transpose(), other = random_matrix<float>(40, n, rng), start = random_matrix<float>(k, n, rng);
                Bf16Rows rounded;
                rounded.resize(40, k);
                rounded.round_rows(a.topRows(25), 0);  // in two calls, as two threads' shares
                rounded.round_rows(a.bottomRows(15), 25);
                PackedMatrix<float> packed;
                packed.pack(b, Transpose::no, 0, Precision::bf16);
                Matrix<float> expected, actual;
                for (auto [first, count] : {std::pair<Eigen::Index, Eigen::Index>{0, 40}, {3, 17}}) {
                    expected.resize(count, n);
                    actual.resize(count, n);
                    packed.multiply(a.middleRows(first, count), 0.0f, expected);
                    packed.multiply(middle_rows(rounded, first, count), 0.0f, actual);
                    EXPECT_EQ(actual, expected) << "packed, rows " << first << ".." << first + count - 1 << ", " << shape;
                    // a^T . other, accumulated, as the weight gradients are; and a . b^T
                    Matrix<float> expected_t = start, actual_t = start;
                    gemm<float>(a.middleRows(first, count), Transpose::yes, other.middleRows(first, count), Transpose::no, 1.0f,
                                expected_t, Precision::bf16);
                    gemm_bf16(middle_rows(rounded, first, count), Transpose::yes, other.middleRows(first, count), Transpose::no, 1.0f,
                              actual_t);
                    EXPECT_EQ(actual_t, expected_t) << "a^T . c, rows " << first << ".." << first + count - 1 << ", " << shape;
                    gemm<float>(a.middleRows(first, count), Transpose::no, b_t, Transpose::yes, 0.0f, expected, Precision::bf16);
                    gemm_bf16(middle_rows(rounded, first, count), Transpose::no, b_t, Transpose::yes, 0.0f, actual);
                    EXPECT_EQ(actual, expected) << "a . b^T, rows " << first << ".." << first + count - 1 << ", " << shape;
                }
            }
    }
}

TEST(Bf16, ProductsOfTwoOperandsRoundedOnceGiveTheBitsOfProductsThatRoundThemselves) {
    // The layers' outputs are rounded once, in the time loop, for every product that reads them (the next
    // layer's projection and weight gradient, the head's two, the layer's own recurrent weight gradient);
    // d_logits once for the head's two. Both operands rounded already must give the float operands' bits.
    std::mt19937_64 rng(9);
    Threads threads(2);
    for (Bf16Kernels kernels : kernels_here()) {
        Kernels scope(kernels);
        for (Eigen::Index k : {7, 64})
            for (Eigen::Index n : {33, 65}) {
                const std::string shape = name_of(kernels) + " k " + std::to_string(k) + " n " + std::to_string(n);
                const Matrix<float> a = random_matrix<float>(40, k, rng), b = random_matrix<float>(40, n, rng);
                const Matrix<float> start = random_matrix<float>(k, n, rng);
                Bf16Rows a_rounded, b_rounded;
                a_rounded.resize(40, k);
                b_rounded.resize(40, n);
                a_rounded.round_rows(a, 0);
                b_rounded.round_rows(b.topRows(25), 0);  // in two calls, as two threads' shares
                b_rounded.round_rows(b.bottomRows(15), 25);
                for (auto [first, count] : {std::pair<Eigen::Index, Eigen::Index>{0, 40}, {3, 17}}) {
                    // a^T . b, accumulated, as the weight gradients are
                    Matrix<float> expected = start, actual = start;
                    gemm<float>(a.middleRows(first, count), Transpose::yes, b.middleRows(first, count), Transpose::no, 1.0f, expected,
                                Precision::bf16);
                    gemm_bf16(middle_rows(a_rounded, first, count), Transpose::yes, middle_rows(b_rounded, first, count), Transpose::no,
                              1.0f, actual);
                    EXPECT_EQ(actual, expected) << "a^T . b, rows " << first << ".." << first + count - 1 << ", " << shape;
                }
            }
    }
}

TEST(Bf16, AWeightGradientMadeTransposedIsTheProductAsItLies) {
    // The weight gradients that read a layer's output, (G*H, H) += d_gates^T . h, are made as (H, T*B) . (T*B, G*H)
    // from h transposed in the time loop (a share of rows at a time, after h_{-1}'s columns), then added
    // transposed: the same sums in another order, so within fp32's rounding of the product made as it lies.
    std::mt19937_64 rng(13);
    Threads threads(2);
    for (Bf16Kernels kernels : kernels_here()) {
        Kernels scope(kernels);
        const Eigen::Index rows = 45, h = 19, g = 70, skip = 4;  // odd widths: rows padded to even strides
        const Matrix<float> hidden = random_matrix<float>(rows, h, rng), d_gates = random_matrix<float>(rows, g, rng);
        const Matrix<float> start = random_matrix<float>(g, h, rng);
        Bf16Rows hidden_rounded, d_gates_rounded, transposed;
        hidden_rounded.resize(rows, h);
        hidden_rounded.round_rows(hidden, 0);
        d_gates_rounded.resize(rows, g);
        d_gates_rounded.round_rows(d_gates, 0);
        transposed.resize(h, skip + rows);
        transpose_bf16(middle_rows(hidden_rounded, 0, 30), transposed, skip);  // in two shares, as two threads'
        transpose_bf16(middle_rows(hidden_rounded, 30, rows - 30), transposed, skip + 30);
        for (Eigen::Index r = 0; r < rows; ++r)
            for (Eigen::Index c = 0; c < h; ++c)
                ASSERT_EQ(transposed.values[static_cast<std::size_t>(c * transposed.stride + skip + r)],
                          hidden_rounded.values[static_cast<std::size_t>(r * hidden_rounded.stride + c)])
                    << "row " << r << ", column " << c;
        Matrix<float> expected = start, actual = start;
        gemm_bf16(middle_rows(d_gates_rounded, 0, rows), Transpose::yes, middle_rows(hidden_rounded, 0, rows), Transpose::no, 1.0f,
                  expected);
        add_product_transposed(middle_cols(transposed, skip, rows), middle_rows(d_gates_rounded, 0, rows), actual);
        EXPECT_LE((actual - expected).cwiseAbs().maxCoeff(), 1e-5f * expected.cwiseAbs().maxCoeff()) << name_of(kernels);
        EXPECT_GT((actual - start).cwiseAbs().maxCoeff(), 0.1f) << "the product was added";
    }
}

// ---- the engine at bf16 --------------------------------------------------------------------------

// One layer's data at the scale of a trained network: weights U(-1/sqrt(H), 1/sqrt(H)) as initialized,
// inputs and states in [-1, 1] as tanh and the gates leave them.
struct LayerData {
    int steps = 0;
    Matrix<float> input, weight_ih, weight_hh, bias_ih, bias_hh, initial_hidden, initial_cell, d_output;

    LayerData(CellType cell, int step_count, int batch, int input_size, int hidden_size, std::uint64_t seed) : steps(step_count) {
        ModelConfig config;
        config.cell = cell;
        const int G = config.gate_count() * hidden_size;
        const float bound = 1.0f / std::sqrt(static_cast<float>(hidden_size));
        std::mt19937_64 rng(seed);
        input = random_matrix<float>(steps * batch, input_size, rng);
        weight_ih = bound * random_matrix<float>(G, input_size, rng);
        weight_hh = bound * random_matrix<float>(G, hidden_size, rng);
        bias_ih = bound * random_matrix<float>(1, G, rng);
        bias_hh = bound * random_matrix<float>(1, G, rng);
        initial_hidden = random_matrix<float>(batch, hidden_size, rng);
        if (config.has_cell_state()) initial_cell = random_matrix<float>(batch, hidden_size, rng);
        d_output = random_matrix<float>(steps * batch, hidden_size, rng);
    }
    LayerWeights<float> weights(Precision precision) const {
        return {weight_ih, weight_hh, bias_ih, bias_hh, 0, RowSums::fastest, precision};
    }
};

struct EngineResult {
    Matrix<float> output, final_hidden, final_cell, weight_ih, weight_hh, bias_ih, bias_hh, d_input;
    std::vector<std::pair<std::string, const Matrix<float>*>> all() const {
        return {{"output", &output}, {"final hidden", &final_hidden}, {"final cell", &final_cell}, {"weight_ih gradient", &weight_ih},
                {"weight_hh gradient", &weight_hh}, {"bias_ih gradient", &bias_ih}, {"bias_hh gradient", &bias_hh}, {"input gradient", &d_input}};
    }
};

// With `balance`, each pass starts from that split of the batch between threads (a pass's own timings
// move it), and `forward_share` says how many rows the forward pass gave the first thread.
EngineResult run_engine(RecurrentLayer<float>& layer, const LayerData& data, Precision precision, const RowBalance* balance = nullptr,
                        Eigen::Index* forward_share = nullptr) {
    EngineResult result;
    result.final_hidden = data.initial_hidden;
    result.final_cell = data.initial_cell;
    if (balance) layer.balance() = *balance;
    layer.forward(data.input, data.steps, data.weights(precision), result.final_hidden, result.final_cell);
    if (forward_share) *forward_share = layer.balance().count(0);
    if (balance) layer.balance() = *balance;
    result.output = layer.output();
    result.weight_ih.setZero(data.weight_ih.rows(), data.weight_ih.cols());
    result.weight_hh.setZero(data.weight_hh.rows(), data.weight_hh.cols());
    result.bias_ih.setZero(1, data.bias_ih.cols());
    result.bias_hh.setZero(1, data.bias_hh.cols());
    layer.backward(data.input, data.d_output, data.steps, data.weights(precision),
                   {result.weight_ih, result.weight_hh, result.bias_ih, result.bias_hh}, result.d_input);
    return result;
}

class Bf16Cells : public ::testing::TestWithParam<CellType> {};

TEST_P(Bf16Cells, ForwardAndBackwardStayWithinTheRoundingBoundOfFp32) {
    // The tolerance, derived: a pre-activation z = x W_ih^T + h W_hh^T (+ b) at bf16 is off by at most
    // 2^-8 of sum |x||W_ih| + |h||W_hh| (kBf16ProductError); with inputs in [-1, 1] and weights in
    // +-1/sqrt(H), that sum is at most (I + H)/sqrt(H) = 10 here, so |dz| <= 0.04 at worst and, the
    // terms' roundings being independent, about 0.04 / sqrt(I + H) ~ 0.005 typically. Every gate's slope
    // is at most 1 and h moves by at most the sum of its gates' moves (LSTM: o, i, g and f's through
    // |c| <= 2; GRU: z, r (through W_hn h), n), at most 4 |dz|: 0.02 typically over one step. Over 3 steps,
    // each passing the last one's error through W_hh (gain <= 1 with these weights), 0.06. Backward, the
    // gradients are sums of the same form over the window's rows, scaled by their sizes: 0.06 of each
    // matrix's largest entry. A fault in the bf16 path (a wrong pair, a lost row, a transposed panel)
    // moves outputs by their own size, 10 times this.
    const CellType cell = GetParam();
    Threads threads(2);
    const LayerData data(cell, 3, 16, 24, 40, 9);
    RecurrentLayer<float> fp32_layer(cell), bf16_layer(cell);
    const EngineResult expected = run_engine(fp32_layer, data, Precision::fp32);
    for (Bf16Kernels kernels : kernels_here()) {
        Kernels scope(kernels);
        const EngineResult actual = run_engine(bf16_layer, data, Precision::bf16);
        const auto actuals = actual.all(), expectations = expected.all();
        for (std::size_t i = 0; i < actuals.size(); ++i) {
            const Matrix<float>& a = *actuals[i].second;
            const Matrix<float>& e = *expectations[i].second;
            if (e.size() == 0) continue;  // a cell without a cell state
            const double scale = e.cwiseAbs().maxCoeff(), error = (a - e).cwiseAbs().maxCoeff();
            EXPECT_LE(error, 0.06 * scale) << to_string(cell) << " " << actuals[i].first << " with the " << name_of(kernels);
            // and bf16 really ran: the roundings leave a trace
            if (actuals[i].first == "output") {
                EXPECT_GT(error, 0.0) << to_string(cell) << ": the bf16 output is fp32's to the bit";
            }
        }
    }
}

TEST_P(Bf16Cells, GiveTheSameBitsWhateverTheSplitBetweenThreads) {
    Threads scope(2);
    const LayerData data(GetParam(), 5, 40, 12, 20, 31);
    RecurrentLayer<float> even(GetParam());
    const EngineResult expected = run_engine(even, data, Precision::bf16);
    for (double slower_first : {3.0, 1.0 / 3}) {
        RowBalance uneven;
        uneven.split(40, 2, kMinRowsPerThread);
        uneven.record(0, slower_first);
        uneven.record(1, 1.0);
        uneven.update();
        RecurrentLayer<float> skewed(GetParam());
        Eigen::Index first_share = 0;
        const EngineResult result = run_engine(skewed, data, Precision::bf16, &uneven, &first_share);
        ASSERT_EQ(first_share, slower_first > 1 ? 10 : 30) << "the batch was not split unevenly";
        ASSERT_EQ(skewed.balance().count(0), first_share) << "the backward pass did not split the batch as the forward did";
        const auto results = result.all(), expectations = expected.all();
        for (std::size_t i = 0; i < expectations.size(); ++i)
            EXPECT_TRUE((results[i].second->array() == expectations[i].second->array()).all()) << results[i].first << " differs in its bits";
    }
}

INSTANTIATE_TEST_SUITE_P(EveryCell, Bf16Cells, ::testing::Values(CellType::lstm, CellType::gru, CellType::rnn),
                         [](const auto& info) { return to_string(info.param); });

// ---- the model at bf16 ---------------------------------------------------------------------------

// A text with structure to learn: words from a small list, drawn with a fixed seed.
std::u32string generated_text(std::size_t words, std::uint64_t seed) {
    static const char32_t* const kWords[] = {U"the", U"king", U"and", U"queen", U"of", U"a", U"land", U"far", U"away", U"said",
                                             U"to", U"his", U"her", U"good", U"night", U"sweet", U"prince", U"my", U"lord"};
    std::mt19937_64 rng(seed);
    std::u32string text;
    std::size_t previous = 0;
    for (std::size_t i = 0; i < words; ++i) {
        previous = (previous * 7 + rng() % 5) % std::size(kWords);  // a word leans on the last one
        text += kWords[previous];
        text += i % 11 == 10 ? U".\n" : U" ";
    }
    return text;
}

Model<float> trained_model(const Vocab& vocab, const std::vector<TokenId>& ids, Precision precision, int steps) {
    ModelConfig config;
    config.vocab_size = static_cast<int>(vocab.size());
    config.hidden_size = 64;
    config.embed_size = 16;
    config.layers = 2;
    Model<float> model(config);
    std::mt19937_64 rng(5);
    model.initialize(rng);
    model.set_precision(precision);
    Adam optimizer(model.parameters());
    BatchStream stream(ids, 32, 16);
    Batch batch;
    ModelState<float> state = model.initial_state(16);
    for (int step = 0; step < steps; ++step) {
        stream.next(batch);
        train_step(model, optimizer, batch, state, 5.0, 5e-3);
    }
    return model;
}

TEST(Bf16, AModelsGradientsStayWithinTheRoundingOfFp32sWithAndWithoutDropout) {
    // Two layers, so that the second reads the first's output: rounded once in the first's time loop (no
    // dropout), or the dropped output rounded for the second's step-at-a-time projection; the head reads the
    // top layer's the same ways. Every gradient at bf16 must stay near fp32's: a stale or misplaced rounded
    // row would move them by their own size.
    Threads threads(2);
    for (CellType cell : {CellType::lstm, CellType::gru, CellType::rnn})
        for (double dropout : {0.0, 0.3}) {
            SCOPED_TRACE(to_string(cell) + ", dropout " + std::to_string(dropout));
            ModelConfig config;
            config.cell = cell;
            config.vocab_size = 23;
            config.hidden_size = 48;
            config.embed_size = 16;
            config.layers = 2;
            config.dropout = dropout;
            const int steps = 9, batch = 12;
            std::mt19937_64 rng(11);
            std::vector<TokenId> inputs(static_cast<std::size_t>(steps * batch)), targets(inputs.size());
            for (std::size_t i = 0; i < inputs.size(); ++i) {
                inputs[i] = static_cast<TokenId>(rng() % 23);
                targets[i] = static_cast<TokenId>(rng() % 23);
            }
            std::vector<std::vector<Matrix<float>>> gradients;
            for (Precision precision : {Precision::fp32, Precision::bf16}) {
                Model<float> model(config);
                std::mt19937_64 init(5), masks(7);
                model.initialize(init);
                model.set_precision(precision);
                model.set_dropout_generator(model.regularized() ? &masks : nullptr);
                ModelState<float> state = model.initial_state(batch);
                for (int window = 0; window < 2; ++window) {  // the second window's rows must not be the first's
                    model.forward(inputs, steps, batch, state);
                    model.loss(targets);
                    model.zero_gradients();
                    model.backward();
                }
                gradients.emplace_back();
                for (const auto& parameter : model.parameters()) gradients.back().push_back(parameter.gradient);
            }
            for (std::size_t p = 0; p < gradients[0].size(); ++p) {
                const double size = gradients[0][p].norm(), error = (gradients[1][p] - gradients[0][p]).norm();
                EXPECT_GT(size, 0.0) << "parameter " << p;
                EXPECT_LE(error, 0.03 * size) << "parameter " << p << ": bf16's gradient is off by " << error / size << " of its size";
            }
        }
}

TEST(Bf16, AShortTrainingEndsWithinTwoHundredthsOfANatOfFp32) {
    Threads threads(2);
    const std::u32string text = generated_text(6000, 1), held_out_text = generated_text(1500, 2);
    const Vocab vocab = testing::vocab_of_text(text + held_out_text);
    const std::vector<TokenId> ids = vocab.encode(text), held_out = vocab.encode(held_out_text);
    Model<float> fp32 = trained_model(vocab, ids, Precision::fp32, 150);
    Model<float> bf16 = trained_model(vocab, ids, Precision::bf16, 150);
    const double fp32_loss = evaluate_loss(fp32, held_out, 50, 8).mean(), bf16_loss = evaluate_loss(bf16, held_out, 50, 8).mean();
    EXPECT_LT(fp32_loss, 1.5) << "the run did not learn, so its agreement would say nothing";
    EXPECT_NEAR(bf16_loss, fp32_loss, 0.02);
    EXPECT_NE(bf16_loss, fp32_loss) << "the bf16 run multiplied in fp32";
}

TEST(Bf16, ARowComputedAsIfAloneIsTheRowSampledAlone) {
    // What makes a served completion charlm sample's text at bf16 too: each row of a batch of one step
    // against frozen weights, computed as if alone, is the bits of that row in a batch of its own.
    Threads threads(2);
    const std::u32string text = generated_text(500, 3);
    const Vocab vocab = testing::vocab_of_text(text);
    ModelConfig config;
    config.vocab_size = static_cast<int>(vocab.size());
    config.hidden_size = 96;
    config.embed_size = 16;
    Model<float> model(config);
    std::mt19937_64 rng(7);
    model.initialize(rng);
    model.set_precision(Precision::bf16);
    WeightsFreeze freeze(model);
    const std::vector<TokenId> ids = vocab.encode(text.substr(0, 40));
    const int rows = 5;
    ModelState<float> together = model.initial_state(rows);
    std::vector<ModelState<float>> alone(rows, model.initial_state(1));
    for (int step = 0; step < 8; ++step) {
        std::vector<TokenId> inputs(ids.begin() + step * rows, ids.begin() + (step + 1) * rows);
        model.set_rows_as_if_alone(true);
        model.forward(inputs, 1, rows, together);
        const Matrix<float> batch_logits = model.logits();
        model.set_rows_as_if_alone(false);
        for (int row = 0; row < rows; ++row) {
            model.forward(std::span<const TokenId>(&inputs[static_cast<std::size_t>(row)], 1), 1, 1, alone[static_cast<std::size_t>(row)]);
            EXPECT_TRUE((model.logits().array() == batch_logits.row(row).array()).all()) << "step " << step << ", row " << row;
        }
    }
}

// ---- auto --------------------------------------------------------------------------------------

TEST(Bf16, AutoTakesTheTimingsVerdictAndSaysWhy) {
    const ProductShapes shapes{.rows = 32, .hidden = 256, .gates = 4, .steps = 100, .window_rows = 6400};
    auto timer = [](double fp32_seconds, double bf16_seconds) {
        return [=](const ProductShapes&) { return ProductTimes{fp32_seconds, bf16_seconds}; };
    };
    const PrecisionDecision faster = decide_precision(PrecisionChoice::automatic, shapes, timer(2e-3, 1e-3));
    const PrecisionDecision slower = decide_precision(PrecisionChoice::automatic, shapes, timer(1e-3, 2e-3));
    const PrecisionDecision level = decide_precision(PrecisionChoice::automatic, shapes, timer(1.05e-3, 1e-3));
    EXPECT_EQ(slower.precision, Precision::fp32) << slower.reason;
    EXPECT_EQ(level.precision, Precision::fp32) << "5% is within a timing's noise: " << level.reason;
    if (cpu_runs_bf16()) {
        EXPECT_EQ(faster.precision, Precision::bf16) << faster.reason;
        EXPECT_EQ(faster.reason, "bf16: bf16 products timed 2.00x fp32's speed on these shapes (1 ms against 2 ms a window)");
        EXPECT_EQ(slower.reason, "fp32: bf16 products timed 0.50x fp32's speed on these shapes (2 ms against 1 ms a window)");
    } else {
        EXPECT_EQ(faster.precision, Precision::fp32) << "no instructions, no bf16, whatever a timing says";
        EXPECT_EQ(faster.reason, "fp32: this CPU has no bf16 instructions (AVX512_BF16)");
    }
    const ProductShapes small{.rows = 4, .hidden = 64, .gates = 4, .steps = 16, .window_rows = 64};
    EXPECT_EQ(decide_precision(PrecisionChoice::automatic, small, timer(2e-3, 1e-3)).precision, Precision::fp32);
    EXPECT_EQ(decide_precision(PrecisionChoice::fp32, shapes, timer(2e-3, 1e-3)).precision, Precision::fp32);
}

// The threads this process has now.
std::size_t thread_count() {
    std::size_t count = 0;
    for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) ++count;
    return count;
}

TEST(Bf16, AutoTimingLeavesNoIdleOpenMPWorkersBehind) {
    // auto's timing enters parallel regions, and OpenMP keeps a pool of workers for every thread that has
    // entered one. Left idle beside a server's decoders, which run on threads of their own, such workers
    // count against the cores, and libgomp then sleeps between regions where it would spin: one stream was
    // served 2.4x slower. The timing runs on a thread of its own, which takes its workers with it.
    if (!full_teams_guaranteed()) GTEST_SKIP() << "OpenMP may give a team of one here (OMP_THREAD_LIMIT, OMP_DYNAMIC): no workers to leave";
    std::size_t before = 0, after = 0;
    std::thread caller([&] {  // a thread with no pool yet, as a server's main thread has none
        omp_set_dynamic(0);
        omp_set_num_threads(2);
        before = thread_count();
        time_products(ProductShapes{.rows = 4, .hidden = 64, .gates = 4, .steps = 2, .window_rows = 8});
        // The timing thread's workers end as it does, each in its own time: give them a second.
        for (int wait = 0; wait < 100 && (after = thread_count()) > before; ++wait) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    });
    caller.join();
    EXPECT_EQ(after, before) << "threads were left behind by the timing";
}

TEST(Bf16, AutoPicksFp32WhereTheRealTimingFindsBf16Slower) {
    // The real timing, time_products(), with a bf16 path made slow on purpose: the emulation, scalar code
    // that runs the packed bf16 product tens of times slower than the fp32 kernel.
    // Where the CPU has the instructions, the same timing with them must pick bf16 if it finds them
    // faster, and then they must be: the verdict follows the measurement both ways.
    if (!cpu_runs_bf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16: auto is fp32 without timing (AutoTakesTheTimingsVerdictAndSaysWhy)";
    // One thread: on a machine shared with other work, a team's barriers wait on descheduled threads
    // for whole time slices, which would time the scheduler, not the products.
    Threads threads(1);
    // One step's product alone (window_rows 0, as sampling times it): the emulation's share of the
    // window, the projection, would run through fp32's GEMM on rounded operands, about as fast as fp32.
    const ProductShapes shapes{.rows = 32, .hidden = 256, .gates = 4, .steps = 1, .window_rows = 0};
    {
        Kernels slowed(Bf16Kernels::emulated);
        const ProductTimes times = time_products(shapes);
        const PrecisionDecision decision = decide_precision(PrecisionChoice::automatic, shapes, [&](const ProductShapes&) { return times; });
        EXPECT_EQ(decision.precision, Precision::fp32) << decision.reason;
        EXPECT_GT(times.bf16_seconds, times.fp32_seconds) << decision.reason;
        std::cout << "with the emulation: " << decision.reason << "\n";
    }
    const ProductTimes times = time_products(shapes);
    const PrecisionDecision decision = decide_precision(PrecisionChoice::automatic, shapes, [&](const ProductShapes&) { return times; });
    EXPECT_EQ(decision.precision == Precision::bf16, times.fp32_seconds >= 1.1 * times.bf16_seconds) << decision.reason;
    std::cout << "with the instructions: " << decision.reason << "\n";
}

}  // namespace
}  // namespace charlm
