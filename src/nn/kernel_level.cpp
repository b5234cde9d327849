// One instruction set's kernels (kernels.hpp): the packed product's panel kernels, every cell's
// elementwise step and the other passes hot in training (the table's gradient, the loss, Adam),
// compiled once per level with its -m flags (CMakeLists.txt names the level in CHARLM_KERNEL_LEVEL
// and the namespace in CHARLM_KERNEL_NAMESPACE).
//
// Eigen is renamed in this file (the macro below, before any Eigen header), so that its inline
// functions and templates compiled here are this level's own symbols: were they Eigen's, the linker
// would keep one copy of each for the whole binary, perhaps the AVX-512 one, and an AVX2 machine
// would die on it in the baseline's code. Nothing here may include a header that uses Eigen under its
// own name (gemm.hpp, charlm/tensor.hpp): what crosses to the rest is kernels.hpp's pointers and sizes.
#ifndef CHARLM_KERNEL_LEVEL
#error "kernel_level.cpp is compiled once per level, with CHARLM_KERNEL_LEVEL and CHARLM_KERNEL_NAMESPACE (CMakeLists.txt)"
#endif
#define CHARLM_PASTE_NAMES(first, second) first##second
#define CHARLM_LEVEL_NAME(prefix, level) CHARLM_PASTE_NAMES(prefix, level)
#define Eigen CHARLM_LEVEL_NAME(Eigen_, CHARLM_KERNEL_LEVEL)

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <utility>

#include <Eigen/Core>

#include "cell_units.hpp"
#include "cells/gru.hpp"
#include "cells/lstm.hpp"
#include "cells/rnn.hpp"
#include "kernels.hpp"

namespace charlm::CHARLM_KERNEL_NAMESPACE {

namespace {

// ---- the packed product (gemm.hpp's PackedMatrix) ------------------------------------------------

// Eigen's SIMD packet for the scalar (16 floats with AVX-512, 8 with AVX2, 4 with SSE) and the block
// that multiply_block() keeps in registers: kBlockRows rows of c by kPanelPackets packets, the width of
// a panel. Each step of its depth loop loads kPanelPackets packets of the panel and kBlockRows
// broadcasts of a for kPanelPackets * kBlockRows multiply-adds: with AVX-512's 32 registers, 6 x 4
// (24 accumulators, 10 loads per 24 FMAs) measured 5-15% faster than 8 x 2 (16 accumulators, 10 loads
// per 16 FMAs) on 3x512 and 2x128, where the loads from L1 and L2 were the limit. With x86's 16 registers
// (AVX2, SSE2), 8 x 2's 16 accumulators left none for the broadcast, and the compiler spilled: 6 x 2 (12
// accumulators, 2 panel packets, a broadcast) trained 2x256 1.15-1.25x as fast and evaluated it 1.35x on a
// Zen 3 without AVX-512. arm64's NEON (32 registers) keeps the 8 x 2 it was measured with.
template <typename Scalar>
using Packet = typename Eigen::internal::packet_traits<Scalar>::type;
template <typename Scalar>
constexpr Eigen::Index kPacketSize = Eigen::internal::unpacket_traits<Packet<Scalar>>::size;
#ifdef __AVX512F__
constexpr int kPanelPackets = 4;
constexpr Eigen::Index kBlockRows = 6;
constexpr int kVectorRegisters = 32;
#elif defined(__x86_64__)
constexpr int kPanelPackets = 2;
constexpr Eigen::Index kBlockRows = 6;
constexpr int kVectorRegisters = 16;
#else
constexpr int kPanelPackets = 2;
constexpr Eigen::Index kBlockRows = 8;
constexpr int kVectorRegisters = 16;
#endif
template <typename Scalar>
constexpr Eigen::Index kPanelWidth = kPanelPackets * kPacketSize<Scalar>;

// rows x kPanelWidth of c (+)= rows x K of a times one K x kPanelWidth panel: the accumulators stay in
// registers for the whole K loop. `count` < kPanelWidth at the right edge of c.
// An FMA waits on the previous one into the same accumulator, so a block of few rows may also split
// the depth among several accumulators each, for this many independent chains in all. With AVX2, 8
// keep both FMA units busy. With AVX-512, a row alone has 4 (one per packet) and is kept at that: a
// product of one row (sampling) is limited by reading the weights, and 2x256 and 3x512 sampled as fast
// with 4 chains as with 8; in exchange every block size sums a row in the same order, so that rows
// summed as if alone (serving) use the tall blocks that read the panel least.
#ifdef __AVX512F__
constexpr int kChainsWanted = 4;
#else
constexpr int kChainsWanted = 8;
#endif
constexpr int chains_for_rows(int rows) {
    return rows * kPanelPackets >= kChainsWanted ? 1 : (kChainsWanted + rows * kPanelPackets - 1) / (rows * kPanelPackets);
}
// RowSums::as_if_alone: every block sums with one row's chains, so its blocks are only as tall as the
// registers allow beside the panel's packets and a broadcast (AVX-512: 6 rows x 4 packets x 1 chain,
// the same kernels as `fastest`; AVX2: 1 row x 2 packets x 4 chains).
constexpr int kAloneChains = chains_for_rows(1);
constexpr Eigen::Index kAloneBlockRows = std::min<Eigen::Index>(kBlockRows, std::max(1, (kVectorRegisters - kPanelPackets - 2) / (kPanelPackets * kAloneChains)));

template <typename Scalar, int Rows, int Chains>
void multiply_block(const Scalar* a, Eigen::Index lda, const Scalar* panel, Eigen::Index depth, bool accumulate,
                    Scalar* c, Eigen::Index ldc, Eigen::Index count) {
    using namespace Eigen::internal;
    using P = Packet<Scalar>;
    constexpr Eigen::Index size = kPacketSize<Scalar>;
    constexpr int N = kPanelPackets;
    P sums[Chains][Rows][N];
    for (int chain = 0; chain < Chains; ++chain)
        for (int r = 0; r < Rows; ++r)
            for (int n = 0; n < N; ++n) sums[chain][r][n] = pset1<P>(Scalar(0));
    auto step = [&](int chain, Eigen::Index k) {
        P right[N];
        for (int n = 0; n < N; ++n) right[n] = pload<P>(panel + n * size);
        panel += N * size;
        for (int r = 0; r < Rows; ++r) {
            const P left = pset1<P>(a[r * lda + k]);
            for (int n = 0; n < N; ++n) sums[chain][r][n] = pmadd(left, right[n], sums[chain][r][n]);
        }
    };
    Eigen::Index k = 0;
    for (; k + Chains <= depth; k += Chains)
        for (int chain = 0; chain < Chains; ++chain) step(chain, k + chain);
    for (; k < depth; ++k) step(0, k);
    for (int chain = 1; chain < Chains; ++chain)
        for (int r = 0; r < Rows; ++r)
            for (int n = 0; n < N; ++n) sums[0][r][n] = padd(sums[0][r][n], sums[chain][r][n]);
    for (int r = 0; r < Rows; ++r) {
        Scalar* out = c + r * ldc;
        if (count == N * size) {
            for (int n = 0; n < N; ++n) {
                if (accumulate) sums[0][r][n] = padd(sums[0][r][n], ploadu<P>(out + n * size));
                pstoreu(out + n * size, sums[0][r][n]);
            }
        } else {
            alignas(64) std::array<Scalar, N * size> edge;
            for (int n = 0; n < N; ++n) pstore(edge.data() + n * size, sums[0][r][n]);
            for (Eigen::Index j = 0; j < count; ++j) out[j] = accumulate ? out[j] + edge[j] : edge[j];
        }
    }
}

template <typename Scalar>
using BlockFunction = void (*)(const Scalar*, Eigen::Index, const Scalar*, Eigen::Index, bool, Scalar*, Eigen::Index,
                               Eigen::Index);

// Every row of a against one panel, in blocks of at most kBlockRows rows made as even as possible (25
// rows at 8: 7, 6, 6, 6, not 8, 8, 8, 1), so that the panel stays in cache while a streams past it.
// Where the rows are enough for one chain each, every block sums with one, a short block too (7 rows at
// 6 are 4 and 3, and 3 alone would take 2): a row's sums then take the same order whatever the blocks.
template <typename Scalar>
void multiply_panel(const Scalar* a, std::ptrdiff_t lda, std::ptrdiff_t rows, const Scalar* panel, std::ptrdiff_t depth,
                    bool accumulate, Scalar* c, std::ptrdiff_t ldc, std::ptrdiff_t count, bool as_if_alone) {
    static constexpr auto kernels = []<std::size_t... Rows>(std::index_sequence<Rows...>) {
        return std::array<BlockFunction<Scalar>, kBlockRows + 1>{
            nullptr, multiply_block<Scalar, static_cast<int>(Rows) + 1, chains_for_rows(static_cast<int>(Rows) + 1)>...};
    }(std::make_index_sequence<kBlockRows>{});
    static constexpr auto one_chain_kernels = []<std::size_t... Rows>(std::index_sequence<Rows...>) {
        return std::array<BlockFunction<Scalar>, kBlockRows + 1>{nullptr, multiply_block<Scalar, static_cast<int>(Rows) + 1, 1>...};
    }(std::make_index_sequence<kBlockRows>{});
    static constexpr auto alone_kernels = []<std::size_t... Rows>(std::index_sequence<Rows...>) {
        return std::array<BlockFunction<Scalar>, kAloneBlockRows + 1>{nullptr, multiply_block<Scalar, static_cast<int>(Rows) + 1, kAloneChains>...};
    }(std::make_index_sequence<kAloneBlockRows>{});
    const Eigen::Index most_rows = as_if_alone ? kAloneBlockRows : kBlockRows;
    const Eigen::Index blocks = (rows + most_rows - 1) / most_rows;
    const bool one_chain = rows > 0 && chains_for_rows(static_cast<int>(std::min<Eigen::Index>(rows, kBlockRows))) == 1;
    for (Eigen::Index block = 0, row = 0; block < blocks; ++block) {
        const Eigen::Index block_rows = rows / blocks + (block < rows % blocks ? 1 : 0);
        const BlockFunction<Scalar> kernel = as_if_alone ? alone_kernels[block_rows]
                                             : one_chain ? one_chain_kernels[block_rows]
                                                         : kernels[block_rows];
        kernel(a + row * lda, lda, panel, depth, accumulate, c + row * ldc, ldc, count);
        row += block_rows;
    }
}

// ---- the cells' elementwise steps (cells/*.hpp), a row at a time ----------------------------------

template <typename Cell, typename Scalar>
void cell_forward(const RowArrays<Scalar>& row) {
    for_each_chunk_of(row, [](const auto& units) { Cell::forward(units); });
}

template <typename Cell, typename Scalar>
void cell_backward(const RowArrays<Scalar>& row) {
    for_each_chunk_of(row, [](const auto& units) { Cell::backward(units); });
}

// ---- the passes around the products that are hot in training: the table's gradient, the loss, Adam ----

template <typename Scalar>
using ArrayMap = Eigen::Map<Eigen::Array<Scalar, Eigen::Dynamic, 1>>;
template <typename Scalar>
using ConstArrayMap = Eigen::Map<const Eigen::Array<Scalar, Eigen::Dynamic, 1>>;

template <typename Scalar>
void add(Scalar* destination, const Scalar* source, std::ptrdiff_t count) {
    ArrayMap<Scalar>(destination, count) += ConstArrayMap<Scalar>(source, count);
}

template <typename Scalar>
Scalar softmax_cross_entropy(const Scalar* logits, Scalar* probabilities, std::ptrdiff_t count, std::ptrdiff_t target) {
    const ConstArrayMap<Scalar> l(logits, count);
    ArrayMap<Scalar> p(probabilities, count);
    const Scalar max_logit = l.maxCoeff();
    p = (l - max_logit).exp();
    const Scalar partition = p.sum();
    p /= partition;
    return std::log(partition) + max_logit - logits[target];
}

bool adam(const AdamChunk& chunk) {
    const ConstArrayMap<float> g(chunk.gradient, chunk.count);
    ArrayMap<float> m(chunk.first_moment, chunk.count), v(chunk.second_moment, chunk.count), w(chunk.value, chunk.count);
    m = chunk.beta1 * m + (1 - chunk.beta1) * g;
    v = chunk.beta2 * v + (1 - chunk.beta2) * g.square();
    w -= chunk.step_size * m / (v.sqrt() / chunk.root_correction2 + chunk.epsilon);
    return w.isFinite().all() && v.isFinite().all();
}

template <typename Scalar>
constexpr ScalarKernels<Scalar> scalar_kernels() {
    ScalarKernels<Scalar> kernels;
    kernels.panel_width = kPanelWidth<Scalar>;
    kernels.multiply_panel = &multiply_panel<Scalar>;
    kernels.lstm = {&cell_forward<Lstm, Scalar>, &cell_backward<Lstm, Scalar>};
    kernels.gru = {&cell_forward<Gru, Scalar>, &cell_backward<Gru, Scalar>};
    kernels.rnn = {&cell_forward<Rnn, Scalar>, &cell_backward<Rnn, Scalar>};
    kernels.add = &add<Scalar>;
    kernels.softmax_cross_entropy = &softmax_cross_entropy<Scalar>;
    return kernels;
}

#define CHARLM_STRING(name) #name
#define CHARLM_NAME_OF(level) CHARLM_STRING(level)

}  // namespace

// The dispatcher (kernels.cpp) declares it, one per level.
extern const KernelSet kernel_set;
const KernelSet kernel_set = {CHARLM_NAME_OF(CHARLM_KERNEL_LEVEL), false, scalar_kernels<float>(), scalar_kernels<double>(), &adam};

}  // namespace charlm::CHARLM_KERNEL_NAMESPACE
