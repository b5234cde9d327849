// LSTM forward and backward over a window (gate order i, f, g, o as PyTorch's nn.LSTM).
#include "charlm/lstm.hpp"

namespace charlm {

template <typename Scalar>
using ConstRef = Eigen::Ref<const Matrix<Scalar>>;

template <typename Scalar>
void lstm_forward(const Matrix<Scalar>& input, int steps, const CellWeights<Scalar>& weights,
                  Matrix<Scalar>& hidden_state, Matrix<Scalar>& cell_state, LstmCache<Scalar>& cache) {
    const Eigen::Index H = weights.weight_hh.cols(), B = hidden_state.rows(), TB = input.rows();
    cache.gates.resize(TB, 4 * H);
    cache.cell.resize(TB, H);
    cache.hidden.resize(TB, H);
    cache.initial_hidden = hidden_state;
    cache.initial_cell = cell_state;

    // (T*B) x 4H = (T*B) x I . I x 4H: every step's input projection in one GEMM, before the time loop
    cache.gates.noalias() = input * weights.weight_ih.transpose();
    cache.gates.rowwise() += weights.bias_ih.row(0) + weights.bias_hh.row(0);

    for (int t = 0; t < steps; ++t) {
        ConstRef<Scalar> hidden_prev = t == 0 ? ConstRef<Scalar>(cache.initial_hidden) : cache.hidden.middleRows((t - 1) * B, B);
        ConstRef<Scalar> cell_prev = t == 0 ? ConstRef<Scalar>(cache.initial_cell) : cache.cell.middleRows((t - 1) * B, B);
        auto gates = cache.gates.middleRows(t * B, B);  // B x 4H
        gates.noalias() += hidden_prev * weights.weight_hh.transpose();

        gates.leftCols(2 * H) = gates.leftCols(2 * H).array().logistic();  // i, f
        gates.middleCols(2 * H, H) = gates.middleCols(2 * H, H).array().tanh();  // g
        gates.rightCols(H) = gates.rightCols(H).array().logistic();  // o
        auto cell = cache.cell.middleRows(t * B, B);
        cell.array() = gates.middleCols(H, H).array() * cell_prev.array() +
                       gates.leftCols(H).array() * gates.middleCols(2 * H, H).array();
        cache.hidden.middleRows(t * B, B).array() = gates.rightCols(H).array() * cell.array().tanh();
    }
    hidden_state = cache.hidden.bottomRows(B);
    cell_state = cache.cell.bottomRows(B);
}

template <typename Scalar>
void lstm_backward(const Matrix<Scalar>& input, const Matrix<Scalar>& d_output, int steps,
                   const CellWeights<Scalar>& weights, LstmCache<Scalar>& cache,
                   const CellGradients<Scalar>& gradients, Matrix<Scalar>& d_input) {
    const Eigen::Index H = weights.weight_hh.cols(), B = cache.initial_hidden.rows(), TB = input.rows();
    cache.d_gates.resize(TB, 4 * H);
    cache.d_hidden_next.setZero(B, H);
    cache.d_cell_next.setZero(B, H);  // holds dL/dc_t while step t is processed

    for (int t = steps - 1; t >= 0; --t) {
        ConstRef<Scalar> cell_prev = t == 0 ? ConstRef<Scalar>(cache.initial_cell) : cache.cell.middleRows((t - 1) * B, B);
        auto gates = cache.gates.middleRows(t * B, B);
        auto input_gate = gates.leftCols(H).array();
        auto forget_gate = gates.middleCols(H, H).array();
        auto candidate = gates.middleCols(2 * H, H).array();
        auto output_gate = gates.rightCols(H).array();
        auto d_gates = cache.d_gates.middleRows(t * B, B);

        cache.d_hidden = d_output.middleRows(t * B, B) + cache.d_hidden_next;
        cache.tanh_cell = cache.cell.middleRows(t * B, B).array().tanh();
        auto d_hidden = cache.d_hidden.array();
        auto tanh_cell = cache.tanh_cell.array();
        auto d_cell = cache.d_cell_next.array();
        d_cell += d_hidden * output_gate * (1 - tanh_cell.square());

        d_gates.leftCols(H).array() = d_cell * candidate * input_gate * (1 - input_gate);
        d_gates.middleCols(H, H).array() = d_cell * cell_prev.array() * forget_gate * (1 - forget_gate);
        d_gates.middleCols(2 * H, H).array() = d_cell * input_gate * (1 - candidate.square());
        d_gates.rightCols(H).array() = d_hidden * tanh_cell * output_gate * (1 - output_gate);
        d_cell *= forget_gate;
        // B x H = B x 4H . 4H x H
        cache.d_hidden_next.noalias() = d_gates * weights.weight_hh;
    }

    // Weight gradients as one GEMM per matrix over all steps: 4H x I = 4H x (T*B) . (T*B) x I
    gradients.weight_ih.noalias() += cache.d_gates.transpose() * input;
    gradients.weight_hh.noalias() += cache.d_gates.topRows(B).transpose() * cache.initial_hidden;
    if (steps > 1)
        gradients.weight_hh.noalias() += cache.d_gates.bottomRows(TB - B).transpose() * cache.hidden.topRows(TB - B);
    RowVector<Scalar> d_bias = cache.d_gates.colwise().sum();
    gradients.bias_ih.row(0) += d_bias;
    gradients.bias_hh.row(0) += d_bias;
    // (T*B) x I = (T*B) x 4H . 4H x I
    d_input.noalias() = cache.d_gates * weights.weight_ih;
}

template void lstm_forward<float>(const Matrix<float>&, int, const CellWeights<float>&, Matrix<float>&, Matrix<float>&, LstmCache<float>&);
template void lstm_forward<double>(const Matrix<double>&, int, const CellWeights<double>&, Matrix<double>&, Matrix<double>&, LstmCache<double>&);
template void lstm_backward<float>(const Matrix<float>&, const Matrix<float>&, int, const CellWeights<float>&, LstmCache<float>&,
                                   const CellGradients<float>&, Matrix<float>&);
template void lstm_backward<double>(const Matrix<double>&, const Matrix<double>&, int, const CellWeights<double>&, LstmCache<double>&,
                                    const CellGradients<double>&, Matrix<double>&);

}  // namespace charlm
