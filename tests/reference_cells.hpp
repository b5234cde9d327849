// Plain reference implementations of the three cells, for checking the engine against: the whole batch
// one step at a time, plain Eigen products, double precision, each cell written as PyTorch documents it
// (nn.LSTM, nn.GRU, nn.RNN), with nothing of the engine's (no packing, no shares, no chunks, no tables).
#pragma once

#include <cmath>

#include "charlm/model.hpp"
#include "charlm/tensor.hpp"

namespace charlm::testing {

using Block = Eigen::ArrayXXd;  // (B, H) or (B, G*H), one step of the batch

struct ReferenceWeights {
    Matrix<double> weight_ih, weight_hh, bias_ih, bias_hh;  // (G*H, I), (G*H, H), (1, G*H), (1, G*H)
};

// What one step keeps for its backward pass, and what its backward pass gives.
struct ReferenceStep {
    Block input_part, hidden_part;  // x W_ih^T + b_ih and h W_hh^T + b_hh, (B, G*H)
    Block hidden_prev, cell_prev, hidden, cell;
};
struct ReferenceStepGradients {
    Block d_input_part, d_hidden_part;  // of x W_ih^T + b_ih and h W_hh^T + b_hh
    Block d_hidden_prev_direct;         // the part of dL/dh_{t-1} not through W_hh
    Block d_cell_prev;
};

inline Block sigmoid(const Block& x) { return 1 / (1 + (-x).exp()); }
inline Block gate(const Block& all, int k, Eigen::Index H) { return all.middleCols(k * H, H); }

// h' (and c') from the two products of one step.
inline void reference_step(CellType cell, ReferenceStep& s) {
    const Eigen::Index H = s.hidden_prev.cols();
    const Block pre = s.input_part + s.hidden_part;
    switch (cell) {
        case CellType::lstm: {
            const Block i = sigmoid(gate(pre, 0, H)), f = sigmoid(gate(pre, 1, H)), g = gate(pre, 2, H).tanh(), o = sigmoid(gate(pre, 3, H));
            s.cell = f * s.cell_prev + i * g;
            s.hidden = o * s.cell.tanh();
            return;
        }
        case CellType::gru: {
            const Block r = sigmoid(gate(pre, 0, H)), z = sigmoid(gate(pre, 1, H));
            const Block n = (gate(s.input_part, 2, H) + r * gate(s.hidden_part, 2, H)).tanh();
            s.hidden = (1 - z) * n + z * s.hidden_prev;
            return;
        }
        case CellType::rnn: s.hidden = pre.tanh(); return;
    }
}

// The step's gradients from dL/dh' and dL/dc', by the chain rule on reference_step's equations.
inline ReferenceStepGradients reference_step_backward(CellType cell, const ReferenceStep& s, const Block& dh, const Block& dc) {
    const Eigen::Index H = s.hidden_prev.cols(), B = s.hidden_prev.rows();
    const Block pre = s.input_part + s.hidden_part;
    ReferenceStepGradients d;
    d.d_hidden_prev_direct = Block::Zero(B, H);
    d.d_cell_prev = Block::Zero(B, H);
    switch (cell) {
        case CellType::lstm: {
            const Block i = sigmoid(gate(pre, 0, H)), f = sigmoid(gate(pre, 1, H)), g = gate(pre, 2, H).tanh(), o = sigmoid(gate(pre, 3, H));
            const Block tanh_c = s.cell.tanh();
            const Block d_c = dc + dh * o * (1 - tanh_c.square());
            Block d_pre(B, 4 * H);
            d_pre << d_c * g * i * (1 - i), d_c * s.cell_prev * f * (1 - f), d_c * i * (1 - g.square()), dh * tanh_c * o * (1 - o);
            d.d_input_part = d.d_hidden_part = d_pre;
            d.d_cell_prev = d_c * f;
            break;
        }
        case CellType::gru: {
            const Block r = sigmoid(gate(pre, 0, H)), z = sigmoid(gate(pre, 1, H));
            const Block hidden_n = gate(s.hidden_part, 2, H);
            const Block n = (gate(s.input_part, 2, H) + r * hidden_n).tanh();
            const Block d_n = dh * (1 - z) * (1 - n.square());
            const Block d_r = d_n * hidden_n * r * (1 - r), d_z = dh * (s.hidden_prev - n) * z * (1 - z);
            d.d_input_part.resize(B, 3 * H);
            d.d_input_part << d_r, d_z, d_n;
            d.d_hidden_part.resize(B, 3 * H);
            d.d_hidden_part << d_r, d_z, d_n * r;
            d.d_hidden_prev_direct = dh * z;
            break;
        }
        case CellType::rnn:
            d.d_input_part = d.d_hidden_part = dh * (1 - s.hidden.square());
            break;
    }
    return d;
}

// A layer over T steps of B streams, forward and backward, with the reference steps.
struct ReferenceLayer {
    explicit ReferenceLayer(CellType cell_type) : cell(cell_type) {}

    CellType cell;
    Matrix<double> hidden;                       // (T*B, H): h_t of every step
    Matrix<double> final_hidden, final_cell;     // (B, H)
    ReferenceWeights gradients;                  // after backward
    Matrix<double> d_input;                      // (T*B, I), after backward
    std::vector<ReferenceStep> steps;

    void forward(const Matrix<double>& input, int step_count, const ReferenceWeights& w, const Matrix<double>& initial_hidden,
                 const Matrix<double>& initial_cell) {
        const Eigen::Index B = initial_hidden.rows(), H = initial_hidden.cols();
        hidden.resize(step_count * B, H);
        steps.assign(static_cast<std::size_t>(step_count), {});
        Block h = initial_hidden.array(), c = cell == CellType::lstm ? Block(initial_cell.array()) : Block::Zero(B, H);
        for (int t = 0; t < step_count; ++t) {
            ReferenceStep& s = steps[static_cast<std::size_t>(t)];
            s.input_part = ((input.middleRows(t * B, B) * w.weight_ih.transpose()).rowwise() + w.bias_ih.row(0)).array();
            s.hidden_part = ((h.matrix() * w.weight_hh.transpose()).rowwise() + w.bias_hh.row(0)).array();
            s.hidden_prev = h;
            s.cell_prev = c;
            reference_step(cell, s);
            h = s.hidden;
            if (cell == CellType::lstm) c = s.cell;
            hidden.middleRows(t * B, B) = h.matrix();
        }
        final_hidden = h.matrix();
        final_cell = c.matrix();
    }

    // d_output: (T*B, H). Truncated BPTT: nothing flows into the initial state.
    void backward(const Matrix<double>& input, const Matrix<double>& d_output, const ReferenceWeights& w) {
        const auto T = static_cast<int>(steps.size());
        const Eigen::Index B = steps[0].hidden_prev.rows(), H = steps[0].hidden_prev.cols();
        gradients = {Matrix<double>::Zero(w.weight_ih.rows(), w.weight_ih.cols()), Matrix<double>::Zero(w.weight_hh.rows(), w.weight_hh.cols()),
                     Matrix<double>::Zero(1, w.bias_ih.cols()), Matrix<double>::Zero(1, w.bias_hh.cols())};
        d_input.resize(input.rows(), input.cols());
        Block dh_next = Block::Zero(B, H), dc = Block::Zero(B, H);
        for (int t = T - 1; t >= 0; --t) {
            const ReferenceStep& s = steps[static_cast<std::size_t>(t)];
            const Block dh = d_output.middleRows(t * B, B).array() + dh_next;
            const ReferenceStepGradients d = reference_step_backward(cell, s, dh, dc);
            const Matrix<double> d_in = d.d_input_part.matrix(), d_rec = d.d_hidden_part.matrix();
            gradients.weight_ih += d_in.transpose() * input.middleRows(t * B, B);
            gradients.weight_hh += d_rec.transpose() * s.hidden_prev.matrix();
            gradients.bias_ih += d_in.colwise().sum();
            gradients.bias_hh += d_rec.colwise().sum();
            d_input.middleRows(t * B, B) = d_in * w.weight_ih;
            dh_next = (d_rec * w.weight_hh).array() + d.d_hidden_prev_direct;
            dc = d.d_cell_prev;
        }
    }
};

}  // namespace charlm::testing
