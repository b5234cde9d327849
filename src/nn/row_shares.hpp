// Splitting rows among threads: the time loops give each thread a contiguous share of the batch for
// the whole window, weighed by how fast each thread has been going.
#pragma once

#include <algorithm>
#include <vector>

#include <Eigen/Core>
#include <omp.h>

namespace charlm {

// How many shares of at least `min_rows` each `rows` rows make, one per thread at most; 1 inside a
// parallel region.
inline int row_share_count(Eigen::Index rows, Eigen::Index min_rows) {
    const Eigen::Index most = omp_in_parallel() ? 1 : std::min(omp_get_max_threads(), omp_get_thread_limit());
    return static_cast<int>(std::clamp<Eigen::Index>(rows / std::max<Eigen::Index>(min_rows, 1), 1, most));
}

// Runs each of `shares` shares once in a parallel region asked for `shares` threads. OpenMP may give
// fewer (OMP_THREAD_LIMIT, OMP_DYNAMIC, a nested region, a busy machine): then a thread runs several
// shares in turn, so that every share runs whatever team there is.
template <typename Body>
void for_each_share_in_team(int shares, const Body& body) {
#pragma omp parallel num_threads(shares)
    {
        const int team = omp_get_num_threads();
        for (int share = omp_get_thread_num(); share < shares; share += team) body(share);
    }
}

// Splits `rows` rows into one contiguous share per thread (at least `min_rows` each) and runs
// body(first_row, row_count) for each share in parallel, one call per share: a time loop over a
// share of the batch needs no synchronization between steps.
template <typename Body>
void for_each_row_share(Eigen::Index rows, Eigen::Index min_rows, const Body& body) {
    const int shares = row_share_count(rows, min_rows);
    if (shares == 1) {
        body(Eigen::Index{0}, rows);
        return;
    }
    for_each_share_in_team(shares, [&](int share) {
        const Eigen::Index first = rows * share / shares;
        body(first, rows * (share + 1) / shares - first);
    });
}

// The speed each thread of a split has shown, kept between calls. On a shared machine one core can
// run 10-25% slower than another for seconds at a time (another tenant's load), and a parallel
// region lasts as long as its slowest share: shares in proportion to speed finish together.
class RowBalance {
public:
    // Splits `rows` into `shares` contiguous shares of at least `min_rows` each (shares * min_rows <=
    // rows), in proportion to the speeds seen so far; evenly the first time and whenever `shares` changes.
    void split(Eigen::Index rows, int shares, Eigen::Index min_rows);
    Eigen::Index first(int share) const { return boundaries_[static_cast<std::size_t>(share)]; }
    Eigen::Index count(int share) const { return first(share + 1) - first(share); }
    // Each share's thread reports how long its share took; then, outside the parallel region,
    // update() folds those times into the speeds.
    void record(int share, double seconds) { seconds_[static_cast<std::size_t>(share)] = seconds; }
    void update();

private:
    std::vector<double> rows_per_second_;  // per share, smoothed over calls
    std::vector<double> seconds_;          // per share, of the last call
    std::vector<double> wanted_rows_;      // per share, split()'s workspace
    std::vector<Eigen::Index> boundaries_; // shares + 1: where each share starts, then `rows`
};

// for_each_row_share(), with the shares weighed by `balance` and timed to update it. The rows' results
// must not depend on which share computes them (true of the time loops: rows are independent streams,
// and PackedMatrix gives each row the same arithmetic in any product of 4 rows or more).
template <typename Body>
void for_each_row_share(Eigen::Index rows, Eigen::Index min_rows, RowBalance& balance, const Body& body) {
    const int shares = row_share_count(rows, min_rows);
    if (shares == 1) {
        body(Eigen::Index{0}, rows);
        return;
    }
    balance.split(rows, shares, min_rows);
    for_each_share_in_team(shares, [&](int share) {
        const double start_seconds = omp_get_wtime();
        body(balance.first(share), balance.count(share));
        balance.record(share, omp_get_wtime() - start_seconds);
    });
    balance.update();
}

}  // namespace charlm
