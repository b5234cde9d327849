// The model's configuration: names of cells and masks, the sizes' limits, parameter counts, and its JSON in a checkpoint.
#include "charlm/model_config.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "charlm/error.hpp"
#include "charlm/json_integer.hpp"
#include "cells.hpp"

namespace charlm {

std::string to_string(CellType cell) {
    return with_cell(cell, [](auto chosen) { return std::string(chosen.name); });
}

CellType parse_cell_type(const std::string& name) {
    std::vector<std::string> names;
    for (CellType cell : kCellTypes) {
        if (to_string(cell) == name) return cell;
        names.push_back(to_string(cell));
    }
    throw UsageError(fmt::format("unknown cell type '{}'; use {} or {}", name,
                                 fmt::join(names.begin(), names.end() - 1, ", "), names.back()));
}

std::string to_string(DropoutMask mask) { return mask == DropoutMask::locked ? "locked" : "step"; }

DropoutMask parse_dropout_mask(const std::string& name) {
    if (name == "locked") return DropoutMask::locked;
    if (name == "step") return DropoutMask::step;
    throw UsageError(fmt::format("unknown dropout mask '{}'; use locked (one per stream per window) or step (one per step)", name));
}

int ModelConfig::gate_count() const {
    return with_cell(cell, [](auto chosen) { return chosen.gate_count; });
}

bool ModelConfig::has_cell_state() const {
    return with_cell(cell, [](auto chosen) { return chosen.has_cell_state; });
}

// A UsageError, since the sizes almost always come from the user's options; from_json() below turns it
// into a plain Error for sizes read from a file.
void ModelConfig::validate() const {
    // Bounds keep every matrix far below what a 64-bit index or this machine's memory can hold.
    auto check = [](const char* name, long long value, long long most) {
        if (value < 1 || value > most)
            throw UsageError(fmt::format("{} must be between 1 and {}, not {}", name, most, value));
    };
    check("vocabulary size", vocab_size, 1 << 21);
    check("embedding size", embed_size, 1 << 14);
    check("hidden size", hidden_size, 1 << 14);
    check("layers", layers, 64);
    auto check_rate = [](const char* name, double rate) {
        if (!(rate >= 0 && rate < 1)) throw UsageError(fmt::format("{} must be at least 0 and below 1, not {}", name, rate));
    };
    check_rate("dropout (--dropout)", dropout);
    check_rate("embedding dropout (--embed-dropout)", embed_dropout);
    check_rate("weight drop (--weight-drop)", weight_drop);
    if (parameter_count() > (std::size_t{1} << 31))
        throw UsageError(fmt::format("the model would have {} parameters; the most is 2^31", parameter_count()));
}

void ModelConfig::take_regularization(const ModelConfig& rates) {
    dropout = rates.dropout;
    embed_dropout = rates.embed_dropout;
    weight_drop = rates.weight_drop;
    dropout_mask = rates.dropout_mask;
    dropout_keys = rates.dropout_keys;
}

std::size_t ModelConfig::parameter_count() const {
    const std::size_t V = static_cast<std::size_t>(vocab_size), E = static_cast<std::size_t>(embed_size),
                      H = static_cast<std::size_t>(hidden_size), G = static_cast<std::size_t>(gate_count());
    std::size_t count = V * E + V * H + V;
    for (int layer = 0; layer < layers; ++layer) {
        std::size_t input_size = layer == 0 ? E : H;
        count += G * H * (input_size + H + 2);
    }
    return count;
}

nlohmann::json ModelConfig::to_json() const {
    return {{"cell", to_string(cell)}, {"vocab_size", vocab_size}, {"embed_size", embed_size},
            {"hidden_size", hidden_size}, {"layers", layers}, {"dropout", dropout}, {"embed_dropout", embed_dropout},
            {"weight_drop", weight_drop}, {"dropout_mask", to_string(dropout_mask)},
            {"dropout_keys", dropout_keys == DropoutKeys::stream ? "stream" : "local"}};
}

ModelConfig ModelConfig::from_json(const nlohmann::json& json) {
    ModelConfig config;
    try {
        config.cell = parse_cell_type(json.at("cell").get<std::string>());
        config.vocab_size = integer_value<int>(json.at("vocab_size"));
        config.embed_size = integer_value<int>(json.at("embed_size"));
        config.hidden_size = integer_value<int>(json.at("hidden_size"));
        config.layers = integer_value<int>(json.at("layers"));
        config.dropout = json.value("dropout", 0.0);
        config.embed_dropout = json.value("embed_dropout", 0.0);
        config.weight_drop = json.value("weight_drop", 0.0);
        // Checkpoints from before the choice drew a mask per step.
        config.dropout_mask = parse_dropout_mask(json.value("dropout_mask", std::string("step")));
        // Checkpoints from before the choice keyed masks by their place in each process's own batch.
        const std::string keys = json.value("dropout_keys", std::string("local"));
        if (keys != "stream" && keys != "local") throw Error(fmt::format("unknown dropout_keys '{}'", keys));
        config.dropout_keys = keys == "stream" ? DropoutKeys::stream : DropoutKeys::local;
    } catch (const nlohmann::json::exception& error) {
        throw Error(fmt::format("model config is incomplete or has the wrong types ({})", error.what()));
    } catch (const UsageError& error) {
        throw Error(error.what());  // a bad file is not a mistake in the command line
    }
    try {
        config.validate();
    } catch (const UsageError& error) {
        throw Error(error.what());
    }
    return config;
}

}  // namespace charlm
