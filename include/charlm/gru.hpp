// The GRU layer over a window of T steps x B streams: forward and backward side by side.
#pragma once

#include "charlm/layer_input.hpp"
#include "charlm/row_shares.hpp"
#include "charlm/tensor.hpp"

namespace charlm {

// Everything the backward pass needs from the forward pass, sized once per window shape.
template <typename Scalar>
struct GruCache {
    Matrix<Scalar> gates;           // (T*B) x 3H, activated: r, z, n
    Matrix<Scalar> hidden_gates;    // (T*B) x 3H, h_{t-1} W_hh^T; n's part plus b_hn, needed apart, inside r
    Matrix<Scalar> hidden;          // (T*B) x H, h_t: the layer's output
    Matrix<Scalar> initial_hidden;  // B x H, h_{-1}
    // backward workspaces
    Matrix<Scalar> d_gates;         // (T*B) x 3H, gradients w.r.t. x W_ih^T + b_ih
    Matrix<Scalar> d_hidden_gates;  // (T*B) x 3H, gradients w.r.t. h W_hh^T + b_hh (n's part scaled by r)
    Matrix<Scalar> d_hidden_next;   // B x H
    PackedMatrix<Scalar> recurrent_forward;   // W_hh^T
    PackedMatrix<Scalar> recurrent_backward;  // W_hh
    ProjectionCache<Scalar> projection;  // of the input by W_ih
    RowBalance balance;                  // the time loops' batch shares, forward and backward
};

// input: (T*B) x I, step-major, or tokens (see layer_input.hpp). hidden_state: B x H, carried in and updated to the last step.
// Output h_t for every step lands in cache.hidden.
template <typename Scalar>
void gru_forward(LayerInputRef<Scalar> input, int steps, const CellWeights<Scalar>& weights,
                 Matrix<Scalar>& hidden_state, GruCache<Scalar>& cache);

// d_output: (T*B) x H, the loss gradient with respect to cache.hidden. Gradients do not flow into the
// carried state (truncated BPTT). Accumulates into `gradients`; gives d_input as
// project_input_backward() does.
template <typename Scalar>
void gru_backward(LayerInputRef<Scalar> input, const Matrix<Scalar>& d_output, int steps,
                  const CellWeights<Scalar>& weights, GruCache<Scalar>& cache,
                  const CellGradients<Scalar>& gradients, Matrix<Scalar>& d_input);

}  // namespace charlm
