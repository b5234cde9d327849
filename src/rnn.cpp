// Elman RNN forward and backward over a window (h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh), as PyTorch's nn.RNN).
#include "charlm/rnn.hpp"

#include "charlm/gemm.hpp"
#include "units.hpp"

namespace charlm {

template <typename Scalar>
void rnn_forward(LayerInputRef<Scalar> input, int steps, const CellWeights<Scalar>& weights,
                 Matrix<Scalar>& hidden_state, RnnCache<Scalar>& cache) {
    const Eigen::Index B = hidden_state.rows(), TB = input.count();
    cache.hidden.resize(TB, weights.weight_hh.cols());
    cache.initial_hidden = hidden_state;
    cache.bias = weights.bias_ih + weights.bias_hh;

    // Packed once per window, or once for as long as the weights are frozen (sampling, evaluation).
    cache.recurrent_forward.ensure_packed(weights.weight_hh, Transpose::yes, weights.version);
    // (T*B) x H = (T*B) x I . I x H: every step's input projection at once, before the time loop
    // (through the table, each step's rows are looked up inside it)
    const bool look_up_by_step = project_input<Scalar>(input, weights, cache.projection, cache.hidden);

    // Each thread runs every step for its share of the batch, as the LSTM does.
    for_each_row_share(B, kMinRowsPerThread, cache.balance, [&](Eigen::Index first, Eigen::Index rows) {
        for (int t = 0; t < steps; ++t) {
            const Eigen::Index row = t * B + first;
            const auto hidden_prev = t == 0 ? cache.initial_hidden.middleRows(first, rows) : cache.hidden.middleRows(row - B, rows);
            auto hidden = cache.hidden.middleRows(row, rows);  // rows x H
            if (look_up_by_step) lookup_rows<Scalar>(input, cache.projection, row, hidden);
            cache.recurrent_forward.multiply(hidden_prev, Scalar(1), hidden);
            hidden = (hidden.rowwise() + cache.bias).array().tanh();
        }
    });
    hidden_state = cache.hidden.bottomRows(B);
}

template <typename Scalar>
void rnn_backward(LayerInputRef<Scalar> input, const Matrix<Scalar>& d_output, int steps,
                  const CellWeights<Scalar>& weights, RnnCache<Scalar>& cache,
                  const CellGradients<Scalar>& gradients, Matrix<Scalar>& d_input) {
    const Eigen::Index H = weights.weight_hh.cols(), B = cache.initial_hidden.rows(), TB = input.count();
    cache.d_preactivation.resize(TB, H);
    cache.d_hidden_next.setZero(B, H);
    cache.recurrent_backward.pack(weights.weight_hh, Transpose::no);

    for_each_row_share(B, kMinRowsPerThread, cache.balance, [&](Eigen::Index first, Eigen::Index rows) {
        for (int t = steps - 1; t >= 0; --t) {
            const Eigen::Index row = t * B + first;
            auto d_preactivation = cache.d_preactivation.middleRows(row, rows);
            auto d_hidden_next = cache.d_hidden_next.middleRows(first, rows);
            d_preactivation.array() = (d_output.middleRows(row, rows) + d_hidden_next).array() *
                                      (1 - cache.hidden.middleRows(row, rows).array().square());
            // rows x H = rows x H . H x H; the carried state gets no gradient, so step 0 needs none
            if (t > 0) cache.recurrent_backward.multiply(d_preactivation, Scalar(0), d_hidden_next);
        }
    });

    // Weight gradients as one GEMM per matrix over all steps: H x H = H x (T*B) . (T*B) x H
    gemm<Scalar>(cache.d_preactivation.topRows(B), Transpose::yes, cache.initial_hidden, Transpose::no, Scalar(1),
                 gradients.weight_hh);
    if (steps > 1)
        gemm<Scalar>(cache.d_preactivation.bottomRows(TB - B), Transpose::yes, cache.hidden.topRows(TB - B), Transpose::no,
                     Scalar(1), gradients.weight_hh);
    cache.d_bias.resize(1, H);
    column_sums<Scalar>(cache.d_preactivation, Scalar(0), cache.d_bias);
    gradients.bias_ih += cache.d_bias;
    gradients.bias_hh += cache.d_bias;
    project_input_backward<Scalar>(input, cache.d_preactivation, weights, cache.projection, gradients.weight_ih, d_input);
}

template void rnn_forward<float>(LayerInputRef<float>, int, const CellWeights<float>&, Matrix<float>&, RnnCache<float>&);
template void rnn_forward<double>(LayerInputRef<double>, int, const CellWeights<double>&, Matrix<double>&, RnnCache<double>&);
template void rnn_backward<float>(LayerInputRef<float>, const Matrix<float>&, int, const CellWeights<float>&, RnnCache<float>&,
                                  const CellGradients<float>&, Matrix<float>&);
template void rnn_backward<double>(LayerInputRef<double>, const Matrix<double>&, int, const CellWeights<double>&, RnnCache<double>&,
                                   const CellGradients<double>&, Matrix<double>&);

}  // namespace charlm
