// Matrix products for the hot paths: one interface over the fastest single-precision GEMM this build
// has (oneDNN's dnnl_sgemm where libdnnl-dev was found, else Eigen's), and a small-batch product
// against a right-hand factor packed once, for the recurrent weights inside the time loop.
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "charlm/precision.hpp"
#include "charlm/tensor.hpp"
#include "kernels.hpp"

namespace charlm {

template <typename Scalar>
using ConstMatrixRef = Eigen::Ref<const Matrix<Scalar>>;
template <typename Scalar>
using MatrixRef = Eigen::Ref<Matrix<Scalar>>;

enum class Transpose { no, yes };

// How PackedMatrix::multiply() sums a row. `fastest` picks the kernel by how many rows there are, so
// a row's last bits depend on the rows beside it; `as_if_alone` sums every row in the order one row
// alone is summed, so that a row comes out the same bits in a batch of any size and composition as
// on its own (serving: a request's text must not depend on the other requests decoded with it).
enum class RowSums { fastest, as_if_alone };

// c = op(a) * op(b) + beta * c, where beta is 0 or 1. Called outside a parallel region it uses every
// thread of set_thread_count(); inside one, just the caller's. Double precision (the gradient checks)
// always runs on Eigen, and in double whatever `precision` says; Precision::bf16 rounds a float
// product's operands to bf16 and sums in fp32 (gemm_bf16.hpp).
template <typename Scalar>
void gemm(ConstMatrixRef<Scalar> a, Transpose transpose_a, ConstMatrixRef<Scalar> b, Transpose transpose_b,
          Scalar beta, MatrixRef<Scalar> c, Precision precision = Precision::fp32);

// sums = (each column's sum of a) + beta * sums, 1 x N: a product with a row of ones through gemm(),
// so that it runs on every thread (the bias gradients sum T*B rows of the gate gradients).
template <typename Scalar>
void column_sums(ConstMatrixRef<Scalar> a, Scalar beta, MatrixRef<Scalar> sums);

// "oneDNN" or "Eigen": which library gemm() sends single precision to.
std::string gemm_backend();

// A K x N right-hand factor cut into panels of a few SIMD registers' width (the kernels' level's, kernels.hpp), each panel K rows of its
// columns back to back (zero-padded at the right edge), so that a product with few rows streams it
// straight from cache with no per-call packing (which Eigen's and oneDNN's GEMMs redo on every call).
struct Bf16RowsRef;  // gemm_bf16.hpp
struct Team;         // team.hpp

template <typename Scalar>
class PackedMatrix {
public:
    // Copies op(b); no allocation once the shape has been seen. `version`: the LayerWeights::version
    // that b belongs to, where there is one, so that packed_from() can tell when a copy is still good.
    // At Precision::bf16 (float only) the copy is rounded to bf16 and multiply() sums in fp32.
    void pack(ConstMatrixRef<Scalar> b, Transpose transpose_b, std::uint64_t version = 0, Precision precision = Precision::fp32);
    // Whether this is a copy of the weights of `version` at `precision`; never of version 0, which means unknown.
    bool packed_from(std::uint64_t version, Precision precision = Precision::fp32) const {
        return version != 0 && version == version_ && precision_of(precision) == precision_;
    }
    // pack(), unless this already is a copy of the weights of `version` (frozen weights: sampling, evaluation).
    void ensure_packed(ConstMatrixRef<Scalar> b, Transpose transpose_b, std::uint64_t version, Precision precision = Precision::fp32) {
        if (!packed_from(version, precision)) pack(b, transpose_b, version, precision);
    }
    Eigen::Index rows() const { return rows_; }
    Eigen::Index cols() const { return cols_; }
    // c = a * this + beta * c, beta 0 or 1; a: M x K, c: M x N. Inside a parallel region it runs on the
    // calling thread; outside one, a large enough product splits its panels among the threads (which
    // never changes a row's sums). With 4 rows or more, a row of c comes out the same bits whichever
    // other rows a holds; with RowSums::as_if_alone, the same bits as a row alone, at any M. At bf16,
    // a's rows are rounded to bf16 too, and every row comes out the same bits as alone, at any M.
    void multiply(ConstMatrixRef<Scalar> a, Scalar beta, MatrixRef<Scalar> c, RowSums sums = RowSums::fastest) const;
    // multiply() at bf16 with a's rows rounded already (gemm_bf16.hpp's Bf16Rows): the same bits.
    void multiply(const Bf16RowsRef& a, Scalar beta, MatrixRef<Scalar> c) const;
    // For a caller that splits one product among a team itself (team.hpp), which then calls this once per
    // member: the columns of the member's share of the panels, the same bits as multiply(). The shapes
    // are checked by check_shapes() first, once, outside the team: nothing may throw inside it. The
    // first form is fp32's; at bf16, a's rows are rounded already.
    void check_shapes(Eigen::Index a_rows, Eigen::Index a_cols, ConstMatrixRef<Scalar> c) const;
    void multiply_share(ConstMatrixRef<Scalar> a, Scalar beta, MatrixRef<Scalar> c, RowSums sums, const Team& team) const;
    void multiply_share(const Bf16RowsRef& a, Scalar beta, MatrixRef<Scalar> c, const Team& team) const;
    Eigen::Index panel_count() const;

private:
    // bf16 products are float's alone: double (the gradient checks) always multiplies in double.
    static Precision precision_of(Precision precision) {
        return std::is_same_v<Scalar, float> ? precision : Precision::fp32;
    }
    void multiply_bf16(ConstMatrixRef<Scalar> a, Scalar beta, MatrixRef<Scalar> c) const;
    void multiply_rounded(const std::uint16_t* a, Eigen::Index stride, Eigen::Index rows, Scalar beta, MatrixRef<Scalar> c) const;
    // The products of panels first_panel .. end_panel - 1, in fp32 and at bf16 (a's rows rounded).
    void multiply_panels(ConstMatrixRef<Scalar> a, Scalar beta, MatrixRef<Scalar> c, RowSums sums, Eigen::Index first_panel,
                         Eigen::Index end_panel) const;
    void multiply_rounded_panels(const std::uint16_t* a, Eigen::Index stride, Eigen::Index rows, Scalar beta, MatrixRef<Scalar> c,
                                 Eigen::Index first_panel, Eigen::Index end_panel) const;

    Eigen::Index rows_ = 0, cols_ = 0;
    std::uint64_t version_ = 0;
    Precision precision_ = Precision::fp32;
    const ScalarKernels<Scalar>* kernels_ = nullptr;  // the level's (kernels.hpp) that packed the panels, at their width
    KernelVector<Scalar> panels_;
    KernelVector<std::uint16_t> bf16_panels_;  // gemm_bf16.hpp's layout
};

}  // namespace charlm
