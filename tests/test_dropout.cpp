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

TEST(Dropout, AStreamKeyedMaskIsTheSameWhicheverProcessDrawsItsRows) {
    // A window of 3 steps x 5 streams, step-major, drawn whole by one process and as blocks of streams 0-1 and
    // 2-4 by two (mpirun -np 2): every row of every block is the whole mask's row of that step and stream.
    const Eigen::Index steps = 3, streams = 5, units = 37;
    Matrix<float> whole, first, second;
    draw_dropout_mask(whole, steps * streams, units, 0.4, 99, {streams, 0});
    draw_dropout_mask(first, steps * 2, units, 0.4, 99, {2, 0});
    draw_dropout_mask(second, steps * 3, units, 0.4, 99, {3, 2});
    for (Eigen::Index step = 0; step < steps; ++step)
        for (Eigen::Index stream = 0; stream < streams; ++stream) {
            const auto row = stream < 2 ? first.row(step * 2 + stream) : second.row(step * 3 + stream - 2);
            EXPECT_EQ(row, whole.row(step * streams + stream)) << "step " << step << ", stream " << stream;
        }
    // Each row its own draw: the rows differ, and the rate holds.
    EXPECT_NE(whole.row(0), whole.row(1));
    EXPECT_NE(whole.row(0), whole.row(streams));
    Matrix<float> large;
    draw_dropout_mask(large, 400, 1001, 0.25, 5, {100, 7});
    EXPECT_NEAR((large.array() > 0).cast<double>().mean(), 0.75, 0.005);
    // Keyed by place in the mask alone, the second block's rows would be the first's.
    Matrix<float> local_first, local_second;
    draw_dropout_mask(local_first, 2, units, 0.4, 99);
    draw_dropout_mask(local_second, 2, units, 0.4, 99);
    EXPECT_EQ(local_first, local_second);
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
