// charlm eval: its options, a text's score (plain or adapted), and the --html report of it.
#include <filesystem>
#include <memory>
#include <stdexcept>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "charlm/atomic_file.hpp"
#include "charlm/checkpoint.hpp"
#include "charlm/decode.hpp"
#include "charlm/error.hpp"
#include "charlm/eval.hpp"
#include "charlm/file_identity.hpp"
#include "charlm/server.hpp"
#include "charlm/text.hpp"
#include "cli/commands.hpp"
#include "cli/common_options.hpp"

namespace charlm::cli {

namespace {

// The windows that evaluate_file() scores a long text in (eval.cpp), which `auto` times its products on.
constexpr int kEvalBatch = 32, kEvalSteps = 100;

struct EvalArguments {
    std::string checkpoint;
    std::string file;
    charlm::EvalOptions options;
    bool json = false;
    int threads = 0;
    std::string precision = "auto";
    std::string html;                 // a report of the scored text, the page's score view in one file
    long long html_characters = 20000;
    bool adapt = false;               // dynamic evaluation, with these settings
    charlm::AdaptOptions adapt_options;
};

// The first `most` characters of a file that the vocabulary knows, for the report.
std::u32string known_beginning(const std::string& path, const charlm::Vocab& vocab, std::size_t most) {
    std::u32string text;
    try {
        charlm::for_each_text_piece(path, [&](std::u32string_view piece) {
            for (char32_t c : piece) {
                if (text.size() >= most) throw std::out_of_range("enough");
                if (vocab.contains(c)) text += c;
            }
        });
    } catch (const std::out_of_range&) {
    }
    return text;
}

void write_html_report(const EvalArguments& arguments, charlm::Checkpoint& checkpoint, const charlm::EvalResult& result) {
    charlm::ScoreRequest request;
    request.text = known_beginning(arguments.file, checkpoint.vocab, static_cast<std::size_t>(arguments.html_characters));
    if (request.text.size() < 2) throw charlm::Error(fmt::format("{} has too few known characters for a report", arguments.file));
    // With no server to ask, the report carries the activations of the neurons it lists.
    request.most_varying = 24;
    spdlog::info("scoring the first {} characters for {}", request.text.size(), arguments.html);
    request.neurons.clear();
    charlm::ScoreResult first = charlm::score_text(*checkpoint.model, checkpoint.vocab, request, arguments.threads);
    for (const charlm::NeuronSpread& spread : first.most_varying) request.neurons.push_back(spread.neuron);
    request.most_varying = 0;
    charlm::ScoreResult traced = charlm::score_text(*checkpoint.model, checkpoint.vocab, request, arguments.threads);
    traced.most_varying = first.most_varying;
    nlohmann::ordered_json score = charlm::score_to_json(traced, request.text);
    score["model"] = std::filesystem::path(arguments.checkpoint).filename().string();
    const std::size_t total = result.characters_scored + 1;
    const nlohmann::ordered_json whole_file = nlohmann::ordered_json::parse(result.to_json().dump());
    charlm::write_file_atomically(arguments.html, charlm::score_report_html(score, std::filesystem::path(arguments.file).filename().string(),
                                                                            total, whole_file));
    spdlog::info("wrote {} ({} of {} characters shown)", arguments.html, request.text.size(), total);
}

int run_eval(EvalArguments& arguments, const charlm::Communicator& processes) {
    // With several processes the first alone talks: the others' words would repeat its own.
    if (!processes.is_first()) spdlog::set_level(spdlog::level::err);
    charlm::run_on_every_process(processes, [&] {  // the same arguments everywhere: rank 0 alone says what is wrong
        if (processes.size() > 1 && charlm::can_be_read_only_once(arguments.file))
            throw charlm::UsageError(fmt::format("{} reaches one process of mpirun's {}, and each scores its part of the text; "
                                                 "save it to a file and score that",
                                                 name_of_input(arguments.file), processes.size()));
        if (!arguments.html.empty() && arguments.file == "-")
            throw charlm::UsageError("--html reads the file twice, so it needs a file, not standard input");
        if (!arguments.html.empty()) {  // before the scoring, which may take a while
            const std::filesystem::path folder = std::filesystem::absolute(arguments.html).parent_path();
            if (!std::filesystem::is_directory(folder))
                throw charlm::Error(fmt::format("cannot write {}: the folder {} does not exist", arguments.html, folder.string()));
            if (std::filesystem::is_directory(arguments.html))  // a path that cannot be written, as the missing folder's above
                throw charlm::Error(fmt::format("cannot write {}: it is a folder; give the report's file name, such as {}/report.html",
                                                arguments.html, arguments.html));
            std::error_code error;
            for (const std::string& input : {arguments.file, arguments.checkpoint})
                if (std::filesystem::equivalent(arguments.html, input, error))
                    throw charlm::UsageError(fmt::format("--html {} is the {} itself, which the report would overwrite; give another name",
                                                         arguments.html, input == arguments.file ? "text scored" : "checkpoint"));
        }
        if (arguments.adapt) {
            charlm::validate(arguments.adapt_options);
            arguments.options.adapt = arguments.adapt_options;
            arguments.options.adapt_progress = adapt_progress_log();
        }
    });
    use_threads(arguments.threads == 0 && processes.size() > 1 ? default_threads_per_process(processes) : arguments.threads);
    charlm::Checkpoint checkpoint;
    std::string precision_line;
    charlm::run_on_every_process(processes, [&] {  // every process meets the same checkpoint, or its error
        checkpoint = charlm::load_checkpoint(arguments.checkpoint);
        precision_line =
            use_precision(arguments.precision, charlm::product_shapes(checkpoint.config, kEvalBatch, kEvalSteps), *checkpoint.model);
    });
    if (processes.size() > 1) {  // process 0's choice (auto's timing there), so that every process multiplies alike
        const std::string chosen = charlm::to_string(checkpoint.model->precision());
        checkpoint.model->set_precision(charlm::parse_precision(processes.gather_all(chosen).front()));
    }
    charlm::EvalResult result;
    naming_standard_input([&] {  // read once, streamed: a pipe will do
        result = charlm::evaluate_file(*checkpoint.model, checkpoint.vocab, path_to_read(arguments.file), arguments.options, processes);
    });
    if (!processes.is_first()) return 0;  // the first alone prints the figures and writes the report
    if (!precision_line.empty()) spdlog::info("{}", precision_line);
    if (result.unknown_characters > 0)
        spdlog::warn("{} characters of {} ({:.3g}% of its text) are not in the model's vocabulary and were left out",
                     result.unknown_characters, name_of_input(arguments.file), 100 * result.unknown_fraction);
    if (!arguments.html.empty()) write_html_report(arguments, checkpoint, result);  // before the figures: a failure prints none
    if (arguments.json) {
        fmt::print("{}\n", result.to_json().dump());
    } else if (result.adaptation) {
        const double plain = result.plain_nats_per_character;
        const charlm::AdaptOptions& adapted = *result.adaptation;
        fmt::print("            plain     adapted\nnats/char   {:<9.4f} {:.4f}\nperplexity  {:<9.4f} {:.4f}\nbits/char   {:<9.4f} {:.4f}\n"
                   "characters  {} scored, {} unknown left out\n"
                   "adaptation  {:.4f} nats/char gained with --adapt-lr {:g} --adapt-decay {:g} --adapt-window {}\n",
                   plain, result.nats_per_character, charlm::perplexity_of(plain), result.perplexity,
                   charlm::bits_per_character_of(plain), result.bits_per_character, result.characters_scored,
                   result.unknown_characters, plain - result.nats_per_character, adapted.learning_rate, adapted.decay, adapted.window);
    } else {
        fmt::print("nats/char   {:.4f}\nperplexity  {:.4f}\nbits/char   {:.4f}\ncharacters  {} scored, {} unknown left out\n",
                   result.nats_per_character, result.perplexity, result.bits_per_character, result.characters_scored,
                   result.unknown_characters);
    }
    return 0;
}

}  // namespace

Command add_eval_command(CLI::App& app) {
    const auto arguments = std::make_shared<EvalArguments>();
    EvalArguments& eval_arguments = *arguments;
    auto* eval = app.add_subcommand("eval", "Score a text: nats per character, perplexity, bits per character");
    add_checkpoint_argument(*eval, eval_arguments.checkpoint);
    eval->add_option("FILE", eval_arguments.file, "UTF-8 text to score; - reads standard input")->required();
    eval->add_flag("--json", eval_arguments.json, "Print one JSON object");
    eval->add_flag("--allow-unknown", eval_arguments.options.allow_unknown,
                   fmt::format("Score a text even when more than {:g}% of its characters are not in the model's vocabulary "
                               "(they are left out)", 100 * charlm::kMostUnknownFraction));
    add_threads_option(*eval, eval_arguments.threads);
    add_precision_option(*eval, eval_arguments.precision);
    eval->add_option("--html", eval_arguments.html,
                     "Also write REPORT.html: the text tinted by surprise, top predictions, the neurons that vary most")
        ->option_text("REPORT.html");
    eval->add_option("--html-chars", eval_arguments.html_characters, "Characters the report shows, from the start of the file")
        ->check(CLI::Range(2LL, 200'000LL))
        ->needs(eval->get_option("--html"))
        ->capture_default_str();
    auto* adapt = eval->add_flag("--adapt", eval_arguments.adapt,
                                 "Dynamic evaluation: read the text as one stream and, after scoring each window, learn from it "
                                 "(a step on its gradients divided by their RMS so far, decaying toward the trained weights); "
                                 "prints the plain and the adapted figures")
                      ->excludes(eval->get_option("--html"));
    add_adapt_options(*eval, eval_arguments.adapt_options, adapt,
                      " (how far back gradients reach, how often the weights change)");
    return {eval, [arguments](const Communicator& processes) { return run_eval(*arguments, processes); }};
}

}  // namespace charlm::cli
