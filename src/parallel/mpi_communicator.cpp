// The communicator of processes that mpirun started: MPI's collectives over a world of its own.
#include <mpi.h>

#include <algorithm>
#include <limits>
#include <numeric>

#include <fmt/format.h>

#include "charlm/communicator.hpp"
#include "charlm/error.hpp"

namespace charlm {

namespace {

// MPI counts elements in an int: larger spans go in pieces.
constexpr std::size_t kMostPerCall = std::size_t{1} << 30;

class MpiCommunicator final : public Communicator {
public:
    MpiCommunicator() {
        MPI_Comm_dup(MPI_COMM_WORLD, &world_);
        MPI_Comm_rank(world_, &rank_);
        MPI_Comm_size(world_, &size_);
        MPI_Comm local;
        MPI_Comm_split_type(world_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local);
        MPI_Comm_size(local, &local_size_);
        MPI_Comm_free(&local);
        char name[MPI_MAX_PROCESSOR_NAME] = {};
        int length = 0;
        MPI_Get_processor_name(name, &length);
        host_.assign(name, static_cast<std::size_t>(length));
    }
    ~MpiCommunicator() override { MPI_Comm_free(&world_); }

    int rank() const override { return rank_; }
    int size() const override { return size_; }
    int local_size() const override { return local_size_; }
    std::string host() const override { return host_; }

    void sum(std::span<float> values) const override { sum_in_pieces(values.data(), values.size(), MPI_FLOAT); }
    void sum(std::span<double> values) const override { sum_in_pieces(values.data(), values.size(), MPI_DOUBLE); }

    std::vector<std::string> gather_all(const std::string& text) const override {
        const int length = static_cast<int>(text.size());
        std::vector<int> lengths(static_cast<std::size_t>(size_)), offsets(static_cast<std::size_t>(size_));
        MPI_Allgather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, world_);
        std::exclusive_scan(lengths.begin(), lengths.end(), offsets.begin(), 0);
        std::string all(static_cast<std::size_t>(offsets.back() + lengths.back()), '\0');
        MPI_Allgatherv(text.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(), MPI_CHAR, world_);
        std::vector<std::string> texts;
        for (int rank = 0; rank < size_; ++rank)
            texts.push_back(all.substr(static_cast<std::size_t>(offsets[rank]), static_cast<std::size_t>(lengths[rank])));
        return texts;
    }

    void gather(std::span<const float> mine, std::span<float> all, std::span<const int> counts) const override {
        std::vector<int> offsets(counts.size());
        std::exclusive_scan(counts.begin(), counts.end(), offsets.begin(), 0);
        MPI_Gatherv(mine.data(), static_cast<int>(mine.size()), MPI_FLOAT, all.data(), counts.data(), offsets.data(), MPI_FLOAT, 0,
                    world_);
    }

    void barrier() const override { MPI_Barrier(world_); }
    [[noreturn]] void abort(int status) const override {
        MPI_Abort(world_, status);
        std::exit(status);  // MPI_Abort does not return; this says so to the compiler
    }

private:
    void sum_in_pieces(void* values, std::size_t count, MPI_Datatype type) const {
        int type_size = 0;
        MPI_Type_size(type, &type_size);
        for (std::size_t first = 0; first < count; first += kMostPerCall) {
            const std::size_t piece = std::min(kMostPerCall, count - first);
            MPI_Allreduce(MPI_IN_PLACE, static_cast<char*>(values) + first * static_cast<std::size_t>(type_size),
                          static_cast<int>(piece), type, MPI_SUM, world_);
        }
    }

    MPI_Comm world_;
    int rank_ = 0, size_ = 1, local_size_ = 1;
    std::string host_;
};

}  // namespace

DistributedRun::DistributedRun(int& argc, char**& argv) {
    if (!launched_with_others()) return;
    int provided = 0;
    // Only the main thread calls MPI; OpenMP's threads compute between the calls.
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    mpi_ = std::make_unique<MpiCommunicator>();
}

DistributedRun::~DistributedRun() {
    if (!mpi_) return;
    mpi_.reset();
    MPI_Finalize();
}

const Communicator& DistributedRun::communicator() const { return mpi_ ? *mpi_ : single_process(); }

bool DistributedRun::built_with_mpi() { return true; }

}  // namespace charlm
