// One process as a communicator of its own, the launcher's environment, and errors every process agrees on.
#include "charlm/communicator.hpp"

#include <unistd.h>

#include <cstdlib>
#include <new>

#include <fmt/format.h>

#include "charlm/error.hpp"

namespace charlm {

namespace {

class SingleProcess final : public Communicator {
public:
    int rank() const override { return 0; }
    int size() const override { return 1; }
    int local_size() const override { return 1; }
    std::string host() const override {
        char name[256] = {};
        ::gethostname(name, sizeof name - 1);
        return name;
    }
    void sum(std::span<float>) const override {}
    void sum(std::span<double>) const override {}
    std::vector<std::string> gather_all(const std::string& text) const override { return {text}; }
    void gather(std::span<const float> mine, std::span<float> all, std::span<const int>) const override {
        std::copy(mine.begin(), mine.end(), all.begin());
    }
    void barrier() const override {}
    [[noreturn]] void abort(int status) const override { std::exit(status); }
};

// The rank an MPI launcher gave this process in its environment: Open MPI's, then PMIx's and PMI's
// (MPICH, Slurm's srun). -1 where there is none.
int rank_from_environment(const char* open_mpi, const char* pmix, const char* pmi) {
    for (const char* name : {open_mpi, pmix, pmi})
        if (const char* value = std::getenv(name)) return std::atoi(value);
    return -1;
}

}  // namespace

const Communicator& single_process() {
    static const SingleProcess process;
    return process;
}

bool DistributedRun::launched_with_others() {
    return rank_from_environment("OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE") > 1;
}

int DistributedRun::launched_rank() {
    return std::max(0, rank_from_environment("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"));
}

void run_on_every_process(const Communicator& processes, const std::function<void()>& work) {
    if (processes.size() == 1) {
        work();
        return;
    }
    // What failed here, as one line: a kind ('U'sage or 'E'rror) and the message; empty where nothing did.
    std::string failure;
    try {
        work();
    } catch (const UsageError& error) {
        failure = std::string("U") + error.what();
    } catch (const Error& error) {
        failure = std::string("E") + error.what();
    } catch (const std::bad_alloc&) {
        failure = "Eout of memory; try a smaller model, --batch or --seq";
    } catch (const std::exception& error) {
        failure = std::string("E") + error.what();
    }
    const std::vector<std::string> failures = processes.gather_all(failure);
    for (std::size_t rank = 0; rank < failures.size(); ++rank) {
        if (failures[rank].empty()) continue;
        const std::string_view message = std::string_view(failures[rank]).substr(1);
        const std::string where = rank == 0 ? std::string() : fmt::format("process {} of {}: ", rank, failures.size());
        if (failures[rank][0] == 'U') throw shared(UsageError(where + std::string(message)));
        throw shared(Error(where + std::string(message)));
    }
}

#ifndef CHARLM_HAVE_MPI
DistributedRun::DistributedRun(int&, char**&) {}
DistributedRun::~DistributedRun() = default;
const Communicator& DistributedRun::communicator() const { return single_process(); }
bool DistributedRun::built_with_mpi() { return false; }
#endif

}  // namespace charlm
