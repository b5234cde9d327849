// The GRU cell's math, as PyTorch's nn.GRU documents it (gate order r, z, n):
//   r = σ(x W_ir^T + b_ir + h W_hr^T + b_hr)      z = σ(x W_iz^T + b_iz + h W_hz^T + b_hz)
//   n = tanh(x W_in^T + b_in + r ⊙ (h W_hn^T + b_hn))
//   h' = (1 - z) ⊙ n + z ⊙ h
// The engine (recurrent_layer.cpp) does the products; these are one chunk of units of one row.
#pragma once

#include <string_view>

namespace charlm {

struct Gru {
    static constexpr std::string_view name = "gru";
    static constexpr int gate_count = 3;             // gates and hidden_gates are (B, 3H)
    static constexpr bool has_cell_state = false;
    static constexpr bool recurrent_apart = true;    // r scales h W_hn^T + b_hn, so h W_hh^T stays in hidden_gates
    static constexpr bool hidden_skips_weights = true;   // h' = ... + z ⊙ h: a path to h besides W_hh

    // gates: x W_ih^T in, the activations out; hidden_gates: h W_hh^T in, its n part plus b_hn kept for
    // backward; h' out.
    template <typename Units>
    static void forward(const Units& u) {
        auto r = u.gate(0), z = u.gate(1), n = u.gate(2), hidden_n = u.hidden_gate(2);
        r = (r + u.hidden_gate(0) + u.bias_of(0)).logistic();
        z = (z + u.hidden_gate(1) + u.bias_of(1)).logistic();
        hidden_n += u.bias_hh_of(2);
        n = (n + u.bias_ih_of(2) + r * hidden_n).tanh();
        u.h() = n + z * (u.h_prev() - n);  // (1 - z) n + z h, one multiply fewer
    }

    // dL/dh' in; out: over gates, the gradients of x W_ih^T + b_ih; over hidden_gates, of h W_hh^T + b_hh;
    // over dh_next, the part of dL/dh that does not pass through W_hh, z ⊙ dL/dh'.
    template <typename Units>
    static void backward(const Units& u) {
        using Values = typename Units::Values;
        const Values r = u.gate(0), z = u.gate(1), n = u.gate(2), hidden_n = u.hidden_gate(2);
        const Values dh = u.dh_output() + u.dh_next();
        const Values dn = dh * (1 - z) * (1 - n.square());
        const Values dr = dn * hidden_n * r * (1 - r);
        const Values dz = dh * (u.h_prev() - n) * z * (1 - z);
        u.gate(0) = dr;
        u.gate(1) = dz;
        u.gate(2) = dn;
        u.hidden_gate(0) = dr;
        u.hidden_gate(1) = dz;
        u.hidden_gate(2) = dn * r;
        u.dh_next() = dh * z;
    }
};

}  // namespace charlm
