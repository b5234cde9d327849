// Allreduce benchmark: time of MPI_Allreduce(MPI_SUM, float) against message size, the communication term of
// data-parallel training (docs/scale.md models a training step from it and from 'charlm bench').
//
// Sizes: 4 bytes (one float: the latency), 1 KiB to 64 MiB in powers of 4, and the gradients of the three
// reference LSTMs (embed 64, vocabulary 65), each a single message as if the trainer sums one flat buffer.
// Each size is timed for about --seconds (at least --min-repeats, at most --max-repeats calls), every call
// alone between barriers; a call's time is the slowest rank's, since a step waits for the last one. CPU: the
// share of its core the least served rank had meanwhile; on a shared machine, well under 100% says that
// the figure measures the neighbours more than MPI.
// Bandwidth: algorithm bandwidth = bytes / time; bus bandwidth = 2(N-1)/N x bytes / time, what each link
// carries in a ring allreduce, comparable across rank counts and with a link's rated speed.
// Usage: mpirun -np N allreduce_bench [--json] [--seconds S] [--min-repeats R] [--max-repeats R]
// Output: a markdown table on rank 0's stdout, or with --json one JSON object per size per line.
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <vector>

struct Options {
    bool json = false;
    double seconds = 1;
    int min_repeats = 20, max_repeats = 10000;
};

struct Message {
    std::string label;  // "" for the plain sizes
    long floats;
};

// Parameters of an LSTM stack with its embedding and output layer, as charlm and PyTorch count them:
// per layer W_ih (4H x I), W_hh (4H x H) and two biases (4H each); embedding V x E; head V x H plus V.
static long lstm_parameter_count(long layers, long hidden, long embed, long vocab) {
    long count = vocab * embed + vocab * hidden + vocab;
    for (long layer = 0; layer < layers; ++layer) {
        const long input = layer == 0 ? embed : hidden;
        count += 4 * hidden * (input + hidden) + 8 * hidden;
    }
    return count;
}

static std::vector<Message> messages() {
    std::vector<Message> result = {{"one float", 1}};
    for (long bytes = 1024; bytes <= 64L << 20; bytes *= 4) result.push_back({"", bytes / 4});
    for (auto [layers, hidden] : {std::pair{2L, 128L}, {2L, 256L}, {3L, 512L}})
        result.push_back({"lstm " + std::to_string(layers) + "x" + std::to_string(hidden) + " gradient",
                          lstm_parameter_count(layers, hidden, 64, 65)});
    std::stable_sort(result.begin(), result.end(), [](const Message& a, const Message& b) { return a.floats < b.floats; });
    return result;
}

struct Timing {
    int repeats;
    double median_seconds, min_seconds;
    double cpu_share;  // the least CPU time any rank had while timing, over the wall time
};

static double cpu_seconds() {
    timespec now{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
    return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
}

// Every rank takes the same number of calls: rank 0's count and clock decide, sent after each call.
static Timing time_allreduce(std::vector<float>& buffer, const Options& o) {
    const int count = static_cast<int>(buffer.size());
    // In place, as the trainer sums its gradients; the buffer holds zeros, so repeated sums never overflow,
    // and adding zeros costs what adding any other normal float does.
    auto allreduce = [&] { MPI_Allreduce(MPI_IN_PLACE, buffer.data(), count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); };
    for (int warmup = 0; warmup < 3; ++warmup) allreduce();  // pages touched, shared-memory segments set up
    std::vector<double> seconds;
    seconds.reserve(o.max_repeats);
    const double budget_start = MPI_Wtime(), cpu_start = cpu_seconds();
    for (int another = 1; another;) {
        MPI_Barrier(MPI_COMM_WORLD);
        const double start = MPI_Wtime();
        allreduce();
        seconds.push_back(MPI_Wtime() - start);
        const int taken = static_cast<int>(seconds.size());
        another = taken < o.min_repeats || (taken < o.max_repeats && MPI_Wtime() - budget_start < o.seconds);
        MPI_Bcast(&another, 1, MPI_INT, 0, MPI_COMM_WORLD);
    }
    // A rank waiting in MPI polls, so it keeps its core busy: less than all of it means neighbours took it.
    double cpu_share = (cpu_seconds() - cpu_start) / (MPI_Wtime() - budget_start);
    MPI_Allreduce(MPI_IN_PLACE, &cpu_share, 1, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
    const int repeats = static_cast<int>(seconds.size());
    MPI_Allreduce(MPI_IN_PLACE, seconds.data(), repeats, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    std::sort(seconds.begin(), seconds.end());
    const double median = repeats % 2 ? seconds[repeats / 2] : (seconds[repeats / 2 - 1] + seconds[repeats / 2]) / 2;
    return {repeats, median, seconds.front(), cpu_share};
}

static std::string size_text(double bytes) {
    const char* units[] = {"B", "KiB", "MiB", "GiB"};
    int unit = 0;
    while (bytes >= 1024 && unit < 3) bytes /= 1024, ++unit;
    char text[32];
    std::snprintf(text, sizeof text, bytes == static_cast<long>(bytes) ? "%.0f %s" : "%.2f %s", bytes, units[unit]);
    return text;
}

int main(int argc, char** argv) {
    MPI_Init(&argc, &argv);
    int rank = 0, ranks = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string name = argv[i];
        auto value = [&] {
            if (i + 1 >= argc) {
                if (rank == 0) std::fprintf(stderr, "missing value for %s\n", name.c_str());
                MPI_Finalize();
                std::exit(2);
            }
            return argv[++i];
        };
        if (name == "--json") o.json = true;
        else if (name == "--seconds") o.seconds = std::atof(value());
        else if (name == "--min-repeats") o.min_repeats = std::max(1, std::atoi(value()));
        else if (name == "--max-repeats") o.max_repeats = std::max(1, std::atoi(value()));
        else {
            if (rank == 0)
                std::fprintf(stderr, "usage: mpirun -np N %s [--json] [--seconds S] [--min-repeats R] [--max-repeats R]\n",
                             argv[0]);
            MPI_Finalize();
            return 2;
        }
    }
    o.max_repeats = std::max(o.max_repeats, o.min_repeats);

    char library[MPI_MAX_LIBRARY_VERSION_STRING];
    int library_length = 0;
    MPI_Get_library_version(library, &library_length);
    const std::string library_name(library, std::find(library, library + library_length, ','));
    if (rank == 0 && !o.json) {
        std::printf("MPI_Allreduce(MPI_SUM, float, in place), %d ranks, %s; time of the slowest rank, GB = 1e9 bytes\n\n",
                    ranks, library_name.c_str());
        std::printf("| size | floats | what | repeats | median us | min us | algorithm GB/s | bus GB/s | CPU |\n");
        std::printf("|---:|---:|---|---:|---:|---:|---:|---:|---:|\n");
    }
    const double ring_factor = 2.0 * (ranks - 1) / ranks;
    for (const Message& message : messages()) {
        std::vector<float> buffer(message.floats, 0.0f);
        const Timing timing = time_allreduce(buffer, o);
        if (rank != 0) continue;
        const double bytes = 4.0 * message.floats;
        const double algorithm_bandwidth = bytes / timing.median_seconds / 1e9;
        if (o.json) {
            std::printf("{\"ranks\":%d,\"bytes\":%.0f,\"floats\":%ld,\"label\":\"%s\",\"repeats\":%d,"
                        "\"median_seconds\":%.9g,\"min_seconds\":%.9g,\"algorithm_gigabytes_per_second\":%.6g,"
                        "\"bus_gigabytes_per_second\":%.6g,\"cpu_share\":%.3f}\n",
                        ranks, bytes, message.floats, message.label.c_str(), timing.repeats, timing.median_seconds,
                        timing.min_seconds, algorithm_bandwidth, ring_factor * algorithm_bandwidth, timing.cpu_share);
        } else {
            std::printf("| %s | %ld | %s | %d | %.1f | %.1f | %.2f | %.2f | %.0f%% |\n", size_text(bytes).c_str(),
                        message.floats, message.label.c_str(), timing.repeats, timing.median_seconds * 1e6,
                        timing.min_seconds * 1e6, algorithm_bandwidth, ring_factor * algorithm_bandwidth,
                        100 * timing.cpu_share);
        }
        std::fflush(stdout);
    }
    MPI_Finalize();
    return 0;
}
