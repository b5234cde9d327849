// Elman RNN forward and backward over a window (h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh), as PyTorch's nn.RNN).
#include "charlm/rnn.hpp"

#include "charlm/gemm.hpp"

namespace charlm {

template <typename Scalar>
using ConstRef = Eigen::Ref<const Matrix<Scalar>>;

template <typename Scalar>
void rnn_forward(LayerInputRef<Scalar> input, int steps, const CellWeights<Scalar>& weights,
                 Matrix<Scalar>& hidden_state, RnnCache<Scalar>& cache) {
    const Eigen::Index B = hidden_state.rows(), TB = input.count();
    cache.hidden.resize(TB, weights.weight_hh.cols());
    cache.initial_hidden = hidden_state;

    // (T*B) x H = (T*B) x I . I x H: every step's input projection at once, before the time loop
    project_input<Scalar>(input, weights, cache.projection, cache.hidden);
    cache.hidden.rowwise() += weights.bias_ih.row(0) + weights.bias_hh.row(0);

    for (int t = 0; t < steps; ++t) {
        ConstRef<Scalar> hidden_prev = t == 0 ? ConstRef<Scalar>(cache.initial_hidden) : cache.hidden.middleRows((t - 1) * B, B);
        auto hidden = cache.hidden.middleRows(t * B, B);  // B x H
        hidden.noalias() += hidden_prev * weights.weight_hh.transpose();
        hidden = hidden.array().tanh();
    }
    hidden_state = cache.hidden.bottomRows(B);
}

template <typename Scalar>
void rnn_backward(LayerInputRef<Scalar> input, const Matrix<Scalar>& d_output, int steps,
                  const CellWeights<Scalar>& weights, RnnCache<Scalar>& cache,
                  const CellGradients<Scalar>& gradients, Matrix<Scalar>& d_input) {
    const Eigen::Index H = weights.weight_hh.cols(), B = cache.initial_hidden.rows(), TB = input.count();
    cache.d_preactivation.resize(TB, H);
    cache.d_hidden_next.setZero(B, H);

    for (int t = steps - 1; t >= 0; --t) {
        auto hidden = cache.hidden.middleRows(t * B, B).array();
        auto d_preactivation = cache.d_preactivation.middleRows(t * B, B);
        d_preactivation.array() = (d_output.middleRows(t * B, B) + cache.d_hidden_next).array() * (1 - hidden.square());
        // B x H = B x H . H x H
        cache.d_hidden_next.noalias() = d_preactivation * weights.weight_hh;
    }

    // Weight gradients as one GEMM per matrix over all steps: H x H = H x (T*B) . (T*B) x H
    gemm<Scalar>(cache.d_preactivation.topRows(B), Transpose::yes, cache.initial_hidden, Transpose::no, Scalar(1),
                 gradients.weight_hh);
    if (steps > 1)
        gemm<Scalar>(cache.d_preactivation.bottomRows(TB - B), Transpose::yes, cache.hidden.topRows(TB - B), Transpose::no,
                     Scalar(1), gradients.weight_hh);
    Matrix<Scalar> d_bias(1, cache.d_preactivation.cols());
    column_sums<Scalar>(cache.d_preactivation, Scalar(0), d_bias);
    gradients.bias_ih += d_bias;
    gradients.bias_hh += d_bias;
    project_input_backward<Scalar>(input, cache.d_preactivation, weights, cache.projection, gradients.weight_ih, d_input);
}

template void rnn_forward<float>(LayerInputRef<float>, int, const CellWeights<float>&, Matrix<float>&, RnnCache<float>&);
template void rnn_forward<double>(LayerInputRef<double>, int, const CellWeights<double>&, Matrix<double>&, RnnCache<double>&);
template void rnn_backward<float>(LayerInputRef<float>, const Matrix<float>&, int, const CellWeights<float>&, RnnCache<float>&,
                                  const CellGradients<float>&, Matrix<float>&);
template void rnn_backward<double>(LayerInputRef<double>, const Matrix<double>&, int, const CellWeights<double>&, RnnCache<double>&,
                                   const CellGradients<double>&, Matrix<double>&);

}  // namespace charlm
