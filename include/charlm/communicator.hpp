// The processes of one data-parallel training run (mpirun -np N charlm train ...), and what they do together.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace charlm {

// Marian's design: the training loop calls these whatever runs it. One process (no mpirun, or a build
// without MPI) is a group of one, where every operation is trivial; under mpirun they are MPI's.
class Communicator {
public:
    virtual ~Communicator() = default;

    virtual int rank() const = 0;        // 0 is the process that talks to the user and writes the files
    virtual int size() const = 0;        // processes in the run
    virtual int local_size() const = 0;  // processes on this machine, this one included
    virtual std::string host() const = 0;
    bool is_first() const { return rank() == 0; }

    // Sums across the processes, in place. Every process gets the same bits, so that parameters
    // updated from a summed gradient stay identical everywhere.
    virtual void sum(std::span<float> values) const = 0;
    virtual void sum(std::span<double> values) const = 0;
    // Every process's text, in rank order, on every process.
    virtual std::vector<std::string> gather_all(const std::string& text) const = 0;
    // Process r's `mine` (counts[r] floats each) placed one after another in `all`, on process 0 only.
    virtual void gather(std::span<const float> mine, std::span<float> all, std::span<const int> counts) const = 0;
    virtual void barrier() const = 0;
    // Ends every process of the run, this one with `status`: what a process does with an error that
    // the others cannot know of, rather than leave them waiting for it forever.
    [[noreturn]] virtual void abort(int status) const = 0;
};

// This process alone: rank 0 of 1.
const Communicator& single_process();

// Starts MPI where an MPI launcher (mpirun, srun) started this process and the build has MPI, and ends
// it when it goes. Elsewhere it does nothing and communicator() is single_process(): a plain
// `charlm train` does not touch MPI at all.
class DistributedRun {
public:
    DistributedRun(int& argc, char**& argv);
    ~DistributedRun();
    DistributedRun(const DistributedRun&) = delete;
    DistributedRun& operator=(const DistributedRun&) = delete;

    const Communicator& communicator() const;

    // Whether a launcher started this process as one of several, read from its environment (so it
    // can be asked before MPI starts, and in a build without MPI), and this process's rank there.
    static bool launched_with_others();
    static int launched_rank();
    static bool built_with_mpi();

private:
    std::unique_ptr<Communicator> mpi_;
};

// Runs `work` on every process, then tells every process whether any failed. Where one did, every
// process throws the error of the first that failed (a UsageError stays one), marked as shared by every
// process: rank 0 alone prints it, and no process is left waiting in a collective for one that stopped.
// With one process, `work` just runs.
void run_on_every_process(const Communicator& processes, const std::function<void()>& work);

}  // namespace charlm
