// What goes into and out of one recurrent layer: its weights, where its gradients go, and its input
// (dense rows or token ids). The engine (recurrent_layer.hpp) and the input projection share these.
#pragma once

#include <cstdint>
#include <span>
#include <type_traits>

#include "charlm/tensor.hpp"
#include "charlm/text.hpp"
#include "gemm.hpp"
#include "gemm_bf16.hpp"

namespace charlm {

// One layer's weights in PyTorch's layout, G gates of H units each (LSTM: G = 4).
template <typename Scalar>
struct LayerWeights {
    const Matrix<Scalar>& weight_ih;  // (G*H, I)
    const Matrix<Scalar>& weight_hh;  // (G*H, H)
    const Matrix<Scalar>& bias_ih;    // (1, G*H)
    const Matrix<Scalar>& bias_hh;    // (1, G*H)
    // Changes whenever the weights may have: the engine keeps what it derives from them (packed copies,
    // layer 0's table) for as long as it stays the same. 0 means unknown: derive afresh.
    std::uint64_t version = 0;
    // RowSums::as_if_alone (one step against frozen weights): each stream's row comes out the same bits
    // as it would in a batch of its own.
    RowSums row_sums = RowSums::fastest;
    // The products' precision (charlm/precision.hpp): the input projection, the recurrent steps, and in
    // backward the recurrent steps and the weight gradients. Everything else stays in Scalar.
    Precision precision = Precision::fp32;
    // False where no backward() follows this forward() (evaluation, sampling): the layer then keeps only the
    // step's gates where its input goes through the table a step at a time, so that they stay in cache.
    bool backward_follows = true;
};

// Where the backward pass accumulates a layer's weight gradients, shaped as LayerWeights.
template <typename Scalar>
struct LayerGradients {
    Matrix<Scalar>& weight_ih;
    Matrix<Scalar>& weight_hh;
    Matrix<Scalar>& bias_ih;
    Matrix<Scalar>& bias_hh;
};

// A layer's input: either dense rows, (T*B, I), step-major; or T*B token ids into an embedding (V, I),
// the first layer's, whose lookup and projection compose into one table (input_projection.hpp).
template <typename Scalar>
struct LayerInput {
    const Matrix<Scalar>* rows = nullptr;
    std::span<const TokenId> tokens;
    const Matrix<Scalar>* embedding = nullptr;
    // At bf16, the dense rows rounded already (the layer below's output, rounded as it left the cells), for
    // the products that read them: null where nobody rounded them.
    const Bf16Rows* rounded = nullptr;
    // At bf16, the same rounded rows transposed, (I, T*B), for the input weights' gradient: data null where
    // nobody kept them.
    Bf16RowsRef transposed;

    LayerInput(const Matrix<Scalar>& dense) : rows(&dense) {}  // NOLINT: implicit, a Matrix is an input
    LayerInput(std::span<const TokenId> ids, const Matrix<Scalar>& table) : tokens(ids), embedding(&table) {}
    Eigen::Index count() const { return rows ? rows->rows() : static_cast<Eigen::Index>(tokens.size()); }  // T*B
    Eigen::Index size() const { return rows ? rows->cols() : embedding->cols(); }                          // I
};

// How the engine takes an input: the Scalar comes from the other arguments, so a Matrix converts.
template <typename Scalar>
using LayerInputRef = const std::type_identity_t<LayerInput<Scalar>>&;

}  // namespace charlm
