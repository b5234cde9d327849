// Checks row_shares.cpp: every row in exactly one share, and shares that follow the threads' speeds.
#include <gtest/gtest.h>

#include <atomic>

#include "nn/row_shares.hpp"
#include "test_helpers.hpp"

namespace charlm {
namespace {

using testing::Threads;

// Runs for_each_row_share (balanced where `balance` is given) and checks that every row was visited once.
void expect_every_row_once(Eigen::Index rows, RowBalance* balance, int expected_calls) {
    std::vector<std::atomic<int>> visits(static_cast<std::size_t>(rows));
    std::atomic<int> calls = 0;
    auto body = [&](Eigen::Index first, Eigen::Index count) {
        ++calls;
        for (Eigen::Index row = first; row < first + count; ++row) ++visits[static_cast<std::size_t>(row)];
    };
    if (balance) for_each_row_share(rows, 8, *balance, body);
    else for_each_row_share(rows, 8, body);
    for (const auto& visit : visits) EXPECT_EQ(visit.load(), 1) << rows << " rows";
    EXPECT_EQ(calls.load(), expected_calls) << rows << " rows";
}

TEST(RowShares, CoverEveryRowOnce) {
    Threads threads(2);
    RowBalance balance;
    for (Eigen::Index rows : {1, 7, 16, 25, 50}) {
        expect_every_row_once(rows, nullptr, rows >= 16 ? 2 : 1);
        expect_every_row_once(rows, &balance, rows >= 16 ? 2 : 1);
    }
}

TEST(RowShares, EveryShareRunsWhateverTeamOpenMPGives) {
    // A region inside an active one gets a team of one (max-active-levels 1), as OMP_THREAD_LIMIT,
    // OMP_DYNAMIC or a busy machine can make any team smaller than asked: every share must run all the same.
    const int levels = omp_get_max_active_levels();
    omp_set_max_active_levels(1);
    std::vector<std::atomic<int>> runs(4);
    std::atomic<int> largest_team = 0;
#pragma omp parallel num_threads(2)
    {
#pragma omp single
        for_each_share_in_team(4, [&](int share) {
            ++runs[static_cast<std::size_t>(share)];
            largest_team = std::max(largest_team.load(), omp_get_num_threads());
        });
    }
    omp_set_max_active_levels(levels);
    EXPECT_LT(largest_team.load(), 4) << "the team was not smaller than asked, so this checks nothing";
    for (const auto& count : runs) EXPECT_EQ(count.load(), 1);
}

// Shares of a split as counts, first to last.
std::vector<Eigen::Index> counts(const RowBalance& balance, int shares) {
    std::vector<Eigen::Index> result;
    for (int share = 0; share < shares; ++share) result.push_back(balance.count(share));
    return result;
}

TEST(RowBalance, SplitsEvenlyUntilEveryShareHasBeenTimed) {
    RowBalance balance;
    balance.split(64, 2, 8);
    EXPECT_EQ(counts(balance, 2), (std::vector<Eigen::Index>{32, 32}));
    balance.record(0, 1.0);  // share 1 never reports
    balance.update();
    balance.split(50, 3, 8);
    EXPECT_EQ(counts(balance, 3), (std::vector<Eigen::Index>{17, 16, 17}));
    EXPECT_EQ(balance.first(0), 0);
    EXPECT_EQ(balance.first(2), 33);
}

TEST(RowBalance, GivesTheFasterThreadMoreRows) {
    RowBalance balance;
    balance.split(64, 2, 8);
    balance.record(0, 2.0);  // 32 rows in 2 s: 16 rows/s
    balance.record(1, 1.0);  // 32 rows/s
    balance.update();
    balance.split(64, 2, 8);
    EXPECT_EQ(counts(balance, 2), (std::vector<Eigen::Index>{21, 43}));  // 64 / 3 rounded
    // Equally fast this time, 30 rows/s each: averaged with the first call's speeds, 23 and 31 rows/s.
    balance.record(0, 21.0 / 30.0);
    balance.record(1, 43.0 / 30.0);
    balance.update();
    balance.split(64, 2, 8);
    EXPECT_EQ(counts(balance, 2), (std::vector<Eigen::Index>{27, 37}));  // 64 * 23 / 54 = 27.3
}

TEST(RowBalance, KeepsEveryShareAtLeastTheSmallestShare) {
    RowBalance balance;
    balance.split(40, 3, 8);
    balance.record(0, 1.0);
    balance.record(1, 1000.0);  // all but stopped
    balance.record(2, 1.0);
    balance.update();
    balance.split(40, 3, 8);
    EXPECT_EQ(counts(balance, 3), (std::vector<Eigen::Index>{16, 8, 16}));
}

TEST(RowBalance, StartsOverWhenTheNumberOfSharesChanges) {
    RowBalance balance;
    balance.split(64, 2, 8);
    balance.record(0, 4.0);
    balance.record(1, 1.0);
    balance.update();
    balance.split(60, 3, 8);
    EXPECT_EQ(counts(balance, 3), (std::vector<Eigen::Index>{20, 20, 20}));
}

}  // namespace
}  // namespace charlm
