// The LSTM layer over a window of T steps x B streams: forward and backward side by side.
#pragma once

#include "charlm/tensor.hpp"

namespace charlm {

// Everything the backward pass needs from the forward pass, sized once per window shape.
template <typename Scalar>
struct LstmCache {
    Matrix<Scalar> gates;          // (T*B) x 4H, activated: i, f, g, o
    Matrix<Scalar> cell;           // (T*B) x H, c_t
    Matrix<Scalar> hidden;         // (T*B) x H, h_t: the layer's output
    Matrix<Scalar> initial_hidden; // B x H, h_{-1}
    Matrix<Scalar> initial_cell;   // B x H, c_{-1}
    // backward workspaces
    Matrix<Scalar> d_gates;        // (T*B) x 4H, pre-activation gradients
    Matrix<Scalar> d_hidden_next;  // B x H
    Matrix<Scalar> d_cell_next;    // B x H
    Matrix<Scalar> d_hidden;       // B x H
    Matrix<Scalar> tanh_cell;      // B x H
};

// input: (T*B) x I, step-major. hidden_state, cell_state: B x H, carried in and updated to the last step.
// Output h_t for every step lands in cache.hidden.
template <typename Scalar>
void lstm_forward(const Matrix<Scalar>& input, int steps, const CellWeights<Scalar>& weights,
                  Matrix<Scalar>& hidden_state, Matrix<Scalar>& cell_state, LstmCache<Scalar>& cache);

// d_output: (T*B) x H, the loss gradient with respect to cache.hidden. Gradients do not flow into the
// carried state (truncated BPTT). Accumulates into `gradients`; writes d_input: (T*B) x I.
template <typename Scalar>
void lstm_backward(const Matrix<Scalar>& input, const Matrix<Scalar>& d_output, int steps,
                   const CellWeights<Scalar>& weights, LstmCache<Scalar>& cache,
                   const CellGradients<Scalar>& gradients, Matrix<Scalar>& d_input);

}  // namespace charlm
