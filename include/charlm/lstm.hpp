// The LSTM layer over a window of T steps x B streams: forward and backward side by side.
#pragma once

#include "charlm/gemm.hpp"
#include "charlm/layer_input.hpp"
#include "charlm/row_shares.hpp"
#include "charlm/tensor.hpp"

namespace charlm {

// Everything the backward pass needs from the forward pass, sized once per window shape.
template <typename Scalar>
struct LstmCache {
    Matrix<Scalar> gates;          // (T*B) x 4H: i, f, g, o activated; after backward, their pre-activation gradients
    Matrix<Scalar> cell;           // (T*B) x H, c_t
    Matrix<Scalar> hidden;         // (T*B) x H, h_t: the layer's output
    Matrix<Scalar> initial_hidden; // B x H, h_{-1}
    Matrix<Scalar> initial_cell;   // B x H, c_{-1}
    RowVector<Scalar> bias;        // 1 x 4H, b_ih + b_hh
    // Packed copies of the weights, kept while CellWeights::version stays the same and nonzero.
    PackedMatrix<Scalar> recurrent_forward;   // W_hh^T
    PackedMatrix<Scalar> stacked_forward;     // [W_ih W_hh]^T, for one step of a few rows (sampling)
    Matrix<Scalar> stacked_input;             // B x (I + H), [x h]
    PackedMatrix<Scalar> recurrent_backward;  // W_hh
    ProjectionCache<Scalar> projection;       // of the input by W_ih
    RowBalance balance;                       // the time loops' batch shares, forward and backward
    // backward workspaces
    Matrix<Scalar> d_hidden_next;  // B x H
    Matrix<Scalar> d_cell_next;    // B x H
    Matrix<Scalar> d_bias;         // 1 x 4H
};

// input: (T*B) x I, step-major, or tokens (see layer_input.hpp). hidden_state, cell_state: B x H,
// carried in and updated to the last step. Output h_t for every step lands in cache.hidden.
template <typename Scalar>
void lstm_forward(LayerInputRef<Scalar> input, int steps, const CellWeights<Scalar>& weights,
                  Matrix<Scalar>& hidden_state, Matrix<Scalar>& cell_state, LstmCache<Scalar>& cache);

// d_output: (T*B) x H, the loss gradient with respect to cache.hidden. Gradients do not flow into the
// carried state (truncated BPTT). Accumulates into `gradients`; gives d_input as project_input_backward()
// does. Overwrites cache.gates with the gates' gradients, so that training keeps one (T*B) x 4H array per
// layer, not two.
// Both passes split the batch among the threads, each running the whole time loop on its share.
template <typename Scalar>
void lstm_backward(LayerInputRef<Scalar> input, const Matrix<Scalar>& d_output, int steps,
                   const CellWeights<Scalar>& weights, LstmCache<Scalar>& cache,
                   const CellGradients<Scalar>& gradients, Matrix<Scalar>& d_input);

}  // namespace charlm
