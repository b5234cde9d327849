// One short piece of work split among the threads of one parallel region, whose phases meet at a
// barrier that spins: a decoding step (one character of every stream) takes tens of microseconds, and
// libgomp makes a futex system call at every region and barrier it enters. On a 2-core virtual machine
// an empty region measured 3.0-3.3 microseconds and a barrier 1.4-1.9, against 0.23 for this barrier;
// a 2x256 LSTM's step for 16 streams entered a region for each of its three products.
#pragma once

#include <atomic>
#include <thread>

#include <Eigen/Core>
#include <omp.h>

namespace charlm {

// The fewest multiply-adds for which a product, or a step, splits among the threads: a region costs a few
// microseconds, and 2^18 multiply-adds take about that long on one core.
constexpr Eigen::Index kLeastWorkForTeam = Eigen::Index{1} << 18;

// A barrier for the threads of one team that waits by spinning, then by yielding the core, so that a
// team larger than the free cores (a busy machine, another process) still moves on. Every thread of
// the team passes the team's size; whatever each wrote before it is seen by all after it.
class SpinBarrier {
public:
    void wait(int team) {
        if (team <= 1) return;
        const int generation = generation_.load(std::memory_order_acquire);
        if (arrived_.fetch_add(1, std::memory_order_acq_rel) == team - 1) {
            arrived_.store(0, std::memory_order_relaxed);
            generation_.store(generation + 1, std::memory_order_release);
            return;
        }
        for (int spins = 0; generation_.load(std::memory_order_acquire) == generation; ++spins) {
            if (spins < kSpinsBeforeYielding) pause();
            else std::this_thread::yield();
        }
    }

private:
    // About 50 microseconds: longer than any phase of a step, far shorter than a time slice.
    static constexpr int kSpinsBeforeYielding = 2000;
    static void pause() {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        asm volatile("yield");
#endif
    }
    alignas(64) std::atomic<int> arrived_{0};
    alignas(64) std::atomic<int> generation_{0};
};

// The calling thread's place in its team.
struct Team {
    int member = 0, size = 1;
    SpinBarrier* barrier = nullptr;
    void sync() const {
        if (size > 1) barrier->wait(size);
    }
    // This member's contiguous share of `count` rows or panels: [first, end). A product's panels split so,
    // whether a team splits it itself or PackedMatrix::multiply() enters a region for it alone.
    Eigen::Index first(Eigen::Index count) const { return count * member / size; }
    Eigen::Index end(Eigen::Index count) const { return count * (member + 1) / size; }
};

// Runs body(team) on every thread of one parallel region, or on the calling thread alone (a team of
// one) where `parallel` is false, OpenMP has one thread to give, or the caller is in a region already.
// The body must not throw: the others would wait at the barrier for ever.
template <typename Body>
void run_in_team(bool parallel, const Body& body) {
    SpinBarrier barrier;
    if (!parallel || omp_in_parallel() || omp_get_max_threads() == 1) {
        body(Team{0, 1, &barrier});
        return;
    }
#pragma omp parallel
    body(Team{omp_get_thread_num(), omp_get_num_threads(), &barrier});
}

}  // namespace charlm
