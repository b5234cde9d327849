// GRU forward and backward over a window (gate order r, z, n and b_hn inside r, as PyTorch's nn.GRU).
#include "charlm/gru.hpp"

#include "charlm/gemm.hpp"
#include "units.hpp"

namespace charlm {

// One row of one step, in one pass over its units: r and z from both products and their biases,
// n's hidden part h W_hn^T + b_hn kept apart for the backward pass, n = tanh(x W_in^T + b_in + r that),
// and h = (1 - z) n + z h_prev, with one multiply fewer.
template <typename Scalar, int Size>
void activate_units(Eigen::Index H, const Scalar* bias_ih, const Scalar* bias_hh, const Scalar* hidden_prev,
                    Scalar* gates, Scalar* hidden_gates, Scalar* hidden, Eigen::Index unit, Eigen::Index count) {
    auto chunk = [&](auto* row) { return units_of<Scalar, Size>(row, unit, count); };
    auto reset = chunk(gates), update = chunk(gates + H), candidate = chunk(gates + 2 * H);
    auto hidden_candidate = chunk(hidden_gates + 2 * H);
    reset = (reset + chunk(bias_ih) + chunk(hidden_gates) + chunk(bias_hh)).logistic();
    update = (update + chunk(bias_ih + H) + chunk(hidden_gates + H) + chunk(bias_hh + H)).logistic();
    hidden_candidate += chunk(bias_hh + 2 * H);
    candidate = (candidate + chunk(bias_ih + 2 * H) + reset * hidden_candidate).tanh();
    chunk(hidden) = candidate + update * (chunk(hidden_prev) - candidate);
}

// One row of one step of the backward pass: from dL/dh_t (the output's gradient plus what step t+1
// sent back), the gradients of x W_ih^T + b_ih and of h W_hh^T + b_hh (n's part times r), and in
// d_hidden_next, the direct path's share of dL/dh_{t-1}, z dL/dh_t, to which the product through
// W_hh is added after.
template <typename Scalar, int Size>
void differentiate_units(Eigen::Index H, const Scalar* gates, const Scalar* hidden_gates, const Scalar* hidden_prev,
                         const Scalar* d_output, Scalar* d_hidden_next, Scalar* d_gates, Scalar* d_hidden_gates,
                         Eigen::Index unit, Eigen::Index count) {
    auto chunk = [&](auto* row) { return units_of<Scalar, Size>(row, unit, count); };
    using Values = Chunk<Scalar, Size>;
    const Values reset = chunk(gates), update = chunk(gates + H), candidate = chunk(gates + 2 * H);
    const Values d_hidden = chunk(d_output) + chunk(d_hidden_next);
    const Values d_candidate = d_hidden * (1 - update) * (1 - candidate.square());  // before tanh
    const Values d_reset = d_candidate * chunk(hidden_gates + 2 * H) * reset * (1 - reset);
    const Values d_update = d_hidden * (chunk(hidden_prev) - candidate) * update * (1 - update);
    chunk(d_gates) = d_reset;
    chunk(d_gates + H) = d_update;
    chunk(d_gates + 2 * H) = d_candidate;
    chunk(d_hidden_gates) = d_reset;
    chunk(d_hidden_gates + H) = d_update;
    chunk(d_hidden_gates + 2 * H) = d_candidate * reset;
    chunk(d_hidden_next) = d_hidden * update;
}

template <typename Scalar>
void gru_forward(LayerInputRef<Scalar> input, int steps, const CellWeights<Scalar>& weights,
                 Matrix<Scalar>& hidden_state, GruCache<Scalar>& cache) {
    const Eigen::Index H = weights.weight_hh.cols(), B = hidden_state.rows(), TB = input.count();
    cache.gates.resize(TB, 3 * H);
    cache.hidden_gates.resize(TB, 3 * H);
    cache.hidden.resize(TB, H);
    cache.initial_hidden = hidden_state;

    // Packed once per window, or once for as long as the weights are frozen (sampling, evaluation).
    cache.recurrent_forward.ensure_packed(weights.weight_hh, Transpose::yes, weights.version);
    // (T*B) x 3H = (T*B) x I . I x 3H: every step's input projection at once, before the time loop
    // (through the table, each step's rows are looked up inside it).
    // The biases stay apart because r multiplies h W_hn^T + b_hn but not x W_in^T + b_in.
    const bool look_up_by_step = project_input<Scalar>(input, weights, cache.projection, cache.gates);

    // Each thread runs every step for its share of the batch, as the LSTM does.
    for_each_row_share(B, kMinRowsPerThread, cache.balance, [&](Eigen::Index first, Eigen::Index rows) {
        for (int t = 0; t < steps; ++t) {
            const Eigen::Index row = t * B + first;
            const auto hidden_prev = t == 0 ? cache.initial_hidden.middleRows(first, rows) : cache.hidden.middleRows(row - B, rows);
            if (look_up_by_step) lookup_rows<Scalar>(input, cache.projection, row, cache.gates.middleRows(row, rows));
            cache.recurrent_forward.multiply(hidden_prev, Scalar(0), cache.hidden_gates.middleRows(row, rows));
            for (Eigen::Index r = 0; r < rows; ++r)
                for_each_chunk(H, [&](auto size, Eigen::Index unit, Eigen::Index count) {
                    activate_units<Scalar, decltype(size)::value>(
                        H, weights.bias_ih.data(), weights.bias_hh.data(), hidden_prev.row(r).data(), cache.gates.row(row + r).data(),
                        cache.hidden_gates.row(row + r).data(), cache.hidden.row(row + r).data(), unit, count);
                });
        }
    });
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
    cache.recurrent_backward.pack(weights.weight_hh, Transpose::no);

    for_each_row_share(B, kMinRowsPerThread, cache.balance, [&](Eigen::Index first, Eigen::Index rows) {
        for (int t = steps - 1; t >= 0; --t) {
            const Eigen::Index row = t * B + first;
            const auto hidden_prev = t == 0 ? cache.initial_hidden.middleRows(first, rows) : cache.hidden.middleRows(row - B, rows);
            auto d_hidden_next = cache.d_hidden_next.middleRows(first, rows);
            for (Eigen::Index r = 0; r < rows; ++r)
                for_each_chunk(H, [&](auto size, Eigen::Index unit, Eigen::Index count) {
                    differentiate_units<Scalar, decltype(size)::value>(
                        H, cache.gates.row(row + r).data(), cache.hidden_gates.row(row + r).data(), hidden_prev.row(r).data(),
                        d_output.row(row + r).data(), d_hidden_next.row(r).data(), cache.d_gates.row(row + r).data(),
                        cache.d_hidden_gates.row(row + r).data(), unit, count);
                });
            // rows x H += rows x 3H . 3H x H; the carried state gets no gradient, so step 0 needs none
            if (t > 0) cache.recurrent_backward.multiply(cache.d_hidden_gates.middleRows(row, rows), Scalar(1), d_hidden_next);
        }
    });

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
