// Every recurrent cell charlm has, and the one place that turns a CellType into its math. A new cell is
// a file in cells/ (rnn.hpp is the smallest to start from), its value in CellType, and two lines here.
//
// A cell is a struct of traits and two functions of one chunk of units (cell_units.hpp):
//   name                   what --cell and checkpoints call it
//   gate_count             G: its weights are (G*H, I) and (G*H, H), as PyTorch lays them out
//   has_cell_state         whether it carries c besides h (the LSTM)
//   recurrent_apart        whether h W_hh^T stays apart from x W_ih^T (the GRU's r scales part of it)
//   hidden_skips_weights   whether h' depends on h other than through W_hh (the GRU's z ⊙ h), so that
//                          backward adds the W_hh product to what the cell left in dh_next
//   forward(units), backward(units)
#pragma once

#include "charlm/error.hpp"
#include "charlm/model_config.hpp"
#include "cells/gru.hpp"
#include "cells/lstm.hpp"
#include "cells/rnn.hpp"

namespace charlm {

// Every cell, in the order error messages list them.
inline constexpr CellType kCellTypes[] = {CellType::lstm, CellType::gru, CellType::rnn};

// visit(Cell{}) for the cell of `cell`.
template <typename Visit>
decltype(auto) with_cell(CellType cell, Visit&& visit) {
    switch (cell) {
        case CellType::lstm: return visit(Lstm{});
        case CellType::gru: return visit(Gru{});
        case CellType::rnn: return visit(Rnn{});
    }
    throw Error("unknown cell type");
}

}  // namespace charlm
