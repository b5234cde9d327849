// One invocation's training loop over a session, however the run started (fresh, resumed, from a checkpoint).
#pragma once

#include <cstddef>
#include <optional>
#include <random>

#include "charlm/batches.hpp"
#include "charlm/checkpoint.hpp"
#include "charlm/communicator.hpp"
#include "charlm/model.hpp"
#include "charlm/optim.hpp"
#include "charlm/progress.hpp"
#include "charlm/train.hpp"
#include "corpus.hpp"

namespace charlm {

// Everything one run of the loop works on; a fresh run and a resumed one differ only in how it starts
// (start.cpp).
struct Session {
    TrainOptions options;
    Corpus corpus;
    Model<float> model;
    Adam optimizer;
    TrainingState state;
    ModelState<float> carried;
    std::mt19937_64 rng;
    std::optional<ParameterAverage> average{};  // --ema's
    // A fresh run in a directory that may hold an earlier run (--force): the earlier files stay as
    // they are until this run's first last.safetensors, which takes the directory over.
    bool fresh = false;
    // The processes that share each batch, and this one's block of its streams (`carried` holds its rows).
    const Communicator* processes = &single_process();
    // The products' precision and why (start.cpp decided it), told once the run has started.
    std::string precision_note{};
    StreamBlock streams{};
};

// Trains until the options' end (--steps, --minutes, --patience) or a stop request, validating and
// saving at each --eval-every step and at the end, and tells `progress` (and metrics.jsonl) how it goes.
TrainResult run_training_loop(Session& session, TrainingProgress& progress);

// The held-out characters (predictions) that each periodic validation scores under `options`.
std::size_t periodic_validation_pairs(TokenSpan held_out, const TrainOptions& options);

}  // namespace charlm
