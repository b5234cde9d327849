// Loss curves: metrics.jsonl of a run directory drawn to a PNG with gnuplot.
#pragma once

#include <filesystem>

namespace charlm {

// Reads RUN_DIR/metrics.jsonl and writes `output` (PNG) with the train and validation loss by step.
// Throws Error when there are no metrics or gnuplot is missing or fails.
void plot_losses(const std::filesystem::path& run_directory, const std::filesystem::path& output);

}  // namespace charlm
