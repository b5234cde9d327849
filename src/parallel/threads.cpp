// Thread count setup: one count for Eigen and OpenMP, capped where OpenMP would give fewer.
#include "charlm/threads.hpp"

#include <algorithm>

#include <Eigen/Core>
#include <omp.h>

namespace charlm {

ThreadCount set_thread_count(int threads) {
    ThreadCount count;
    count.requested = threads;
    count.used = threads > 0 ? threads : omp_get_num_procs();
    if (count.used > omp_get_thread_limit()) {
        count.used = omp_get_thread_limit();
        if (threads > 0) count.limited_by = "OMP_THREAD_LIMIT";
    }
    if (omp_get_max_active_levels() < 1 && count.used > 1) {  // no region may have more than one thread
        count.used = 1;
        if (threads > 0) count.limited_by = "OMP_MAX_ACTIVE_LEVELS";
    }
    omp_set_dynamic(0);
    omp_set_num_threads(count.used);
    Eigen::setNbThreads(count.used);
    return count;
}

bool full_teams_guaranteed() {
    return omp_in_parallel() || omp_get_max_threads() == 1 ||  // a team of one is always whole
           (!omp_get_dynamic() && omp_get_max_threads() <= omp_get_thread_limit() &&
            omp_get_active_level() < omp_get_max_active_levels());
}

}  // namespace charlm
