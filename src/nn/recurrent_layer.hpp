// The recurrent-layer engine: runs any cell (cells.hpp) over a window of T steps x B streams, forward
// and backward, and owns everything about speed and threads so that a cell is only its math.
//
// What it does for every cell: the input projection for all steps at once (layer 0's by a table
// lookup), recurrent weights packed once per window, forward and backward, each thread running the
// whole time loop on its share of the batch (shares weighed by the threads' speeds), the cell's
// elementwise step in chunks of units that stay in registers, sampling's one product of [x h] by
// [W_ih W_hh] stacked, and the weight-gradient tail: W_hh's and W_ih's gradients as one product each
// over all steps, the bias sums and the input's gradient. Private to the library: the model is its
// only user, and what sampling, evaluation and checkpoints see is the model.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>

#include "charlm/model_config.hpp"
#include "charlm/tensor.hpp"
#include "gemm.hpp"
#include "layer_io.hpp"

namespace charlm {

class RowBalance;
struct Team;

// One recurrent layer of one cell type, with the workspaces of the last window it ran.
template <typename Scalar>
class RecurrentLayer {
public:
    explicit RecurrentLayer(CellType cell);
    RecurrentLayer(RecurrentLayer&&) noexcept;
    RecurrentLayer& operator=(RecurrentLayer&&) noexcept;
    ~RecurrentLayer();

    // hidden_state: (B, H), and cell_state, (B, H), for a cell that has one (else not read): carried in,
    // and updated to the window's last step. output() then holds h_t of every step.
    void forward(LayerInputRef<Scalar> input, int steps, const LayerWeights<Scalar>& weights, Matrix<Scalar>& hidden_state,
                 Matrix<Scalar>& cell_state);
    const Matrix<Scalar>& output() const;  // (T*B, H)
    // At bf16, output() rounded, as the time loop left each step's rows: null at fp32, and after a step that
    // a team split or that went through the stacked weights (sampling), whose products round their own rows.
    const Bf16Rows* output_rounded() const;
    // At bf16 where a backward follows, output_rounded() transposed, (H, T*B): data null where not kept.
    Bf16RowsRef output_transposed() const;

    // forward() of one step against frozen weights (weights.version nonzero), split among a team (team.hpp)
    // by the caller: prepare_step() outside the team, with the carried state that step_in_team() then
    // updates, by every member. A member returns without waiting for the others (the next layer's first
    // phase reads only the member's own rows; anything else must sync() first). The same bits as forward().
    void prepare_step(LayerInputRef<Scalar> input, const LayerWeights<Scalar>& weights, const Matrix<Scalar>& hidden_state,
                      const Matrix<Scalar>& cell_state);
    void step_in_team(LayerInputRef<Scalar> input, const LayerWeights<Scalar>& weights, Matrix<Scalar>& hidden_state,
                      Matrix<Scalar>& cell_state, const Team& team);

    // d_output: (T*B, H), the loss gradient with respect to output(); gradients do not flow into the
    // carried state (truncated BPTT). Accumulates into `gradients`. d_input: for dense rows, becomes
    // their gradient, (T*B, I); for tokens, is the embedding's gradient, (V, I), and is accumulated into.
    void backward(LayerInputRef<Scalar> input, const Matrix<Scalar>& d_output, int steps, const LayerWeights<Scalar>& weights,
                  const LayerGradients<Scalar>& gradients, Matrix<Scalar>& d_input);

    // For the tests: the batch's split between threads, and after backward() the gradients of the
    // gates' pre-activations, (T*B, G*H).
    RowBalance& balance();
    const Matrix<Scalar>& gate_gradients() const;

    struct Workspace;  // the engine's, defined where the time loops are

private:
    std::unique_ptr<Workspace> workspace_;
};

}  // namespace charlm
