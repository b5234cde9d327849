// The products' precision: names, whether the CPU runs bf16, and `auto`'s decision by a short timing on the run's shapes.
#include "charlm/precision.hpp"

#include <algorithm>
#include <chrono>
#include <exception>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <omp.h>

#include "charlm/error.hpp"
#include "gemm.hpp"
#include "kernels.hpp"

namespace charlm {

std::string to_string(Precision precision) { return precision == Precision::bf16 ? "bf16" : "fp32"; }

std::string to_string(PrecisionChoice choice) {
    switch (choice) {
        case PrecisionChoice::fp32: return "fp32";
        case PrecisionChoice::bf16: return "bf16";
        case PrecisionChoice::automatic: break;
    }
    return "auto";
}

Precision parse_precision(const std::string& name) {
    if (name == "fp32") return Precision::fp32;
    if (name == "bf16") return Precision::bf16;
    throw Error(fmt::format("unknown precision '{}' (fp32 or bf16)", name));
}

PrecisionChoice parse_precision_choice(const std::string& name) {
    if (name == "auto") return PrecisionChoice::automatic;
    if (name == "fp32") return PrecisionChoice::fp32;
    if (name == "bf16") return PrecisionChoice::bf16;
    throw UsageError(fmt::format("--precision {} is not one of auto, fp32, bf16", name));
}

bool cpu_runs_bf16() { return kernels().bf16_instructions; }

bool bf16_runs_here() { return cpu_runs_bf16() || bf16_setting() == Bf16Setting::emulate; }

void check_precision_runs_here(PrecisionChoice choice) {
    if (choice == PrecisionChoice::bf16 && !bf16_runs_here())
        throw UsageError("--precision bf16 needs a CPU with bf16 instructions (AVX512_BF16), which this one lacks; "
                         "give --precision fp32 or auto");
}

ProductShapes product_shapes(const ModelConfig& config, int batch, int steps) {
    ProductShapes shapes;
    const int threads = std::max(1, omp_get_max_threads());
    shapes.rows = std::max(1, batch / threads);
    shapes.hidden = config.hidden_size;
    shapes.gates = config.gate_count();
    shapes.window_rows = steps > 1 ? steps * batch : 0;
    shapes.steps = steps;
    return shapes;
}

namespace {

using Stopwatch = std::chrono::steady_clock;

constexpr int kLeastBf16Hidden = 128;

// The least seconds of a few runs of `work`, each repeated for about `seconds`: the least is what the
// machine can do, and what a busy neighbour adds only ever adds.
template <typename Work>
double least_seconds(Work&& work, double seconds) {
    work();  // the first run makes the buffers and the primitives
    double least = 1e30;
    for (int round = 0; round < 2; ++round) {
        int repeats = 0;
        const auto started = Stopwatch::now();
        double elapsed = 0;
        do {
            work();
            ++repeats;
            elapsed = std::chrono::duration<double>(Stopwatch::now() - started).count();
        } while (elapsed < seconds / 3);
        least = std::min(least, elapsed / repeats);
    }
    return least;
}

// Seconds of one window's forward products at `precision`: `steps` recurrent steps, each thread
// multiplying its rows against the packed weights at once as the time loop does, and the window's
// input projection (timed on at most 1024 rows and scaled, to keep the timing short).
double window_seconds(const ProductShapes& shapes, Precision precision) {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> uniform(-0.1f, 0.1f);
    auto random = [&](Eigen::Index rows, Eigen::Index cols) {
        return Matrix<float>(Matrix<float>::NullaryExpr(rows, cols, [&] { return uniform(rng); }));
    };
    const Eigen::Index H = shapes.hidden, GH = Eigen::Index{shapes.gates} * shapes.hidden;
    const Matrix<float> weight = random(GH, H);
    PackedMatrix<float> packed;
    packed.pack(weight, Transpose::yes, 0, precision);
    const double budget = 0.015;
    double seconds = 0;
    if (shapes.window_rows == 0) {  // one step of a few rows: the product splits the panels among the threads
        const Matrix<float> hidden = random(shapes.rows, H);
        Matrix<float> gates(shapes.rows, GH);
        seconds = least_seconds([&] { packed.multiply(hidden, 0.0f, gates); }, budget);
        return seconds * std::max(1, shapes.steps);
    }
    const int threads = std::max(1, omp_get_max_threads());
    const Matrix<float> hidden = random(shapes.rows * threads, H);
    Matrix<float> gates(shapes.rows * threads, GH);
    seconds = least_seconds([&] {
#pragma omp parallel num_threads(threads)
        {
            const Eigen::Index first = Eigen::Index{omp_get_thread_num()} * shapes.rows;
            packed.multiply(hidden.middleRows(first, shapes.rows), 1.0f, gates.middleRows(first, shapes.rows));
        }
    }, budget) * shapes.steps;
    const Eigen::Index projected_rows = std::min(shapes.window_rows, 1024);
    const Matrix<float> input = random(projected_rows, H);
    Matrix<float> projection(projected_rows, GH);
    seconds += least_seconds([&] { gemm<float>(input, Transpose::no, weight, Transpose::yes, 0.0f, projection, precision); }, budget) *
               static_cast<double>(shapes.window_rows) / static_cast<double>(projected_rows);
    return seconds;
}

}  // namespace

ProductTimes time_products(const ProductShapes& shapes) {
    // On a thread of its own that ends with the timing, with the caller's OpenMP settings. OpenMP keeps a pool
    // of workers for every thread that has entered a parallel region, and a pool left idle counts against the
    // cores: libgomp then stops spinning between regions and sleeps, and a server, whose decoders run on threads
    // of their own, served one stream of a 2x256 LSTM at 15k characters a second where it served 37k.
    const int threads = omp_get_max_threads();
    const int dynamic = omp_get_dynamic();
    ProductTimes times{1e30, 1e30};
    std::exception_ptr failure;
    std::thread timing([&] {
        try {
            omp_set_dynamic(dynamic);
            omp_set_num_threads(threads);
            // In turns, the least of each: a neighbour's burst then slows one turn of one precision, not the comparison.
            for (int turn = 0; turn < 3; ++turn) {
                times.fp32_seconds = std::min(times.fp32_seconds, window_seconds(shapes, Precision::fp32));
                times.bf16_seconds = std::min(times.bf16_seconds, window_seconds(shapes, Precision::bf16));
            }
        } catch (...) {
            failure = std::current_exception();
        }
    });
    timing.join();
    if (failure) std::rethrow_exception(failure);
    return times;
}

PrecisionDecision decide_precision(PrecisionChoice choice, const ProductShapes& shapes, const ProductTimer& timer) {
    if (choice == PrecisionChoice::fp32) return {Precision::fp32, "fp32, as --precision fp32 asks"};
    check_precision_runs_here(choice);
    if (choice == PrecisionChoice::bf16) return {Precision::bf16, "bf16, as --precision bf16 asks"};
    const bool runs_bf16 = cpu_runs_bf16();
    if (!runs_bf16 && bf16_setting() == Bf16Setting::emulate)
        return {Precision::fp32, "fp32: bf16 products would run on their emulation (CHARLM_BF16=emulate), slower than fp32's"};
    if (!runs_bf16) return {Precision::fp32, "fp32: this CPU has no bf16 instructions (AVX512_BF16)"};
    // Below this the products are a small part of the work, and a timing this short could go either way.
    if (shapes.hidden < kLeastBf16Hidden)
        return {Precision::fp32, fmt::format("fp32: a hidden size under {} gains too little from bf16 products to time", kLeastBf16Hidden)};
    const ProductTimes times = timer(shapes);
    const double speedup = times.bf16_seconds > 0 ? times.fp32_seconds / times.bf16_seconds : 0;
    // A tenth to spare: bf16 rounds the products, which is only worth it for a clear gain.
    const Precision precision = speedup >= 1.1 ? Precision::bf16 : Precision::fp32;
    return {precision,
            fmt::format("{}: bf16 products timed {:.2f}x fp32's speed on these shapes ({:.3g} ms against {:.3g} ms{})",
                                   to_string(precision), speedup, times.bf16_seconds * 1e3, times.fp32_seconds * 1e3,
                                   shapes.window_rows ? " a window" : " a step"),
            true};
}

}  // namespace charlm
