// What the run's parts need of the training options beyond train.hpp: their checks and the resume merge.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "charlm/train.hpp"

namespace charlm {

// Refuses (UsageError) options that cannot make a run: sizes, rates and bounds out of range, paths
// that a checkpoint's JSON cannot record, a model too large for this machine's memory.
void validate(const TrainOptions& options);

// The stored options with the request's given ones laid over them, each change described in
// `changes`; refuses any option that the checkpoint fixes.
nlohmann::json options_for_resume(nlohmann::json stored, const ResumeRequest& request, std::vector<std::string>& changes);

// The options every process of a run must share: all but where each finds the text (which may
// differ from machine to machine, so long as the text is the same) and its own thread count.
nlohmann::json options_to_share(const TrainOptions& options);

}  // namespace charlm
