// charlm sample: its options, and text drawn from a checkpoint, streamed to stdout.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <memory>
#include <random>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "charlm/checkpoint.hpp"
#include "charlm/error.hpp"
#include "charlm/eval.hpp"
#include "charlm/sample.hpp"
#include "charlm/text.hpp"
#include "cli/commands.hpp"
#include "cli/common_options.hpp"

namespace charlm::cli {

namespace {

struct SampleArguments {
    std::string checkpoint;
    std::string prompt;
    std::string prompt_file;
    std::vector<std::string> stops;  // --stop, as many as given
    long long length = 500;
    int count = 1;
    std::uint64_t seed = 0;
    bool seed_given = false;
    bool skip_unknown = false;
    bool json = false;
    charlm::SampleOptions options;
    charlm::ExplicitSampleOptions given;  // which drawing options were on the command line
    int threads = 1;
    std::string precision = "auto";
    std::string adapt_to;                 // a text to adapt the weights to first, as eval --adapt reads it
    charlm::AdaptOptions adapt_options;
    bool allow_unknown = false;           // adapt to it whatever share of it the model never saw
};

// Thrown out of generate() once stdout takes no more (its reader gone: `| head -c 10`; a full disk): the
// rest would go nowhere, and main() tells the two apart.
struct StdoutFailed {};

void stop_if_stdout_failed() {
    if (std::ferror(stdout)) throw StdoutFailed{};
}

// An empty file is an empty prompt, as --prompt "" is; decode_utf8() checks the bytes.
std::string read_prompt_file(const std::string& path) {
    if (path == "-") return {std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
    std::error_code error;
    if (std::filesystem::is_regular_file(path, error) && std::filesystem::file_size(path, error) == 0 && !error) return {};
    return charlm::encode_utf8(charlm::read_text_file(path));
}

void write_samples(const SampleArguments& arguments, charlm::Checkpoint& checkpoint, const std::u32string& prompt,
                   const std::string& shown_prompt, std::uint64_t first_seed, bool to_terminal);

int run_sample(SampleArguments& arguments) {
    charlm::validate(arguments.options);
    if (arguments.count < 1) throw charlm::UsageError(fmt::format("--count must be at least 1, not {}", arguments.count));
    if (arguments.options.greedy && arguments.count > 1)
        throw charlm::UsageError(fmt::format("--greedy takes the most likely character every time, so --count {} would print {} "
                                             "identical samples; drop --greedy to draw them, or leave --count out",
                                             arguments.count, arguments.count));
    if (!arguments.adapt_to.empty()) charlm::validate(arguments.adapt_options);
    if (arguments.adapt_to == "-" && arguments.prompt_file == "-")
        throw charlm::UsageError("--adapt-to and --prompt-file cannot both read standard input; give one of them a file");
    use_threads(arguments.threads);
    charlm::Checkpoint checkpoint = charlm::load_checkpoint(arguments.checkpoint);
    const std::string precision_line = use_precision(arguments.precision, charlm::product_shapes(checkpoint.config, 1, 1), *checkpoint.model);
    if (!arguments.adapt_to.empty()) {
        // Read as eval --adapt reads it: a text mostly of characters the model never saw is refused
        // unless --allow-unknown, since what is left of it would say little of its style.
        charlm::EvalResult adapted;
        naming_standard_input([&] {
            adapted = charlm::evaluate_file(
                *checkpoint.model, checkpoint.vocab, path_to_read(arguments.adapt_to),
                {.allow_unknown = arguments.allow_unknown, .adapt = arguments.adapt_options, .adapt_progress = adapt_progress_log()});
        });
        const std::string adapted_to = name_of_input(arguments.adapt_to);
        if (adapted.unknown_characters > 0)
            spdlog::warn("{} characters of {} ({:.3g}% of its text) are not in the model's vocabulary and were left out",
                         adapted.unknown_characters, adapted_to, 100 * adapted.unknown_fraction);
        spdlog::info("adapted to {}: {:.4f} nats/char as it read it (trained weights: {:.4f})", adapted_to,
                     adapted.nats_per_character, adapted.plain_nats_per_character);
    }
    const std::string prompt_bytes = arguments.prompt_file.empty() ? arguments.prompt : read_prompt_file(arguments.prompt_file);
    std::u32string prompt = charlm::decode_utf8(prompt_bytes, arguments.prompt_file.empty() ? "--prompt" : name_of_input(arguments.prompt_file));
    if (arguments.skip_unknown) {
        std::size_t unknown = 0;
        prompt = checkpoint.vocab.decode(checkpoint.vocab.encode_known(prompt, unknown));
        if (unknown > 0) spdlog::warn("left {} prompt characters out that the model never saw", unknown);
    }
    charlm::check_prompt(checkpoint.vocab, prompt);  // before anything reaches stdout
    if (!precision_line.empty()) spdlog::info("{}", precision_line);
    for (const std::string& stop : arguments.stops) arguments.options.stops.push_back(charlm::decode_utf8(stop, "--stop"));
    for (const std::string& warning : charlm::sample_warnings(arguments.options, arguments.given, checkpoint.vocab))
        spdlog::warn("{}", warning);
    const std::uint64_t first_seed = arguments.seed_given ? arguments.seed : std::random_device{}();
    if (!arguments.seed_given && !arguments.options.greedy) {
        // On stderr, so that stdout stays the sample; the seed is what makes it repeatable (greedy needs none).
        const std::uint64_t last_seed = first_seed + static_cast<std::uint64_t>(arguments.count) - 1;
        if (arguments.count == 1) spdlog::info("seed {} (repeat with --seed {})", first_seed, first_seed);
        else spdlog::info("seeds {} to {} (repeat with --seed {})", first_seed, last_seed, first_seed);
    }
    const bool to_terminal = ::isatty(STDOUT_FILENO);
    const std::string shown_prompt = charlm::encode_utf8(prompt);
    try {
        write_samples(arguments, checkpoint, prompt, shown_prompt, first_seed, to_terminal);
    } catch (const StdoutFailed&) {
    }
    return 0;  // main() checks that stdout took everything
}

void write_samples(const SampleArguments& arguments, charlm::Checkpoint& checkpoint, const std::u32string& prompt,
                   const std::string& shown_prompt, std::uint64_t first_seed, bool to_terminal) {
    for (int index = 0; index < arguments.count; ++index) {
        const std::uint64_t seed = first_seed + static_cast<std::uint64_t>(index);
        if (arguments.json) {
            // One JSON object needs the whole text; the library streams it, and only this mode keeps it.
            std::string text;
            charlm::generate(*checkpoint.model, checkpoint.vocab, prompt, static_cast<std::size_t>(arguments.length),
                             arguments.options, seed, [&](char32_t c) { text += charlm::encode_utf8(c); });
            // Greedy draws nothing: no seed made its text.
            const nlohmann::json record = {{"prompt", shown_prompt}, {"text", text},
                                           {"seed", arguments.options.greedy ? nlohmann::json(nullptr) : nlohmann::json(seed)}};
            std::fputs((record.dump() + "\n").c_str(), stdout);
            stop_if_stdout_failed();
            continue;
        }
        if (index > 0) std::fputs("\n", stdout);
        std::fputs(shown_prompt.c_str(), stdout);
        charlm::generate(*checkpoint.model, checkpoint.vocab, prompt, static_cast<std::size_t>(arguments.length),
                         arguments.options, seed, [&](char32_t c) {
                             const std::string bytes = charlm::encode_utf8(c);
                             std::fwrite(bytes.data(), 1, bytes.size(), stdout);
                             if (to_terminal || c == U'\n') std::fflush(stdout);
                             stop_if_stdout_failed();
                         });
        std::fputc('\n', stdout);
        stop_if_stdout_failed();
    }
}

}  // namespace

Command add_sample_command(CLI::App& app) {
    const auto arguments = std::make_shared<SampleArguments>();
    SampleArguments& sample_arguments = *arguments;
    auto* sample = app.add_subcommand("sample", "Generate text from a checkpoint, streamed to stdout");
    add_checkpoint_argument(*sample, sample_arguments.checkpoint);
    sample->add_option("--prompt", sample_arguments.prompt, "Text that primes the model; it is printed first");
    sample->add_option("--prompt-file", sample_arguments.prompt_file, "Read the prompt from a file; - reads standard input")
        ->excludes(sample->get_option("--prompt"));
    sample->add_flag("--skip-unknown", sample_arguments.skip_unknown, "Leave out prompt characters the model never saw");
    sample->add_option("--count", sample_arguments.count, "Samples to draw, with seeds SEED, SEED+1, ...")->capture_default_str();
    sample->add_option("--stop", sample_arguments.stops, "End a sample as soon as it has generated this text; give it again for "
                                                         "more texts, the first to come ends it")
        ->expected(1)
        ->allow_extra_args(false)  // one text a --stop, so that the checkpoint after it is no stop text
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)  // stop texts add up, as the server's "stop" list does
        ->check([](const std::string& text) { return text.empty() ? std::string("needs the text to stop at") : std::string(); });
    sample->add_flag("--json", sample_arguments.json, "One JSON object per sample: prompt, text, seed (null for --greedy)");
    sample->add_option("--length", sample_arguments.length, "Characters to generate")
        ->check(CLI::Range(0LL, 1LL << 40))
        ->capture_default_str();
    sample->add_option("--temperature", sample_arguments.options.temperature,
                       "Below 1 is safer and more repetitive, above 1 wilder")->capture_default_str();
    sample->add_option("--top-k", sample_arguments.options.top_k, "Draw only from the k most likely characters; 0 for all")->capture_default_str();
    sample->add_option("--top-p", sample_arguments.options.top_p, "Draw only from the most likely characters whose probability adds up to p")->capture_default_str();
    sample->add_flag("--greedy", sample_arguments.options.greedy, "Always take the most likely character (repeats itself)");
    sample->add_option("--seed", sample_arguments.seed, "Seed for reproducible samples [default: random]");
    add_threads_option(*sample, sample_arguments.threads);
    add_precision_option(*sample, sample_arguments.precision);
    auto* adapt_to = sample->add_option("--adapt-to", sample_arguments.adapt_to,
                                        "First adapt the weights to this text, as 'charlm eval --adapt' reads it, then sample in "
                                        "its style; - reads standard input")
                         ->type_name("FILE");
    add_adapt_options(*sample, sample_arguments.adapt_options, adapt_to, "");
    sample->add_flag("--allow-unknown", sample_arguments.allow_unknown,
                     fmt::format("With --adapt-to: adapt to a text even when more than {:g}% of its characters are not in the "
                                 "model's vocabulary (they are left out)",
                                 100 * charlm::kMostUnknownFraction))
        ->needs(adapt_to);
    return {sample, [sample, arguments](const Communicator&) {
        arguments->seed_given = sample->count("--seed") > 0;
        arguments->given = {.temperature = sample->count("--temperature") > 0, .top_k = sample->count("--top-k") > 0,
                            .top_p = sample->count("--top-p") > 0,
                            .seed = arguments->seed_given ? std::optional<std::uint64_t>(arguments->seed) : std::nullopt};
        return run_sample(*arguments);
    }};
}

}  // namespace charlm::cli
