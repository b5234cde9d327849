// The recurrent-layer engine's input projection, x W_ih^T, the product every cell begins with.
//
// The first layer's input is the embedding of token ids. The lookup and the projection compose, so
// that layer's projection can be a lookup too: row v of a V x G*H table, embedding . W_ih^T, made once
// per window (or once per freeze of the weights) in place of a (T*B) x I x G*H product; its backward
// pass sums the gradient rows per token into V x G*H and needs two small products in place of two
// (T*B)-sized ones. Character vocabularies are small, so that is 13% of a 2x128 LSTM's step saved.
#pragma once

#include <cstdint>

#include "gemm.hpp"
#include "gemm_bf16.hpp"
#include "layer_io.hpp"

namespace charlm {

// What project_input() keeps between calls, and what its backward pass needs.
template <typename Scalar>
struct ProjectionCache {
    bool through_table = false;   // whether the last projection looked tokens up in the table
    Matrix<Scalar> table;         // V x G*H, embedding . W_ih^T
    std::uint64_t table_version = 0;
    Precision table_precision = Precision::fp32;
    Matrix<Scalar> gathered;      // (T*B) x I, the embedding's rows, where the table would cost more
    PackedMatrix<Scalar> packed;  // W_ih^T, for a few rows against frozen weights (sampling)
    Matrix<Scalar> d_table;       // V x G*H
    Matrix<Scalar> d_gathered;    // (T*B) x I
};

// projection = input . W_ih^T: (T*B) x G*H, no bias. Derived copies of the weights are kept while
// weights.version stays the same and nonzero. Where the projection is a lookup in the table, this only
// makes the table, leaves `projection` alone and returns true: the time loop then copies each step's
// rows with lookup_rows() just before it reads them, while they are in cache (all T*B rows up front
// would go out to memory and back: 2-3% of an evaluation).
template <typename Scalar>
bool project_input(LayerInputRef<Scalar> input, const LayerWeights<Scalar>& weights, ProjectionCache<Scalar>& cache,
                   MatrixRef<Scalar> projection);

// For one step against frozen weights (weights.version nonzero) that a team splits (recurrent_layer.cpp):
// what project_input() makes before its product. Makes the table and returns true where the projection
// is a lookup in it; otherwise packs W_ih^T into cache.packed, sizes cache.gathered for token inputs,
// and returns false: the team then gathers the rows and multiplies them by cache.packed itself.
template <typename Scalar>
bool prepare_step_projection(LayerInputRef<Scalar> input, const LayerWeights<Scalar>& weights, ProjectionCache<Scalar>& cache);

// rows = the projection's rows first .. first + rows.rows() - 1, from the table of the last project_input().
template <typename Scalar>
void lookup_rows(LayerInputRef<Scalar> input, const ProjectionCache<Scalar>& cache, Eigen::Index first, MatrixRef<Scalar> rows);

// d_projection: the loss gradient with respect to the last projection (at bf16, d_projection_rounded may
// hold its rows rounded already, and input.rounded the input's; null otherwise). Accumulates d_projection^T .
// input into d_weight_ih, and gives the input's gradient: for rows, d_input becomes (T*B) x I; for
// tokens, d_input is the embedding's gradient, V x I, and is accumulated into.
template <typename Scalar>
void project_input_backward(LayerInputRef<Scalar> input, ConstMatrixRef<Scalar> d_projection,
                            const LayerWeights<Scalar>& weights, ProjectionCache<Scalar>& cache,
                            Matrix<Scalar>& d_weight_ih, Matrix<Scalar>& d_input, const Bf16Rows* d_projection_rounded = nullptr);

}  // namespace charlm
