// The precision of the matrix products (fp32, or bf16 inputs with fp32 sums), as a user asks for it and as a run decides it.
#pragma once

#include <functional>
#include <string>

#include "charlm/model_config.hpp"

namespace charlm {

// What the products multiply: fp32 throughout, or operands rounded to bf16 (to nearest, ties to even)
// and summed in fp32. Everything else (weights, Adam's moments, the average, states, nonlinearities,
// losses, checkpoints) stays fp32 at either: a checkpoint never records or depends on it.
enum class Precision { fp32, bf16 };
// What --precision asks for: one of them, or `automatic` (auto): bf16 where the CPU has the
// instructions and a short timing on the run's own shapes finds it faster, else fp32.
enum class PrecisionChoice { automatic, fp32, bf16 };

std::string to_string(Precision precision);
std::string to_string(PrecisionChoice choice);
Precision parse_precision(const std::string& name);               // fp32 or bf16; throws Error for others (a bad file)
PrecisionChoice parse_precision_choice(const std::string& name);  // auto, fp32 or bf16; throws UsageError for others

// Whether this CPU (and its operating system) runs AVX512_BF16's dot products, and the kernels in use
// take them (CHARLM_KERNELS=avx512bf16, or unset). CHARLM_BF16=0 in the environment makes it say no,
// so that a bf16 machine can show what a machine without them does.
bool cpu_runs_bf16();
// Whether --precision bf16 runs here: cpu_runs_bf16(), or CHARLM_BF16=emulate in the environment, which
// runs the bf16 products on their emulation (the same roundings, much slower) on any CPU, for tests and
// for checking a bf16 run on a machine without the instructions. auto never picks the emulation.
bool bf16_runs_here();
// The level of the hot kernels in use (src/nn/kernels.hpp: sse2, avx2, avx512, avx512bf16 on x86-64),
// compiled for it and chosen from the CPU at the first call, or CHARLM_KERNELS's; throws UsageError where
// CHARLM_KERNELS names no level or one this CPU lacks. And the same with why, for bench's notes:
// "avx512bf16, the best this CPU runs (of sse2, avx2, avx512, avx512bf16)".
std::string kernels_in_use();
std::string kernels_in_use_and_why();
// Throws UsageError, saying why, where `choice` is bf16 and !bf16_runs_here(): a command checks it
// before it does anything else, and decide_precision() again.
void check_precision_runs_here(PrecisionChoice choice);

// The shapes a decision times: a window's `steps` recurrent products, each thread's rows x hidden by
// hidden x G*hidden against packed weights, and its projection, window_rows x hidden by hidden x G*hidden.
struct ProductShapes {
    int rows = 32;           // the streams one thread multiplies at a step (batch / threads, at least 1)
    int hidden = 256;
    int gates = 4;           // G
    int steps = 100;         // T
    int window_rows = 6400;  // T*B; 0 where a run steps one character at a time (sampling, serving)
};
// For windows of `steps` x `batch` (steps 1: one character at a time) on omp_get_max_threads() threads.
ProductShapes product_shapes(const ModelConfig& config, int batch, int steps);

// Seconds per product at each precision, as the timing measured them: fp32's and bf16's.
struct ProductTimes {
    double fp32_seconds = 0, bf16_seconds = 0;
};
// How decide_precision() times: the real one multiplies at each precision for a few milliseconds each.
using ProductTimer = std::function<ProductTimes(const ProductShapes&)>;
ProductTimes time_products(const ProductShapes& shapes);

struct PrecisionDecision {
    Precision precision = Precision::fp32;
    std::string reason;  // a clause for the log: "bf16: bf16 products timed 1.87x fp32's speed on these shapes (...)"
    bool timed = false;  // whether a timing decided it
};
// fp32 and bf16 are taken as asked (bf16 where !bf16_runs_here() is a UsageError naming
// why); automatic picks bf16 only where cpu_runs_bf16(), the hidden size is 128 or more, and `timer`
// finds bf16's products faster, by at least 10%, on `shapes`.
PrecisionDecision decide_precision(PrecisionChoice choice, const ProductShapes& shapes, const ProductTimer& timer = time_products);

}  // namespace charlm
