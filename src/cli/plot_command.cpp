// charlm plot: its options, and a run's losses, or several runs' validation losses, drawn to a PNG by the library.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "charlm/error.hpp"
#include "charlm/plot.hpp"
#include "cli/commands.hpp"

namespace charlm::cli {

namespace {

struct PlotArguments {
    std::vector<std::string> run_directories;
    std::string output;
    std::string axis;  // step or minutes; given, it compares runs as several do
};

int run_plot(const PlotArguments& arguments) {
    const bool comparing = arguments.run_directories.size() > 1 || !arguments.axis.empty();
    if (comparing && arguments.output.empty())
        throw UsageError("comparing runs writes one PNG for all of them: say where with --output FILE.png");
    const std::filesystem::path output = arguments.output.empty() ? run_directory_of(arguments.run_directories.front()) / "loss.png"
                                                                  : std::filesystem::path(arguments.output);
    const std::vector<std::filesystem::path> runs(arguments.run_directories.begin(), arguments.run_directories.end());
    const std::vector<std::string> warnings =
        comparing ? plot_validation_losses(runs, output, arguments.axis == "step" ? PlotAxis::step : PlotAxis::minutes)
                  : plot_losses(runs.front(), output);
    for (const std::string& warning : warnings) spdlog::warn("{}", warning);
    fmt::print("{}\n", output.string());
    return 0;
}

}  // namespace

Command add_plot_command(CLI::App& app) {
    const auto arguments = std::make_shared<PlotArguments>();
    auto* plot = app.add_subcommand("plot", "Draw a run's train and validation loss to a PNG, or compare several runs' "
                                            "validation losses (needs gnuplot)");
    plot->add_option("RUN_DIR", arguments->run_directories, "Run directories with metrics.jsonl (or their metrics.jsonl); with more than one, their validation "
                                                            "losses are compared")
        ->required();
    plot->add_option("--output", arguments->output, "PNG to write [default: RUN_DIR/loss.png for one run]");
    plot->add_option("--by", arguments->axis, "Compare validation losses by step or minutes of training [default: minutes]")
        ->check(CLI::IsMember({"step", "minutes"}));
    return {plot, [arguments](const Communicator&) { return run_plot(*arguments); }};
}

}  // namespace charlm::cli
