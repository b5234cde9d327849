// charlm info: its options, and a checkpoint's description as JSON or as lines for a person.
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "charlm/checkpoint.hpp"
#include "cli/commands.hpp"
#include "cli/common_options.hpp"
#include "cli/terminal.hpp"

namespace charlm::cli {

namespace {

struct InfoArguments {
    std::string checkpoint;
    bool json = false;
};

int run_info(const InfoArguments& arguments) {
    const Checkpoint checkpoint = load_checkpoint(arguments.checkpoint);
    const nlohmann::json description = describe_checkpoint(checkpoint);
    if (arguments.json) fmt::print("{}\n", description.dump());
    else fmt::print("{}", format_checkpoint_description(description));
    return 0;
}

}  // namespace

Command add_info_command(CLI::App& app) {
    const auto arguments = std::make_shared<InfoArguments>();
    auto* info = app.add_subcommand("info", "Describe a checkpoint: model, parameters, vocabulary, training");
    add_checkpoint_argument(*info, arguments->checkpoint);
    info->add_flag("--json", arguments->json, "Print one JSON object");
    return {info, [arguments](const Communicator&) { return run_info(*arguments); }};
}

}  // namespace charlm::cli
