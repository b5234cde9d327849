// LSTM forward and backward over a window (gate order i, f, g, o as PyTorch's nn.LSTM).
#include "charlm/lstm.hpp"

#include "units.hpp"

namespace charlm {

// One row of one step, in one pass over its units: the gates' activations over their pre-activations
// plus bias (i, f, o logistic, g tanh), then c = f c_prev + i g and h = o tanh(c).
template <typename Scalar, int Size>
void activate_units(Eigen::Index H, const Scalar* bias, const Scalar* cell_prev, Scalar* gates, Scalar* cell,
                    Scalar* hidden, Eigen::Index unit, Eigen::Index count) {
    auto chunk = [&](auto* row) { return units_of<Scalar, Size>(row, unit, count); };
    auto input_gate = chunk(gates), forget_gate = chunk(gates + H), candidate = chunk(gates + 2 * H),
         output_gate = chunk(gates + 3 * H);
    input_gate = (input_gate + chunk(bias)).logistic();
    forget_gate = (forget_gate + chunk(bias + H)).logistic();
    candidate = (candidate + chunk(bias + 2 * H)).tanh();
    output_gate = (output_gate + chunk(bias + 3 * H)).logistic();
    auto new_cell = chunk(cell);
    new_cell = forget_gate * chunk(cell_prev) + input_gate * candidate;
    chunk(hidden) = output_gate * new_cell.tanh();
}

// One row of one step of the backward pass, in one pass over its units: from dL/dh_t (the output's
// gradient plus what step t+1 sent back) and dL/dc_t, the four gates' pre-activation gradients, each
// written over its activation, and dL/dc_{t-1}, written over dL/dc_t.
template <typename Scalar, int Size>
void differentiate_units(Eigen::Index H, const Scalar* cell, const Scalar* cell_prev, const Scalar* d_output,
                         const Scalar* d_hidden_next, Scalar* d_cell, Scalar* gates, Eigen::Index unit, Eigen::Index count) {
    auto chunk = [&](auto* row) { return units_of<Scalar, Size>(row, unit, count); };
    auto input_gate = chunk(gates), forget_gate = chunk(gates + H), candidate = chunk(gates + 2 * H),
         output_gate = chunk(gates + 3 * H), d_cell_chunk = chunk(d_cell);
    using Values = Chunk<Scalar, Size>;
    const Values i = input_gate, f = forget_gate, g = candidate, o = output_gate;
    const Values tanh_cell = chunk(cell).tanh();
    const Values d_hidden = chunk(d_output) + chunk(d_hidden_next);
    const Values d_c = d_cell_chunk + d_hidden * o * (1 - tanh_cell.square());
    output_gate = d_hidden * tanh_cell * o * (1 - o);
    forget_gate = d_c * chunk(cell_prev) * f * (1 - f);
    input_gate = d_c * g * i * (1 - i);
    candidate = d_c * i * (1 - g.square());
    d_cell_chunk = d_c * f;
}

template <typename Scalar>
void lstm_forward(LayerInputRef<Scalar> input, int steps, const CellWeights<Scalar>& weights,
                  Matrix<Scalar>& hidden_state, Matrix<Scalar>& cell_state, LstmCache<Scalar>& cache) {
    const Eigen::Index H = weights.weight_hh.cols(), B = hidden_state.rows(), TB = input.count();
    cache.gates.resize(TB, 4 * H);
    cache.cell.resize(TB, H);
    cache.hidden.resize(TB, H);
    cache.initial_hidden = hidden_state;
    cache.initial_cell = cell_state;
    cache.bias = weights.bias_ih + weights.bias_hh;

    // One step of a few dense rows against frozen weights (sampling, a character at a time): the input's
    // product and the recurrent one become one, [x h] times [W_ih W_hh]^T packed once per freeze, so
    // that a step makes one pass over the weights and enters one parallel region, not two.
    const bool stacked = input.rows && steps == 1 && weights.version != 0 && TB <= kMinRowsPerThread;
    bool look_up_by_step = false;
    if (stacked) {
        if (!cache.stacked_forward.packed_from(weights.version)) {
            Matrix<Scalar> both(4 * H, input.size() + H);
            both << weights.weight_ih, weights.weight_hh;
            cache.stacked_forward.pack(both, Transpose::yes, weights.version);
        }
        cache.stacked_input.resize(B, input.size() + H);
        cache.stacked_input << *input.rows, cache.initial_hidden;
        cache.stacked_forward.multiply(cache.stacked_input, Scalar(0), cache.gates);
    } else {
        // Packed once per window, or once for as long as the weights are frozen (sampling, evaluation).
        cache.recurrent_forward.ensure_packed(weights.weight_hh, Transpose::yes, weights.version);
        // (T*B) x 4H = (T*B) x I . I x 4H: every step's input projection at once, before the time loop
        // (through the table, each step's rows are looked up inside it).
        look_up_by_step = project_input<Scalar>(input, weights, cache.projection, cache.gates);
    }

    for_each_row_share(B, kMinRowsPerThread, cache.balance, [&](Eigen::Index first, Eigen::Index rows) {
        for (int t = 0; t < steps; ++t) {
            const Eigen::Index row = t * B + first;
            const auto hidden_prev = t == 0 ? cache.initial_hidden.middleRows(first, rows) : cache.hidden.middleRows(row - B, rows);
            const auto cell_prev = t == 0 ? cache.initial_cell.middleRows(first, rows) : cache.cell.middleRows(row - B, rows);
            auto gates = cache.gates.middleRows(row, rows);  // rows x 4H
            if (look_up_by_step) lookup_rows<Scalar>(input, cache.projection, row, gates);
            if (!stacked) cache.recurrent_forward.multiply(hidden_prev, Scalar(1), gates);
            for (Eigen::Index r = 0; r < rows; ++r)
                for_each_chunk(H, [&](auto size, Eigen::Index unit, Eigen::Index count) {
                    activate_units<Scalar, decltype(size)::value>(H, cache.bias.data(), cell_prev.row(r).data(), gates.row(r).data(),
                                                                  cache.cell.row(row + r).data(), cache.hidden.row(row + r).data(),
                                                                  unit, count);
                });
        }
    });
    hidden_state = cache.hidden.bottomRows(B);
    cell_state = cache.cell.bottomRows(B);
}

template <typename Scalar>
void lstm_backward(LayerInputRef<Scalar> input, const Matrix<Scalar>& d_output, int steps,
                   const CellWeights<Scalar>& weights, LstmCache<Scalar>& cache,
                   const CellGradients<Scalar>& gradients, Matrix<Scalar>& d_input) {
    const Eigen::Index H = weights.weight_hh.cols(), B = cache.initial_hidden.rows(), TB = input.count();
    cache.d_hidden_next.setZero(B, H);
    cache.d_cell_next.setZero(B, H);  // holds dL/dc_t while step t is processed
    cache.recurrent_backward.pack(weights.weight_hh, Transpose::no);

    for_each_row_share(B, kMinRowsPerThread, cache.balance, [&](Eigen::Index first, Eigen::Index rows) {
        for (int t = steps - 1; t >= 0; --t) {
            const Eigen::Index row = t * B + first;
            const auto cell_prev = t == 0 ? cache.initial_cell.middleRows(first, rows) : cache.cell.middleRows(row - B, rows);
            for (Eigen::Index r = 0; r < rows; ++r)
                for_each_chunk(H, [&](auto size, Eigen::Index unit, Eigen::Index count) {
                    differentiate_units<Scalar, decltype(size)::value>(
                        H, cache.cell.row(row + r).data(), cell_prev.row(r).data(), d_output.row(row + r).data(),
                        cache.d_hidden_next.row(first + r).data(), cache.d_cell_next.row(first + r).data(),
                        cache.gates.row(row + r).data(), unit, count);
                });
            // rows x H = rows x 4H . 4H x H; the carried state gets no gradient, so step 0 needs none
            if (t > 0)
                cache.recurrent_backward.multiply(cache.gates.middleRows(row, rows), Scalar(0), cache.d_hidden_next.middleRows(first, rows));
        }
    });

    // Weight gradients as one GEMM per matrix over all steps: 4H x H = 4H x (T*B) . (T*B) x H
    const Matrix<Scalar>& d_gates = cache.gates;
    gemm<Scalar>(d_gates.topRows(B), Transpose::yes, cache.initial_hidden, Transpose::no, Scalar(1), gradients.weight_hh);
    if (steps > 1)
        gemm<Scalar>(d_gates.bottomRows(TB - B), Transpose::yes, cache.hidden.topRows(TB - B), Transpose::no, Scalar(1),
                     gradients.weight_hh);
    cache.d_bias.resize(1, 4 * H);
    column_sums<Scalar>(d_gates, Scalar(0), cache.d_bias);
    gradients.bias_ih += cache.d_bias;
    gradients.bias_hh += cache.d_bias;
    project_input_backward<Scalar>(input, d_gates, weights, cache.projection, gradients.weight_ih, d_input);
}

template void lstm_forward<float>(LayerInputRef<float>, int, const CellWeights<float>&, Matrix<float>&, Matrix<float>&, LstmCache<float>&);
template void lstm_forward<double>(LayerInputRef<double>, int, const CellWeights<double>&, Matrix<double>&, Matrix<double>&, LstmCache<double>&);
template void lstm_backward<float>(LayerInputRef<float>, const Matrix<float>&, int, const CellWeights<float>&, LstmCache<float>&,
                                   const CellGradients<float>&, Matrix<float>&);
template void lstm_backward<double>(LayerInputRef<double>, const Matrix<double>&, int, const CellWeights<double>&, LstmCache<double>&,
                                    const CellGradients<double>&, Matrix<double>&);

}  // namespace charlm
