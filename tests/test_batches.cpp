// Checks batches.cpp: training windows carry on from each other; evaluation windows cover every pair once.
#include <gtest/gtest.h>

#include "charlm/batches.hpp"
#include "charlm/error.hpp"

namespace charlm {
namespace {

std::vector<TokenId> counting(int n) {
    std::vector<TokenId> ids(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) ids[static_cast<std::size_t>(i)] = i;
    return ids;
}

TEST(Batches, StreamsAreContiguousAndContinueAcrossWindows) {
    const auto ids = counting(25);  // 24 pairs, 2 streams of 12, windows of 5: 2 per pass
    BatchStream stream(ids, 5, 2);
    EXPECT_EQ(stream.windows_per_pass(), 2u);
    Batch batch;
    stream.next(batch);
    EXPECT_TRUE(batch.starts_streams);
    // step-major: index t * B + b
    EXPECT_EQ(batch.inputs[0 * 2 + 0], 0);
    EXPECT_EQ(batch.inputs[0 * 2 + 1], 12);
    EXPECT_EQ(batch.inputs[4 * 2 + 1], 16);
    EXPECT_EQ(batch.targets[4 * 2 + 1], 17);
    stream.next(batch);
    EXPECT_FALSE(batch.starts_streams);
    EXPECT_EQ(batch.inputs[0 * 2 + 0], 5);
    EXPECT_EQ(batch.inputs[0 * 2 + 1], 17);
    stream.next(batch);  // a new pass
    EXPECT_TRUE(batch.starts_streams);
    EXPECT_EQ(batch.inputs[0], 0);
}

TEST(Batches, TooShortForOneWindowIsAnError) {
    const auto ids = counting(10);
    EXPECT_THROW(BatchStream(ids, 10, 1), Error);
    EXPECT_THROW(BatchStream(ids, 3, 4), Error);
    EXPECT_NO_THROW(BatchStream(ids, 9, 1));
}

TEST(Batches, EvaluationWindowsCoverEveryPairOnce) {
    const auto ids = counting(23);  // 22 pairs in 4 streams of 6, the last one padded
    std::vector<Batch> windows;
    for_each_evaluation_window(ids, 4, 4, [&](const Batch& window) { windows.push_back(window); });
    std::vector<int> seen(23, 0);
    std::size_t targets = 0;
    for (const auto& window : windows) {
        ASSERT_EQ(window.inputs.size(), static_cast<std::size_t>(window.seq_length * window.batch_size));
        for (std::size_t i = 0; i < window.targets.size(); ++i) {
            if (window.targets[i] == kIgnoreTarget) continue;
            EXPECT_EQ(window.targets[i], window.inputs[i] + 1);
            ++seen[static_cast<std::size_t>(window.targets[i])];
            ++targets;
        }
    }
    EXPECT_EQ(targets, 22u);
    for (int i = 1; i < 23; ++i) EXPECT_EQ(seen[static_cast<std::size_t>(i)], 1) << i;
    EXPECT_TRUE(windows.front().starts_streams);
    EXPECT_FALSE(windows.back().starts_streams);
}

}  // namespace
}  // namespace charlm
