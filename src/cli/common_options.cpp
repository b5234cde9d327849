// Options that several commands share (--threads, CHECKPOINT, --adapt-*, standard input as -), declared once, and what acting on them takes.
#include "cli/common_options.hpp"

#include <algorithm>

#include <omp.h>
#include <unistd.h>
#include <spdlog/spdlog.h>

#include "charlm/clock.hpp"
#include "charlm/error.hpp"
#include "charlm/display.hpp"
#include "charlm/threads.hpp"

namespace charlm::cli {

namespace {

// Far past any machine's cores; libgomp crashed starting a team of 100000.
constexpr int kMostThreads = 1024;

}  // namespace

CLI::Option* add_threads_option(CLI::App& command, int& threads, const std::string& description) {
    return command.add_option("--threads", threads, description)->check(CLI::Range(0, kMostThreads))->capture_default_str();
}

void use_threads(int threads) {
    const ThreadCount count = set_thread_count(threads);
    if (count.limited_by)
        spdlog::warn("--threads {} asks for more than {} allows; using {}", count.requested, count.limited_by, count.used);
    // More threads than cores: each parallel region waits for its slowest thread, which waits for a core.
    const int cores = omp_get_num_procs();
    if (count.used > cores)
        spdlog::warn("--threads {} is more than the {} core{} this process may run on: the threads beyond them wait for a core at "
                     "every step, which makes the work slower, not faster; give --threads {} or leave it out",
                     count.used, cores, cores == 1 ? "" : "s", cores);
}

int default_threads_per_process(const charlm::Communicator& processes) {
    const int usable = omp_get_num_procs();
    const long machine = ::sysconf(_SC_NPROCESSORS_ONLN);
    if (processes.local_size() == 1 || usable < machine) return usable;
    return std::max(1, usable / processes.local_size());
}

CLI::Option* add_precision_option(CLI::App& command, std::string& precision) {
    return command
        .add_option("--precision", precision,
                    "Products in fp32, or bf16 with fp32 sums (faster where the CPU has AVX512_BF16: docs/speed.md); auto: bf16 "
                    "where a short timing at start finds it faster")
        ->check(CLI::IsMember({"auto", "fp32", "bf16"}))
        ->type_name("auto|fp32|bf16")
        ->capture_default_str();
}

std::string use_precision(const std::string& precision, const charlm::ProductShapes& shapes, charlm::Model<float>& model) {
    const charlm::PrecisionDecision decision = charlm::decide_precision(charlm::parse_precision_choice(precision), shapes);
    model.set_precision(decision.precision);
    return decision.precision == charlm::Precision::bf16 || decision.timed ? "products in " + decision.reason : std::string();
}

CLI::Option* add_checkpoint_argument(CLI::App& command, std::string& checkpoint) {
    return command.add_option("CHECKPOINT", checkpoint, "A .safetensors file written by 'charlm train'")->required();
}

void add_adapt_options(CLI::App& command, AdaptOptions& options, CLI::Option* enabled_by, const std::string& window_detail) {
    const std::string with = "With " + enabled_by->get_name() + ": ";
    command.add_option("--adapt-lr", options.learning_rate,
                       with + "each weight's step per window (its gradient divided by the gradient's RMS so far)")
        ->needs(enabled_by)
        ->capture_default_str();
    command.add_option("--adapt-decay", options.decay,
                       with + "share of the distance to the trained weights taken back after each step, in [0, 1]")
        ->needs(enabled_by)
        ->capture_default_str();
    command.add_option("--adapt-window", options.window, with + "characters per step" + window_detail)
        ->needs(enabled_by)
        ->capture_default_str();
}

AdaptProgressCallback adapt_progress_log() {
    const auto started = Clock::now();
    return [started, logged_seconds = 0.0](const AdaptProgress& progress) mutable {
        const double seconds = seconds_since(started);
        if (seconds - logged_seconds < 10 || progress.characters_scored >= progress.characters_total) return;
        logged_seconds = seconds;
        spdlog::info("adapting: {} of {} characters, {:.4f} nats/char so far (plain {:.4f}), {} chars/s",
                     format_count(progress.characters_scored), format_count(progress.characters_total),
                     progress.adapted.mean(), progress.plain.mean(),
                     format_count(static_cast<std::size_t>(static_cast<double>(progress.characters_scored) / seconds)));
    };
}

std::string path_to_read(const std::string& given) { return given == "-" ? std::string("/dev/stdin") : given; }

std::string name_of_input(const std::string& given) {
    return given == "-" || given == "/dev/stdin" ? std::string("standard input") : given;
}

void naming_standard_input(const std::function<void()>& action) {
    auto renamed = [](std::string message) {
        for (std::size_t at; (at = message.find("/dev/stdin")) != std::string::npos;) message.replace(at, 10, "standard input");
        return message;
    };
    // The renamed error keeps the original's word on whether every process met it (mpirun's eval).
    const auto keeping_sharing = [](const Error& original, auto renamed_error) {
        if (original.shared_by_every_process()) renamed_error.set_shared_by_every_process();
        return renamed_error;
    };
    try {
        action();
    } catch (const UsageError& error) {
        throw keeping_sharing(error, UsageError(renamed(error.what())));
    } catch (const Error& error) {
        throw keeping_sharing(error, Error(renamed(error.what())));
    }
}

}  // namespace charlm::cli
