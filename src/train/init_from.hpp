// A run started from a trained checkpoint's weights (--init-from): reading that checkpoint against the options
// given, and saying where the run starts; with_regularization_of serves --resume too.
#pragma once

#include <string>

#include "charlm/checkpoint.hpp"
#include "charlm/train.hpp"
#include "charlm/vocab.hpp"

namespace charlm {

// The model of a run whose shape a checkpoint fixes (--init-from, --resume): `shape`, with the
// regularization given for this run, `rates`'s (dropout, embed_dropout, weight_drop, dropout_mask, dropout_keys).
ModelConfig with_regularization_of(ModelConfig shape, const ModelConfig& rates);

// --init-from's checkpoint, read before the run directory is touched. Its shape becomes the run's
// (options.model, with the regularization given for this run); a shape option given that contradicts it is
// refused (UsageError), one given with the same value is no contradiction.
Checkpoint load_checkpoint_to_start_from(TrainOptions& options);

// What a run started from a checkpoint's weights says before it begins: where from, and the characters
// its texts add to the checkpoint's vocabulary, named where they are few.
std::string describe_start(const TrainOptions::InitFrom& init_from, const Vocab& trained, const Vocab& vocab);

}  // namespace charlm
