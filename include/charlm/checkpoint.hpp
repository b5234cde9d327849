// Checkpoints as safetensors files: PyTorch-named tensors, with vocabulary, config and training state in the metadata.
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "charlm/atomic_file.hpp"
#include "charlm/model.hpp"
#include "charlm/optim.hpp"
#include "charlm/text.hpp"

namespace charlm {

// ---- the safetensors container (8-byte little-endian header length, JSON header, raw tensors) ----

struct StoredTensor {
    std::vector<std::int64_t> shape;
    std::vector<float> values;
};

struct SafetensorsFile {
    std::map<std::string, std::string> metadata;
    std::map<std::string, StoredTensor> tensors;
};

struct TensorToWrite {
    std::string name;
    std::vector<std::int64_t> shape;
    const float* values;
};

// Validates everything before returning: header bounds, JSON, dtypes, shapes, byte ranges inside the
// data and not overlapping. `source_name` prefixes every error.
SafetensorsFile parse_safetensors(std::string_view bytes, const std::string& source_name);
std::string serialize_safetensors(const std::vector<TensorToWrite>& tensors,
                                  const std::map<std::string, std::string>& metadata);

// ---- charlm checkpoints ----

// Where training stands, so that --resume continues exactly.
struct TrainingState {
    std::int64_t step = 0;
    double best_validation_loss = std::numeric_limits<double>::infinity();
    std::int64_t evaluations_since_best = 0;  // for --patience
    std::int64_t best_step = 0;                 // the step of the best validation loss; 0: not recorded
    std::size_t best_validation_characters = 0;  // what the best loss was scored on (--val-chars); 0: not recorded
    bool best_is_averaged = false;  // the best loss was the averaged parameters' (--ema), and best.safetensors holds them
    std::size_t data_position = 0;
    std::string rng_state;       // std::mt19937_64 as text
    nlohmann::json options;      // the training options of the run
};

struct Checkpoint {
    ModelConfig config;
    Vocab vocab;
    std::optional<Model<float>> model;
    TrainingState training;
    std::optional<Adam> optimizer;                // only in checkpoints written for resuming
    std::optional<ModelState<float>> carried_state;  // likewise: the state carried into the next window
    std::optional<std::vector<Matrix<float>>> average;  // likewise, where the run averages its parameters (--ema)
};

// `optimizer`, `carried_state` and `average` may be null: a checkpoint for sampling and evaluation
// needs none of them. `average` holds one matrix per parameter (ParameterAverage::values()).
void save_checkpoint(const std::filesystem::path& path, const Model<float>& model, const Vocab& vocab,
                     const TrainingState& training, const Adam* optimizer, const ModelState<float>* carried_state,
                     const std::vector<Matrix<float>>* average = nullptr);
// Throws Error naming the file and the problem for anything missing, inconsistent or not finite, and for
// training counts (steps, optimizer steps, data position, evaluations) below 0 or above 10^15.
Checkpoint load_checkpoint(const std::filesystem::path& path);
Checkpoint parse_checkpoint(std::string_view bytes, const std::string& source_name);

// What `charlm info` shows: cell, sizes, parameter count, vocabulary, steps trained, best validation loss,
// and what reproducing the run takes: the corpus and validation file (path, size in bytes, SHA-256),
// the characters trained on, epochs (steps x seq_length x batch_size / train characters), the checkpoint
// the run started from with --init-from (`init_from`: checkpoint, step) and every training option as
// stored. Whatever an older checkpoint did not record is null; nothing here throws.
nlohmann::json describe_checkpoint(const Checkpoint& checkpoint);

}  // namespace charlm
