// GEMM through oneDNN or Eigen, and the packed small-batch product of the time loops.
#include "gemm.hpp"
#include "gemm_bf16.hpp"

#include <algorithm>
#include <array>
#include <utility>

#include <omp.h>

#include "charlm/error.hpp"
#include "charlm/threads.hpp"

#ifdef CHARLM_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#endif

namespace charlm {

namespace {

template <typename Scalar>
void eigen_gemm(ConstMatrixRef<Scalar> a, Transpose transpose_a, ConstMatrixRef<Scalar> b, Transpose transpose_b,
                Scalar beta, MatrixRef<Scalar> c) {
    auto accumulate = [&](const auto& left, const auto& right) {
        if (beta == Scalar(0)) c.noalias() = left * right;
        else c.noalias() += left * right;
    };
    const bool ta = transpose_a == Transpose::yes, tb = transpose_b == Transpose::yes;
    if (ta && tb) accumulate(a.transpose(), b.transpose());
    else if (ta) accumulate(a.transpose(), b);
    else if (tb) accumulate(a, b.transpose());
    else accumulate(a, b);
}

}  // namespace

template <typename Scalar>
void gemm(ConstMatrixRef<Scalar> a, Transpose transpose_a, ConstMatrixRef<Scalar> b, Transpose transpose_b,
          Scalar beta, MatrixRef<Scalar> c, Precision precision) {
    if constexpr (std::is_same_v<Scalar, float>) {
        if (precision == Precision::bf16) return gemm_bf16(a, transpose_a, b, transpose_b, beta, c);
    }
    const bool ta = transpose_a == Transpose::yes, tb = transpose_b == Transpose::yes;
    const Eigen::Index m = ta ? a.cols() : a.rows(), k = ta ? a.rows() : a.cols(), n = tb ? b.rows() : b.cols();
    if ((tb ? b.cols() : b.rows()) != k || c.rows() != m || c.cols() != n) throw Error("gemm: shapes do not match");
    if (m == 0 || n == 0) return;
    if (k == 0) {
        if (beta == Scalar(0)) c.setZero();
        return;
    }
#ifdef CHARLM_HAVE_ONEDNN
    // oneDNN's sgemm splits the work for the team it asks for and leaves the parts of threads that
    // never start undone; where OpenMP might give fewer, Eigen's GEMM, which copes, does the product.
    if constexpr (std::is_same_v<Scalar, float>) {
        if (full_teams_guaranteed()) {
            // dnnl_sgemm takes row-major operands, as ours are.
            const dnnl_status_t status =
                dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, 1.0f, a.data(), a.outerStride(), b.data(),
                           b.outerStride(), beta, c.data(), c.outerStride());
            if (status != dnnl_success) throw Error("oneDNN's sgemm failed");
            return;
        }
    }
#endif
    eigen_gemm<Scalar>(a, transpose_a, b, transpose_b, beta, c);
}

template <typename Scalar>
void column_sums(ConstMatrixRef<Scalar> a, Scalar beta, MatrixRef<Scalar> sums) {
    thread_local Matrix<Scalar> ones;
    if (ones.cols() < a.rows()) ones.setOnes(1, a.rows());
    gemm<Scalar>(ones.leftCols(a.rows()), Transpose::no, a, Transpose::no, beta, sums);
}

std::string gemm_backend() {
#ifdef CHARLM_HAVE_ONEDNN
    return "oneDNN";
#else
    return "Eigen";
#endif
}

// Eigen's SIMD packet for the scalar (16 floats with AVX-512, 8 with AVX2, 4 with SSE) and the block
// that multiply_block() keeps in registers: kBlockRows rows of c by kPanelPackets packets, the width of
// a panel. Each step of its depth loop loads kPanelPackets packets of the panel and kBlockRows
// broadcasts of a for kPanelPackets * kBlockRows multiply-adds: with AVX-512's 32 registers, 6 x 4
// (24 accumulators, 10 loads per 24 FMAs) measured 5-15% faster than 8 x 2 (16 accumulators, 10 loads
// per 16 FMAs) on 3x512 and 2x128, where the loads from L1 and L2 were the limit; with 16 registers,
// 8 x 2 already fills them.
template <typename Scalar>
using Packet = typename Eigen::internal::packet_traits<Scalar>::type;
template <typename Scalar>
constexpr Eigen::Index kPacketSize = Eigen::internal::unpacket_traits<Packet<Scalar>>::size;
#ifdef __AVX512F__
constexpr int kPanelPackets = 4;
constexpr Eigen::Index kBlockRows = 6;
constexpr int kVectorRegisters = 32;
#else
constexpr int kPanelPackets = 2;
constexpr Eigen::Index kBlockRows = 8;
constexpr int kVectorRegisters = 16;
#endif
template <typename Scalar>
constexpr Eigen::Index kPanelWidth = kPanelPackets * kPacketSize<Scalar>;

template <typename Scalar>
void PackedMatrix<Scalar>::pack(ConstMatrixRef<Scalar> b, Transpose transpose_b, std::uint64_t version, Precision precision) {
    const bool tb = transpose_b == Transpose::yes;
    version_ = version;
    precision_ = precision_of(precision);
    rows_ = tb ? b.cols() : b.rows();
    cols_ = tb ? b.rows() : b.cols();
    if constexpr (std::is_same_v<Scalar, float>) {
        if (precision_ == Precision::bf16) {
            pack_bf16_panels(b, transpose_b, bf16_panels_);
            return;
        }
    }
    constexpr Eigen::Index width = kPanelWidth<Scalar>;
    const Eigen::Index panels = (cols_ + width - 1) / width;
    panels_.resize(static_cast<std::size_t>(panels * rows_ * width));
    for (Eigen::Index panel = 0; panel < panels; ++panel) {
        Scalar* out = panels_.data() + panel * rows_ * width;
        const Eigen::Index first = panel * width, count = std::min(width, cols_ - first);
        for (Eigen::Index k = 0; k < rows_; ++k, out += width) {
            for (Eigen::Index j = 0; j < count; ++j) out[j] = tb ? b(first + j, k) : b(k, first + j);
            std::fill(out + count, out + width, Scalar(0));
        }
    }
}

namespace {

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
template <typename Scalar>
void multiply_panel(const Scalar* a, Eigen::Index lda, Eigen::Index rows, const Scalar* panel, Eigen::Index depth,
                    bool accumulate, Scalar* c, Eigen::Index ldc, Eigen::Index count, RowSums sums) {
    static constexpr auto kernels = []<std::size_t... Rows>(std::index_sequence<Rows...>) {
        return std::array<BlockFunction<Scalar>, kBlockRows + 1>{
            nullptr, multiply_block<Scalar, static_cast<int>(Rows) + 1, chains_for_rows(static_cast<int>(Rows) + 1)>...};
    }(std::make_index_sequence<kBlockRows>{});
    static constexpr auto alone_kernels = []<std::size_t... Rows>(std::index_sequence<Rows...>) {
        return std::array<BlockFunction<Scalar>, kAloneBlockRows + 1>{nullptr, multiply_block<Scalar, static_cast<int>(Rows) + 1, kAloneChains>...};
    }(std::make_index_sequence<kAloneBlockRows>{});
    const bool alone = sums == RowSums::as_if_alone;
    const Eigen::Index most_rows = alone ? kAloneBlockRows : kBlockRows;
    const Eigen::Index blocks = (rows + most_rows - 1) / most_rows;
    for (Eigen::Index block = 0, row = 0; block < blocks; ++block) {
        const Eigen::Index block_rows = rows / blocks + (block < rows % blocks ? 1 : 0);
        const BlockFunction<Scalar> kernel = alone ? alone_kernels[block_rows] : kernels[block_rows];
        kernel(a + row * lda, lda, panel, depth, accumulate, c + row * ldc, ldc, count);
        row += block_rows;
    }
}

// Runs multiply_panels(first, end) over all `panels`. A product of `work` multiply-adds large enough, made outside a
// parallel region (sampling one stream), splits the panels among the threads, which changes no row's sums; the
// others do not even enter one, which costs a microsecond per call.
template <typename MultiplyPanels>
void over_panels(Eigen::Index panels, Eigen::Index work, const MultiplyPanels& multiply_panels) {
    if (omp_in_parallel() || omp_get_max_threads() == 1 || work < (Eigen::Index{1} << 18)) {
        multiply_panels(0, panels);
        return;
    }
#pragma omp parallel
    {
        const Eigen::Index share = omp_get_thread_num(), shares = omp_get_num_threads();
        multiply_panels(panels * share / shares, panels * (share + 1) / shares);
    }
}

}  // namespace

template <typename Scalar>
void PackedMatrix<Scalar>::multiply(ConstMatrixRef<Scalar> a, Scalar beta, MatrixRef<Scalar> c, RowSums sums) const {
    if (a.cols() != rows_ || c.rows() != a.rows() || c.cols() != cols_) throw Error("packed product: shapes do not match");
    if (precision_ == Precision::bf16) return multiply_bf16(a, beta, c);
    constexpr Eigen::Index width = kPanelWidth<Scalar>;
    const Eigen::Index panels = (cols_ + width - 1) / width;
    auto multiply_panels = [&](Eigen::Index first_panel, Eigen::Index end_panel) {
        for (Eigen::Index panel = first_panel; panel < end_panel; ++panel) {
            const Eigen::Index first = panel * width;
            multiply_panel(a.data(), a.outerStride(), a.rows(), panels_.data() + panel * rows_ * width, rows_,
                           beta != Scalar(0), c.data() + first, c.outerStride(), std::min(width, cols_ - first), sums);
        }
    };
    over_panels(panels, a.rows() * rows_ * cols_, multiply_panels);
}

// The bf16 form of multiply(): a's rows rounded once per call, then the panels as above, split among
// the threads the same way (which changes no row's sums: each row is summed alone).
template <typename Scalar>
void PackedMatrix<Scalar>::multiply_bf16(ConstMatrixRef<Scalar> a, Scalar beta, MatrixRef<Scalar> c) const {
    if constexpr (std::is_same_v<Scalar, float>) {
        thread_local Bf16Vector rounded;
        Eigen::Index stride = 0;
        round_rows_to_bf16(a, rounded, stride);
        const Eigen::Index pairs = (rows_ + 1) / 2, panels = (cols_ + kBf16PanelWidth - 1) / kBf16PanelWidth;
        const std::uint16_t* left = rounded.data();
        auto multiply_panels = [&](Eigen::Index first_panel, Eigen::Index end_panel) {
            for (Eigen::Index panel = first_panel; panel < end_panel; ++panel) {
                const Eigen::Index first = panel * kBf16PanelWidth;
                multiply_bf16_panel(left, stride, a.rows(), bf16_panels_.data() + panel * pairs * 2 * kBf16PanelWidth, pairs,
                                    beta != 0.0f, c.data() + first, c.outerStride(), std::min(kBf16PanelWidth, cols_ - first));
            }
        };
        over_panels(panels, a.rows() * rows_ * cols_, multiply_panels);
    } else {
        throw Error("bf16 products are single precision's");
    }
}

template void gemm<float>(ConstMatrixRef<float>, Transpose, ConstMatrixRef<float>, Transpose, float, MatrixRef<float>, Precision);
template void gemm<double>(ConstMatrixRef<double>, Transpose, ConstMatrixRef<double>, Transpose, double, MatrixRef<double>, Precision);
template void column_sums<float>(ConstMatrixRef<float>, float, MatrixRef<float>);
template void column_sums<double>(ConstMatrixRef<double>, double, MatrixRef<double>);
template class PackedMatrix<float>;
template class PackedMatrix<double>;

}  // namespace charlm
