// The hot kernels, compiled once per instruction set and chosen at run time: one binary for every x86-64.
//
// kernel_level.cpp is built once per level (CMakeLists.txt: sse2, avx2 with FMA, avx512), each time with
// that level's -m flags, into a namespace of its own and with Eigen renamed to a namespace of its own,
// so that no inline function compiled for AVX-512 can be merged by the linker with the baseline's copy
// (tests/check_kernel_symbols.sh proves it on the objects). What crosses between levels is this
// header's: plain pointers and sizes, no Eigen type. The avx512bf16 level is avx512's kernels with the
// bf16 products' AVX512_BF16 instructions (gemm_bf16.cpp, which compiles them through target attributes).
#pragma once

#include <cstddef>
#include <new>
#include <string>
#include <vector>

namespace charlm {

// Fewer batch rows than this per thread and the packed product stops paying for a second thread. It
// also keeps every share at 4 rows or more, where a row's arithmetic does not depend on its share.
constexpr std::ptrdiff_t kMinRowsPerThread = 8;

// One row of one step: every array the cells read or write, by what it holds. The engine fills in
// the pointers a cell uses (by its traits) and leaves the others null.
template <typename Scalar>
struct RowArrays {
    std::ptrdiff_t hidden_size = 0;  // H
    Scalar* gates = nullptr;         // (G*H): x W_ih^T (+ h W_hh^T where the cell takes it in gates); see the cell
    Scalar* hidden_gates = nullptr;  // (G*H): h W_hh^T, for a cell that keeps it apart
    Scalar* hidden = nullptr;        // (H): h_t
    Scalar* cell = nullptr;          // (H): c_t
    Scalar* d_hidden_next = nullptr; // (H): dL/dh_t from step t+1 in, the part of dL/dh_{t-1} not through W_hh out
    Scalar* d_cell = nullptr;        // (H): dL/dc_t in, dL/dc_{t-1} out
    const Scalar* bias = nullptr;    // (G*H): b_ih + b_hh
    const Scalar* bias_ih = nullptr; // (G*H)
    const Scalar* bias_hh = nullptr; // (G*H)
    const Scalar* hidden_prev = nullptr;  // (H): h_{t-1}
    const Scalar* cell_prev = nullptr;    // (H): c_{t-1}
    const Scalar* d_output = nullptr;     // (H): dL/dh_t from the layer above
};

// A cell's elementwise step of one row, forward and backward (cells/*.hpp, in chunks of units).
template <typename Scalar>
struct CellKernels {
    void (*forward)(const RowArrays<Scalar>& row) = nullptr;
    void (*backward)(const RowArrays<Scalar>& row) = nullptr;
};

// One level's kernels for one scalar type.
template <typename Scalar>
struct ScalarKernels {
    // The packed product's panels (gemm.hpp's PackedMatrix) are this many columns wide: a few SIMD registers.
    std::ptrdiff_t panel_width = 0;
    // rows x count of c (+)= rows of a (`lda` apart) times one panel of `depth` rows (gemm.cpp). as_if_alone:
    // every row summed in the order of a row alone (RowSums::as_if_alone).
    void (*multiply_panel)(const Scalar* a, std::ptrdiff_t lda, std::ptrdiff_t rows, const Scalar* panel, std::ptrdiff_t depth,
                           bool accumulate, Scalar* c, std::ptrdiff_t ldc, std::ptrdiff_t count, bool as_if_alone) = nullptr;
    CellKernels<Scalar> lstm, gru, rnn;
    // destination[0..count) += source[0..count): a row's gradient summed into its token's (the input projection's table).
    void (*add)(Scalar* destination, const Scalar* source, std::ptrdiff_t count) = nullptr;
    // probabilities[0..count) = softmax(logits[0..count)); returns the cross-entropy of `target`,
    // log(sum exp(logits - max)) + max - logits[target] (the model's loss, a row at a time).
    Scalar (*softmax_cross_entropy)(const Scalar* logits, Scalar* probabilities, std::ptrdiff_t count, std::ptrdiff_t target) = nullptr;
};

// One chunk of Adam's update (optim.cpp), in its arrays and coefficients.
struct AdamChunk {
    float* value = nullptr;
    float* first_moment = nullptr;
    float* second_moment = nullptr;
    const float* gradient = nullptr;
    std::ptrdiff_t count = 0;
    float beta1 = 0, beta2 = 0, step_size = 0, root_correction2 = 1, epsilon = 0;
};

// A level: its name (what CHARLM_KERNELS takes and bench prints), its kernels, and whether its bf16
// products run on AVX512_BF16's instructions (else on their emulation, gemm_bf16.hpp).
struct KernelSet {
    const char* name = "";
    bool bf16_instructions = false;
    ScalarKernels<float> float_kernels;
    ScalarKernels<double> double_kernels;
    // Adam's update of one chunk: the moments, then the values; whether the values and the second moments
    // came out finite.
    bool (*adam)(const AdamChunk& chunk) = nullptr;

    template <typename Scalar>
    const ScalarKernels<Scalar>& of() const {
        if constexpr (sizeof(Scalar) == sizeof(float)) return float_kernels;
        else return double_kernels;
    }
};

// The kernels in use: the level CHARLM_KERNELS names, else the best this CPU runs. Chosen on the first
// call; throws UsageError (one line) where CHARLM_KERNELS names no level, or one this CPU lacks. The
// command line calls it before a command does any work, so that the refusal comes first.
const KernelSet& kernels();

// What CHARLM_BF16 asks of the bf16 products: the CPU's instructions where it has them (unset or empty),
// none (0: as a CPU without AVX512_BF16 answers, so that a bf16 machine shows what others do), or their
// emulation on any CPU (emulate: as 0, but --precision bf16 runs, slowly; for tests and for checking on a
// machine without the instructions what a bf16 run does). Throws UsageError where it names none of them.
enum class Bf16Setting { instructions, none, emulate };
Bf16Setting bf16_setting();

// The levels this build has, from the least to the best; and those of them this CPU runs (CHARLM_BF16=0
// or emulate takes avx512bf16 away, as from a CPU without AVX512_BF16).
std::vector<std::string> kernel_levels_built();
std::vector<std::string> kernel_levels_this_cpu_runs();

// The level to use, given what CHARLM_KERNELS asks (null or empty: nothing) and the levels the CPU runs
// (the least first): the best it runs, or the one asked for. Throws UsageError where the name is no
// level, or names one the CPU lacks. kernels() applies it to this CPU; the tests, to CPUs they make up.
std::string choose_kernel_level(const char* requested, const std::vector<std::string>& levels_the_cpu_runs);

// Storage aligned for any level's widest packet (64 bytes: AVX-512), whatever the code that allocates
// it was compiled for: a portable build's Eigen aligns to 16 only, and the kernels load panels aligned.
template <typename T>
struct KernelAllocator {
    using value_type = T;
    static constexpr std::align_val_t kAlignment{64};
    KernelAllocator() = default;
    template <typename U>
    KernelAllocator(const KernelAllocator<U>&) {}  // NOLINT: allocators convert
    T* allocate(std::size_t count) { return static_cast<T*>(::operator new(count * sizeof(T), kAlignment)); }
    void deallocate(T* pointer, std::size_t) { ::operator delete(pointer, kAlignment); }
    template <typename U>
    bool operator==(const KernelAllocator<U>&) const { return true; }
};
template <typename T>
using KernelVector = std::vector<T, KernelAllocator<T>>;

}  // namespace charlm
