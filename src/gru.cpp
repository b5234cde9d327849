// GRU forward and backward over a window (gate order r, z, n and b_hn inside r, as PyTorch's nn.GRU).
#include "charlm/gru.hpp"

#include "charlm/gemm.hpp"

namespace charlm {

template <typename Scalar>
using ConstRef = Eigen::Ref<const Matrix<Scalar>>;

template <typename Scalar>
void gru_forward(LayerInputRef<Scalar> input, int steps, const CellWeights<Scalar>& weights,
                 Matrix<Scalar>& hidden_state, GruCache<Scalar>& cache) {
    const Eigen::Index H = weights.weight_hh.cols(), B = hidden_state.rows(), TB = input.count();
    cache.gates.resize(TB, 3 * H);
    cache.hidden_gates.resize(TB, 3 * H);
    cache.hidden.resize(TB, H);
    cache.initial_hidden = hidden_state;

    // (T*B) x 3H = (T*B) x I . I x 3H: every step's input projection at once, before the time loop.
    // The biases stay apart because r multiplies h W_hn^T + b_hn but not x W_in^T + b_in.
    project_input<Scalar>(input, weights, cache.projection, cache.gates);
    cache.gates.rowwise() += weights.bias_ih.row(0);
    cache.hidden_gates = weights.bias_hh.replicate(TB, 1);

    for (int t = 0; t < steps; ++t) {
        ConstRef<Scalar> hidden_prev = t == 0 ? ConstRef<Scalar>(cache.initial_hidden) : cache.hidden.middleRows((t - 1) * B, B);
        auto gates = cache.gates.middleRows(t * B, B);                // B x 3H
        auto hidden_gates = cache.hidden_gates.middleRows(t * B, B);  // B x 3H
        hidden_gates.noalias() += hidden_prev * weights.weight_hh.transpose();

        gates.leftCols(2 * H) = (gates.leftCols(2 * H) + hidden_gates.leftCols(2 * H)).array().logistic();  // r, z
        gates.rightCols(H) = (gates.rightCols(H).array() + gates.leftCols(H).array() * hidden_gates.rightCols(H).array()).tanh();  // n
        auto update = gates.middleCols(H, H).array();
        auto candidate = gates.rightCols(H).array();
        // (1 - z) n + z h, with one multiply fewer
        cache.hidden.middleRows(t * B, B).array() = candidate + update * (hidden_prev.array() - candidate);
    }
    hidden_state = cache.hidden.bottomRows(B);
}

template <typename Scalar>
void gru_backward(LayerInputRef<Scalar> input, const Matrix<Scalar>& d_output, int steps,
                  const CellWeights<Scalar>& weights, GruCache<Scalar>& cache,
                  const CellGradients<Scalar>& gradients, Matrix<Scalar>& d_input) {
    const Eigen::Index H = weights.weight_hh.cols(), B = cache.initial_hidden.rows(), TB = input.count();
    cache.d_gates.resize(TB, 3 * H);
    cache.d_hidden_gates.resize(TB, 3 * H);
    cache.d_hidden_next.setZero(B, H);

    for (int t = steps - 1; t >= 0; --t) {
        ConstRef<Scalar> hidden_prev = t == 0 ? ConstRef<Scalar>(cache.initial_hidden) : cache.hidden.middleRows((t - 1) * B, B);
        auto gates = cache.gates.middleRows(t * B, B);
        auto reset = gates.leftCols(H).array();
        auto update = gates.middleCols(H, H).array();
        auto candidate = gates.rightCols(H).array();
        auto hidden_candidate = cache.hidden_gates.middleRows(t * B, B).rightCols(H).array();  // h W_hn^T + b_hn
        auto d_gates = cache.d_gates.middleRows(t * B, B);
        auto d_hidden_gates = cache.d_hidden_gates.middleRows(t * B, B);

        cache.d_hidden = d_output.middleRows(t * B, B) + cache.d_hidden_next;
        auto d_hidden = cache.d_hidden.array();
        auto d_candidate = d_gates.rightCols(H).array();  // before tanh
        d_candidate = d_hidden * (1 - update) * (1 - candidate.square());
        d_gates.leftCols(H).array() = d_candidate * hidden_candidate * reset * (1 - reset);
        d_gates.middleCols(H, H).array() = d_hidden * (hidden_prev.array() - candidate) * update * (1 - update);
        d_hidden_gates.leftCols(2 * H) = d_gates.leftCols(2 * H);
        d_hidden_gates.rightCols(H).array() = d_candidate * reset;
        // B x H = B x 3H . 3H x H, plus the direct path through z h
        cache.d_hidden_next.noalias() = d_hidden_gates * weights.weight_hh;
        cache.d_hidden_next.array() += d_hidden * update;
    }

    // Weight gradients as one GEMM per matrix over all steps: 3H x H = 3H x (T*B) . (T*B) x H
    gemm<Scalar>(cache.d_hidden_gates.topRows(B), Transpose::yes, cache.initial_hidden, Transpose::no, Scalar(1),
                 gradients.weight_hh);
    if (steps > 1)
        gemm<Scalar>(cache.d_hidden_gates.bottomRows(TB - B), Transpose::yes, cache.hidden.topRows(TB - B), Transpose::no,
                     Scalar(1), gradients.weight_hh);
    column_sums<Scalar>(cache.d_gates, Scalar(1), gradients.bias_ih);
    column_sums<Scalar>(cache.d_hidden_gates, Scalar(1), gradients.bias_hh);
    project_input_backward<Scalar>(input, cache.d_gates, weights, cache.projection, gradients.weight_ih, d_input);
}

template void gru_forward<float>(LayerInputRef<float>, int, const CellWeights<float>&, Matrix<float>&, GruCache<float>&);
template void gru_forward<double>(LayerInputRef<double>, int, const CellWeights<double>&, Matrix<double>&, GruCache<double>&);
template void gru_backward<float>(LayerInputRef<float>, const Matrix<float>&, int, const CellWeights<float>&, GruCache<float>&,
                                  const CellGradients<float>&, Matrix<float>&);
template void gru_backward<double>(LayerInputRef<double>, const Matrix<double>&, int, const CellWeights<double>&, GruCache<double>&,
                                   const CellGradients<double>&, Matrix<double>&);

}  // namespace charlm
