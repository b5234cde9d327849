// A layer's input projection: a GEMM over dense rows, or a lookup into embedding . W_ih^T for tokens.
#include "input_projection.hpp"

#include "charlm/error.hpp"
#include "row_shares.hpp"

namespace charlm {

namespace {

// A table of at most this many entries (64 MB of floats) is kept for as long as the weights are frozen.
constexpr Eigen::Index kMostTableEntries = Eigen::Index{1} << 24;
// Up to this many rows against frozen weights go through a packed copy of W_ih^T (sampling: one row).
constexpr Eigen::Index kMostPackedRows = 8;
// Row copies are split among threads only in shares of at least this many rows, or columns.
constexpr Eigen::Index kMinCopyRowsPerThread = 256;
constexpr Eigen::Index kMinSumColumnsPerThread = 64;

// The table pays where it is reused (frozen weights) or has fewer rows than the window: it costs
// V x I x G*H to make and saves (T*B) x I x G*H, twice over in training.
template <typename Scalar>
bool through_table(const LayerInput<Scalar>& input, const LayerWeights<Scalar>& weights) {
    if (input.rows) return false;
    const Eigen::Index vocab = input.embedding->rows();
    return weights.version != 0 ? vocab * weights.weight_ih.rows() <= kMostTableEntries : 2 * vocab <= input.count();
}

// destination.row(r) = source.row(tokens[r]) for every r.
template <typename Scalar>
void gather_rows(std::span<const TokenId> tokens, const Matrix<Scalar>& source, MatrixRef<Scalar> destination) {
    for_each_row_share(static_cast<Eigen::Index>(tokens.size()), kMinCopyRowsPerThread, [&](Eigen::Index first, Eigen::Index rows) {
        for (Eigen::Index row = first; row < first + rows; ++row) destination.row(row) = source.row(tokens[static_cast<std::size_t>(row)]);
    });
}

// destination.row(tokens[r]) += source.row(r) for every r, each thread summing its own columns, so
// that the sums come out the same at every thread count.
template <typename Scalar>
void scatter_rows(std::span<const TokenId> tokens, ConstMatrixRef<Scalar> source, Matrix<Scalar>& destination) {
    const auto add = kernels().of<Scalar>().add;  // the kernels' level: a portable build's own code is SSE2's
    for_each_row_share(source.cols(), kMinSumColumnsPerThread, [&](Eigen::Index first, Eigen::Index columns) {
        for (Eigen::Index row = 0; row < source.rows(); ++row)
            add(destination.row(tokens[static_cast<std::size_t>(row)]).data() + first, source.row(row).data() + first, columns);
    });
}

// Whether the projection is a lookup in the table, which this makes where it is not a copy of these weights.
template <typename Scalar>
bool ensure_table(LayerInputRef<Scalar> input, const LayerWeights<Scalar>& weights, ProjectionCache<Scalar>& cache) {
    cache.through_table = through_table(input, weights);
    if (!cache.through_table) return false;
    if (weights.version == 0 || weights.version != cache.table_version || weights.precision != cache.table_precision) {
        cache.table.resize(input.embedding->rows(), weights.weight_ih.rows());
        gemm<Scalar>(*input.embedding, Transpose::no, weights.weight_ih, Transpose::yes, Scalar(0), cache.table, weights.precision);
        cache.table_version = weights.version;
        cache.table_precision = weights.precision;
    }
    return true;
}

}  // namespace

template <typename Scalar>
bool project_input(LayerInputRef<Scalar> input, const LayerWeights<Scalar>& weights, ProjectionCache<Scalar>& cache,
                   MatrixRef<Scalar> projection) {
    const Eigen::Index rows = input.count(), width = weights.weight_ih.rows();
    if (input.size() != weights.weight_ih.cols() || projection.rows() != rows || projection.cols() != width)
        throw Error("input projection: shapes do not match");
    if (ensure_table(input, weights, cache)) return true;
    if (!input.rows) {
        cache.gathered.resize(rows, input.size());
        gather_rows<Scalar>(input.tokens, *input.embedding, cache.gathered);
    }
    const Matrix<Scalar>& dense = input.rows ? *input.rows : cache.gathered;
    if (weights.version != 0 && (rows <= kMostPackedRows || weights.row_sums == RowSums::as_if_alone)) {
        // no per-call overhead for a product this small; and the one product that sums rows as if alone
        cache.packed.ensure_packed(weights.weight_ih, Transpose::yes, weights.version, weights.precision);
        cache.packed.multiply(dense, Scalar(0), projection, weights.row_sums);
    } else {
        if constexpr (std::is_same_v<Scalar, float>) {
            if (input.rounded != nullptr && weights.precision == Precision::bf16) {
                gemm_bf16(middle_rows(*input.rounded, 0, rows), Transpose::no, weights.weight_ih, Transpose::yes, 0.0f, projection);
                return false;
            }
        }
        gemm<Scalar>(dense, Transpose::no, weights.weight_ih, Transpose::yes, Scalar(0), projection, weights.precision);
    }
    return false;
}

template <typename Scalar>
bool prepare_step_projection(LayerInputRef<Scalar> input, const LayerWeights<Scalar>& weights, ProjectionCache<Scalar>& cache) {
    if (input.size() != weights.weight_ih.cols()) throw Error("input projection: shapes do not match");
    if (weights.version == 0) throw Error("input projection: a team's step needs frozen weights");
    if (ensure_table(input, weights, cache)) return true;
    if (!input.rows) cache.gathered.resize(input.count(), input.size());
    cache.packed.ensure_packed(weights.weight_ih, Transpose::yes, weights.version, weights.precision);
    return false;
}

template <typename Scalar>
void lookup_rows(LayerInputRef<Scalar> input, const ProjectionCache<Scalar>& cache, Eigen::Index first, MatrixRef<Scalar> rows) {
    for (Eigen::Index row = 0; row < rows.rows(); ++row)
        rows.row(row) = cache.table.row(input.tokens[static_cast<std::size_t>(first + row)]);
}

template <typename Scalar>
void project_input_backward(LayerInputRef<Scalar> input, ConstMatrixRef<Scalar> d_projection,
                            const LayerWeights<Scalar>& weights, ProjectionCache<Scalar>& cache,
                            Matrix<Scalar>& d_weight_ih, Matrix<Scalar>& d_input, const Bf16Rows* d_projection_rounded) {
    // op(d_projection) . b: through its rounded rows where the caller has them, and b's rounded rows where the
    // layer below left them (b_rounded)
    auto times = [&](Transpose transpose, ConstMatrixRef<Scalar> b, Scalar beta, MatrixRef<Scalar> c, const Bf16Rows* b_rounded = nullptr) {
        if constexpr (std::is_same_v<Scalar, float>) {
            if (d_projection_rounded != nullptr) {
                const Bf16RowsRef a = middle_rows(*d_projection_rounded, 0, d_projection.rows());
                if (b_rounded != nullptr)
                    gemm_bf16(a, transpose, middle_rows(*b_rounded, 0, b.rows()), Transpose::no, beta, c);
                else
                    gemm_bf16(a, transpose, b, Transpose::no, beta, c);
                return;
            }
        }
        gemm<Scalar>(d_projection, transpose, b, Transpose::no, beta, c, weights.precision);
    };
    if (input.rows) {
        // G*H x I = G*H x (T*B) . (T*B) x I, and (T*B) x I = (T*B) x G*H . G*H x I
        bool made = false;
        if constexpr (std::is_same_v<Scalar, float>) {
            if (d_projection_rounded != nullptr && input.transposed.data != nullptr) {
                if (input.transposed.rows != input.size() || input.transposed.cols != input.count())
                    throw Error("input projection: the transposed input does not fit");
                add_product_transposed(input.transposed, middle_rows(*d_projection_rounded, 0, d_projection.rows()), d_weight_ih);
                made = true;
            }
        }
        if (!made) times(Transpose::yes, *input.rows, Scalar(1), d_weight_ih, input.rounded);
        d_input.resize(input.count(), input.size());
        times(Transpose::no, weights.weight_ih, Scalar(0), d_input);
        return;
    }
    const Matrix<Scalar>& embedding = *input.embedding;
    if (d_input.rows() != embedding.rows() || d_input.cols() != embedding.cols())
        throw Error("input projection: the embedding's gradient has the wrong shape");
    if (cache.through_table) {
        // Per token, the sum of its rows' gradients: V x G*H. Then G*H x I = G*H x V . V x I for the
        // weights and V x I = V x G*H . G*H x I for the embedding.
        cache.d_table.setZero(embedding.rows(), d_projection.cols());
        scatter_rows<Scalar>(input.tokens, d_projection, cache.d_table);
        gemm<Scalar>(cache.d_table, Transpose::yes, embedding, Transpose::no, Scalar(1), d_weight_ih, weights.precision);
        gemm<Scalar>(cache.d_table, Transpose::no, weights.weight_ih, Transpose::no, Scalar(1), d_input, weights.precision);
        return;
    }
    // A vocabulary too large for the table: the rows' gradients, summed per token into the embedding's.
    times(Transpose::yes, cache.gathered, Scalar(1), d_weight_ih);
    cache.d_gathered.resize(input.count(), input.size());
    times(Transpose::no, weights.weight_ih, Scalar(0), cache.d_gathered);
    scatter_rows<Scalar>(input.tokens, cache.d_gathered, d_input);
}

template bool project_input<float>(LayerInputRef<float>, const LayerWeights<float>&, ProjectionCache<float>&, MatrixRef<float>);
template bool project_input<double>(LayerInputRef<double>, const LayerWeights<double>&, ProjectionCache<double>&, MatrixRef<double>);
template bool prepare_step_projection<float>(LayerInputRef<float>, const LayerWeights<float>&, ProjectionCache<float>&);
template bool prepare_step_projection<double>(LayerInputRef<double>, const LayerWeights<double>&, ProjectionCache<double>&);
template void lookup_rows<float>(LayerInputRef<float>, const ProjectionCache<float>&, Eigen::Index, MatrixRef<float>);
template void lookup_rows<double>(LayerInputRef<double>, const ProjectionCache<double>&, Eigen::Index, MatrixRef<double>);
template void project_input_backward<float>(LayerInputRef<float>, ConstMatrixRef<float>, const LayerWeights<float>&,
                                            ProjectionCache<float>&, Matrix<float>&, Matrix<float>&, const Bf16Rows*);
template void project_input_backward<double>(LayerInputRef<double>, ConstMatrixRef<double>, const LayerWeights<double>&,
                                             ProjectionCache<double>&, Matrix<double>&, Matrix<double>&, const Bf16Rows*);

}  // namespace charlm
