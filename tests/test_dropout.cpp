// Checks dropout.cpp: the masks' values and rate, that a key decides a mask whatever the thread count,
// and that masks repeat down a window's rows.
#include <omp.h>

#include <gtest/gtest.h>

#include "charlm/error.hpp"
#include "nn/dropout.hpp"

namespace charlm {
namespace {

TEST(Dropout, AMaskKeepsAboutOneMinusTheRateAndScalesWhatItKeeps) {
    for (double rate : {0.1, 0.25, 0.5, 0.9}) {
        Matrix<float> mask;
        draw_dropout_mask(mask, 300, 1001, rate, 12345);  // an odd size: the last element has half a word
        const float scale = static_cast<float>(1 / (1 - rate));
        Eigen::Index kept = 0;
        for (Eigen::Index i = 0; i < mask.size(); ++i) {
            ASSERT_TRUE(mask.data()[i] == 0 || mask.data()[i] == scale) << mask.data()[i];
            kept += mask.data()[i] != 0;
        }
        const double share = static_cast<double>(kept) / static_cast<double>(mask.size());
        EXPECT_NEAR(share, 1 - rate, 0.005) << rate;  // 300k draws: a standard deviation under 0.001
        EXPECT_NEAR(mask.cast<double>().mean(), 1.0, 0.03) << "inverted dropout keeps the expected value";
    }
    Matrix<double> none;
    draw_dropout_mask(none, 10, 10, 0.0, 1);
    EXPECT_EQ(none, Matrix<double>::Ones(10, 10));
}

TEST(Dropout, AKeyDecidesItsMaskWhateverTheThreads) {
    Matrix<float> one_thread, all_threads, other_key, other_mask;
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    draw_dropout_mask(one_thread, 512, 2048, 0.3, 77);
    omp_set_num_threads(std::max(threads, 3));
    draw_dropout_mask(all_threads, 512, 2048, 0.3, 77);
    omp_set_num_threads(threads);
    EXPECT_EQ(one_thread, all_threads);
    draw_dropout_mask(other_key, 512, 2048, 0.3, 78);
    EXPECT_NE(other_key, one_thread);
    // The masks of one window come from one key, each of its own: no two alike, nor correlated.
    draw_dropout_mask(other_mask, 512, 2048, 0.3, mask_key(77, 1));
    draw_dropout_mask(other_key, 512, 2048, 0.3, mask_key(77, 2));
    EXPECT_NE(other_mask, other_key);
    const double both = (other_mask.array() > 0 && other_key.array() > 0).cast<double>().mean();
    EXPECT_NEAR(both, 0.7 * 0.7, 0.01);
}

TEST(Dropout, AMaskOfFewerRowsRepeatsDownTheValues) {
    Matrix<double> values = Matrix<double>::Random(6, 4), mask(2, 4), out;
    mask << 2, 0, 2, 0,  //
        0, 2, 2, 0;
    apply_dropout_mask(values, mask, out);
    for (Eigen::Index row = 0; row < 6; ++row)
        EXPECT_EQ(out.row(row), values.row(row).cwiseProduct(mask.row(row % 2))) << row;
    Matrix<double> in_place = values;
    apply_dropout_mask_in_place(in_place, mask);
    EXPECT_EQ(in_place, out);
    Matrix<double> misfit(4, 4);
    EXPECT_THROW(apply_dropout_mask(values, misfit, out), Error);
}

}  // namespace
}  // namespace charlm
