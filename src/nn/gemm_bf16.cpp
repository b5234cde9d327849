// bf16 products: the packed kernel for vdpbf16ps and its emulation, and the large products through oneDNN's bf16 matmul.
//
// The kernel's intrinsics are compiled for AVX512_BF16 through target attributes, one function at a
// time, so that the binary still runs where the CPU lacks them: it only calls them at the avx512bf16
// level (kernels.hpp), and the emulation at every other.
#include "gemm_bf16.hpp"

#include <algorithm>
#include <array>
#include <map>
#include <tuple>
#include <utility>

#include <omp.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "charlm/error.hpp"
#include "charlm/precision.hpp"
#include "charlm/threads.hpp"

#ifdef CHARLM_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace charlm {

namespace {

Bf16Kernels& chosen_kernels() {
    static Bf16Kernels kernels = charlm::kernels().bf16_instructions ? Bf16Kernels::hardware : Bf16Kernels::emulated;
    return kernels;
}

// vdpbf16ps, as Intel's manual writes it: each fp32 lane adds the product of its odd pair, then of its
// even pair, each product exact in fp32 (8-bit significands) and each sum rounded to nearest even.
// Inputs that are subnormal count as zero (DAZ), as in the instruction; the weights and states of a
// trained network are nowhere near that small, so the emulation leaves the outputs' FTZ aside.
inline float bf16_operand(std::uint16_t value) { return (value & 0x7f80u) == 0 ? 0.0f : from_bf16(value); }

template <int Rows>
void emulated_block(const std::uint16_t* a, Eigen::Index stride, const std::uint16_t* panel, Eigen::Index pairs,
                    bool accumulate, float* c, Eigen::Index ldc, Eigen::Index count) {
    for (int r = 0; r < Rows; ++r) {
        std::array<float, kBf16PanelWidth> sums{};
        const std::uint16_t* row = a + r * stride;
        for (Eigen::Index q = 0; q < pairs; ++q) {
            const float odd = bf16_operand(row[2 * q + 1]), even = bf16_operand(row[2 * q]);
            const std::uint16_t* right = panel + q * 2 * kBf16PanelWidth;
            for (Eigen::Index j = 0; j < kBf16PanelWidth; ++j) {
                sums[j] += odd * bf16_operand(right[2 * j + 1]);
                sums[j] += even * bf16_operand(right[2 * j]);
            }
        }
        float* out = c + r * ldc;
        for (Eigen::Index j = 0; j < count; ++j) out[j] = accumulate ? sums[j] + out[j] : sums[j];
    }
}

#if defined(__x86_64__)
// Rows x 64 of c in 4 x Rows registers for the whole depth: each step loads 4 packets of the panel and
// broadcasts one pair of each row (6 x 4: 24 accumulators, 10 loads per 24 dot products, as fp32's kernel).
// One chain per packet and row, so a row's sums never depend on the block it is in.
template <int Rows>
__attribute__((target("avx512f,avx512bf16"))) void hardware_block(const std::uint16_t* a, Eigen::Index stride,
                                                                  const std::uint16_t* panel, Eigen::Index pairs, bool accumulate,
                                                                  float* c, Eigen::Index ldc, Eigen::Index count) {
    constexpr int N = kBf16PanelWidth / 16;
    __m512 sums[Rows][N];
    for (int r = 0; r < Rows; ++r)
        for (int n = 0; n < N; ++n) sums[r][n] = _mm512_setzero_ps();
    for (Eigen::Index q = 0; q < pairs; ++q, panel += 2 * kBf16PanelWidth) {
        __m512bh right[N];
        for (int n = 0; n < N; ++n) right[n] = (__m512bh)_mm512_load_si512(panel + n * 32);
        for (int r = 0; r < Rows; ++r) {
            std::int32_t pair;
            __builtin_memcpy(&pair, a + r * stride + 2 * q, sizeof pair);
            const __m512bh left = (__m512bh)_mm512_set1_epi32(pair);
            for (int n = 0; n < N; ++n) sums[r][n] = _mm512_dpbf16_ps(sums[r][n], left, right[n]);
        }
    }
    for (int r = 0; r < Rows; ++r) {
        float* out = c + r * ldc;
        if (count == kBf16PanelWidth) {
            for (int n = 0; n < N; ++n) {
                __m512 value = sums[r][n];
                if (accumulate) value = _mm512_add_ps(value, _mm512_loadu_ps(out + n * 16));
                _mm512_storeu_ps(out + n * 16, value);
            }
        } else {
            alignas(64) float edge[kBf16PanelWidth];
            for (int n = 0; n < N; ++n) _mm512_store_ps(edge + n * 16, sums[r][n]);
            for (Eigen::Index j = 0; j < count; ++j) out[j] = accumulate ? edge[j] + out[j] : edge[j];
        }
    }
}

// out[0..count) = in[0..count) rounded to bf16, 32 at a time with vcvtne2ps2bf16 (to nearest even, as
// to_bf16(); it flushes subnormal inputs to zero, which the products read as zero either way).
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void hardware_round(const float* in, std::uint16_t* out, Eigen::Index count) {
    Eigen::Index j = 0;
    for (; j + 32 <= count; j += 32) {
        const __m512bh rounded = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(in + j + 16), _mm512_loadu_ps(in + j));
        _mm512_storeu_si512(out + j, (__m512i)rounded);
    }
    if (j < count) {
        const Eigen::Index left = count - j;
        const __mmask16 low = static_cast<__mmask16>(left >= 16 ? 0xffff : (1u << left) - 1);
        const __mmask16 high = static_cast<__mmask16>(left <= 16 ? 0 : (1u << (left - 16)) - 1);
        const __m512bh rounded = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(high, in + j + 16), _mm512_maskz_loadu_ps(low, in + j));
        _mm512_mask_storeu_epi16(out + j, static_cast<__mmask32>((std::uint64_t{1} << left) - 1), (__m512i)rounded);
    }
}

// out's 16 rows (`out_stride` apart) = the 16 columns of in's 16 rows (`in_stride` apart): unpacks of 16-bit,
// 32-bit and 64-bit units within each 128-bit lane, then the lanes' halves put together.
__attribute__((target("avx2"))) void hardware_transpose_tile(const std::uint16_t* in, Eigen::Index in_stride, std::uint16_t* out,
                                                             Eigen::Index out_stride) {
    __m256i r[16], a[8], b[8], c[4], d[4], e[4], f[4];
    for (int i = 0; i < 16; ++i) r[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + i * in_stride));
    for (int i = 0; i < 8; ++i) {  // a: rows 2i, 2i+1 of elements 0-3 (8-11 in the upper lane); b: of 4-7 (12-15)
        a[i] = _mm256_unpacklo_epi16(r[2 * i], r[2 * i + 1]);
        b[i] = _mm256_unpackhi_epi16(r[2 * i], r[2 * i + 1]);
    }
    for (int j = 0; j < 4; ++j) {  // rows 4j .. 4j+3 of elements 0-1 (c), 2-3 (d), 4-5 (e), 6-7 (f), +8 above
        c[j] = _mm256_unpacklo_epi32(a[2 * j], a[2 * j + 1]);
        d[j] = _mm256_unpackhi_epi32(a[2 * j], a[2 * j + 1]);
        e[j] = _mm256_unpacklo_epi32(b[2 * j], b[2 * j + 1]);
        f[j] = _mm256_unpackhi_epi32(b[2 * j], b[2 * j + 1]);
    }
    const auto store = [&](int element, __m256i value) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + element * out_stride), value);
    };
    const __m256i* groups[4] = {c, d, e, f};
    for (int g = 0; g < 4; ++g) {
        const __m256i* x = groups[g];
        // rows 0-7 (x[0], x[1]) and 8-15 (x[2], x[3]) of element 2g (lo) and 2g+1 (hi), 2g+8 and 2g+9 above
        const __m256i lo0 = _mm256_unpacklo_epi64(x[0], x[1]), lo1 = _mm256_unpacklo_epi64(x[2], x[3]);
        const __m256i hi0 = _mm256_unpackhi_epi64(x[0], x[1]), hi1 = _mm256_unpackhi_epi64(x[2], x[3]);
        store(2 * g, _mm256_permute2x128_si256(lo0, lo1, 0x20));
        store(2 * g + 8, _mm256_permute2x128_si256(lo0, lo1, 0x31));
        store(2 * g + 1, _mm256_permute2x128_si256(hi0, hi1, 0x20));
        store(2 * g + 9, _mm256_permute2x128_si256(hi0, hi1, 0x31));
    }
}

#else
// Elsewhere (arm64) the kernels never run bf16 instructions (kernels.hpp): the emulation does every bf16 product.
template <int Rows>
void hardware_block(const std::uint16_t* a, Eigen::Index stride, const std::uint16_t* panel, Eigen::Index pairs, bool accumulate,
                    float* c, Eigen::Index ldc, Eigen::Index count) {
    emulated_block<Rows>(a, stride, panel, pairs, accumulate, c, ldc, count);
}
void hardware_round(const float* in, std::uint16_t* out, Eigen::Index count) {
    for (Eigen::Index j = 0; j < count; ++j) out[j] = to_bf16(in[j]);
}
void hardware_transpose_tile(const std::uint16_t* in, Eigen::Index in_stride, std::uint16_t* out, Eigen::Index out_stride) {
    for (int c = 0; c < 16; ++c)
        for (int r = 0; r < 16; ++r) out[c * out_stride + r] = in[r * in_stride + c];
}
#endif

void round_array(const float* in, std::uint16_t* out, Eigen::Index count) {
    if (chosen_kernels() == Bf16Kernels::hardware) return hardware_round(in, out, count);
    for (Eigen::Index j = 0; j < count; ++j) out[j] = to_bf16(in[j]);
}

using Bf16BlockFunction = void (*)(const std::uint16_t*, Eigen::Index, const std::uint16_t*, Eigen::Index, bool, float*,
                                   Eigen::Index, Eigen::Index);
constexpr Eigen::Index kBf16BlockRows = 6;

constexpr std::array<Bf16BlockFunction, kBf16BlockRows + 1> kHardwareBlocks = {
    nullptr, hardware_block<1>, hardware_block<2>, hardware_block<3>, hardware_block<4>, hardware_block<5>, hardware_block<6>};
constexpr std::array<Bf16BlockFunction, kBf16BlockRows + 1> kEmulatedBlocks = {
    nullptr, emulated_block<1>, emulated_block<2>, emulated_block<3>, emulated_block<4>, emulated_block<5>, emulated_block<6>};

// ---- the large products -------------------------------------------------------------------------

// op(x)'s storage in bf16, row by row as it lies, split among the threads (a window's operands are
// megabytes: rounding them on one thread cost a tenth of the product).
void round_storage_to_bf16(ConstMatrixRef<float> x, Bf16Vector& rounded) {
    const Eigen::Index rows = x.rows(), cols = x.cols();
    rounded.resize(static_cast<std::size_t>(rows * cols));
#pragma omp parallel for schedule(static) if (rows * cols >= (Eigen::Index{1} << 16) && !omp_in_parallel())
    for (Eigen::Index row = 0; row < rows; ++row) round_array(x.data() + row * x.outerStride(), rounded.data() + row * cols, cols);
}

#ifdef CHARLM_HAVE_ONEDNN
// One matmul primitive per shape, made on its first use (making one costs tens of microseconds, as
// much as a small product): each thread keeps its own, since a thread's products are its own.
struct MatmulKey {
    Eigen::Index m, n, k;
    bool transpose_a, transpose_b, accumulate;
    Eigen::Index lda, ldb, ldc;
    auto operator<=>(const MatmulKey&) const = default;
};

// c (+)= op(a) op(b), a and b rounded already: row-major storage `lda` and `ldb` apart, a transposed
// operand being the same storage read with its strides swapped.
void onednn_matmul(const std::uint16_t* a, Eigen::Index lda, bool ta, const std::uint16_t* b, Eigen::Index ldb, bool tb,
                   Eigen::Index k, float beta, MatrixRef<float> c) {
    using dnnl::memory;
    static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    thread_local std::map<MatmulKey, dnnl::matmul> primitives;
    const Eigen::Index m = c.rows(), n = c.cols();
    const memory::desc a_desc({m, k}, memory::data_type::bf16, ta ? memory::dims{1, lda} : memory::dims{lda, 1});
    const memory::desc b_desc({k, n}, memory::data_type::bf16, tb ? memory::dims{1, ldb} : memory::dims{ldb, 1});
    const memory::desc c_desc({m, n}, memory::data_type::f32, memory::dims{c.outerStride(), 1});
    const MatmulKey key{m, n, k, ta, tb, beta != 0.0f, lda, ldb, c.outerStride()};
    auto found = primitives.find(key);
    if (found == primitives.end()) {
        dnnl::primitive_attr attributes;
        if (beta != 0.0f) {
            dnnl::post_ops sum;
            sum.append_sum(1.0f);
            attributes.set_post_ops(sum);
        }
        const dnnl::matmul::primitive_desc description(dnnl::matmul::desc(a_desc, b_desc, c_desc), attributes, engine);
        found = primitives.emplace(key, dnnl::matmul(description)).first;
    }
    dnnl::stream stream(engine);
    // oneDNN's memory objects take non-const handles; it only reads the source and the weights.
    memory a_memory(a_desc, engine, const_cast<std::uint16_t*>(a)), b_memory(b_desc, engine, const_cast<std::uint16_t*>(b));
    memory c_memory(c_desc, engine, c.data());
    found->second.execute(stream, {{DNNL_ARG_SRC, a_memory}, {DNNL_ARG_WEIGHTS, b_memory}, {DNNL_ARG_DST, c_memory}});
    stream.wait();
}

// Whether oneDNN's bf16 matmul takes the product: with the CPU's instructions, and a full team of threads
// (oneDNN leaves undone the parts of threads that never start, gemm.cpp, as its sgemm does).
bool onednn_takes_it() { return chosen_kernels() == Bf16Kernels::hardware && full_teams_guaranteed(); }
#endif

// The shapes of c = op(a) op(b): m, n, k; throws where they do not fit. False where there is nothing to multiply
// (c is then as the product leaves it).
bool shapes_to_multiply(Eigen::Index a_rows, Eigen::Index a_cols, bool ta, Eigen::Index b_rows, Eigen::Index b_cols, bool tb,
                        float beta, MatrixRef<float> c, Eigen::Index& k) {
    const Eigen::Index m = ta ? a_cols : a_rows, n = tb ? b_rows : b_cols;
    k = ta ? a_rows : a_cols;
    if ((tb ? b_cols : b_rows) != k || c.rows() != m || c.cols() != n) throw Error("gemm: shapes do not match");
    if (m == 0 || n == 0) return false;
    if (k == 0) {
        if (beta == 0.0f) c.setZero();
        return false;
    }
    return true;
}

}  // namespace

Bf16Kernels bf16_kernels() { return chosen_kernels(); }

Bf16Kernels set_bf16_kernels(Bf16Kernels kernels) {
    if (kernels == Bf16Kernels::hardware && !charlm::kernels().bf16_instructions) throw Error("the kernels in use do not run bf16 instructions");
    return std::exchange(chosen_kernels(), kernels);
}

void gemm_bf16(ConstMatrixRef<float> a, Transpose transpose_a, ConstMatrixRef<float> b, Transpose transpose_b, float beta,
               MatrixRef<float> c) {
    const bool ta = transpose_a == Transpose::yes, tb = transpose_b == Transpose::yes;
    Eigen::Index k = 0;
    if (!shapes_to_multiply(a.rows(), a.cols(), ta, b.rows(), b.cols(), tb, beta, c, k)) return;
#ifdef CHARLM_HAVE_ONEDNN
    if (onednn_takes_it() && a.outerStride() == a.cols() && b.outerStride() == b.cols()) {
        thread_local Bf16Vector a_bf16, b_bf16;
        round_storage_to_bf16(a, a_bf16);
        round_storage_to_bf16(b, b_bf16);
        onednn_matmul(a_bf16.data(), a.cols(), ta, b_bf16.data(), b.cols(), tb, k, beta, c);
        return;
    }
#endif
    thread_local Matrix<float> a_rounded, b_rounded;
    a_rounded = a.unaryExpr([](float x) { return round_to_bf16(x); });
    b_rounded = b.unaryExpr([](float x) { return round_to_bf16(x); });
    gemm<float>(a_rounded, transpose_a, b_rounded, transpose_b, beta, c);
}

void gemm_bf16(Bf16RowsRef a, Transpose transpose_a, ConstMatrixRef<float> b, Transpose transpose_b, float beta,
               MatrixRef<float> c) {
    const bool ta = transpose_a == Transpose::yes, tb = transpose_b == Transpose::yes;
    Eigen::Index k = 0;
    if (!shapes_to_multiply(a.rows, a.cols, ta, b.rows(), b.cols(), tb, beta, c, k)) return;
#ifdef CHARLM_HAVE_ONEDNN
    if (onednn_takes_it() && b.outerStride() == b.cols()) {
        thread_local Bf16Vector b_bf16;
        round_storage_to_bf16(b, b_bf16);
        onednn_matmul(a.data, a.stride, ta, b_bf16.data(), b.cols(), tb, k, beta, c);
        return;
    }
#endif
    thread_local Matrix<float> a_values, b_rounded;
    a_values.resize(a.rows, a.cols);
    for (Eigen::Index row = 0; row < a.rows; ++row)
        for (Eigen::Index col = 0; col < a.cols; ++col) a_values(row, col) = from_bf16(a.data[row * a.stride + col]);
    b_rounded = b.unaryExpr([](float x) { return round_to_bf16(x); });
    gemm<float>(a_values, transpose_a, b_rounded, transpose_b, beta, c);
}

void gemm_bf16(Bf16RowsRef a, Transpose transpose_a, Bf16RowsRef b, Transpose transpose_b, float beta, MatrixRef<float> c) {
    const bool ta = transpose_a == Transpose::yes, tb = transpose_b == Transpose::yes;
    Eigen::Index k = 0;
    if (!shapes_to_multiply(a.rows, a.cols, ta, b.rows, b.cols, tb, beta, c, k)) return;
#ifdef CHARLM_HAVE_ONEDNN
    if (onednn_takes_it()) {
        onednn_matmul(a.data, a.stride, ta, b.data, b.stride, tb, k, beta, c);
        return;
    }
#endif
    thread_local Matrix<float> b_values;
    b_values.resize(b.rows, b.cols);
    for (Eigen::Index row = 0; row < b.rows; ++row)
        for (Eigen::Index col = 0; col < b.cols; ++col) b_values(row, col) = from_bf16(b.data[row * b.stride + col]);
    gemm_bf16(a, transpose_a, b_values, transpose_b, beta, c);  // b's values are bf16's already: rounding keeps them
}

void Bf16Rows::resize(Eigen::Index row_count, Eigen::Index col_count) {
    rows = row_count;
    cols = col_count;
    stride = (col_count + 1) / 2 * 2;
    values.resize(static_cast<std::size_t>(rows * stride));
}

void Bf16Rows::round_rows(ConstMatrixRef<float> x, Eigen::Index first) {
    if (x.cols() != cols || first < 0 || first + x.rows() > rows) throw Error("bf16 rows: shapes do not match");
    for (Eigen::Index row = 0; row < x.rows(); ++row) {
        std::uint16_t* out = values.data() + (first + row) * stride;
        round_array(x.data() + row * x.outerStride(), out, cols);
        if (stride != cols) out[stride - 1] = 0;
    }
}

Bf16RowsRef middle_rows(const Bf16Rows& rounded, Eigen::Index first, Eigen::Index count) {
    if (first < 0 || count < 0 || first + count > rounded.rows) throw Error("bf16 rows: rows out of range");
    return {rounded.values.data() + first * rounded.stride, count, rounded.cols, rounded.stride};
}

Bf16RowsRef middle_cols(const Bf16Rows& rounded, Eigen::Index first, Eigen::Index count) {
    if (first < 0 || count < 0 || first + count > rounded.cols) throw Error("bf16 rows: columns out of range");
    return {rounded.values.data() + first, rounded.rows, count, rounded.stride};
}

void transpose_bf16(Bf16RowsRef in, Bf16Rows& out, Eigen::Index first) {
    if (out.rows != in.cols || first < 0 || first + in.rows > out.cols) throw Error("bf16 rows: shapes do not match");
    // 16 x 16 tiles in registers where the CPU runs the bf16 kernels (it has AVX2's unpacks); the edges, and
    // every tile elsewhere, a value at a time.
    Eigen::Index full_rows = 0, full_cols = 0;
    if (chosen_kernels() == Bf16Kernels::hardware) {
        full_rows = in.rows / 16 * 16;
        full_cols = in.cols / 16 * 16;
        for (Eigen::Index r = 0; r < full_rows; r += 16)
            for (Eigen::Index c = 0; c < full_cols; c += 16)
                hardware_transpose_tile(in.data + r * in.stride + c, in.stride, out.values.data() + c * out.stride + first + r, out.stride);
    }
    const auto by_value = [&](Eigen::Index r0, Eigen::Index r1, Eigen::Index c0, Eigen::Index c1) {
        for (Eigen::Index c = c0; c < c1; ++c) {
            std::uint16_t* to = out.values.data() + c * out.stride + first;
            for (Eigen::Index r = r0; r < r1; ++r) to[r] = in.data[r * in.stride + c];
        }
    };
    by_value(0, full_rows, full_cols, in.cols);  // the right edge of the tiled rows
    by_value(full_rows, in.rows, 0, in.cols);    // the rows below them
}

void add_transpose(ConstMatrixRef<float> x, MatrixRef<float> y) {
    if (x.rows() != y.cols() || x.cols() != y.rows()) throw Error("add_transpose: shapes do not match");
    // In 32 x 32 tiles, so that x's columns are read from cache: Eigen's `y += x.transpose()` took 2.5-3x as long
    // on one thread (1024 x 256: 630-700 us against 190-240; 2048 x 512: 2.75 ms against 1.1).
    constexpr Eigen::Index kTile = 32;
    const Eigen::Index tiles = (y.rows() + kTile - 1) / kTile;
#pragma omp parallel for schedule(static) if (y.size() >= (Eigen::Index{1} << 16) && !omp_in_parallel())
    for (Eigen::Index tile = 0; tile < tiles; ++tile) {
        const Eigen::Index r0 = tile * kTile, r1 = std::min(y.rows(), r0 + kTile);
        for (Eigen::Index c0 = 0; c0 < y.cols(); c0 += kTile) {
            const Eigen::Index c1 = std::min(y.cols(), c0 + kTile);
            for (Eigen::Index r = r0; r < r1; ++r)
                for (Eigen::Index c = c0; c < c1; ++c) y(r, c) += x(c, r);
        }
    }
}

void add_product_transposed(Bf16RowsRef a, Bf16RowsRef b, MatrixRef<float> y) {
    thread_local Matrix<float> product;
    product.resize(a.rows, b.cols);
    gemm_bf16(a, Transpose::no, b, Transpose::no, 0.0f, product);
    add_transpose(product, y);
}

void pack_bf16_panels(ConstMatrixRef<float> b, Transpose transpose_b, Bf16Vector& panels) {
    const bool tb = transpose_b == Transpose::yes;
    const Eigen::Index rows = tb ? b.cols() : b.rows(), cols = tb ? b.rows() : b.cols();
    const Eigen::Index pairs = (rows + 1) / 2, panel_count = (cols + kBf16PanelWidth - 1) / kBf16PanelWidth;
    panels.assign(static_cast<std::size_t>(panel_count * pairs * 2 * kBf16PanelWidth), 0);
    // Each thread its panels; each run of b rounded at once (the kernels' rounding, as the products' operands
    // are), then laid out in pairs: packing the weights is serial work in every training window otherwise.
#pragma omp parallel for schedule(static) if (rows * cols >= (Eigen::Index{1} << 16) && !omp_in_parallel())
    for (Eigen::Index panel = 0; panel < panel_count; ++panel) {
        thread_local Bf16Vector first_row, second_row;
        const Eigen::Index first = panel * kBf16PanelWidth, count = std::min(kBf16PanelWidth, cols - first);
        std::uint16_t* out = panels.data() + panel * pairs * 2 * kBf16PanelWidth;
        if (tb) {
            // op(b)(k, j) = b(first + j, k): each column of the panel is a row of b, whose pairs lie side by side
            first_row.assign(static_cast<std::size_t>(2 * pairs), 0);  // an odd depth's last pair ends in a zero
            for (Eigen::Index j = 0; j < count; ++j) {
                round_array(b.row(first + j).data(), first_row.data(), rows);
                for (Eigen::Index q = 0; q < pairs; ++q)  // a pair as one 32-bit word
                    __builtin_memcpy(out + q * 2 * kBf16PanelWidth + 2 * j, first_row.data() + 2 * q, 2 * sizeof(std::uint16_t));
            }
        } else {
            // op(b)(k, j) = b(k, first + j): a pair is two rows of b
            first_row.resize(static_cast<std::size_t>(count));
            second_row.resize(static_cast<std::size_t>(count));
            for (Eigen::Index q = 0; q < pairs; ++q) {
                round_array(b.row(2 * q).data() + first, first_row.data(), count);
                if (2 * q + 1 < rows) round_array(b.row(2 * q + 1).data() + first, second_row.data(), count);
                else std::fill(second_row.begin(), second_row.end(), std::uint16_t{0});
                std::uint16_t* pair_row = out + q * 2 * kBf16PanelWidth;
                for (Eigen::Index j = 0; j < count; ++j) {
                    pair_row[2 * j] = first_row[static_cast<std::size_t>(j)];
                    pair_row[2 * j + 1] = second_row[static_cast<std::size_t>(j)];
                }
            }
        }
    }
}

void multiply_bf16_panel(const std::uint16_t* a, Eigen::Index stride, Eigen::Index rows, const std::uint16_t* panel,
                         Eigen::Index pairs, bool accumulate, float* c, Eigen::Index ldc, Eigen::Index count) {
    const auto& kernels = chosen_kernels() == Bf16Kernels::hardware ? kHardwareBlocks : kEmulatedBlocks;
    // Blocks as even as possible (25 rows: 5 x 5, not 6, 6, 6, 6, 1), so that the panel stays in cache
    // while a streams past it; every block sums a row the same way, so their heights change no bits.
    const Eigen::Index blocks = (rows + kBf16BlockRows - 1) / kBf16BlockRows;
    for (Eigen::Index block = 0, row = 0; block < blocks; ++block) {
        const Eigen::Index block_rows = rows / blocks + (block < rows % blocks ? 1 : 0);
        kernels[static_cast<std::size_t>(block_rows)](a + row * stride, stride, panel, pairs, accumulate, c + row * ldc, ldc, count);
        row += block_rows;
    }
}

}  // namespace charlm
