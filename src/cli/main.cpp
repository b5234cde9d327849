// The charlm command line: the table of commands (one file each, *_command.cpp), the parse, and the exit codes.
#include <poll.h>
#include <unistd.h>

#include <csignal>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "charlm/communicator.hpp"
#include "charlm/error.hpp"
#include "charlm/precision.hpp"
#include "cli/commands.hpp"
#include "cli/parse_errors.hpp"
#include "cli/terminal.hpp"

namespace {

using charlm::cli::Command;

// Every command, in the order --help lists them.
constexpr Command (*kCommands[])(CLI::App&) = {
    charlm::cli::add_train_command, charlm::cli::add_sample_command, charlm::cli::add_eval_command,
    charlm::cli::add_serve_command, charlm::cli::add_info_command,   charlm::cli::add_plot_command,
    charlm::cli::add_bench_command, charlm::cli::add_generate_command,
};

// Whether standard output is a pipe whose reader has gone (`charlm sample ... | head -c 10`): the reader
// took what it wanted, as when `head` reads a file, and that is no failure of charlm's.
bool stdout_reader_gone() {
    pollfd output{STDOUT_FILENO, 0, 0};
    return ::poll(&output, 1, 0) == 1 && (output.revents & POLLERR);
}

// A line on stderr that never throws (fmt::print does where stderr is closed: nothing is left to tell).
template <typename... Arguments>
void print_to_stderr(fmt::format_string<Arguments...> format, Arguments&&... arguments) {
    std::fputs(fmt::format(format, std::forward<Arguments>(arguments)...).c_str(), stderr);
}

// Prints an error's one line and returns the exit status. Of several processes, an error that every
// one met is printed by the first alone; one that only this process met ends them all, the others
// waiting for it otherwise forever, and says which process it was.
int report_failure(const std::string& message, int status, bool shared, const charlm::Communicator& processes) {
    std::fflush(stdout);
    if (processes.size() == 1 || (shared && processes.is_first())) print_to_stderr("charlm: error: {}\n", message);
    if (processes.size() == 1 || shared) return status;
    print_to_stderr("charlm: error: process {} of {} (on {}): {}\n", processes.rank(), processes.size(), processes.host(), message);
    std::fflush(stderr);
    processes.abort(status);
    return status;  // not reached: GCC does not carry [[noreturn]] through a virtual call
}

// Exit codes: 0 success, 1 a runtime error, 2 a usage error (every parse error included), 130 interrupted
// (a signal, or training's output closed).
int run(const Command& command, const charlm::Communicator& processes) {
    int status = 0;
    try {
        charlm::kernels_in_use();  // CHARLM_KERNELS, where it is refused, is refused before any work
        status = command.run(processes);
    } catch (const charlm::UsageError& error) {
        return report_failure(error.what(), 2, error.shared_by_every_process(), processes);
    } catch (const charlm::Error& error) {
        return report_failure(error.what(), 1, error.shared_by_every_process(), processes);
    } catch (const std::bad_alloc&) {
        return report_failure("out of memory; try a smaller model, --batch or --seq", 1, false, processes);
    } catch (const std::exception& error) {
        if (std::ferror(stdout) && stdout_reader_gone()) return 0;  // fmt's write to a reader that went
        return report_failure(error.what(), 1, false, processes);
    }
    // Results that never reached stdout (a full disk) are a failure, not a success; a reader that
    // stopped reading is not: the command ends quietly with its status (0, or 130 for training, which
    // the closed pipe stopped).
    if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
        if (stdout_reader_gone()) return status;
        print_to_stderr("charlm: error: cannot write the results to standard output ({})\n", std::strerror(errno));
        return 1;
    }
    return status;
}

}  // namespace

int main(int argc, char** argv) {
    // A closed pipe is an error on the write (EPIPE), never the end of the process: training saves first
    // (stop_signals.cpp), and the other commands stop writing and end quietly (run() above).
    std::signal(SIGPIPE, SIG_IGN);
    auto logger = spdlog::stderr_color_mt("charlm", charlm::log_color_mode(std::getenv("NO_COLOR"), ::isatty(STDERR_FILENO)));
    logger->set_pattern("[%T] %^%v%$");
    spdlog::set_default_logger(logger);

    CLI::App app{"charlm: train a character-level language model on any text, then sample from it and score it.\n"
                 "Start with 'charlm train FILE.txt', then 'charlm sample runs/FILE/best.safetensors --prompt \"...\"'."};
    app.require_subcommand(1);
    app.set_version_flag("--version", "charlm " CHARLM_VERSION);
    app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::Throw);  // a second --x is refused, never silently taken
    std::vector<Command> commands;
    for (const auto add_command : kCommands) commands.push_back(add_command(app));
    charlm::cli::check_values_in_plain_words(app);

    try {
        app.parse(argc, argv);
    } catch (const CLI::Success& success) {
        return charlm::DistributedRun::launched_rank() == 0 ? app.exit(success) : 0;
    } catch (const CLI::ParseError& error) {
        CLI::App* command = app.get_subcommands().empty() ? nullptr : app.get_subcommands().front();
        const std::string help_command = command ? "charlm " + command->get_name() + " --help" : std::string("charlm --help");
        if (charlm::DistributedRun::launched_rank() == 0)  // under mpirun, every process met the same
            print_to_stderr("charlm: error: {}; see '{}'\n", charlm::cli::plain_parse_error(error, app, command), help_command);
        return 2;  // every parse error is a usage error, whatever CLI11's own code for it
    }
    const Command* chosen = nullptr;
    for (const Command& command : commands)
        if (*command.app) chosen = &command;
    // Only training and scoring run as several processes: N samples would be N answers to one question,
    // and N separate trainings or scorings (a build without MPI) no faster than one.
    const std::string name = chosen->app->get_name();
    const bool shared = name == "train" || name == "eval";
    if (charlm::DistributedRun::launched_with_others()) {
        std::string refusal;
        if (!shared)
            refusal = fmt::format("'charlm {}' runs as one process; run it without mpirun (only 'charlm train' and 'charlm eval' "
                                  "run on several)",
                                  name);
        else if (!charlm::DistributedRun::built_with_mpi())
            refusal = fmt::format("this charlm was built without MPI, so each process would {} alone; install libopenmpi-dev "
                                  "and rebuild (scripts/setup.sh), or run charlm without mpirun",
                                  name == "train" ? "train a model of its own" : "score the whole text");
        if (!refusal.empty()) {
            if (charlm::DistributedRun::launched_rank() == 0) print_to_stderr("charlm: error: {}\n", refusal);
            return 2;
        }
    }
    std::optional<charlm::DistributedRun> distributed;
    if (shared) distributed.emplace(argc, argv);
    return run(*chosen, distributed ? distributed->communicator() : charlm::single_process());
}
