// Options that several commands share (--threads, CHECKPOINT, --adapt-*, standard input as -), declared once, and what acting on them takes.
#pragma once

#include <functional>
#include <string>

#include <CLI/CLI.hpp>

#include "charlm/communicator.hpp"
#include "charlm/eval.hpp"
#include "charlm/precision.hpp"

namespace charlm::cli {

// --threads N, from 0 (every core) to a bound far past any machine's cores.
CLI::Option* add_threads_option(CLI::App& command, int& threads,
                                const std::string& description = "CPU threads; 0 uses every core");
// Sets the threads, with a word on stderr where the environment allows fewer or the machine has fewer cores.
void use_threads(int threads);
// The threads of each of several processes (mpirun) by default: the cores this process may run on
// (mpirun binds each to its own where there are enough), shared with the other processes on the
// machine where it may run on all of them, so that N processes do not start N teams of every core.
int default_threads_per_process(const charlm::Communicator& processes);

// --precision auto|fp32|bf16, the products' precision; auto the default.
CLI::Option* add_precision_option(CLI::App& command, std::string& precision);
// Sets `model`'s precision for `shapes` (a UsageError for bf16 on a CPU without it), and returns the
// log line that says which and why, where there is news (bf16, or a timing's verdict; else empty:
// fp32 as ever says nothing): the command logs it once its input has passed every check, so that a
// refusal stays one line.
std::string use_precision(const std::string& precision, const charlm::ProductShapes& shapes, charlm::Model<float>& model);

// The CHECKPOINT argument of sample, eval, serve and info.
CLI::Option* add_checkpoint_argument(CLI::App& command, std::string& checkpoint);

// --adapt-lr, --adapt-decay and --adapt-window, each taken only with `enabled_by` (eval's --adapt,
// sample's --adapt-to). `window_detail` follows --adapt-window's description.
void add_adapt_options(CLI::App& command, AdaptOptions& options, CLI::Option* enabled_by, const std::string& window_detail);
// Dynamic evaluation scores a few thousand characters a second: a log line every 10 seconds says how far it is.
AdaptProgressCallback adapt_progress_log();

// A text the user gave, - for standard input: the path to read ("/dev/stdin" for -), and its name in
// messages, "standard input" as train says it (for - and for /dev/stdin alike).
std::string path_to_read(const std::string& given);
std::string name_of_input(const std::string& given);
// `action`, whose errors name standard input as name_of_input() does, not by the path read.
void naming_standard_input(const std::function<void()>& action);

}  // namespace charlm::cli
