// charlm bench: its options, and the library's speed measured, printed as a table or one JSON object.
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "charlm/bench.hpp"
#include "charlm/error.hpp"
#include "cli/commands.hpp"
#include "cli/common_options.hpp"
#include "cli/terminal.hpp"

namespace charlm::cli {

namespace {

struct BenchArguments {
    BenchOptions options;
    std::string corpus = options.corpus.string();
    std::vector<std::string> models;  // by name, "3x512"; none: every reference model
    bool json = false;
    std::string precision = "auto";
};

int run_bench(BenchArguments& arguments, bool corpus_given) {
    BenchOptions& options = arguments.options;
    options.corpus = arguments.corpus;
    options.precision = parse_precision_choice(arguments.precision);
    check_precision_runs_here(options.precision);  // usage errors before any file is looked for
    std::error_code ignored;
    if (!corpus_given && !std::filesystem::exists(options.corpus, ignored))  // the default is the checkout's
        throw Error(fmt::format("{}: no such file here, where charlm bench looks for its text by default (in a checkout, "
                                "scripts/get-corpus.sh makes it); give a UTF-8 text with --corpus FILE",
                                options.corpus.string()));
    if (!arguments.models.empty()) options.models = select_bench_models(arguments.models);
    options.note = [](const std::string& line) { spdlog::info("{}", line); };
    const nlohmann::json result = run_benchmark(options);
    if (arguments.json) fmt::print("{}\n", result.dump());
    else fmt::print("{}", format_benchmark_table(result));
    return 0;
}

}  // namespace

Command add_bench_command(CLI::App& app) {
    const auto arguments = std::make_shared<BenchArguments>();
    auto* bench = app.add_subcommand("bench", "Measure training, evaluation and sampling speed on the reference LSTMs");
    add_threads_option(*bench, arguments->options.threads);
    add_precision_option(*bench, arguments->precision);
    bench->add_option("--model", arguments->models, "Measure only these, e.g. --model 2x128 --model 3x512 [default: 2x128, 2x256, 3x512]")
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    bench->add_option("--seconds", arguments->options.seconds_per_measurement, "Seconds of each measurement")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    bench->add_option("--corpus", arguments->corpus, "Text for the vocabulary and the windows")->capture_default_str();
    bench->add_flag("--json", arguments->json, "Print one JSON object instead of a table");
    return {bench, [bench, arguments](const Communicator&) { return run_bench(*arguments, bench->count("--corpus") > 0); }};
}

}  // namespace charlm::cli
