// GEMM through oneDNN or Eigen, and the packed small-batch product of the time loops.
#include "gemm.hpp"
#include "gemm_bf16.hpp"
#include "team.hpp"

#include <algorithm>
#include <utility>

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

template <typename Scalar>
void PackedMatrix<Scalar>::pack(ConstMatrixRef<Scalar> b, Transpose transpose_b, std::uint64_t version, Precision precision) {
    const bool tb = transpose_b == Transpose::yes;
    version_ = version;
    precision_ = precision_of(precision);
    rows_ = tb ? b.cols() : b.rows();
    cols_ = tb ? b.rows() : b.cols();
    kernels_ = &kernels().of<Scalar>();
    if constexpr (std::is_same_v<Scalar, float>) {
        if (precision_ == Precision::bf16) {
            pack_bf16_panels(b, transpose_b, bf16_panels_);
            return;
        }
    }
    const Eigen::Index width = kernels_->panel_width;
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

// Runs multiply_panels(first, end) over all `panels`. A product of `work` multiply-adds large enough, made outside a
// parallel region (sampling one stream), splits the panels among the threads, which changes no row's sums; the
// others do not even enter one, which costs a microsecond per call.
template <typename MultiplyPanels>
void over_panels(Eigen::Index panels, Eigen::Index work, const MultiplyPanels& multiply_panels) {
    run_in_team(work >= kLeastWorkForTeam, [&](const Team& team) { multiply_panels(team.first(panels), team.end(panels)); });
}

}  // namespace

template <typename Scalar>
Eigen::Index PackedMatrix<Scalar>::panel_count() const {
    if (precision_ == Precision::bf16) return (cols_ + kBf16PanelWidth - 1) / kBf16PanelWidth;
    if (kernels_ == nullptr) return 0;  // never packed: a 0 x 0 factor
    return (cols_ + kernels_->panel_width - 1) / kernels_->panel_width;
}

template <typename Scalar>
void PackedMatrix<Scalar>::check_shapes(Eigen::Index a_rows, Eigen::Index a_cols, ConstMatrixRef<Scalar> c) const {
    if (a_cols != rows_ || c.rows() != a_rows || c.cols() != cols_) throw Error("packed product: shapes do not match");
}

template <typename Scalar>
void PackedMatrix<Scalar>::multiply_panels(ConstMatrixRef<Scalar> a, Scalar beta, MatrixRef<Scalar> c, RowSums sums,
                                           Eigen::Index first_panel, Eigen::Index end_panel) const {
    if (kernels_ == nullptr) return;
    const Eigen::Index width = kernels_->panel_width;
    for (Eigen::Index panel = first_panel; panel < end_panel; ++panel) {
        const Eigen::Index first = panel * width;
        kernels_->multiply_panel(a.data(), a.outerStride(), a.rows(), panels_.data() + panel * rows_ * width, rows_, beta != Scalar(0),
                                 c.data() + first, c.outerStride(), std::min(width, cols_ - first), sums == RowSums::as_if_alone);
    }
}

template <typename Scalar>
void PackedMatrix<Scalar>::multiply(ConstMatrixRef<Scalar> a, Scalar beta, MatrixRef<Scalar> c, RowSums sums) const {
    check_shapes(a.rows(), a.cols(), c);
    if (precision_ == Precision::bf16) return multiply_bf16(a, beta, c);
    over_panels(panel_count(), a.rows() * rows_ * cols_,
                [&](Eigen::Index first_panel, Eigen::Index end_panel) { multiply_panels(a, beta, c, sums, first_panel, end_panel); });
}

template <typename Scalar>
void PackedMatrix<Scalar>::multiply_share(ConstMatrixRef<Scalar> a, Scalar beta, MatrixRef<Scalar> c, RowSums sums, const Team& team) const {
    const Eigen::Index panels = panel_count();
    multiply_panels(a, beta, c, sums, team.first(panels), team.end(panels));
}

// The bf16 form of multiply(): a's rows rounded once per call, then the panels as above, split among
// the threads the same way (which changes no row's sums: each row is summed alone).
template <typename Scalar>
void PackedMatrix<Scalar>::multiply_bf16(ConstMatrixRef<Scalar> a, Scalar beta, MatrixRef<Scalar> c) const {
    if constexpr (std::is_same_v<Scalar, float>) {
        thread_local Bf16Rows rounded;
        rounded.resize(a.rows(), a.cols());
        rounded.round_rows(a, 0);
        multiply_rounded(rounded.values.data(), rounded.stride, a.rows(), beta, c);
    } else {
        throw Error("bf16 products are single precision's");
    }
}

template <typename Scalar>
void PackedMatrix<Scalar>::multiply(const Bf16RowsRef& a, Scalar beta, MatrixRef<Scalar> c) const {
    if (precision_ != Precision::bf16) throw Error("packed product: rows rounded to bf16 need bf16 panels");
    check_shapes(a.rows, a.cols, c);
    multiply_rounded(a.data, a.stride, a.rows, beta, c);
}

template <typename Scalar>
void PackedMatrix<Scalar>::multiply_share(const Bf16RowsRef& a, Scalar beta, MatrixRef<Scalar> c, const Team& team) const {
    const Eigen::Index panels = panel_count();
    multiply_rounded_panels(a.data, a.stride, a.rows, beta, c, team.first(panels), team.end(panels));
}

template <typename Scalar>
void PackedMatrix<Scalar>::multiply_rounded_panels(const std::uint16_t* a, Eigen::Index stride, Eigen::Index rows, Scalar beta,
                                                   MatrixRef<Scalar> c, Eigen::Index first_panel, Eigen::Index end_panel) const {
    if constexpr (std::is_same_v<Scalar, float>) {
        const Eigen::Index pairs = (rows_ + 1) / 2;
        for (Eigen::Index panel = first_panel; panel < end_panel; ++panel) {
            const Eigen::Index first = panel * kBf16PanelWidth;
            multiply_bf16_panel(a, stride, rows, bf16_panels_.data() + panel * pairs * 2 * kBf16PanelWidth, pairs, beta != 0.0f,
                                c.data() + first, c.outerStride(), std::min(kBf16PanelWidth, cols_ - first));
        }
    }
}

template <typename Scalar>
void PackedMatrix<Scalar>::multiply_rounded(const std::uint16_t* a, Eigen::Index stride, Eigen::Index rows, Scalar beta,
                                            MatrixRef<Scalar> c) const {
    if constexpr (std::is_same_v<Scalar, float>) {
        over_panels(panel_count(), rows * rows_ * cols_, [&](Eigen::Index first_panel, Eigen::Index end_panel) {
            multiply_rounded_panels(a, stride, rows, beta, c, first_panel, end_panel);
        });
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
