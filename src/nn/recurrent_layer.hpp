// The recurrent-layer engine: runs any cell (cells.hpp) over a window of T steps x B streams, forward
// and backward, and owns everything about speed and threads so that a cell is only its math.
//
// What it does for every cell: the input projection for all steps at once (layer 0's by a table
// lookup), recurrent weights packed once per window, forward and backward, each thread running the
// whole time loop on its share of the batch (shares weighed by the threads' speeds), the cell's
// elementwise step in chunks of units that stay in registers, sampling's one product of [x h] by
// [W_ih W_hh] stacked, and the weight-gradient tail: W_hh's and W_ih's gradients as one product each
// over all steps, the bias sums and the input's gradient. Private to the library: the model is its
// only user, and what sampling, evaluation and checkpoints see is the model.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>

#include "charlm/model.hpp"
#include "charlm/tensor.hpp"
#include "charlm/text.hpp"
#include "gemm.hpp"

namespace charlm {

class RowBalance;

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

    LayerInput(const Matrix<Scalar>& dense) : rows(&dense) {}  // NOLINT: implicit, a Matrix is an input
    LayerInput(std::span<const TokenId> ids, const Matrix<Scalar>& table) : tokens(ids), embedding(&table) {}
    Eigen::Index count() const { return rows ? rows->rows() : static_cast<Eigen::Index>(tokens.size()); }  // T*B
    Eigen::Index size() const { return rows ? rows->cols() : embedding->cols(); }                          // I
};

// How the engine takes an input: the Scalar comes from the other arguments, so a Matrix converts.
template <typename Scalar>
using LayerInputRef = const std::type_identity_t<LayerInput<Scalar>>&;

// One recurrent layer of one cell type, with the workspaces of the last window it ran.
template <typename Scalar>
class RecurrentLayer {
public:
    explicit RecurrentLayer(CellType cell);
    RecurrentLayer(RecurrentLayer&&) noexcept;
    RecurrentLayer& operator=(RecurrentLayer&&) noexcept;
    ~RecurrentLayer();

    // hidden_state: (B, H), and cell_state, (B, H), for a cell that has one (else not read): carried in,
    // and updated to the window's last step. output() then holds h_t of every step.
    void forward(LayerInputRef<Scalar> input, int steps, const LayerWeights<Scalar>& weights, Matrix<Scalar>& hidden_state,
                 Matrix<Scalar>& cell_state);
    const Matrix<Scalar>& output() const;  // (T*B, H)

    // d_output: (T*B, H), the loss gradient with respect to output(); gradients do not flow into the
    // carried state (truncated BPTT). Accumulates into `gradients`. d_input: for dense rows, becomes
    // their gradient, (T*B, I); for tokens, is the embedding's gradient, (V, I), and is accumulated into.
    void backward(LayerInputRef<Scalar> input, const Matrix<Scalar>& d_output, int steps, const LayerWeights<Scalar>& weights,
                  const LayerGradients<Scalar>& gradients, Matrix<Scalar>& d_input);

    // For the tests: the batch's split between threads, and after backward() the gradients of the
    // gates' pre-activations, (T*B, G*H).
    RowBalance& balance();
    const Matrix<Scalar>& gate_gradients() const;

    struct Workspace;  // the engine's, defined where the time loops are

private:
    std::unique_ptr<Workspace> workspace_;
};

}  // namespace charlm
