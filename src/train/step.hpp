// What the processes of a training run do together beside the step (train_step(), train.hpp), and the generator's state.
#pragma once

#include <cstdint>
#include <random>
#include <string>

#include "charlm/communicator.hpp"
#include "charlm/model.hpp"

namespace charlm {

// The carried state of all the batch's streams, on process 0 (the others get it empty): each
// process's block of rows (`mine`) in rank order.
ModelState<float> gather_carried_state(const Model<float>& model, const ModelState<float>& mine, int batch_size,
                                       const Communicator& processes);

// Throws, on every process, where the processes' parameters are no longer the same bits (at `step`).
void check_parameters_agree(const Model<float>& model, std::int64_t step, const Communicator& processes);

// The random generator's state as a checkpoint keeps it (TrainingState::rng_state), and back.
std::string rng_to_string(const std::mt19937_64& rng);
std::mt19937_64 rng_from_string(const std::string& text);

}  // namespace charlm
