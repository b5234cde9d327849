// Checks gemm.cpp against plain Eigen products: every fast kernel against the obvious version.
#include <gtest/gtest.h>

#include "charlm/error.hpp"
#include "nn/gemm.hpp"
#include "test_helpers.hpp"

namespace charlm {
namespace {

using testing::expect_near;
using testing::random_matrix;
using testing::Threads;

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

TEST(Gemm, APackedCopyKnowsTheWeightsVersionItWasMadeFrom) {
    std::mt19937_64 rng(4);
    const Matrix<float> b = random_matrix<float>(5, 7, rng);
    PackedMatrix<float> packed;
    EXPECT_FALSE(packed.packed_from(0));
    EXPECT_FALSE(packed.packed_from(1));
    packed.pack(b, Transpose::no, 3);
    EXPECT_TRUE(packed.packed_from(3));
    EXPECT_FALSE(packed.packed_from(4));
    packed.pack(b, Transpose::no);  // weights of no known version: never reusable
    EXPECT_FALSE(packed.packed_from(0));
    EXPECT_FALSE(packed.packed_from(3));
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

TEST(Gemm, EachRowOfAPackedProductComesOutTheSameInAnyShareOfFourRowsOrMore) {
    // The time loops split the batch between threads in shares that move with the threads' speeds;
    // a row's result must not depend on which share, or which block of a share, it falls in (7 rows are
    // blocks of 4 and 3 where the kernels' blocks have 6 rows at most, and 3 rows alone sum in two chains).
    std::mt19937_64 rng(21);
    const Matrix<float> a = random_matrix<float>(37, 70, rng), b = random_matrix<float>(70, 45, rng), start = random_matrix<float>(37, 45, rng);
    PackedMatrix<float> packed;
    packed.pack(b, Transpose::no);
    for (float beta : {0.0f, 1.0f}) {
        Matrix<float> whole = start;
        packed.multiply(a, beta, whole);
        for (const auto& [first, count] : std::vector<std::pair<Eigen::Index, Eigen::Index>>{{0, 4}, {4, 7}, {11, 10}, {21, 16}}) {
            Matrix<float> share = start.middleRows(first, count);
            packed.multiply(a.middleRows(first, count), beta, share);
            EXPECT_TRUE((share.array() == whole.middleRows(first, count).array()).all())
                << "rows " << first << " to " << first + count << ", beta " << beta;
        }
        // A share of no rows (a thread left without any) multiplies nothing, and divides by nothing (the blocks'
        // chains are counted only for rows; UBSan in the sanitizers' run would see a division by zero).
        Matrix<float> none(0, 45);
        packed.multiply(a.topRows(0), beta, none);
    }
}

}  // namespace
}  // namespace charlm
