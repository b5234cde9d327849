// Shares of rows in proportion to each thread's speed.
#include "row_shares.hpp"

#include <algorithm>
#include <cmath>

namespace charlm {

void RowBalance::split(Eigen::Index rows, int shares, Eigen::Index min_rows) {
    const auto total = static_cast<std::size_t>(shares);
    if (rows_per_second_.size() != total) rows_per_second_.assign(total, 0.0);
    seconds_.assign(total, 0.0);
    // Until every share has been timed, all count the same.
    const bool timed = std::all_of(rows_per_second_.begin(), rows_per_second_.end(), [](double speed) { return speed > 0; });
    auto speed_of = [&](std::size_t share) { return timed ? rows_per_second_[share] : 1.0; };
    // Rows in proportion to speed; a share that would get fewer than min_rows gets min_rows, and the
    // others split what is left, again in proportion.
    std::vector<double>& wanted = wanted_rows_;  // a member: no allocation once the share count is known
    wanted.assign(total, 0.0);
    double rows_left = static_cast<double>(rows), speed_left = 0;
    for (std::size_t share = 0; share < total; ++share) speed_left += speed_of(share);
    for (bool again = true; again;) {
        again = false;
        for (std::size_t share = 0; share < total; ++share)
            if (wanted[share] == 0.0 && rows_left * speed_of(share) / speed_left < static_cast<double>(min_rows)) {
                wanted[share] = static_cast<double>(min_rows);
                rows_left -= static_cast<double>(min_rows);
                speed_left -= speed_of(share);
                again = true;
            }
    }
    for (std::size_t share = 0; share < total; ++share)
        if (wanted[share] == 0.0) wanted[share] = rows_left * speed_of(share) / speed_left;
    // Boundaries at the running sums, rounded; rounding moves a share by a row at most, and the clamp
    // gives that row back where it would leave a share short.
    boundaries_.assign(total + 1, 0);
    boundaries_[total] = rows;
    double rows_before = 0;
    for (std::size_t share = 1; share < total; ++share) {
        rows_before += wanted[share - 1];
        boundaries_[share] = std::clamp(static_cast<Eigen::Index>(std::llround(rows_before)), boundaries_[share - 1] + min_rows,
                                        rows - static_cast<Eigen::Index>(total - share) * min_rows);
    }
}

void RowBalance::update() {
    // Half the last call, half the calls before: a core's slowdown shows within a few calls, and one
    // odd call (a page fault, a preemption) moves the split only half way.
    for (std::size_t share = 0; share < seconds_.size(); ++share) {
        if (seconds_[share] <= 0) continue;
        const double speed = static_cast<double>(count(static_cast<int>(share))) / seconds_[share];
        double& smoothed = rows_per_second_[share];
        smoothed = smoothed > 0 ? 0.5 * (smoothed + speed) : speed;
    }
}

}  // namespace charlm
