// The recurrent-layer engine's time loops, forward and backward, for every cell.
#include "recurrent_layer.hpp"

#include "cells.hpp"
#include "gemm.hpp"
#include "gemm_bf16.hpp"
#include "input_projection.hpp"
#include "kernels.hpp"
#include "row_shares.hpp"
#include "team.hpp"

namespace charlm {

template <typename Scalar>
struct RecurrentLayer<Scalar>::Workspace {
    // The cell's time loops, chosen once when the layer is made.
    void (*forward)(Workspace&, LayerInputRef<Scalar>, int, const LayerWeights<Scalar>&, Matrix<Scalar>&, Matrix<Scalar>&) = nullptr;
    void (*backward)(Workspace&, LayerInputRef<Scalar>, const Matrix<Scalar>&, int, const LayerWeights<Scalar>&,
                     const LayerGradients<Scalar>&, Matrix<Scalar>&) = nullptr;
    void (*prepare_step)(Workspace&, LayerInputRef<Scalar>, const LayerWeights<Scalar>&, const Matrix<Scalar>&, const Matrix<Scalar>&) = nullptr;
    void (*step_in_team)(Workspace&, LayerInputRef<Scalar>, const LayerWeights<Scalar>&, Matrix<Scalar>&, Matrix<Scalar>&, const Team&) = nullptr;

    // What backward needs from forward, sized once per window shape.
    Matrix<Scalar> gates;           // (T*B, G*H): the products, then the activations; after backward, their gradients
    Matrix<Scalar> hidden_gates;    // (T*B, G*H): h W_hh^T, for a cell that keeps it apart; after backward, its gradient
    Matrix<Scalar> hidden;          // (T*B, H): h_t, the layer's output
    Matrix<Scalar> cell;            // (T*B, H): c_t, for a cell that has it
    Matrix<Scalar> initial_hidden;  // (B, H): h_{-1}
    Matrix<Scalar> initial_cell;    // (B, H): c_{-1}
    // (B, G*H) each: the gates of one step, where no backward follows and the input is looked up a step at
    // a time (LayerWeights::backward_follows): a window's gates streamed through memory, a step's stay in cache.
    Matrix<Scalar> step_gates, step_hidden_gates;
    bool gates_kept = false;  // whether gates (and hidden_gates) hold the last forward's every step, for backward
    // At bf16, hidden rounded as the time loop leaves each step's rows: read by the next layer's (or the head's)
    // products, forward and backward, and by this layer's recurrent weights' gradient, rounded once for all.
    Bf16Rows hidden_rounded;
    bool hidden_rounded_kept = false;
    // At bf16 where a backward follows, hidden_rounded transposed as the loop leaves each step's rows, with h_{-1}
    // in front: (H, (T+1)*B). The left operand of the weight gradients that read h, this layer's recurrent and
    // the next layer's input weights', each made transposed: (H, T*B) . (T*B, G*H).
    Bf16Rows hidden_transposed;
    bool hidden_transposed_kept = false;
    // At bf16, a dense input that came unrounded (dropout's): rounded once, for the step's projection and for
    // backward's input weights' gradient.
    Bf16Rows input_rounded;
    bool input_rounded_kept = false;
    RowVector<Scalar> bias;         // (1, G*H): b_ih + b_hh
    // Packed copies of the weights, kept while LayerWeights::version stays the same and nonzero.
    PackedMatrix<Scalar> recurrent_forward;   // W_hh^T
    PackedMatrix<Scalar> stacked_forward;     // [W_ih W_hh]^T, for one step of a few rows (sampling)
    Matrix<Scalar> stacked_input;             // (B, I + H): [x h]
    PackedMatrix<Scalar> recurrent_backward;  // W_hh
    ProjectionCache<Scalar> projection;       // of the input by W_ih
    RowBalance balance;                       // the time loops' batch shares, forward and backward
    // backward's
    Matrix<Scalar> d_hidden_next;  // (B, H)
    Matrix<Scalar> d_cell_next;    // (B, H)
    RowVector<Scalar> d_bias;      // (1, G*H)
    // A team's step (prepare_step): whether [x h] goes through the stacked weights, or the input through the
    // table; at bf16, the products' left operands rounded by rows ([x h], or h and x).
    bool step_stacked = false, step_through_table = false;
    Bf16Rows step_rounded, step_input_rounded;
};

namespace {

template <typename Scalar>
using Workspace = typename RecurrentLayer<Scalar>::Workspace;

// At bf16, the gradients of the recurrent product and of the gates rounded as the cell leaves them (one
// matrix where the cell keeps no recurrent product apart): the operands of the step's product and of the
// weight gradients' products, rounded once in place of once per product. One pair per thread for all its
// layers, as a layer's backward uses them only while it runs (13 MB each on 2x256).
struct Bf16Gradients {
    Bf16Rows recurrent, gates;
};
Bf16Gradients& bf16_gradients() {
    thread_local Bf16Gradients gradients;
    return gradients;
}

// The cell's elementwise step in the kernels in use (kernels.hpp): compiled for the level the CPU runs.
template <typename Cell, typename Scalar>
const CellKernels<Scalar>& cell_kernels() {
    const ScalarKernels<Scalar>& level = kernels().of<Scalar>();
    if constexpr (std::is_same_v<Cell, Lstm>) return level.lstm;
    else if constexpr (std::is_same_v<Cell, Gru>) return level.gru;
    else return level.rnn;
}

// The arrays of row `row` (of T*B) of step t, whose row in the carried state's matrices is `b` (of B):
// those the cell's traits say it uses.
template <typename Cell, typename Scalar>
RowArrays<Scalar> arrays_of_row(Workspace<Scalar>& w, int t, Eigen::Index B, Eigen::Index row, Eigen::Index b) {
    RowArrays<Scalar> arrays;
    arrays.hidden_size = w.hidden.cols();
    arrays.gates = w.gates.row(row).data();
    if constexpr (Cell::recurrent_apart) arrays.hidden_gates = w.hidden_gates.row(row).data();
    arrays.hidden = w.hidden.row(row).data();
    arrays.hidden_prev = t == 0 ? w.initial_hidden.row(b).data() : w.hidden.row(row - B).data();
    if constexpr (Cell::has_cell_state) {
        arrays.cell = w.cell.row(row).data();
        arrays.cell_prev = t == 0 ? w.initial_cell.row(b).data() : w.cell.row(row - B).data();
    }
    return arrays;
}

template <typename Cell, typename Scalar>
void forward_window(Workspace<Scalar>& w, LayerInputRef<Scalar> input, int steps, const LayerWeights<Scalar>& weights,
                    Matrix<Scalar>& hidden_state, Matrix<Scalar>& cell_state) {
    const Eigen::Index H = weights.weight_hh.cols(), B = hidden_state.rows(), TB = input.count(), G = Cell::gate_count;
    if (weights.weight_hh.rows() != G * H) throw Error("recurrent layer: the weights do not fit the cell");
    w.gates.resize(TB, G * H);
    if constexpr (Cell::recurrent_apart) w.hidden_gates.resize(TB, G * H);
    w.hidden.resize(TB, H);
    w.initial_hidden = hidden_state;
    if constexpr (Cell::has_cell_state) {
        w.cell.resize(TB, H);
        w.initial_cell = cell_state;
    }
    w.bias = weights.bias_ih + weights.bias_hh;
    const auto cell_forward = cell_kernels<Cell, Scalar>().forward;

    // One step of a few dense rows against frozen weights (sampling, a character at a time): the input's
    // product and the recurrent one become one, [x h] times [W_ih W_hh]^T packed once per freeze, so
    // that a step makes one pass over the weights and enters one parallel region, not two.
    const bool stacked = !Cell::recurrent_apart && input.rows && steps == 1 && weights.version != 0 &&
                         (TB <= kMinRowsPerThread || weights.row_sums == RowSums::as_if_alone);
    const bool bf16 = std::is_same_v<Scalar, float> && weights.precision == Precision::bf16;
    bool look_up_by_step = false, project_by_step = false;
    const Bf16Rows* input_rounded = nullptr;
    w.input_rounded_kept = false;
    if (stacked) {
        if (!w.stacked_forward.packed_from(weights.version, weights.precision)) {
            Matrix<Scalar> both(G * H, input.size() + H);
            both << weights.weight_ih, weights.weight_hh;
            w.stacked_forward.pack(both, Transpose::yes, weights.version, weights.precision);
        }
        w.stacked_input.resize(B, input.size() + H);
        w.stacked_input << *input.rows, w.initial_hidden;
        w.stacked_forward.multiply(w.stacked_input, Scalar(0), w.gates, weights.row_sums);
    } else if (bf16 && input.rows) {
        // At bf16 a dense input's projection goes a step at a time through the packed kernel, as the recurrent
        // product does: 740-780 GFLOP/s on a step's rows where oneDNN's bf16 matmul ran a window's (T*B, I) x
        // (I, G*H) with I = 256 at about 500 (bare timings, 2 threads, Zen 5), and the step's gates stay in cache
        // for the recurrent product and the cells. Its rows sum as if alone, as every bf16 packed product's do.
        w.recurrent_forward.ensure_packed(weights.weight_hh, Transpose::yes, weights.version, weights.precision);
        w.projection.packed.ensure_packed(weights.weight_ih, Transpose::yes, weights.version, weights.precision);
        if constexpr (std::is_same_v<Scalar, float>) {
            w.input_rounded_kept = input.rounded == nullptr;
            if (w.input_rounded_kept) {
                w.input_rounded.resize(TB, input.size());
                for_each_row_share(TB, kMinRowsPerThread, [&](Eigen::Index first, Eigen::Index rows) {
                    w.input_rounded.round_rows(input.rows->middleRows(first, rows), first);
                });
            }
            input_rounded = input.rounded != nullptr ? input.rounded : &w.input_rounded;
        }
        project_by_step = true;
    } else {
        // Packed once per window, or once for as long as the weights are frozen (sampling, evaluation).
        w.recurrent_forward.ensure_packed(weights.weight_hh, Transpose::yes, weights.version, weights.precision);
        // (T*B, G*H) = (T*B, I) . (I, G*H): every step's input projection at once, before the time loop
        // (through the table, each step's rows are looked up inside it, while they are in cache).
        look_up_by_step = project_input<Scalar>(input, weights, w.projection, w.gates);
    }
    // At bf16 each step's outputs are rounded in the loop, while in cache, for the dense products that read them.
    w.hidden_rounded_kept = bf16 && !stacked;
    if (w.hidden_rounded_kept) w.hidden_rounded.resize(TB, H);
    w.hidden_transposed_kept = w.hidden_rounded_kept && weights.backward_follows;
    if (w.hidden_transposed_kept) w.hidden_transposed.resize(H, TB + B);
    const bool gates_of_step = (look_up_by_step || project_by_step) && !weights.backward_follows;
    if (gates_of_step) {
        w.step_gates.resize(B, G * H);
        if constexpr (Cell::recurrent_apart) w.step_hidden_gates.resize(B, G * H);
    }
    w.gates_kept = !gates_of_step;
    Matrix<Scalar>& gates = gates_of_step ? w.step_gates : w.gates;
    Matrix<Scalar>& hidden_gates = gates_of_step ? w.step_hidden_gates : w.hidden_gates;

    // Each thread runs every step for its share of the batch: the streams are independent. One step
    // against frozen weights (sampling, serving many streams) is one share instead, and its products
    // split the weights' panels among the threads: each thread then reads only its part of the
    // weights, which stays in its core's cache from step to step, where a share of the rows would
    // read all of them (2x256, 16 streams, 2 threads: 60k characters a second in shares of rows, 67k in panels).
    const Eigen::Index min_rows = steps == 1 && weights.version != 0 ? std::max<Eigen::Index>(B, 1) : kMinRowsPerThread;
    for_each_row_share(B, min_rows, w.balance, [&](Eigen::Index first, Eigen::Index rows) {
        for (int t = 0; t < steps; ++t) {
            const Eigen::Index row = t * B + first;
            const auto hidden_prev = t == 0 ? w.initial_hidden.middleRows(first, rows) : w.hidden.middleRows(row - B, rows);
            const Eigen::Index gate_row = gates_of_step ? first : row;
            if (look_up_by_step) lookup_rows<Scalar>(input, w.projection, row, gates.middleRows(gate_row, rows));
            if (project_by_step) w.projection.packed.multiply(middle_rows(*input_rounded, row, rows), Scalar(0), gates.middleRows(gate_row, rows));
            // (rows, G*H) = (rows, H) . (H, G*H)
            if constexpr (Cell::recurrent_apart)
                w.recurrent_forward.multiply(hidden_prev, Scalar(0), hidden_gates.middleRows(gate_row, rows), weights.row_sums);
            else if (!stacked)
                w.recurrent_forward.multiply(hidden_prev, Scalar(1), gates.middleRows(gate_row, rows), weights.row_sums);
            for (Eigen::Index r = 0; r < rows; ++r) {
                RowArrays<Scalar> arrays = arrays_of_row<Cell, Scalar>(w, t, B, row + r, first + r);
                arrays.gates = gates.row(gate_row + r).data();
                if constexpr (Cell::recurrent_apart) arrays.hidden_gates = hidden_gates.row(gate_row + r).data();
                arrays.bias = w.bias.data();
                arrays.bias_ih = weights.bias_ih.data();
                arrays.bias_hh = weights.bias_hh.data();
                cell_forward(arrays);
            }
            if constexpr (std::is_same_v<Scalar, float>) {
                if (w.hidden_rounded_kept) w.hidden_rounded.round_rows(w.hidden.middleRows(row, rows), row);
                if (w.hidden_transposed_kept) {
                    if (t == 0) {
                        thread_local Bf16Rows initial;
                        initial.resize(rows, H);
                        initial.round_rows(w.initial_hidden.middleRows(first, rows), 0);
                        transpose_bf16(middle_rows(initial, 0, rows), w.hidden_transposed, first);
                    }
                    transpose_bf16(middle_rows(w.hidden_rounded, row, rows), w.hidden_transposed, B + row);
                }
            }
        }
    });
    hidden_state = w.hidden.bottomRows(B);
    if constexpr (Cell::has_cell_state) cell_state = w.cell.bottomRows(B);
}

// One step against frozen weights that a team splits (team.hpp): prepare_one_step() on one thread, then
// one_step_in_team() on every member. The phases are split as forward_window()'s one step splits them, rows
// for copies and cells, the weights' panels for products, so the bits are the same; but they meet at the
// team's barrier in place of entering a parallel region each (Model's decoding step runs all layers and
// the head in one region).
template <typename Cell, typename Scalar>
void prepare_one_step(Workspace<Scalar>& w, LayerInputRef<Scalar> input, const LayerWeights<Scalar>& weights, const Matrix<Scalar>& hidden_state,
                  const Matrix<Scalar>& cell_state) {
    const Eigen::Index H = weights.weight_hh.cols(), I = input.size(), G = Cell::gate_count, B = hidden_state.rows();
    if (weights.weight_hh.rows() != G * H) throw Error("recurrent layer: the weights do not fit the cell");
    if (weights.version == 0 || input.count() != B) throw Error("recurrent layer: a team's step is one step against frozen weights");
    if (hidden_state.cols() != H || (Cell::has_cell_state && (cell_state.rows() != B || cell_state.cols() != H)))
        throw Error("recurrent layer: the carried state does not fit the layer");
    w.gates.resize(B, G * H);
    if constexpr (Cell::recurrent_apart) w.hidden_gates.resize(B, G * H);
    w.hidden.resize(B, H);
    w.initial_hidden.resize(B, H);
    if constexpr (Cell::has_cell_state) {
        w.cell.resize(B, H);
        w.initial_cell.resize(B, H);
    }
    w.bias = weights.bias_ih + weights.bias_hh;
    w.gates_kept = true;  // the step's gates are all the window's
    w.hidden_rounded_kept = false;
    w.hidden_transposed_kept = false;
    w.input_rounded_kept = false;
    const bool bf16 = std::is_same_v<Scalar, float> && weights.precision == Precision::bf16;
    // As forward_window() chooses for one step.
    w.step_stacked = !Cell::recurrent_apart && input.rows && (B <= kMinRowsPerThread || weights.row_sums == RowSums::as_if_alone);
    if (w.step_stacked) {
        if (!w.stacked_forward.packed_from(weights.version, weights.precision)) {
            Matrix<Scalar> both(G * H, I + H);
            both << weights.weight_ih, weights.weight_hh;
            w.stacked_forward.pack(both, Transpose::yes, weights.version, weights.precision);
        }
        w.stacked_input.resize(B, I + H);
        w.stacked_forward.check_shapes(B, I + H, w.gates);
        if (bf16) w.step_rounded.resize(B, I + H);
        return;
    }
    w.recurrent_forward.ensure_packed(weights.weight_hh, Transpose::yes, weights.version, weights.precision);
    w.recurrent_forward.check_shapes(B, H, Cell::recurrent_apart ? w.hidden_gates : w.gates);
    if (bf16) w.step_rounded.resize(B, H);
    w.step_through_table = prepare_step_projection<Scalar>(input, weights, w.projection);
    if (!w.step_through_table) {
        w.projection.packed.check_shapes(B, I, w.gates);
        // Each member adds the recurrent product to the projection's columns it made itself.
        if (w.projection.packed.panel_count() != w.recurrent_forward.panel_count())
            throw Error("recurrent layer: the packed weights' panels do not match");
        if (bf16) w.step_input_rounded.resize(B, I);
    }
}

// Ends after the cells, with no barrier: the next layer's first phase reads only this member's rows.
template <typename Cell, typename Scalar>
void one_step_in_team(Workspace<Scalar>& w, LayerInputRef<Scalar> input, const LayerWeights<Scalar>& weights, Matrix<Scalar>& hidden_state,
                  Matrix<Scalar>& cell_state, const Team& team) {
    const Eigen::Index B = w.hidden.rows(), H = w.hidden.cols(), I = input.size();
    const Eigen::Index first = team.first(B), rows = team.end(B) - first;
    constexpr bool is_float = std::is_same_v<Scalar, float>;
    const bool bf16 = is_float && weights.precision == Precision::bf16;
    const auto round = [&](Bf16Rows& rounded, ConstMatrixRef<Scalar> x) {
        if constexpr (is_float) rounded.round_rows(x.middleRows(first, rows), first);
    };
    // This member's rows: the carried state in, the products' left operands.
    w.initial_hidden.middleRows(first, rows) = hidden_state.middleRows(first, rows);
    if constexpr (Cell::has_cell_state) w.initial_cell.middleRows(first, rows) = cell_state.middleRows(first, rows);
    const Matrix<Scalar>& dense = input.rows ? *input.rows : w.projection.gathered;
    if (w.step_stacked) {
        w.stacked_input.middleRows(first, rows).leftCols(I) = input.rows->middleRows(first, rows);
        w.stacked_input.middleRows(first, rows).rightCols(H) = w.initial_hidden.middleRows(first, rows);
        if (bf16) round(w.step_rounded, w.stacked_input);
    } else {
        if (w.step_through_table) {
            lookup_rows<Scalar>(input, w.projection, first, w.gates.middleRows(first, rows));
        } else {
            if (!input.rows)
                for (Eigen::Index row = first; row < first + rows; ++row)
                    w.projection.gathered.row(row) = input.embedding->row(input.tokens[static_cast<std::size_t>(row)]);
            if (bf16) round(w.step_input_rounded, dense);
        }
        if (bf16) round(w.step_rounded, w.initial_hidden);
    }
    team.sync();
    // This member's panels of the products: (B, G*H) = [x h] . [W_ih W_hh]^T, or x . W_ih^T (the table's
    // rows where it has them) plus h . W_hh^T.
    const auto multiply = [&](const PackedMatrix<Scalar>& packed, const Bf16Rows& rounded, ConstMatrixRef<Scalar> a, Scalar beta,
                              MatrixRef<Scalar> c) {
        if (bf16) packed.multiply_share(middle_rows(rounded, 0, B), beta, c, team);
        else packed.multiply_share(a, beta, c, weights.row_sums, team);
    };
    if (w.step_stacked) {
        multiply(w.stacked_forward, w.step_rounded, w.stacked_input, Scalar(0), w.gates);
    } else {
        if (!w.step_through_table) multiply(w.projection.packed, w.step_input_rounded, dense, Scalar(0), w.gates);
        if constexpr (Cell::recurrent_apart) multiply(w.recurrent_forward, w.step_rounded, w.initial_hidden, Scalar(0), w.hidden_gates);
        else multiply(w.recurrent_forward, w.step_rounded, w.initial_hidden, Scalar(1), w.gates);
    }
    team.sync();
    // This member's rows: the cells, and the carried state out.
    const auto cell_forward = cell_kernels<Cell, Scalar>().forward;
    for (Eigen::Index row = first; row < first + rows; ++row) {
        RowArrays<Scalar> arrays = arrays_of_row<Cell, Scalar>(w, 0, B, row, row);
        arrays.bias = w.bias.data();
        arrays.bias_ih = weights.bias_ih.data();
        arrays.bias_hh = weights.bias_hh.data();
        cell_forward(arrays);
    }
    hidden_state.middleRows(first, rows) = w.hidden.middleRows(first, rows);
    if constexpr (Cell::has_cell_state) cell_state.middleRows(first, rows) = w.cell.middleRows(first, rows);
}

template <typename Cell, typename Scalar>
void backward_window(Workspace<Scalar>& w, LayerInputRef<Scalar> input, const Matrix<Scalar>& d_output, int steps,
                     const LayerWeights<Scalar>& weights, const LayerGradients<Scalar>& gradients, Matrix<Scalar>& d_input) {
    const Eigen::Index H = weights.weight_hh.cols(), B = w.initial_hidden.rows(), TB = input.count();
    if (!w.gates_kept) throw Error("recurrent layer: backward() follows a forward() told that none would");
    w.d_hidden_next.setZero(B, H);
    if constexpr (Cell::has_cell_state) w.d_cell_next.setZero(B, H);  // holds dL/dc_t while step t is processed
    w.recurrent_backward.pack(weights.weight_hh, Transpose::no, 0, weights.precision);
    // The gradient of h W_hh^T + b_hh, which the cell leaves in gates unless it keeps that product apart.
    const Matrix<Scalar>& d_recurrent = Cell::recurrent_apart ? w.hidden_gates : w.gates;
    const auto cell_backward = cell_kernels<Cell, Scalar>().backward;
    // At bf16 each step's gradient rows are rounded while they are in cache, for the step's product and the
    // weight gradients' products after the loop: the same bits as each product rounding them itself.
    const bool round = std::is_same_v<Scalar, float> && weights.precision == Precision::bf16;
    Bf16Gradients& rounded = bf16_gradients();
    if (round) {
        rounded.recurrent.resize(TB, d_recurrent.cols());
        if constexpr (Cell::recurrent_apart) rounded.gates.resize(TB, w.gates.cols());
    }

    for_each_row_share(B, kMinRowsPerThread, w.balance, [&](Eigen::Index first, Eigen::Index rows) {
        for (int t = steps - 1; t >= 0; --t) {
            const Eigen::Index row = t * B + first;
            for (Eigen::Index r = 0; r < rows; ++r) {
                RowArrays<Scalar> arrays = arrays_of_row<Cell, Scalar>(w, t, B, row + r, first + r);
                arrays.d_output = d_output.row(row + r).data();
                arrays.d_hidden_next = w.d_hidden_next.row(first + r).data();
                if constexpr (Cell::has_cell_state) arrays.d_cell = w.d_cell_next.row(first + r).data();
                cell_backward(arrays);
            }
            if constexpr (std::is_same_v<Scalar, float>) {
                if (round) {
                    rounded.recurrent.round_rows(d_recurrent.middleRows(row, rows), row);
                    if constexpr (Cell::recurrent_apart) rounded.gates.round_rows(w.gates.middleRows(row, rows), row);
                }
            }
            // (rows, H) = (rows, G*H) . (G*H, H), added to what the cell left where h' skips the weights;
            // the carried state gets no gradient, so step 0 needs none
            if (t == 0) continue;
            const Scalar beta(Cell::hidden_skips_weights ? 1 : 0);
            if (round)
                w.recurrent_backward.multiply(middle_rows(rounded.recurrent, row, rows), beta, w.d_hidden_next.middleRows(first, rows));
            else
                w.recurrent_backward.multiply(d_recurrent.middleRows(row, rows), beta, w.d_hidden_next.middleRows(first, rows));
        }
    });

    // Weight gradients as one product per matrix over all steps: (G*H, H) = (G*H, T*B) . (T*B, H); at bf16, where the
    // forward loop kept h transposed (h_{-1} in front), made as its transpose (H, T*B) . (T*B, G*H) and added transposed
    const Bf16Rows* d_gates_rounded = nullptr;
    if constexpr (std::is_same_v<Scalar, float>) {
        if (round && w.hidden_transposed_kept) {
            add_product_transposed(middle_cols(w.hidden_transposed, 0, TB), middle_rows(rounded.recurrent, 0, TB), gradients.weight_hh);
        } else if (round) {
            gemm_bf16(middle_rows(rounded.recurrent, 0, B), Transpose::yes, w.initial_hidden, Transpose::no, 1.0f,
                      gradients.weight_hh);
            if (steps > 1 && w.hidden_rounded_kept)
                gemm_bf16(middle_rows(rounded.recurrent, B, TB - B), Transpose::yes, middle_rows(w.hidden_rounded, 0, TB - B),
                          Transpose::no, 1.0f, gradients.weight_hh);
            else if (steps > 1)
                gemm_bf16(middle_rows(rounded.recurrent, B, TB - B), Transpose::yes, w.hidden.topRows(TB - B), Transpose::no,
                          1.0f, gradients.weight_hh);
        }
        if (round) d_gates_rounded = Cell::recurrent_apart ? &rounded.gates : &rounded.recurrent;
    }
    if (!round) {
        gemm<Scalar>(d_recurrent.topRows(B), Transpose::yes, w.initial_hidden, Transpose::no, Scalar(1), gradients.weight_hh,
                     weights.precision);
        if (steps > 1)
            gemm<Scalar>(d_recurrent.bottomRows(TB - B), Transpose::yes, w.hidden.topRows(TB - B), Transpose::no, Scalar(1),
                         gradients.weight_hh, weights.precision);
    }
    if constexpr (Cell::recurrent_apart) {
        column_sums<Scalar>(w.gates, Scalar(1), gradients.bias_ih);
        column_sums<Scalar>(w.hidden_gates, Scalar(1), gradients.bias_hh);
    } else {  // the two biases enter as one: the same gradient, summed once
        w.d_bias.resize(1, w.gates.cols());
        column_sums<Scalar>(w.gates, Scalar(0), w.d_bias);
        gradients.bias_ih += w.d_bias;
        gradients.bias_hh += w.d_bias;
    }
    LayerInput<Scalar> rounded_input = input;  // the input as forward rounded it, where its caller had not
    if (w.input_rounded_kept) rounded_input.rounded = &w.input_rounded;
    project_input_backward<Scalar>(rounded_input, w.gates, weights, w.projection, gradients.weight_ih, d_input, d_gates_rounded);
}

}  // namespace

template <typename Scalar>
RecurrentLayer<Scalar>::RecurrentLayer(CellType cell) : workspace_(std::make_unique<Workspace>()) {
    with_cell(cell, [&](auto chosen) {
        using Cell = decltype(chosen);
        workspace_->forward = &forward_window<Cell, Scalar>;
        workspace_->backward = &backward_window<Cell, Scalar>;
        workspace_->prepare_step = &prepare_one_step<Cell, Scalar>;
        workspace_->step_in_team = &one_step_in_team<Cell, Scalar>;
    });
}

template <typename Scalar>
RecurrentLayer<Scalar>::RecurrentLayer(RecurrentLayer&&) noexcept = default;
template <typename Scalar>
RecurrentLayer<Scalar>& RecurrentLayer<Scalar>::operator=(RecurrentLayer&&) noexcept = default;
template <typename Scalar>
RecurrentLayer<Scalar>::~RecurrentLayer() = default;

template <typename Scalar>
void RecurrentLayer<Scalar>::forward(LayerInputRef<Scalar> input, int steps, const LayerWeights<Scalar>& weights,
                                     Matrix<Scalar>& hidden_state, Matrix<Scalar>& cell_state) {
    workspace_->forward(*workspace_, input, steps, weights, hidden_state, cell_state);
}

template <typename Scalar>
void RecurrentLayer<Scalar>::backward(LayerInputRef<Scalar> input, const Matrix<Scalar>& d_output, int steps,
                                      const LayerWeights<Scalar>& weights, const LayerGradients<Scalar>& gradients,
                                      Matrix<Scalar>& d_input) {
    workspace_->backward(*workspace_, input, d_output, steps, weights, gradients, d_input);
}

template <typename Scalar>
void RecurrentLayer<Scalar>::prepare_step(LayerInputRef<Scalar> input, const LayerWeights<Scalar>& weights, const Matrix<Scalar>& hidden_state,
                                          const Matrix<Scalar>& cell_state) {
    workspace_->prepare_step(*workspace_, input, weights, hidden_state, cell_state);
}

template <typename Scalar>
void RecurrentLayer<Scalar>::step_in_team(LayerInputRef<Scalar> input, const LayerWeights<Scalar>& weights, Matrix<Scalar>& hidden_state,
                                          Matrix<Scalar>& cell_state, const Team& team) {
    workspace_->step_in_team(*workspace_, input, weights, hidden_state, cell_state, team);
}

template <typename Scalar>
const Matrix<Scalar>& RecurrentLayer<Scalar>::output() const {
    return workspace_->hidden;
}

template <typename Scalar>
const Bf16Rows* RecurrentLayer<Scalar>::output_rounded() const {
    return workspace_->hidden_rounded_kept ? &workspace_->hidden_rounded : nullptr;
}

template <typename Scalar>
Bf16RowsRef RecurrentLayer<Scalar>::output_transposed() const {
    const Workspace& w = *workspace_;
    if (!w.hidden_transposed_kept) return {};
    return middle_cols(w.hidden_transposed, w.initial_hidden.rows(), w.hidden_transposed.cols - w.initial_hidden.rows());
}

template <typename Scalar>
RowBalance& RecurrentLayer<Scalar>::balance() {
    return workspace_->balance;
}

template <typename Scalar>
const Matrix<Scalar>& RecurrentLayer<Scalar>::gate_gradients() const {
    return workspace_->gates;
}

template class RecurrentLayer<float>;
template class RecurrentLayer<double>;

}  // namespace charlm
