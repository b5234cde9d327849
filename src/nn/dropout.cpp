// Dropout's masks, drawn and applied in parallel; every element is a function of its index alone.
#include "dropout.hpp"

#include <cmath>

#include "charlm/error.hpp"

namespace charlm {

namespace {

// Below this many elements a parallel region costs more than it saves.
constexpr Eigen::Index kParallelElements = 1 << 14;

}  // namespace

template <typename Scalar>
void draw_dropout_mask(Matrix<Scalar>& mask, Eigen::Index rows, Eigen::Index cols, double rate, std::uint64_t key, MaskRows rows_are) {
    mask.resize(rows, cols);
    // Each 64-bit output decides two elements by its halves: kept where a half is below keep x 2^32.
    const auto threshold = static_cast<std::uint64_t>(std::llround((1 - rate) * 0x1.0p32));
    const Scalar scale = static_cast<Scalar>(1 / (1 - rate));
    if (rows_are.streams > 0) {
        // Keyed by the row's place in the whole batch: a key per (step, stream), and a word of it per two units.
#pragma omp parallel for schedule(static) if (mask.size() >= kParallelElements)
        for (Eigen::Index row = 0; row < rows; ++row) {
            const std::uint64_t step = static_cast<std::uint64_t>(row / rows_are.streams);
            const std::uint64_t stream = rows_are.first_stream + static_cast<std::uint64_t>(row % rows_are.streams);
            const std::uint64_t row_key = mix64(key ^ mix64((step << 32) + stream + 1));
            for (Eigen::Index pair = 0; 2 * pair < cols; ++pair) {
                const std::uint64_t bits = mix64(row_key + static_cast<std::uint64_t>(pair + 1) * 0x9e3779b97f4a7c15ull);
                mask(row, 2 * pair) = (bits >> 32) < threshold ? scale : Scalar(0);
                if (2 * pair + 1 < cols) mask(row, 2 * pair + 1) = (bits & 0xffffffffull) < threshold ? scale : Scalar(0);
            }
        }
        return;
    }
    Scalar* values = mask.data();
    const Eigen::Index size = mask.size(), pairs = (size + 1) / 2;
#pragma omp parallel for schedule(static) if (size >= kParallelElements)
    for (Eigen::Index pair = 0; pair < pairs; ++pair) {
        const std::uint64_t bits = mix64(key + static_cast<std::uint64_t>(pair + 1) * 0x9e3779b97f4a7c15ull);
        values[2 * pair] = (bits >> 32) < threshold ? scale : Scalar(0);
        if (2 * pair + 1 < size) values[2 * pair + 1] = (bits & 0xffffffffull) < threshold ? scale : Scalar(0);
    }
}

template <typename Scalar>
void apply_dropout_mask(const Matrix<Scalar>& in, const Matrix<Scalar>& mask, Matrix<Scalar>& out) {
    const Eigen::Index rows = in.rows(), mask_rows = mask.rows();
    if (mask.cols() != in.cols() || mask_rows == 0 || rows % mask_rows != 0) throw Error("dropout mask does not fit its values");
    out.resize(rows, in.cols());
#pragma omp parallel for schedule(static) if (in.size() >= kParallelElements)
    for (Eigen::Index row = 0; row < rows; ++row) out.row(row) = in.row(row).cwiseProduct(mask.row(row % mask_rows));
}

template <typename Scalar>
void apply_dropout_mask_in_place(Matrix<Scalar>& values, const Matrix<Scalar>& mask) {
    const Eigen::Index rows = values.rows(), mask_rows = mask.rows();
    if (mask.cols() != values.cols() || mask_rows == 0 || rows % mask_rows != 0) throw Error("dropout mask does not fit its values");
#pragma omp parallel for schedule(static) if (values.size() >= kParallelElements)
    for (Eigen::Index row = 0; row < rows; ++row) values.row(row).array() *= mask.row(row % mask_rows).array();
}

template void draw_dropout_mask<float>(Matrix<float>&, Eigen::Index, Eigen::Index, double, std::uint64_t, MaskRows);
template void draw_dropout_mask<double>(Matrix<double>&, Eigen::Index, Eigen::Index, double, std::uint64_t, MaskRows);
template void apply_dropout_mask<float>(const Matrix<float>&, const Matrix<float>&, Matrix<float>&);
template void apply_dropout_mask<double>(const Matrix<double>&, const Matrix<double>&, Matrix<double>&);
template void apply_dropout_mask_in_place<float>(Matrix<float>&, const Matrix<float>&);
template void apply_dropout_mask_in_place<double>(Matrix<double>&, const Matrix<double>&);

}  // namespace charlm
