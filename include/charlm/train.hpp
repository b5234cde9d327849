// The training loop: windows -> forward -> loss -> backward -> clip -> Adam, with validation and checkpoints.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>

#include <nlohmann/json.hpp>

#include "charlm/model.hpp"
#include "charlm/optim.hpp"

namespace charlm {

struct TrainOptions {
    std::filesystem::path corpus;
    std::optional<std::filesystem::path> validation_file;  // instead of holding out part of the corpus
    std::filesystem::path run_directory;
    ModelConfig model;                 // vocab_size comes from the corpus
    int seq_length = 100;
    int batch_size = 64;
    double learning_rate = 2e-3;       // the peak: after warmup, before decay
    std::string lr_schedule = "constant";  // constant, cosine (to a tenth at --steps) or step
    std::int64_t warmup_steps = 0;
    std::int64_t lr_decay_every = 1000;    // step schedule
    double lr_decay_factor = 0.5;          // step schedule
    double clip = 5.0;                 // global gradient norm; 0 turns clipping off
    double validation_fraction = 0.05;
    std::int64_t steps = 0;            // total steps of the run, resumed ones included; 0 for no bound
    double minutes = 0;                // wall-clock bound of this invocation; 0 for no bound
    int eval_every = 200;
    int patience = 0;                  // stop after this many evaluations without a new best; 0 never
    std::uint64_t seed = 1;
    bool overwrite = false;            // start over in a run directory that already holds a run
    bool live_progress = false;        // redraw one status line on stderr (for a terminal); not stored

    nlohmann::json to_json() const;
    static TrainOptions from_json(const nlohmann::json& json);
};

struct TrainResult {
    std::int64_t steps = 0;
    double last_train_loss = 0;
    double best_validation_loss = 0;
    double chars_per_second = 0;
    bool interrupted = false;
    bool stopped_early = false;        // by --patience
    std::filesystem::path best_checkpoint;
    std::filesystem::path last_checkpoint;
};

// Trains from scratch; the run directory gets last.safetensors, best.safetensors and metrics.jsonl.
TrainResult train(const TrainOptions& options);
// Continues the run in `run_directory` from its last.safetensors, with the options stored there;
// `steps` and `minutes`, when nonzero, replace the stored bounds.
TrainResult resume_training(const std::filesystem::path& run_directory, std::int64_t steps, double minutes,
                            bool live_progress = false);

// One training step on a window, as train() takes it: the carried state reset where the window starts
// the streams, forward, loss, backward, global-norm clipping to `clip` (0: none) and an Adam step.
// Returns the window's mean loss; when that is not finite, returns it before touching the parameters.
double train_step(Model<float>& model, Adam& optimizer, const Batch& batch, ModelState<float>& carried, double clip,
                  double learning_rate);

// Asks a running train() to save and return after the current step; safe to call from a signal handler.
void request_training_stop();

}  // namespace charlm
