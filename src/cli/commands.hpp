// The commands of the charlm command line, one file each (train_command.cpp, ...), as main.cpp's table lists them.
#pragma once

#include <functional>
#include <string>
#include <vector>

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
// Hidden from --help: the man page and the shell completions, written from `app`'s own option tables.
Command add_generate_command(CLI::App& app);

// What `charlm generate WHAT` writes (man, bash, zsh or fish) for the commands of `app`.
std::string generate_text(const CLI::App& app, const std::string& what);
// Every argument the completions complete with file or directory names, as "COMMAND --flag" or "COMMAND NAME".
std::vector<std::string> arguments_naming_paths(const CLI::App& app);

}  // namespace charlm::cli
