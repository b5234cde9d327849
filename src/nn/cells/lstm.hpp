// The LSTM cell's math, as PyTorch's nn.LSTM documents it (gate order i, f, g, o):
//   i = σ(x W_ii^T + b_ii + h W_hi^T + b_hi)      f = σ(x W_if^T + b_if + h W_hf^T + b_hf)
//   g = tanh(x W_ig^T + b_ig + h W_hg^T + b_hg)   o = σ(x W_io^T + b_io + h W_ho^T + b_ho)
//   c' = f ⊙ c + i ⊙ g                            h' = o ⊙ tanh(c')
// The engine (recurrent_layer.cpp) does the products; these are one chunk of units of one row.
#pragma once

#include <string_view>

namespace charlm {

struct Lstm {
    static constexpr std::string_view name = "lstm";
    static constexpr int gate_count = 4;             // gates is (B, 4H)
    static constexpr bool has_cell_state = true;     // c is (B, H)
    static constexpr bool recurrent_apart = false;   // h W_hh^T adds into gates
    static constexpr bool hidden_skips_weights = false;  // h' reaches h only through W_hh

    // gates: the products in, the activations out; c' and h' out.
    template <typename Units>
    static void forward(const Units& u) {
        auto i = u.gate(0), f = u.gate(1), g = u.gate(2), o = u.gate(3);
        i = (i + u.bias_of(0)).logistic();
        f = (f + u.bias_of(1)).logistic();
        g = (g + u.bias_of(2)).tanh();
        o = (o + u.bias_of(3)).logistic();
        u.c() = f * u.c_prev() + i * g;
        u.h() = o * u.c().tanh();
    }

    // dL/dh' (the layer above's and step t+1's) and dL/dc' in; each gate's pre-activation gradient out,
    // over its activation, and dL/dc over dL/dc'.
    template <typename Units>
    static void backward(const Units& u) {
        using Values = typename Units::Values;
        const Values i = u.gate(0), f = u.gate(1), g = u.gate(2), o = u.gate(3);
        const Values tanh_c = u.c().tanh();
        const Values dh = u.dh_output() + u.dh_next();
        const Values dc = u.dc() + dh * o * (1 - tanh_c.square());
        u.gate(0) = dc * g * i * (1 - i);
        u.gate(1) = dc * u.c_prev() * f * (1 - f);
        u.gate(2) = dc * i * (1 - g.square());
        u.gate(3) = dh * tanh_c * o * (1 - o);
        u.dc() = dc * f;
    }
};

}  // namespace charlm
