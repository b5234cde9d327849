// Loss curves: metrics.jsonl of a run directory drawn to a PNG with gnuplot.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace charlm {

// Reads RUN_DIR/metrics.jsonl and writes `output` (PNG) with the train and validation loss by step.
// gnuplot's data and script go to a private folder made with mkdtemp under TMPDIR, removed afterwards
// whatever happens; gnuplot runs without a shell, and what it prints is kept off stdout.
// Throws Error when there are no metrics, when gnuplot is not installed ("gnuplot is not installed
// (apt-get install gnuplot-nox)") and when it fails ("gnuplot failed: " and gnuplot's own reason).
// RUN_DIR may be given as its metrics.jsonl. Returns the warnings to show: lines of metrics.jsonl that
// are no metrics record, left out.
std::vector<std::string> plot_losses(const std::filesystem::path& run_directory, const std::filesystem::path& output);

// Several runs' validation losses on one PNG, each named by its folder, with its averaged weights'
// (--ema) as a dashed line where it has them: by step, or by minutes of training, which compares runs
// of different speeds (a resumed run's minutes go on from where its last invocation's ended). Errors
// as plot_losses's, naming the run without metrics or validations.
enum class PlotAxis { step, minutes };
std::vector<std::string> plot_validation_losses(const std::vector<std::filesystem::path>& run_directories,
                                                const std::filesystem::path& output, PlotAxis axis);

// The run directory that `given` names: itself, or the folder of a metrics.jsonl given instead. Throws
// Error for another file, naming the folder to give.
std::filesystem::path run_directory_of(const std::filesystem::path& given);

}  // namespace charlm
