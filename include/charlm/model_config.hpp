// What a model is, as a checkpoint and the command line name it: its cell, its sizes and its regularization.
// Light on purpose (no Eigen): the engine, the cells and the training's progress need these names and not the model.
#pragma once

#include <cstddef>
#include <string>

#include <nlohmann/json.hpp>

namespace charlm {

// The recurrent cells: Elman's (PyTorch's nn.RNN, tanh), the LSTM and the GRU. Their math is in
// src/nn/cells/, one file each; src/nn/cells.hpp lists them.
enum class CellType { lstm, gru, rnn };
std::string to_string(CellType cell);
CellType parse_cell_type(const std::string& name);  // throws UsageError for an unknown name

// How dropout draws its masks on a window: one per stream shared by every step (Gal and Ghahramani's
// variational or "locked" dropout), or a new one at each step (nn.Dropout's).
enum class DropoutMask { locked, step };
std::string to_string(DropoutMask mask);
DropoutMask parse_dropout_mask(const std::string& name);  // throws UsageError for an unknown name

// What a dropout mask's elements are keyed by. `stream`: the stream's place in the whole batch (and the step, the
// unit), so that mpirun -np N, where each process holds a block of the streams, draws the masks one process would.
// `local`: the element's place in this process's own mask, as runs before it did; a checkpoint that does not say
// (written before) resumes so, on its path as before.
enum class DropoutKeys { stream, local };

struct ModelConfig {
    CellType cell = CellType::lstm;
    int vocab_size = 0;
    int embed_size = 64;
    int hidden_size = 256;
    int layers = 2;
    // Regularization, in training only; a resumed run may change it (set_regularization).
    double dropout = 0.0;        // of each layer's output, the top one's included (as char-rnn's)
    double embed_dropout = 0.0;  // of the embedding's output, the first layer's input
    double weight_drop = 0.0;    // DropConnect on each layer's W_hh, one mask per window (AWD-LSTM's weight drop)
    DropoutMask dropout_mask = DropoutMask::locked;  // of dropout and embed_dropout
    DropoutKeys dropout_keys = DropoutKeys::stream;  // of dropout and embed_dropout: no option, a new run's is `stream`

    void validate() const;  // throws UsageError naming the bad field (the sizes are the user's options)
    // Takes dropout, embed_dropout, weight_drop, dropout_mask and dropout_keys from `rates`: what a run sets for itself
    // where its shape comes from a checkpoint (--resume, --init-from).
    void take_regularization(const ModelConfig& rates);
    std::size_t parameter_count() const;
    int gate_count() const;       // G: a layer's weights are (G*H, I) and (G*H, H)
    bool has_cell_state() const;  // whether the cell carries c besides h (the LSTM)
    nlohmann::json to_json() const;
    static ModelConfig from_json(const nlohmann::json& json);  // validates; a bad config is an Error (a bad file), never a UsageError
};

}  // namespace charlm
