// Checks batches.cpp: training windows carry on from each other; evaluation windows cover every pair once, or
// the part that a selection names: evenly spread stretches, or a block of streams.
#include <algorithm>
#include <string>
#include <utility>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "charlm/batches.hpp"
#include "charlm/ids_file.hpp"
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

// Data parallelism: every process's block of streams, together, is the whole batch's window.
TEST(Batches, BlocksOfStreamsTogetherMakeTheWholeBatch) {
    const auto ids = counting(1001);
    for (const int processes : {1, 2, 3, 7}) {
        BatchStream whole(ids, 10, 7);
        std::vector<BatchStream> blocks;
        int next_first = 0;
        for (int rank = 0; rank < processes; ++rank) {
            const StreamBlock block = stream_block(7, rank, processes);
            EXPECT_EQ(block.first, next_first) << "contiguous, in rank order";
            EXPECT_GE(block.count, 7 / processes);
            EXPECT_LE(block.count, 7 / processes + 1) << "sizes differ by at most one";
            next_first += block.count;
            blocks.emplace_back(ids, 10, 7, block);
        }
        EXPECT_EQ(next_first, 7);
        for (int window = 0; window < 30; ++window) {  // past the end of a pass
            Batch expected, part;
            whole.next(expected);
            int row = 0;
            for (auto& block : blocks) {
                block.next(part);
                EXPECT_EQ(part.starts_streams, expected.starts_streams);
                for (int t = 0; t < 10; ++t)
                    for (int b = 0; b < part.batch_size; ++b) {
                        EXPECT_EQ(part.inputs[t * part.batch_size + b], expected.inputs[t * 7 + row + b]);
                        EXPECT_EQ(part.targets[t * part.batch_size + b], expected.targets[t * 7 + row + b]);
                    }
                row += part.batch_size;
            }
        }
    }
    EXPECT_THROW(stream_block(2, 0, 3), UsageError);  // a process without a stream
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

// for_each_evaluation_window as it was before selections: a whole pass must stay exactly this.
void evaluation_windows_before_selections(TokenSpan ids, int seq_length, int batch_size, const std::function<void(const Batch&)>& visit) {
    if (ids.size() < 2) return;
    const std::size_t pairs = ids.size() - 1;
    const std::size_t B = std::min<std::size_t>(static_cast<std::size_t>(batch_size), pairs);
    const std::size_t stream_length = (pairs + B - 1) / B;
    Batch batch;
    for (std::size_t start = 0; start < stream_length; start += static_cast<std::size_t>(seq_length)) {
        const std::size_t T = std::min<std::size_t>(static_cast<std::size_t>(seq_length), stream_length - start);
        batch.seq_length = static_cast<int>(T);
        batch.batch_size = static_cast<int>(B);
        batch.inputs.assign(T * B, 0);
        batch.targets.assign(T * B, kIgnoreTarget);
        batch.starts_streams = start == 0;
        for (std::size_t b = 0; b < B; ++b) {
            for (std::size_t t = 0; t < T; ++t) {
                std::size_t pair = b * stream_length + start + t;
                if (pair >= pairs) break;
                batch.inputs[t * B + b] = ids[pair];
                batch.targets[t * B + b] = ids[pair + 1];
            }
        }
        visit(batch);
    }
}

std::vector<Batch> evaluation_windows(TokenSpan ids, int seq_length, int batch_size, const EvaluationSelection& selection = {}) {
    std::vector<Batch> windows;
    for_each_evaluation_window(ids, seq_length, batch_size, [&](const Batch& window) { windows.push_back(window); }, selection);
    return windows;
}

// The pairs the windows score, by their first character's place (with counting ids, its value).
std::vector<TokenId> scored_pairs(const std::vector<Batch>& windows) {
    std::vector<TokenId> pairs;
    for (const auto& window : windows)
        for (std::size_t i = 0; i < window.targets.size(); ++i)
            if (window.targets[i] != kIgnoreTarget) pairs.push_back(window.inputs[i]);
    std::sort(pairs.begin(), pairs.end());
    return pairs;
}

TEST(Batches, AWholeEvaluationPassIsTheWindowsItWasBeforeSelections) {
    for (const int length : {2, 3, 23, 101, 1000}) {
        const auto ids = counting(length);
        for (const auto& [seq_length, batch_size] : std::initializer_list<std::pair<int, int>>{{4, 4}, {7, 3}, {100, 32}, {5, 1}}) {
            SCOPED_TRACE(fmt::format("{} ids, {}x{}", length, seq_length, batch_size));
            std::vector<Batch> before;
            evaluation_windows_before_selections(ids, seq_length, batch_size, [&](const Batch& window) { before.push_back(window); });
            // The default, 0 (every pair), exactly the text's pairs, and more than the text has.
            for (const std::size_t max_characters : {std::size_t{0}, static_cast<std::size_t>(length - 1), std::size_t{1} << 40}) {
                const auto now = evaluation_windows(ids, seq_length, batch_size, {.max_characters = max_characters});
                ASSERT_EQ(now.size(), before.size()) << max_characters;
                for (std::size_t w = 0; w < now.size(); ++w) {
                    EXPECT_EQ(now[w].seq_length, before[w].seq_length);
                    EXPECT_EQ(now[w].batch_size, before[w].batch_size);
                    EXPECT_EQ(now[w].inputs, before[w].inputs);
                    EXPECT_EQ(now[w].targets, before[w].targets);
                    EXPECT_EQ(now[w].starts_streams, before[w].starts_streams);
                }
            }
            EXPECT_EQ(evaluation_pair_count(ids, batch_size), static_cast<std::size_t>(length - 1));
        }
    }
}

TEST(Batches, AnEvaluationSubsetIsTheSameEvenlySpreadStretchesEveryTime) {
    const auto ids = counting(1001);  // 1000 pairs in 4 streams of 250: pairs 0, 250, 500 and 750 start them
    const EvaluationSelection selection{.max_characters = 30};  // ceil(30 / 4) = 8 steps of each stream
    const auto windows = evaluation_windows(ids, 5, 4, selection);
    ASSERT_EQ(windows.size(), 2u) << "8 steps in windows of 5: 5 and 3";
    EXPECT_EQ(windows[0].seq_length, 5);
    EXPECT_EQ(windows[1].seq_length, 3);
    EXPECT_TRUE(windows[0].starts_streams);
    EXPECT_FALSE(windows[1].starts_streams);
    std::vector<TokenId> expected;
    for (const TokenId first : {0, 250, 500, 750})
        for (TokenId t = 0; t < 8; ++t) expected.push_back(first + t);
    EXPECT_EQ(scored_pairs(windows), expected);
    for (const auto& window : windows)
        for (std::size_t i = 0; i < window.targets.size(); ++i) EXPECT_EQ(window.targets[i], window.inputs[i] + 1);
    EXPECT_EQ(evaluation_pair_count(ids, 4, selection), 32u);
    // The same pairs, in the same windows, every time.
    const auto again = evaluation_windows(ids, 5, 4, selection);
    ASSERT_EQ(again.size(), windows.size());
    for (std::size_t w = 0; w < windows.size(); ++w) EXPECT_EQ(again[w].inputs, windows[w].inputs);
}

TEST(Batches, AnEvaluationSubsetSkipsThePaddingOfTheLastStream) {
    const auto ids = counting(23);  // 22 pairs in 4 streams of 6: the last holds 4 (18 to 21)
    const EvaluationSelection selection{.max_characters = 18};  // 5 steps of each
    std::vector<TokenId> expected = {0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 18, 19, 20, 21};
    EXPECT_EQ(scored_pairs(evaluation_windows(ids, 4, 4, selection)), expected);
    EXPECT_EQ(evaluation_pair_count(ids, 4, selection), expected.size());
}

TEST(Batches, BlocksOfEvaluationStreamsMakeUpTheWholePass) {
    const auto ids = counting(1001);
    for (const std::size_t max_characters : {std::size_t{0}, std::size_t{100}}) {
        SCOPED_TRACE(max_characters);
        const EvaluationSelection whole{.max_characters = max_characters};
        std::vector<TokenId> blocks;
        std::size_t counted = 0;
        for (const auto& [first, count] : std::initializer_list<std::pair<int, int>>{{0, 3}, {3, 1}, {4, -1}}) {  // 3, 1 and the last 3 of 7 streams
            const EvaluationSelection block{.max_characters = max_characters, .first_stream = first, .stream_count = count};
            const auto windows = evaluation_windows(ids, 16, 7, block);
            ASSERT_FALSE(windows.empty());
            EXPECT_EQ(windows.front().batch_size, count < 0 ? 3 : count);
            const auto pairs = scored_pairs(windows);
            blocks.insert(blocks.end(), pairs.begin(), pairs.end());
            counted += evaluation_pair_count(ids, 7, block);
        }
        std::sort(blocks.begin(), blocks.end());
        EXPECT_EQ(blocks, scored_pairs(evaluation_windows(ids, 16, 7, whole)));
        EXPECT_EQ(counted, evaluation_pair_count(ids, 7, whole));
    }
    EXPECT_TRUE(evaluation_windows(ids, 16, 7, {.first_stream = 7, .stream_count = 0}).empty()) << "an empty block";
    EXPECT_EQ(evaluation_stream_count(ids, 7), 7);
    EXPECT_EQ(evaluation_stream_count(counting(4), 7), 3) << "3 pairs: 3 streams";
    EXPECT_THROW(evaluation_windows(ids, 16, 7, {.first_stream = 5, .stream_count = 3}), Error);
    EXPECT_THROW(evaluation_windows(ids, 16, 7, {.first_stream = -1}), Error);
    EXPECT_THROW(evaluation_pair_count(ids, 7, {.first_stream = 8}), Error);
}

}  // namespace
}  // namespace charlm
