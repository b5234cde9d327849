// Checks batches.cpp: training windows carry on from each other; evaluation windows cover every pair once.
#include <string>

#include <gtest/gtest.h>

#include "charlm/batches.hpp"
#include "charlm/error.hpp"
#include "test_helpers.hpp"

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

// 16 MiB of mapped ids, read by 4 streams: a pass (or an evaluation) leaves about 4 x 64 KiB of it
// resident, where every page it read would stay without the releases.
TEST(Batches, WindowsOfMappedIdsKeepOnlyWhatTheyReadNextResident) {
    testing::TemporaryDirectory directory;
    std::string text;
    while (text.size() < (std::size_t{16} << 20)) text += "abcdefghijklmnopqrstuvwxyz012345";
    const auto source = directory.write("text.txt", text);
    const Vocab vocab = Vocab::from_files({source});
    const auto path = directory.path() / "text.ids";
    const MappedIds ids = MappedIds::encode(path, source, fingerprint_file(source), vocab);
    BatchStream stream(ids.span(), 1000, 4);
    Batch batch;
    long most_resident = 0;
    for (std::size_t window = 0; window < stream.windows_per_pass(); ++window) {
        stream.next(batch);
        if (window % 256 == 0) most_resident = std::max(most_resident, testing::resident_bytes_of_mapping(path));
        ASSERT_EQ(batch.inputs[3], vocab.id_of(static_cast<char32_t>(text[3 * ((text.size() - 1) / 4) + window * 1000])));
    }
    EXPECT_GT(most_resident, 0);
    EXPECT_LT(most_resident, 2L << 20);
    EXPECT_LT(testing::resident_bytes_of_mapping(path), 2L << 20);

    std::size_t windows = 0;
    for_each_evaluation_window(ids.span(), 1000, 4, [&](const Batch& window) {
        if (++windows % 256 == 0) most_resident = std::max(most_resident, testing::resident_bytes_of_mapping(path));
        ASSERT_EQ(window.targets[0], vocab.id_of(static_cast<char32_t>(text[(windows - 1) * 1000 + 1])));
    });
    EXPECT_GT(windows, 4000u);
    EXPECT_LT(most_resident, 2L << 20);
    EXPECT_LT(testing::resident_bytes_of_mapping(path), 2L << 20);
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
