// charlm serve: its options, and a server that answers until a stop signal (taken by a thread of its own, not a handler).
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include "charlm/checkpoint.hpp"
#include "charlm/server.hpp"
#include "serve/access.hpp"
#include "cli/commands.hpp"
#include "cli/common_options.hpp"

namespace charlm::cli {

namespace {

struct ServeArguments {
    std::vector<std::string> checkpoints;  // NAME=CHECKPOINT or CHECKPOINT, as given
    charlm::ServerOptions options;
    std::string precision = "auto";
    std::vector<std::string> api_key_files;
};

struct NamedCheckpoint {
    std::string name;
    std::string path;
};

// A checkpoint's name where none is given: its run directory's (the folder that holds a run's
// metrics.jsonl), else the file's stem.
std::string default_name(const std::filesystem::path& checkpoint) {
    const std::filesystem::path folder = checkpoint.parent_path();
    std::error_code error;
    if (!folder.filename().empty() && std::filesystem::exists(folder / "metrics.jsonl", error)) return folder.filename().string();
    return checkpoint.stem().string();
}

bool safe_name(const std::string& name) {
    return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    });
}

// NAME=CHECKPOINT or CHECKPOINT: a path that exists is a checkpoint even with a '=' in it.
std::vector<NamedCheckpoint> named_checkpoints(const std::vector<std::string>& arguments) {
    std::vector<NamedCheckpoint> models;
    for (const std::string& argument : arguments) {
        const std::size_t equals = argument.find('=');
        std::error_code error;
        NamedCheckpoint model{"", argument};
        if (equals != std::string::npos && !std::filesystem::exists(argument, error)) {
            model = {argument.substr(0, equals), argument.substr(equals + 1)};
            if (!safe_name(model.name))
                throw charlm::UsageError(fmt::format("a model's name may have only letters, digits, '.', '_' and '-': \"{}\" in {}", model.name, argument));
            if (model.path.empty()) throw charlm::UsageError(fmt::format("{} names no checkpoint after the '='", argument));
        } else {
            model.name = default_name(argument);
            if (!safe_name(model.name))
                throw charlm::UsageError(fmt::format("{} would be named \"{}\", which has more than letters, digits, '.', '_' and '-'; "
                                                     "name it: NAME={}", argument, model.name, argument));
        }
        for (const NamedCheckpoint& earlier : models)
            if (earlier.name == model.name)
                throw charlm::UsageError(fmt::format("two models are named {}: {} and {}; name them apart with NAME=CHECKPOINT", model.name,
                                                     earlier.path, model.path));
        models.push_back(std::move(model));
    }
    return models;
}

// Serves until SIGINT, SIGTERM or SIGHUP, which are taken by sigwait() here rather than by a handler:
// blocked before the server's threads start, so that every thread inherits the block.
int run_serve(const ServeArguments& arguments) {
    sigset_t stop_signals;
    ::sigemptyset(&stop_signals);
    for (const int signal_number : {SIGINT, SIGTERM, SIGHUP}) ::sigaddset(&stop_signals, signal_number);
    ::pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    // A thread of its own takes the signals from the start. The first one while the checkpoint loads
    // ends the process at once (nothing is served yet; a checkpoint that is a pipe or /dev/zero would
    // never finish loading); after that, the first stops the server, which waits for open connections
    // up to --timeout, and a second ends the process at once.
    static std::atomic<bool> serving{false};  // static: the detached thread may outlive this call
    static std::atomic<int> first_signal{0};
    static sigset_t waited;
    waited = stop_signals;
    std::thread signals([] {
        for (int received = 0;; ++received) {
            int signal_number = 0;
            ::sigwait(&waited, &signal_number);
            if (!serving || received > 0) {
                fmt::print(stderr, "charlm: stopped ({})\n", ::strsignal(signal_number));
                std::_Exit(130);
            }
            first_signal = signal_number;
            first_signal.notify_all();
        }
    });
    signals.detach();
    charlm::check_precision_runs_here(charlm::parse_precision_choice(arguments.precision));
    use_threads(arguments.options.threads);
    charlm::ServerOptions options = arguments.options;
    for (const std::string& file : arguments.api_key_files)
        for (std::string& key : charlm::read_api_key_file(file)) options.api_keys.push_back(std::move(key));
    options.log = [](charlm::ServerLogLevel level, const std::string& message) {
        if (level == charlm::ServerLogLevel::error) spdlog::error("{}", message);
        else spdlog::debug("{}", message);
    };
    const std::vector<NamedCheckpoint> models = named_checkpoints(arguments.checkpoints);
    options.models = models.size();
    charlm::Server server(options);
    server.start();  // /health answers "loading" while the checkpoints load, in the order given
    std::vector<std::string> served;
    for (const NamedCheckpoint& model : models) {
        charlm::Checkpoint checkpoint = charlm::load_checkpoint(model.path);
        const std::string precision_line =
            use_precision(arguments.precision, charlm::product_shapes(checkpoint.config, arguments.options.slots, 1), *checkpoint.model);
        if (!precision_line.empty()) spdlog::info("{}: {}", model.name, precision_line);
        const charlm::ModelConfig& config = checkpoint.config;
        served.push_back(fmt::format("{} ({} {}x{}, {} characters)", model.name, charlm::to_string(config.cell), config.layers,
                                     config.hidden_size, config.vocab_size));
        server.load(std::move(checkpoint), model.name);
    }
    serving = true;
    const std::string& host = arguments.options.host;
    if (host.rfind("127.", 0) != 0 && host != "localhost" && host != "::1" && options.api_keys.empty())
        spdlog::warn("listening on {} without --api-key: whoever can reach this port can use the server and its CPU; give a key "
                     "(--api-key or --api-key-file) or listen on 127.0.0.1 behind a proxy that checks who calls",
                     host);
    spdlog::info("serving {} with {} slots{}; Ctrl-C stops", fmt::join(served, ", "), arguments.options.slots,
                 served.size() > 1 ? " each" : "");
    if (charlm::is_wildcard_host(host))
        spdlog::info("listening on every address of this machine ({}); the URL below is its loopback one", host);
    fmt::print("{}\n", server.url());
    std::fflush(stdout);
    first_signal.wait(0);
    spdlog::info("stopping ({}); open connections close within --timeout; again to quit at once", ::strsignal(first_signal.load()));
    server.stop();
    return 0;
}

}  // namespace

Command add_serve_command(CLI::App& app) {
    const auto arguments = std::make_shared<ServeArguments>();
    ServeArguments& serve_arguments = *arguments;
    auto& serve_options = serve_arguments.options;
    auto* serve = app.add_subcommand("serve", "Serve checkpoints over HTTP: a page to generate and look inside, and an "
                                              "OpenAI-style API (docs/serve.md)");
    serve->add_option("CHECKPOINT", serve_arguments.checkpoints,
                      "One or more .safetensors files written by 'charlm train', each as NAME=CHECKPOINT or CHECKPOINT (named after "
                      "its run directory, else the file's stem); a request's \"model\" picks one")
        ->required();
    serve->add_option("--host", serve_options.host, "Address to listen on; another than 127.0.0.1 lets other machines in")->capture_default_str();
    serve->add_option("--port", serve_options.port, "Port; 0 takes a free one (the printed URL says which)")
        ->check(CLI::Range(0, 65535))
        ->capture_default_str();
    add_threads_option(*serve, serve_options.threads, "CPU threads for the models, split evenly among them; 0 uses every core");
    add_precision_option(*serve, serve_arguments.precision);
    serve->add_option("--parallel", serve_options.slots, "Completions each model decodes at once, as one batch")->check(CLI::Range(1, 256))->capture_default_str();
    serve->add_option("--queue", serve_options.queued, "Completions that may wait for a slot of each model; past that, 503")->check(CLI::Range(0, 4096))->capture_default_str();
    serve->add_option("--max-tokens", serve_options.max_tokens, "The most characters one completion may ask for")
        ->check(CLI::Range(std::size_t{1}, std::size_t{1'000'000}))
        ->capture_default_str();
    serve->add_option("--max-text", serve_options.max_score_characters, "The longest prompt or scored text, in characters")
        ->check(CLI::Range(std::size_t{2}, std::size_t{200'000}))
        ->capture_default_str();
    serve->add_option("--timeout", serve_options.timeout_seconds, "Seconds a client may send or take nothing before it is dropped")
        ->check(CLI::Range(1, 3600))
        ->capture_default_str();
    serve->add_option("--max-connections", serve_options.max_connections, "Connections open at once; past that, 503 and closed")
        ->check(CLI::Range(1, 1'000'000))
        ->capture_default_str();
    serve->add_option("--api-key", serve_options.api_keys,
                      "A key that API requests must send as `Authorization: Bearer KEY` (all but / and /health); repeat for several")
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
        ->allow_extra_args(false);  // one key a --api-key, so that the checkpoints after it are no keys
    serve->add_option("--api-key-file", serve_arguments.api_key_files, "A file of API keys, one a line (keeps them out of the process list)")
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
        ->allow_extra_args(false);
    return {serve, [arguments](const Communicator&) { return run_serve(*arguments); }};
}

}  // namespace charlm::cli
