// The commands of the charlm command line, one file each (train_command.cpp, ...), as main.cpp's table lists them.
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

#include "charlm/communicator.hpp"

namespace charlm::cli {

// A command as main() sees it: its CLI11 subcommand, and what runs it once the command line parsed.
// `run` returns the exit status; it throws charlm::Error or UsageError, which main() reports.
struct Command {
    CLI::App* app = nullptr;
    std::function<int(const Communicator& processes)> run;
};

// Each adds its subcommand with every option to `app`; the returned run acts on the options as parsed.
// Only training runs as several processes: the others are given single_process().
Command add_train_command(CLI::App& app);
Command add_sample_command(CLI::App& app);
Command add_eval_command(CLI::App& app);
Command add_serve_command(CLI::App& app);
Command add_info_command(CLI::App& app);
Command add_plot_command(CLI::App& app);
Command add_bench_command(CLI::App& app);

}  // namespace charlm::cli
