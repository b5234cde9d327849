// The Elman RNN layer (tanh) over a window of T steps x B streams: forward and backward side by side.
#pragma once

#include "charlm/layer_input.hpp"
#include "charlm/row_shares.hpp"
#include "charlm/tensor.hpp"

namespace charlm {

// Everything the backward pass needs from the forward pass, sized once per window shape.
template <typename Scalar>
struct RnnCache {
    Matrix<Scalar> hidden;          // (T*B) x H, h_t: the layer's output, and tanh' = 1 - h_t^2
    Matrix<Scalar> initial_hidden;  // B x H, h_{-1}
    RowVector<Scalar> bias;         // 1 x H, b_ih + b_hh
    PackedMatrix<Scalar> recurrent_forward;   // W_hh^T
    PackedMatrix<Scalar> recurrent_backward;  // W_hh
    // backward workspaces
    Matrix<Scalar> d_preactivation; // (T*B) x H, gradients w.r.t. x W_ih^T + b_ih + h W_hh^T + b_hh
    Matrix<Scalar> d_hidden_next;   // B x H
    Matrix<Scalar> d_bias;          // 1 x H
    ProjectionCache<Scalar> projection;  // of the input by W_ih
    RowBalance balance;                  // the time loops' batch shares, forward and backward
};

// input: (T*B) x I, step-major, or tokens (see layer_input.hpp). hidden_state: B x H, carried in and updated to the last step.
// Output h_t for every step lands in cache.hidden.
template <typename Scalar>
void rnn_forward(LayerInputRef<Scalar> input, int steps, const CellWeights<Scalar>& weights,
                 Matrix<Scalar>& hidden_state, RnnCache<Scalar>& cache);

// d_output: (T*B) x H, the loss gradient with respect to cache.hidden. Gradients do not flow into the
// carried state (truncated BPTT). Accumulates into `gradients`; gives d_input as
// project_input_backward() does.
template <typename Scalar>
void rnn_backward(LayerInputRef<Scalar> input, const Matrix<Scalar>& d_output, int steps,
                  const CellWeights<Scalar>& weights, RnnCache<Scalar>& cache,
                  const CellGradients<Scalar>& gradients, Matrix<Scalar>& d_input);

}  // namespace charlm
