// bf16 products with fp32 sums: rounding to bf16, the packed small-batch kernel (AVX512_BF16's
// vdpbf16ps, and a plain emulation of it that runs on every CPU), and the large products through
// oneDNN's bf16 matmul. gemm() and PackedMatrix (gemm.hpp) send Precision::bf16 here.
#pragma once

#include <cstdint>
#include <vector>

#include <Eigen/Core>

#include "gemm.hpp"

namespace charlm {

using Bf16Vector = KernelVector<std::uint16_t>;  // 64-byte aligned: the kernel loads panels aligned

// fp32 -> bf16, rounded to nearest with ties to even (a NaN stays a NaN), as vcvtne2ps2bf16 does.
inline std::uint16_t to_bf16(float value) {
    std::uint32_t bits;
    __builtin_memcpy(&bits, &value, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((bits >> 16) | 0x40);  // quiet NaN
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return static_cast<std::uint16_t>(bits >> 16);
}
inline float from_bf16(std::uint16_t value) {
    const std::uint32_t bits = std::uint32_t{value} << 16;
    float result;
    __builtin_memcpy(&result, &bits, sizeof result);
    return result;
}
inline float round_to_bf16(float value) { return from_bf16(to_bf16(value)); }

// Which kernels the bf16 products run: the CPU's instructions (the default where the kernels' level is
// avx512bf16, kernels.hpp), or
// the emulation, which rounds the operands the same way and sums their products in fp32 in the order
// vdpbf16ps does. The tests switch between them to compare; sets the kernels and returns the previous.
enum class Bf16Kernels { hardware, emulated };
Bf16Kernels bf16_kernels();
Bf16Kernels set_bf16_kernels(Bf16Kernels kernels);

// c = op(a) * op(b) + beta * c with a and b rounded to bf16 and fp32 sums: oneDNN's bf16 matmul with
// the hardware kernels; with the emulated ones (or without oneDNN), a and b rounded, then gemm() in fp32.
void gemm_bf16(ConstMatrixRef<float> a, Transpose transpose_a, ConstMatrixRef<float> b, Transpose transpose_b, float beta,
               MatrixRef<float> c);

// A float matrix's rows rounded to bf16, each padded to an even length (`stride` apart) as
// multiply_bf16_panel() reads pairs. Rounded once for the several products that read them: a window's gate
// gradients are the operand of each recurrent step's product and of three weight-gradient products after
// the time loop.
struct Bf16Rows {
    Bf16Vector values;
    Eigen::Index rows = 0, cols = 0, stride = 0;
    void resize(Eigen::Index rows, Eigen::Index cols);
    // Rows first .. first + x.rows() - 1 become x's, rounded as every bf16 product rounds its operands.
    void round_rows(ConstMatrixRef<float> x, Eigen::Index first);
};

// Rows first .. first + count - 1 of a Bf16Rows, as an operand.
struct Bf16RowsRef {
    const std::uint16_t* data = nullptr;
    Eigen::Index rows = 0, cols = 0, stride = 0;
};
Bf16RowsRef middle_rows(const Bf16Rows& rounded, Eigen::Index first, Eigen::Index count);
// Columns first .. first + count - 1 of every row, as an operand (the same stride).
Bf16RowsRef middle_cols(const Bf16Rows& rounded, Eigen::Index first, Eigen::Index count);
// out(c, r) = in(r, c): in's rows become columns first .. first + in.rows - 1 of out, whose rows are in's
// columns (out.rows == in.cols). A layer's outputs transposed as the time loop leaves them: oneDNN's bf16
// matmul runs a weight gradient 1.13x faster with its depth (the steps) along the rows of its left operand.
void transpose_bf16(Bf16RowsRef in, Bf16Rows& out, Eigen::Index first);
// y += x^T, split among the threads (a weight gradient made transposed, added where it lies).
void add_transpose(ConstMatrixRef<float> x, MatrixRef<float> y);
// y += (a b)^T: a weight gradient (G*H, I) = (G*H, T*B) . (T*B, I) as a (I, T*B) . (T*B, G*H), a being the
// input transposed (transpose_bf16) and b the gate gradients as they lie.
void add_product_transposed(Bf16RowsRef a, Bf16RowsRef b, MatrixRef<float> y);

// gemm_bf16() with a already rounded: the same bits as gemm_bf16() on the float matrix a was rounded from.
void gemm_bf16(Bf16RowsRef a, Transpose transpose_a, ConstMatrixRef<float> b, Transpose transpose_b, float beta,
               MatrixRef<float> c);
// And with both rounded.
void gemm_bf16(Bf16RowsRef a, Transpose transpose_a, Bf16RowsRef b, Transpose transpose_b, float beta, MatrixRef<float> c);

// The packed layout of a K x N factor: panels of kBf16PanelWidth columns (zero-padded at the right
// edge), each ceil(K/2) rows of column pairs, b(2q, j) beside b(2q+1, j) (a zero row where K is odd),
// so that one 32-bit lane holds the pair that vdpbf16ps multiplies with a pair of a row of a.
constexpr Eigen::Index kBf16PanelWidth = 64;
void pack_bf16_panels(ConstMatrixRef<float> b, Transpose transpose_b, Bf16Vector& panels);

// rows x count of c (+)= rows of a (bf16, `stride` apart) times one panel of `pairs` pairs. Each row is
// summed in the same order whatever the other rows are, so that every row comes out as if alone.
void multiply_bf16_panel(const std::uint16_t* a, Eigen::Index stride, Eigen::Index rows, const std::uint16_t* panel,
                         Eigen::Index pairs, bool accumulate, float* c, Eigen::Index ldc, Eigen::Index count);

}  // namespace charlm
