// How many threads charlm computes with, and whether OpenMP will really give a region that many.
#pragma once

namespace charlm {

struct ThreadCount {
    int requested = 0;  // as asked; 0 means one per core
    int used = 0;       // what every parallel region is sized for
    const char* limited_by = nullptr;  // why `used` is below the request (OMP_THREAD_LIMIT, ...), or null
};

// Sets the threads of Eigen's GEMM and of every OpenMP region; 0 means one per core. The count is
// capped at OpenMP's thread limit (OMP_THREAD_LIMIT; 1 where OMP_MAX_ACTIVE_LEVELS=0 allows no team
// at all), and OpenMP's dynamic teams (OMP_DYNAMIC) are turned off, so that a region asked for N
// threads gets N. Returns what was set, for a warning.
ThreadCount set_thread_count(int threads);

// True when a region opened now with omp_get_max_threads() threads is certain to get them all: not
// dynamic, not beyond the thread limit, not past the most active levels. Code that cannot cope with a smaller team (oneDNN's sgemm
// computes wrong results then) checks this first; charlm's own regions cover their work in any team.
bool full_teams_guaranteed();

}  // namespace charlm
