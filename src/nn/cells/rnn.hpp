// The Elman cell's math, as PyTorch's nn.RNN documents it (nonlinearity tanh):
//   h' = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)
// The engine (recurrent_layer.cpp) does the products; these are one chunk of units of one row. The
// smallest cell: a new one starts from a copy of this file.
#pragma once

#include <string_view>

namespace charlm {

struct Rnn {
    static constexpr std::string_view name = "rnn";
    static constexpr int gate_count = 1;             // gates is (B, H)
    static constexpr bool has_cell_state = false;
    static constexpr bool recurrent_apart = false;   // h W_hh^T adds into gates
    static constexpr bool hidden_skips_weights = false;  // h' reaches h only through W_hh

    // gates: the products in; h' out.
    template <typename Units>
    static void forward(const Units& u) {
        u.h() = (u.gate(0) + u.bias_of(0)).tanh();
    }

    // dL/dh' in; the pre-activation's gradient out, over gates: tanh' = 1 - h'^2.
    template <typename Units>
    static void backward(const Units& u) {
        u.gate(0) = (u.dh_output() + u.dh_next()) * (1 - u.h().square());
    }
};

}  // namespace charlm
