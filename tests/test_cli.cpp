// End-to-end tests of the charlm binary: real processes on tiny texts, stdout, stderr and exit code kept apart.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <optional>
#include <random>
#include <regex>
#include <sstream>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <utf8.h>

#include "charlm/checkpoint.hpp"
#include "charlm/precision.hpp"
#include "charlm/utf8.hpp"
#include "child_process.hpp"
#include "test_helpers.hpp"

namespace {

namespace fs = std::filesystem;
using charlm::testing::ScopedEnvironment;
using charlm::testing::Bf16ForChildProcesses;
using nlohmann::json;

// ---- running the binary ----

struct RunResult {
    int exit_code = -1;  // the exit status, or 128 + signal number when killed
    bool timed_out = false;
    std::string out;
    std::string err;
};

// Keeps at most this much of each stream; the rest is read and dropped so that the child never blocks.
constexpr std::size_t kMaxCapturedBytes = 1 << 20;

// Runs CHARLM_BINARY with `arguments` exactly as given (no shell), standard input from `stdin_path`,
// in `working_directory`, with this process's environment.
// `launcher`, where given, runs first with the binary and its arguments after its own (setpriv, to run as
// another user).
RunResult run_binary(const std::vector<std::string>& arguments, const fs::path& working_directory,
                     double timeout_seconds, const std::string& stdin_path = "/dev/null",
                     const std::vector<std::string>& launcher = {}) {
    RunResult result;
    int out_pipe[2], err_pipe[2];
    if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0) {
        ADD_FAILURE() << "pipe2 failed: " << std::strerror(errno);
        return result;
    }
    // Everything the child needs is prepared before fork: after it, only async-signal-safe calls.
    const std::string binary = CHARLM_BINARY;
    std::vector<std::string> argv_strings(launcher);
    argv_strings.push_back(binary);
    argv_strings.insert(argv_strings.end(), arguments.begin(), arguments.end());
    std::vector<char*> argv;
    for (auto& argument : argv_strings) argv.push_back(argument.data());
    argv.push_back(nullptr);
    const std::string directory = working_directory.string();

    const pid_t pid = ::fork();
    if (pid < 0) {
        ADD_FAILURE() << "fork failed: " << std::strerror(errno);
        return result;
    }
    if (pid == 0) {
        const int null_fd = ::open(stdin_path.c_str(), O_RDONLY);
        if (null_fd < 0 || ::dup2(null_fd, STDIN_FILENO) < 0 || ::dup2(out_pipe[1], STDOUT_FILENO) < 0 ||
            ::dup2(err_pipe[1], STDERR_FILENO) < 0 || ::chdir(directory.c_str()) != 0)
            ::_exit(126);
        ::execv(argv_strings.front().c_str(), argv.data());
        ::_exit(127);
    }
    ::close(out_pipe[1]);
    ::close(err_pipe[1]);

    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_seconds);
    pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
    std::string* sinks[2] = {&result.out, &result.err};
    int open_streams = 2;
    char buffer[65536];
    while (open_streams > 0) {
        const auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (!result.timed_out && remaining.count() <= 0) {
            result.timed_out = true;
            ::kill(pid, SIGKILL);  // the pipes reach end-of-file once it is gone
        }
        const int ready = ::poll(fds, 2, result.timed_out ? 1000 : static_cast<int>(std::max<long long>(remaining.count(), 1)));
        if (ready < 0 && errno != EINTR) break;
        for (int i = 0; i < 2; ++i) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            const ssize_t count = ::read(fds[i].fd, buffer, sizeof buffer);
            if (count > 0) {
                const auto room = kMaxCapturedBytes - std::min(kMaxCapturedBytes, sinks[i]->size());
                sinks[i]->append(buffer, std::min(room, static_cast<std::size_t>(count)));
            } else if (count == 0 || errno != EINTR) {
                ::close(fds[i].fd);
                fds[i].fd = -1;
                --open_streams;
            }
        }
    }
    for (auto& fd : fds)
        if (fd.fd >= 0) ::close(fd.fd);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return result;
}

std::string describe(const RunResult& result) {
    return "exit " + std::to_string(result.exit_code) + (result.timed_out ? " (timed out)" : "") + "\n--- stdout (" +
           std::to_string(result.out.size()) + " bytes) ---\n" + result.out.substr(0, 600) + "\n--- stderr ---\n" +
           result.err.substr(0, 4000);
}

// ---- files ----

std::string read_bytes(const fs::path& path) {
    std::ifstream file(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& path, std::string_view bytes) {
    std::ofstream file(path, std::ios::binary | std::ios::trunc);
    file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    ASSERT_TRUE(file.good()) << "cannot write " << path;
}

// Every regular file under `directory` (relative name -> bytes), to prove that a failed command changed nothing;
// but the run directory's lock file, which every training that locks the directory writes its pid into.
std::map<std::string, std::string> snapshot(const fs::path& directory) {
    std::map<std::string, std::string> files;
    for (const auto& entry : fs::recursive_directory_iterator(directory))
        if (entry.is_regular_file() && entry.path().filename() != ".lock")
            files[fs::relative(entry.path(), directory).string()] = read_bytes(entry.path());
    return files;
}

void expect_unchanged(const std::map<std::string, std::string>& before, const std::map<std::string, std::string>& after) {
    std::set<std::string> names_before, names_after;
    for (const auto& [name, bytes] : before) names_before.insert(name);
    for (const auto& [name, bytes] : after) names_after.insert(name);
    EXPECT_EQ(names_before, names_after) << "the run directory gained or lost files";
    for (const auto& [name, bytes] : before) {
        auto found = after.find(name);
        if (found == after.end()) continue;
        EXPECT_TRUE(found->second == bytes) << name << " changed (" << bytes.size() << " -> " << found->second.size()
                                            << " bytes)";
    }
}

std::vector<json> read_metrics(const fs::path& path) {
    std::vector<json> records;
    std::ifstream file(path);
    std::string line;
    while (std::getline(file, line))
        if (!line.empty()) records.push_back(json::parse(line));
    return records;
}

// The JSON header of a safetensors file: 8-byte little-endian length, then the header.
json safetensors_header(const std::string& bytes) {
    if (bytes.size() < 8) return json();
    std::uint64_t length = 0;
    std::memcpy(&length, bytes.data(), 8);
    if (length > bytes.size() - 8) return json();
    return json::parse(bytes.substr(8, length), nullptr, false);
}

std::string with_header(const std::string& bytes, const json& header) {
    std::uint64_t old_length = 0;
    std::memcpy(&old_length, bytes.data(), 8);
    std::string text = header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    const std::uint64_t length = text.size();
    std::string result(8, '\0');
    std::memcpy(result.data(), &length, 8);
    return result + text + bytes.substr(8 + old_length);
}

// ---- text ----

std::u32string code_points_of(const std::string& bytes) {
    std::u32string result;
    utf8::utf8to32(bytes.begin(), bytes.end(), std::back_inserter(result));
    return result;
}

std::set<char32_t> distinct_characters(const std::string& text) {
    const std::u32string characters = code_points_of(text);
    return {characters.begin(), characters.end()};
}

std::string fixed4(double value) {
    char text[64];
    std::snprintf(text, sizeof text, "%.4f", value);
    return text;
}

std::size_t count_lines(const std::string& text) { return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n')); }

// A small corpus with multi-byte characters, the same every time: enough for a few windows of --seq 16 x --batch 4.
std::string make_corpus(std::size_t words = 320) {
    const std::vector<std::string> vocabulary = {"the", "cat", "sat", "on", "a", "mat", "café", "naïve", "→", "日本", "dog", "ran"};
    std::mt19937 rng(12345);
    std::string text;
    for (std::size_t i = 0; i < words; ++i) {
        text += vocabulary[rng() % vocabulary.size()];
        text += (i % 9 == 8) ? "\n" : " ";
    }
    return text + "\n";
}

const std::vector<std::string> kTinyModel = {"--layers", "1", "--hidden", "16", "--embed", "8", "--seq", "16",
                                             "--batch", "4", "--eval-every", "10", "--threads", "1"};

// `base` with `overrides` (both "--name value" pairs) laid over it: an option given twice is a usage error.
std::vector<std::string> with_options(std::vector<std::string> base, const std::vector<std::string>& overrides) {
    for (std::size_t i = 0; i + 1 < overrides.size(); i += 2) {
        auto found = std::find(base.begin(), base.end(), overrides[i]);
        if (found != base.end() && found + 1 != base.end()) {
            *(found + 1) = overrides[i + 1];
        } else {
            base.push_back(overrides[i]);
            base.push_back(overrides[i + 1]);
        }
    }
    return base;
}

// ---- the fixture: a fresh directory per test ----

class Cli : public ::testing::Test {
protected:
    void SetUp() override {
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        std::random_device random;
        directory_ = fs::temp_directory_path() /
                     ("charlm-cli-" + std::string(info->name()) + "-" + std::to_string(::getpid()) + "-" + std::to_string(random()));
        fs::create_directories(directory_);
    }
    void TearDown() override {
        std::error_code error;
        fs::remove_all(directory_, error);
    }

    fs::path path(const std::string& name) const { return directory_ / name; }
    fs::path write(const std::string& name, std::string_view bytes) const {
        write_bytes(directory_ / name, bytes);
        return directory_ / name;
    }

    RunResult charlm(const std::vector<std::string>& arguments, double timeout_seconds = 60,
                     const std::string& stdin_path = "/dev/null") const {
        return run_binary(arguments, directory_, timeout_seconds, stdin_path, launcher_);
    }

    // Trains the tiny model on `corpus` into `run` (relative to the test directory) and checks that it worked.
    RunResult train_tiny(const fs::path& corpus, const std::string& run, int steps = 30,
                         const std::vector<std::string>& extra = {}) const {
        std::vector<std::string> arguments = {"train", corpus.string(), "--out", path(run).string(), "--steps", std::to_string(steps)};
        arguments.insert(arguments.end(), kTinyModel.begin(), kTinyModel.end());
        arguments.insert(arguments.end(), extra.begin(), extra.end());
        RunResult result = charlm(arguments);
        EXPECT_EQ(result.exit_code, 0) << describe(result);
        EXPECT_TRUE(fs::exists(path(run) / "last.safetensors")) << describe(result);
        return result;
    }

    // A trained run in "run" on the standard corpus "corpus.txt"; returns the path of its best checkpoint.
    fs::path trained_run() {
        const auto corpus = write("corpus.txt", make_corpus());
        train_tiny(corpus, "run");
        return path("run") / "best.safetensors";
    }

    // A refused command: exit 2 for a usage error, 1 for a runtime error (as DESIGN.md and docs/bad-input.md
    // say), nothing on stdout, one line on stderr that starts with "charlm: error: " and mentions every one
    // of `mentions`.
    static void expect_error(const RunResult& result, const std::vector<std::string>& mentions, bool usage_error = false) {
        if (result.timed_out) {
            ADD_FAILURE() << "still running at the time limit, so killed; it should have been refused at once\n" << describe(result);
            return;
        }
        EXPECT_EQ(result.exit_code, usage_error ? 2 : 1) << (usage_error ? "a usage error exits 2\n" : "a runtime error exits 1\n")
                                                         << describe(result);
        EXPECT_TRUE(result.out.empty()) << "stdout must stay empty on an error\n" << describe(result);
        EXPECT_EQ(result.err.rfind("charlm: error: ", 0), 0u) << describe(result);
        EXPECT_EQ(count_lines(result.err), 1u) << "stderr must be exactly one line\n" << describe(result);
        EXPECT_TRUE(!result.err.empty() && result.err.back() == '\n') << describe(result);
        for (const auto& mention : mentions)
            EXPECT_NE(result.err.find(mention), std::string::npos) << "stderr should mention \"" << mention << "\"\n" << describe(result);
    }

    // Training on `corpus` must be refused with `mentions`, even with --force over a good run, leaving that run intact.
    void expect_train_refused(const fs::path& corpus, const std::vector<std::string>& mentions,
                              const std::vector<std::string>& extra = {}, bool usage_error = false) {
        if (!fs::exists(path("run") / "last.safetensors")) train_tiny(write("good.txt", make_corpus()), "run");
        const auto before = snapshot(path("run"));
        std::vector<std::string> arguments = {"train", corpus.string(), "--out", path("run").string(), "--force", "--steps", "30"};
        arguments.insert(arguments.end(), kTinyModel.begin(), kTinyModel.end());
        const RunResult result = charlm(with_options(arguments, extra));
        expect_error(result, mentions, usage_error);
        EXPECT_EQ(result.out.find("trained"), std::string::npos) << "no summary after a failure";
        expect_unchanged(before, snapshot(path("run")));
    }

    fs::path directory_;
    std::vector<std::string> launcher_;  // what charlm() runs the binary through; empty: directly
};

// =============================== train ===============================

TEST_F(Cli, TrainWritesCheckpointsMetricsAndSummary) {
    const std::string text = make_corpus();
    const auto corpus = write("corpus.txt", text);
    const RunResult result = train_tiny(corpus, "run");

    for (const char* name : {"last.safetensors", "best.safetensors", "metrics.jsonl", "corpus.ids"}) {
        EXPECT_TRUE(fs::is_regular_file(path("run") / name)) << name;
        EXPECT_GT(fs::file_size(path("run") / name), 0u) << name;
    }
    // No temporary files left behind by the atomic writes; the lock file stays, for the next run to lock.
    for (const auto& entry : fs::directory_iterator(path("run")))
        EXPECT_TRUE(entry.path().filename() == "last.safetensors" || entry.path().filename() == "best.safetensors" ||
                    entry.path().filename() == "metrics.jsonl" || entry.path().filename() == "corpus.ids" ||
                    entry.path().filename() == ".lock")
            << "unexpected file " << entry.path();

    // The summary on stdout, the progress log on stderr.
    std::smatch match;
    // Which weights the best figure is of, since the run averages them (--ema, 0.999 unless given).
    const std::regex summary(R"(^trained (\d+) steps; best validation loss ([0-9.]+) nats/char, (averaged weights|the step's weights) )"
                             R"(\(perplexity ([0-9.]+), ([0-9.]+) bits/char\)\n)"
                             R"(checkpoints: (.*) \(best\), (.*) \(to resume\)\n$)");
    ASSERT_TRUE(std::regex_match(result.out, match, summary)) << describe(result);
    EXPECT_EQ(match[1].str(), "30");
    const double best = std::stod(match[2].str());
    EXPECT_NEAR(std::stod(match[4].str()), std::exp(best), 0.01);
    EXPECT_NEAR(std::stod(match[5].str()), best / std::log(2.0), 0.001);
    EXPECT_EQ(fs::path(match[6].str()), path("run") / "best.safetensors");
    EXPECT_EQ(fs::path(match[7].str()), path("run") / "last.safetensors");
    EXPECT_EQ(result.out.find("[", 0), std::string::npos) << "log lines belong on stderr";
    EXPECT_NE(result.err.find("step 30"), std::string::npos) << describe(result);

    // One record per evaluation, each scoring the last step's weights and their average, the best of them
    // in the summary, said to be the average's where it is.
    const auto metrics = read_metrics(path("run") / "metrics.jsonl");
    ASSERT_EQ(metrics.size(), 3u);
    double lowest = INFINITY;
    bool lowest_is_averaged = false;
    for (std::size_t i = 0; i < metrics.size(); ++i) {
        EXPECT_EQ(metrics[i].at("step").get<int>(), static_cast<int>(10 * (i + 1)));
        EXPECT_TRUE(std::isfinite(metrics[i].at("train_loss").get<double>()));
        for (const bool averaged : {false, true}) {
            const double loss = metrics[i].at(averaged ? "averaged_validation_loss" : "validation_loss").get<double>();
            if (loss < lowest) {
                lowest = loss;
                lowest_is_averaged = averaged;
            }
        }
    }
    EXPECT_NEAR(best, lowest, 6e-5);
    EXPECT_EQ(match[3].str() == "averaged weights", lowest_is_averaged) << describe(result);

    // Safetensors with PyTorch's names and shapes, vocabulary and config in the metadata.
    const std::size_t vocab_size = distinct_characters(text).size();
    for (const char* name : {"best.safetensors", "last.safetensors"}) {
        SCOPED_TRACE(name);
        const json header = safetensors_header(read_bytes(path("run") / name));
        ASSERT_TRUE(header.is_object());
        EXPECT_EQ(header.at("__metadata__").at("format"), "charlm-checkpoint-1");
        EXPECT_EQ(json::parse(header.at("__metadata__").at("vocab").get<std::string>()).size(), vocab_size);
        EXPECT_EQ(header.at("embedding.weight").at("shape"), json({vocab_size, 8}));
        EXPECT_EQ(header.at("rnn.weight_ih_l0").at("shape"), json({64, 8}));
        EXPECT_EQ(header.at("rnn.weight_hh_l0").at("shape"), json({64, 16}));
        EXPECT_EQ(header.at("rnn.bias_ih_l0").at("shape"), json({64}));
        EXPECT_EQ(header.at("rnn.bias_hh_l0").at("shape"), json({64}));
        EXPECT_EQ(header.at("head.weight").at("shape"), json({vocab_size, 16}));
        EXPECT_EQ(header.at("head.bias").at("shape"), json({vocab_size}));
        for (const auto& [key, entry] : header.items())
            if (key != "__metadata__") {
                EXPECT_EQ(entry.at("dtype"), "F32") << key;
            }
    }
}

TEST_F(Cli, TrainValCharsValidatesOnPartOfTheHeldOutTextAndOnAllOfItAtTheEnd) {
    const auto corpus = write("corpus.txt", make_corpus());
    const RunResult result = train_tiny(corpus, "run", 30, {"--val-chars", "20"});
    // The summary says what the best figure covers, and gives the figure of all the held-out text.
    std::smatch match;
    const std::regex summary(R"(^trained 30 steps; best validation loss ([0-9.]+) nats/char on 20 of (\d+) held-out chars)"
                             R"(, (?:averaged weights|the step's weights) \(perplexity [0-9.]+, [0-9.]+ bits/char\)\n)"
                             R"(on all (\d+) held-out chars, step 30, (?:averaged weights|the step's weights): ([0-9.]+) nats/char )"
                             R"(\(perplexity ([0-9.]+), [0-9.]+ bits/char\)\n)"
                             R"(checkpoints: .* \(best\), .* \(to resume\)\n$)");
    ASSERT_TRUE(std::regex_match(result.out, match, summary)) << describe(result);
    EXPECT_EQ(match[2].str(), match[3].str());
    const double full = std::stod(match[4].str());
    EXPECT_NEAR(std::stod(match[5].str()), std::exp(full), 0.01);
    // The log: the start, each report line, and a word before the pass over all of it.
    const std::string held_out = match[2].str();
    EXPECT_NE(result.err.find("(20 of them each time, all at the end)"), std::string::npos) << describe(result);
    EXPECT_NE(result.err.find("on 20 of " + held_out + " held-out chars)"), std::string::npos) << describe(result);
    EXPECT_NE(result.err.find("scoring all " + held_out + " held-out characters at step 30"), std::string::npos) << describe(result);
    const auto metrics = read_metrics(path("run") / "metrics.jsonl");
    ASSERT_EQ(metrics.size(), 4u);
    for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(metrics[i].at("validation_characters"), 20) << metrics[i].dump();
    EXPECT_EQ(metrics[3].at("step"), 30);
    EXPECT_NEAR(metrics[3].at("final_validation_loss").get<double>(), full, 6e-5);
    EXPECT_EQ(metrics[3].at("validation_characters").get<std::size_t>(), std::stoul(held_out));
}

TEST_F(Cli, TrainWithoutOutWritesToRunsCorpusName) {
    write("story.txt", make_corpus());
    std::vector<std::string> arguments = {"train", "story.txt", "--steps", "10"};
    arguments.insert(arguments.end(), kTinyModel.begin(), kTinyModel.end());
    const RunResult result = charlm(arguments);
    ASSERT_EQ(result.exit_code, 0) << describe(result);
    EXPECT_TRUE(fs::is_regular_file(path("runs") / "story" / "last.safetensors"));
    EXPECT_TRUE(fs::is_regular_file(path("runs") / "story" / "best.safetensors"));
    EXPECT_TRUE(fs::is_regular_file(path("runs") / "story" / "metrics.jsonl"));
}

// The bytes of a safetensors file's tensors, after its header: the weights, moments and carried state, without
// the metadata (which names the seed, and so differs between seeds whatever the weights do).
std::string tensor_bytes(const fs::path& checkpoint) {
    const std::string bytes = read_bytes(checkpoint);
    std::uint64_t length = 0;
    if (bytes.size() >= 8) std::memcpy(&length, bytes.data(), 8);
    return bytes.size() >= 8 + length ? bytes.substr(8 + length) : std::string();
}

// The same seed gives the same run, and another seed another one: the seed is what decides.
TEST_F(Cli, TrainIsReproducibleWithTheSameSeed) {
    const auto corpus = write("corpus.txt", make_corpus());
    train_tiny(corpus, "first", 20, {"--seed", "7"});
    train_tiny(corpus, "second", 20, {"--seed", "7"});
    train_tiny(corpus, "other", 20, {"--seed", "8"});
    const auto first = read_metrics(path("first") / "metrics.jsonl"), second = read_metrics(path("second") / "metrics.jsonl");
    const auto other = read_metrics(path("other") / "metrics.jsonl");
    ASSERT_EQ(first.size(), 2u);
    ASSERT_EQ(second.size(), first.size());
    ASSERT_EQ(other.size(), first.size());
    for (std::size_t i = 0; i < first.size(); ++i) {
        SCOPED_TRACE(first[i].dump());
        EXPECT_EQ(first[i].at("train_loss"), second[i].at("train_loss"));
        EXPECT_EQ(first[i].at("validation_loss"), second[i].at("validation_loss"));
        EXPECT_NE(first[i].at("train_loss"), other[i].at("train_loss")) << "seed 8 trained as seed 7 did";
        EXPECT_NE(first[i].at("validation_loss"), other[i].at("validation_loss")) << "seed 8 trained as seed 7 did";
    }
    const std::string weights = tensor_bytes(path("first") / "last.safetensors");
    ASSERT_FALSE(weights.empty());
    EXPECT_TRUE(weights == tensor_bytes(path("second") / "last.safetensors")) << "seed 7 twice gave two checkpoints";
    EXPECT_EQ(weights.size(), tensor_bytes(path("other") / "last.safetensors").size());
    EXPECT_FALSE(weights == tensor_bytes(path("other") / "last.safetensors")) << "seeds 7 and 8 gave the same checkpoint";
}

TEST_F(Cli, TrainResumeContinuesToTheTotalStepCount) {
    const auto corpus = write("corpus.txt", make_corpus());
    train_tiny(corpus, "run", 30);
    train_tiny(corpus, "straight", 50);

    const RunResult resumed = charlm({"train", "--resume", path("run").string(), "--steps", "50"});
    ASSERT_EQ(resumed.exit_code, 0) << describe(resumed);
    EXPECT_EQ(resumed.out.rfind("trained 50 steps;", 0), 0u) << describe(resumed);
    EXPECT_NE(resumed.err.find("step 30"), std::string::npos) << "should say where it resumes\n" << describe(resumed);

    // The log keeps the first 30 steps and continues to 50.
    const auto metrics = read_metrics(path("run") / "metrics.jsonl");
    ASSERT_EQ(metrics.size(), 5u);
    for (std::size_t i = 0; i < metrics.size(); ++i) EXPECT_EQ(metrics[i].at("step").get<int>(), static_cast<int>(10 * (i + 1)));
    const json header = safetensors_header(read_bytes(path("run") / "last.safetensors"));
    EXPECT_EQ(json::parse(header.at("__metadata__").at("training").get<std::string>()).at("step"), 50);

    // And it continues exactly: the same losses as a run of 50 steps without a break.
    const auto straight = read_metrics(path("straight") / "metrics.jsonl");
    ASSERT_EQ(straight.size(), 5u);
    for (std::size_t i = 0; i < 5; ++i) {
        EXPECT_EQ(metrics[i].at("train_loss"), straight[i].at("train_loss")) << "step " << 10 * (i + 1);
        EXPECT_EQ(metrics[i].at("validation_loss"), straight[i].at("validation_loss")) << "step " << 10 * (i + 1);
    }
    const RunResult eval_resumed = charlm({"eval", (path("run") / "last.safetensors").string(), corpus.string(), "--json"});
    const RunResult eval_straight = charlm({"eval", (path("straight") / "last.safetensors").string(), corpus.string(), "--json"});
    ASSERT_EQ(eval_resumed.exit_code, 0) << describe(eval_resumed);
    EXPECT_EQ(eval_resumed.out, eval_straight.out);
}

TEST_F(Cli, TrainForceStartsOverInAnExistingRun) {
    const auto corpus = write("corpus.txt", make_corpus());
    train_tiny(corpus, "run", 30);
    train_tiny(corpus, "run", 20, {"--force", "--seed", "3"});
    const auto metrics = read_metrics(path("run") / "metrics.jsonl");
    ASSERT_EQ(metrics.size(), 2u) << "a fresh run starts a fresh metrics log";
    EXPECT_EQ(metrics.back().at("step"), 20);
}

TEST_F(Cli, TrainInitFromFineTunesOnATextWithNewCharacters) {
    const auto checkpoint = trained_run();
    std::string spanish;
    for (int i = 0; i < 60; ++i) spanish += "¿El gato? Ñandú, señor.\n";
    const auto text = write("nuevo.txt", spanish);
    // kTinyModel gives the checkpoint's own --layers, --hidden and --embed: no contradiction.
    const RunResult tuned = train_tiny(text, "tune", 20, {"--init-from", checkpoint.string()});
    const std::set<char32_t> trained = distinct_characters(make_corpus());
    std::size_t added = 0;
    for (char32_t c : distinct_characters(spanish)) added += trained.contains(c) ? 0 : 1;
    EXPECT_NE(tuned.err.find(fmt::format("starting from {} (step ", checkpoint.string())), std::string::npos) << tuned.err;
    EXPECT_NE(tuned.err.find(fmt::format("the text adds {} characters to its {}: ", added, trained.size())), std::string::npos)
        << tuned.err;
    EXPECT_NE(tuned.err.find("'Ñ' (U+00D1)"), std::string::npos) << tuned.err;

    const RunResult info = charlm({"info", (path("tune") / "last.safetensors").string()});
    ASSERT_EQ(info.exit_code, 0) << describe(info);
    EXPECT_NE(info.out.find(fmt::format("init from   {} (at its step ", fs::absolute(checkpoint).string())), std::string::npos) << info.out;
    EXPECT_TRUE(std::regex_search(info.out, std::regex("\ntrained     20 steps, [0-9]+\\.[0-9]{2} epochs\n"))) << info.out;
    const json description = json::parse(charlm({"info", (path("tune") / "last.safetensors").string(), "--json"}).out);
    EXPECT_EQ(description.at("vocab_size").get<std::size_t>(), trained.size() + added);

    const RunResult sample = charlm({"sample", (path("tune") / "best.safetensors").string(), "--prompt", "¿El ñandú", "--length", "40",
                                     "--seed", "1"});
    ASSERT_EQ(sample.exit_code, 0) << describe(sample);
    EXPECT_EQ(sample.out.rfind("¿El ñandú", 0), 0u) << sample.out;
    EXPECT_EQ(code_points_of(sample.out).size(), 9u + 40 + 1);
}

TEST_F(Cli, TrainInitFromRefusesContradictionsResumeAndACheckpointItCannotRead) {
    const auto checkpoint = trained_run();
    const auto corpus = path("corpus.txt");
    // The model's shape is the checkpoint's: a contradiction names the option and the checkpoint's value.
    expect_train_refused(corpus, {"--hidden 64 contradicts --init-from", "whose model has --hidden 16", "leave --hidden out"},
                         {"--init-from", checkpoint.string(), "--hidden", "64"}, /*usage_error=*/true);
    expect_train_refused(corpus, {"--cell gru contradicts", "--cell lstm"}, {"--init-from", checkpoint.string(), "--cell", "gru"},
                         /*usage_error=*/true);
    // A checkpoint that cannot be read: one line, exit 1, the run in the directory as it was.
    expect_train_refused(corpus, {"missing.safetensors", "no such checkpoint"}, {"--init-from", path("missing.safetensors").string()});
    expect_train_refused(corpus, {"text.safetensors"}, {"--init-from", write("text.safetensors", "hello").string()});
    EXPECT_FALSE(fs::exists(path("fresh")));
    expect_error(charlm({"train", corpus.string(), "--out", path("fresh").string(), "--init-from", path("missing.safetensors").string()}),
                 {"no such checkpoint"});
    EXPECT_FALSE(fs::exists(path("fresh"))) << "nothing written";

    const auto before = snapshot(path("run"));
    expect_error(charlm({"train", "--resume", path("run").string(), "--init-from", checkpoint.string()}),
                 {"--init-from", "--resume", "choose one"}, /*usage_error=*/true);
    expect_unchanged(before, snapshot(path("run")));
}

TEST_F(Cli, TrainKeepCheckpointsKeepsEachValidationNamedAsCharRnnUsersKnowIt) {
    const auto corpus = write("corpus.txt", make_corpus());
    const RunResult trained = train_tiny(corpus, "run", 20, {"--keep-checkpoints"});
    // Named with the validation's figure: the lower of the last step's weights and their average, whose
    // weights the file holds.
    std::vector<fs::path> kept;
    for (const auto& record : read_metrics(path("run") / "metrics.jsonl"))
        if (record.contains("validation_loss"))
            kept.push_back(path("run") / fmt::format("step-{:06d}-val-{}.safetensors", record.at("step").get<int>(),
                                                     fixed4(std::min(record.at("validation_loss").get<double>(),
                                                                     record.value("averaged_validation_loss", double{INFINITY})))));
    ASSERT_EQ(kept.size(), 2u);  // steps 10 and 20
    EXPECT_TRUE(kept[0].filename().string().starts_with("step-000010-val-")) << kept[0];
    for (const auto& file : kept) {
        EXPECT_TRUE(fs::is_regular_file(file)) << file;
        const RunResult eval = charlm({"eval", file.string(), corpus.string()});
        EXPECT_EQ(eval.exit_code, 0) << describe(eval);
        EXPECT_EQ(charlm({"sample", file.string(), "--length", "10", "--seed", "1"}).exit_code, 0) << file;
    }
    // The progress line shows the epoch beside the step; metrics.jsonl records it.
    EXPECT_NE(trained.err.find("step 20/20 | epoch "), std::string::npos) << trained.err;
    const json info = json::parse(charlm({"info", (path("run") / "last.safetensors").string(), "--json"}).out);
    EXPECT_DOUBLE_EQ(read_metrics(path("run") / "metrics.jsonl").back().at("epoch").get<double>(), info.at("epochs").get<double>());

    // Resumed without it, the run keeps no more; with it, it keeps again.
    const RunResult without = charlm({"train", "--resume", path("run").string(), "--steps", "30"});
    ASSERT_EQ(without.exit_code, 0) << describe(without);
    const RunResult with = charlm({"train", "--resume", path("run").string(), "--steps", "40", "--keep-checkpoints"});
    ASSERT_EQ(with.exit_code, 0) << describe(with);
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(path("run")))
        if (entry.path().filename().string().starts_with("step-")) names.push_back(entry.path().filename().string().substr(0, 16));
    std::sort(names.begin(), names.end());
    EXPECT_EQ(names, (std::vector<std::string>{"step-000010-val-", "step-000020-val-", "step-000040-val-"}));
}

// =============================== sample ===============================

TEST_F(Cli, SamplePrintsThePromptThenLengthCharacters) {
    const std::string text = make_corpus();
    const auto checkpoint = trained_run();
    const std::set<char32_t> vocabulary = distinct_characters(text);
    const std::string prompt = "the café → ";
    const RunResult result = charlm({"sample", checkpoint.string(), "--prompt", prompt, "--length", "40", "--seed", "7"});
    ASSERT_EQ(result.exit_code, 0) << describe(result);
    ASSERT_EQ(result.out.rfind(prompt, 0), 0u) << "stdout starts with the prompt\n" << describe(result);
    ASSERT_TRUE(!result.out.empty() && result.out.back() == '\n') << describe(result);
    const std::string generated = result.out.substr(prompt.size(), result.out.size() - prompt.size() - 1);
    ASSERT_TRUE(utf8::is_valid(generated.begin(), generated.end())) << describe(result);
    const std::u32string characters = code_points_of(generated);
    EXPECT_EQ(characters.size(), 40u) << describe(result);
    for (char32_t c : characters) EXPECT_TRUE(vocabulary.count(c)) << "U+" << std::hex << static_cast<std::uint32_t>(c);
}

TEST_F(Cli, SampleWithTheSameSeedRepeatsItself) {
    const auto checkpoint = trained_run();
    auto sample = [&](const std::string& seed) {
        const RunResult result = charlm({"sample", checkpoint.string(), "--prompt", "the ", "--length", "60", "--seed", seed});
        EXPECT_EQ(result.exit_code, 0) << describe(result);
        return result.out;
    };
    const std::string first = sample("11");
    EXPECT_EQ(first, sample("11"));
    EXPECT_NE(first, sample("12")) << "60 characters from a barely trained model should differ between seeds";
}

TEST_F(Cli, SampleWithoutPromptAndWithZeroLength) {
    const auto checkpoint = trained_run();
    const RunResult empty_prompt = charlm({"sample", checkpoint.string(), "--length", "25", "--seed", "1"});
    ASSERT_EQ(empty_prompt.exit_code, 0) << describe(empty_prompt);
    ASSERT_FALSE(empty_prompt.out.empty());
    EXPECT_EQ(empty_prompt.out.back(), '\n');
    const std::string generated = empty_prompt.out.substr(0, empty_prompt.out.size() - 1);
    ASSERT_TRUE(utf8::is_valid(generated.begin(), generated.end()));
    EXPECT_EQ(code_points_of(generated).size(), 25u) << describe(empty_prompt);

    const RunResult zero = charlm({"sample", checkpoint.string(), "--prompt", "naïve", "--length", "0", "--seed", "1"});
    ASSERT_EQ(zero.exit_code, 0) << describe(zero);
    EXPECT_EQ(zero.out, "naïve\n");
}

TEST_F(Cli, SampleGreedyIsTheSameForEverySeedAndMatchesTopKOne) {
    const auto checkpoint = trained_run();
    auto sample = [&](std::vector<std::string> options) {
        std::vector<std::string> arguments = {"sample", checkpoint.string(), "--prompt", "the cat ", "--length", "30"};
        arguments.insert(arguments.end(), options.begin(), options.end());
        const RunResult result = charlm(arguments);
        EXPECT_EQ(result.exit_code, 0) << describe(result);
        return result.out;
    };
    const std::string greedy = sample({"--greedy", "--seed", "1"});
    ASSERT_EQ(greedy.rfind("the cat ", 0), 0u);
    const std::string generated = greedy.substr(8, greedy.size() - 9);
    EXPECT_EQ(code_points_of(generated).size(), 30u) << greedy;
    EXPECT_EQ(greedy, sample({"--greedy", "--seed", "2"}));
    EXPECT_EQ(greedy, sample({"--greedy"}));
    // Keeping only the most likely character is greedy decoding by another name.
    EXPECT_EQ(greedy, sample({"--top-k", "1", "--seed", "5"}));
    EXPECT_EQ(greedy, sample({"--top-p", "1e-9", "--seed", "6"}));
    // Other settings run and print the right amount.
    for (const auto& options : std::vector<std::vector<std::string>>{
             {"--temperature", "0.5", "--seed", "3"}, {"--temperature", "2", "--top-k", "3", "--seed", "3"},
             {"--top-p", "0.9", "--seed", "3"}}) {
        const std::string out = sample(options);
        ASSERT_EQ(out.rfind("the cat ", 0), 0u);
        EXPECT_EQ(code_points_of(out.substr(8, out.size() - 9)).size(), 30u) << out;
    }
}

// =============================== eval ===============================

TEST_F(Cli, EvalPrintsNatsPerplexityAndBits) {
    const std::string text = make_corpus();
    const auto checkpoint = trained_run();
    const RunResult result = charlm({"eval", checkpoint.string(), path("corpus.txt").string()});
    ASSERT_EQ(result.exit_code, 0) << describe(result);
    std::smatch match;
    const std::regex figures(R"(^nats/char\s+([0-9.]+)\nperplexity\s+([0-9.]+)\nbits/char\s+([0-9.]+)\n)"
                             R"(characters\s+(\d+) scored, (\d+) unknown left out\n$)");
    ASSERT_TRUE(std::regex_match(result.out, match, figures)) << describe(result);
    const double nats = std::stod(match[1].str());
    EXPECT_GT(nats, 0.0);
    EXPECT_NEAR(std::stod(match[2].str()), std::exp(nats), 1e-3 * std::exp(nats));
    EXPECT_NEAR(std::stod(match[3].str()), nats / std::log(2.0), 2e-4);
    EXPECT_EQ(std::stoul(match[4].str()), code_points_of(text).size() - 1);
    EXPECT_EQ(match[5].str(), "0");
}

TEST_F(Cli, EvalHtmlWritesAReportOfTheFirstCharactersThatNeedsNoServer) {
    const std::string text = make_corpus();
    const auto checkpoint = trained_run();
    const RunResult result = charlm({"eval", checkpoint.string(), path("corpus.txt").string(), "--html", path("report.html").string(),
                                     "--html-chars", "300"});
    ASSERT_EQ(result.exit_code, 0) << describe(result);
    EXPECT_EQ(result.out.rfind("nats/char", 0), 0u) << "stdout keeps the figures";
    const std::string report = read_bytes(path("report.html"));
    const std::string marker = R"(<script id="charlm-report" type="application/json">)";
    const std::size_t at = report.find(marker);
    ASSERT_NE(at, std::string::npos);
    const std::size_t end = report.find("</script>", at);
    const json data = json::parse(report.substr(at + marker.size(), end - at - marker.size()));
    EXPECT_EQ(data["report"]["characters_rendered"], 300);
    EXPECT_EQ(data["report"]["characters_total"], code_points_of(text).size());
    EXPECT_EQ(data["report"]["file"], "corpus.txt");
    EXPECT_EQ(data["text"].size(), 300u);
    EXPECT_EQ(data["most_varying"].size(), data["neurons"].size()) << "every listed neuron's activations travel with it";
    EXPECT_EQ(data["neurons"][0]["activations"].size(), 300u);
    for (const char* external : {"src=\"http", "href=\"http", "@import", "url(http"})
        EXPECT_EQ(report.find(external), std::string::npos) << "the report must load nothing from elsewhere: " << external;

    expect_error(charlm({"eval", checkpoint.string(), "-", "--html", path("x.html").string()}), {"--html", "standard input"}, true);
    const std::string corpus_before = read_bytes(path("corpus.txt"));
    expect_error(charlm({"eval", checkpoint.string(), path("corpus.txt").string(), "--html", path("corpus.txt").string()}),
                 {"overwrite"}, true);
    expect_error(charlm({"eval", checkpoint.string(), path("corpus.txt").string(), "--html", checkpoint.string()}), {"checkpoint"}, true);
    EXPECT_EQ(read_bytes(path("corpus.txt")), corpus_before) << "the text scored must never be overwritten";
    EXPECT_EQ(charlm({"info", checkpoint.string()}).exit_code, 0) << "nor the checkpoint";
    expect_error(charlm({"eval", checkpoint.string(), path("corpus.txt").string(), "--html-chars", "50"}), {"--html"}, true);
    expect_error(charlm({"eval", checkpoint.string(), path("corpus.txt").string(), "--html", path("no/such/dir/r.html").string()}),
                 {"r.html"});
}

TEST_F(Cli, EvalJsonPrintsOneObject) {
    const std::string text = make_corpus();
    const auto checkpoint = trained_run();
    const RunResult result = charlm({"eval", checkpoint.string(), path("corpus.txt").string(), "--json"});
    ASSERT_EQ(result.exit_code, 0) << describe(result);
    EXPECT_EQ(count_lines(result.out), 1u) << describe(result);
    const json figures = json::parse(result.out, nullptr, false);
    ASSERT_TRUE(figures.is_object()) << describe(result);
    const double nats = figures.at("nats_per_character").get<double>();
    EXPECT_GT(nats, 0.0);
    EXPECT_NEAR(figures.at("perplexity").get<double>(), std::exp(nats), 1e-9 * std::exp(nats));
    EXPECT_NEAR(figures.at("bits_per_character").get<double>(), nats / std::log(2.0), 1e-9);
    EXPECT_EQ(figures.at("characters_scored").get<std::size_t>(), code_points_of(text).size() - 1);
    EXPECT_EQ(figures.at("unknown_characters").get<std::size_t>(), 0u);

    // The same figures as the table.
    const RunResult table = charlm({"eval", checkpoint.string(), path("corpus.txt").string()});
    EXPECT_NE(table.out.find(fixed4(nats)), std::string::npos) << table.out;
}

TEST_F(Cli, EvalLeavesOutUnknownCharactersAndSaysSoOnStderr) {
    const auto checkpoint = trained_run();
    const auto file = write("other.txt", "the cat sat on ZQZ mat!\n");  // Z, Q, Z, ! are not in the corpus
    // 4 of 24 is past the share that eval accepts by itself (Cli.EvalRefusesATextMostlyOutsideTheVocabulary...).
    const RunResult result = charlm({"eval", checkpoint.string(), file.string(), "--json", "--allow-unknown"});
    ASSERT_EQ(result.exit_code, 0) << describe(result);
    const json figures = json::parse(result.out, nullptr, false);
    ASSERT_TRUE(figures.is_object()) << describe(result);
    EXPECT_EQ(figures.at("unknown_characters").get<int>(), 4);
    EXPECT_EQ(figures.at("characters_scored").get<int>(), 24 - 4 - 1);
    EXPECT_NE(result.err.find("4 characters"), std::string::npos) << describe(result);
}

TEST_F(Cli, EvalAdaptPrintsThePlainAndTheAdaptedFiguresAndLeavesTheCheckpointAlone) {
    const std::string text = make_corpus();
    const auto checkpoint = trained_run();
    const std::string checkpoint_before = read_bytes(checkpoint);
    const std::vector<std::string> adapt = {"eval", checkpoint.string(), path("corpus.txt").string(), "--adapt", "--adapt-lr", "0.01",
                                            "--adapt-decay", "0.02", "--adapt-window", "40", "--threads", "1"};
    const RunResult result = charlm(adapt);
    ASSERT_EQ(result.exit_code, 0) << describe(result);
    std::smatch match;
    const std::regex figures(R"(^ +plain +adapted\nnats/char +([0-9.]+) +([0-9.]+)\nperplexity +([0-9.]+) +([0-9.]+)\n)"
                             R"(bits/char +([0-9.]+) +([0-9.]+)\ncharacters +(\d+) scored, 0 unknown left out\n)"
                             R"(adaptation +([0-9.]+) nats/char gained with --adapt-lr 0.01 --adapt-decay 0.02 --adapt-window 40\n$)");
    ASSERT_TRUE(std::regex_match(result.out, match, figures)) << describe(result);
    const double plain = std::stod(match[1].str()), adapted = std::stod(match[2].str());
    EXPECT_LT(adapted, plain) << "a text of a dozen words, repeated in random order, is easier once read";
    EXPECT_NEAR(std::stod(match[4].str()), std::exp(adapted), 1e-3 * std::exp(adapted));
    EXPECT_NEAR(std::stod(match[6].str()), adapted / std::log(2.0), 2e-4);
    EXPECT_EQ(std::stoul(match[7].str()), code_points_of(text).size() - 1);
    EXPECT_NEAR(std::stod(match[8].str()), plain - adapted, 2e-4);
    EXPECT_EQ(read_bytes(checkpoint), checkpoint_before) << "adapting changes the weights in memory, never the file";

    std::vector<std::string> as_json = adapt;
    as_json.push_back("--json");
    const RunResult json_result = charlm(as_json);
    ASSERT_EQ(json_result.exit_code, 0) << describe(json_result);
    EXPECT_EQ(count_lines(json_result.out), 1u) << describe(json_result);
    const json record = json::parse(json_result.out, nullptr, false);
    ASSERT_TRUE(record.is_object()) << describe(json_result);
    EXPECT_EQ(record.at("adapted"), true);
    EXPECT_EQ(fixed4(record.at("nats_per_character").get<double>()), match[2].str());
    EXPECT_EQ(fixed4(record.at("plain").at("nats_per_character").get<double>()), match[1].str());
    EXPECT_EQ(record.at("adaptation"), json({{"learning_rate", 0.01}, {"decay", 0.02}, {"window", 40}}));
    // Without --adapt, the JSON says so.
    const RunResult plain_json = charlm({"eval", checkpoint.string(), path("corpus.txt").string(), "--json"});
    ASSERT_EQ(plain_json.exit_code, 0) << describe(plain_json);
    EXPECT_EQ(json::parse(plain_json.out).at("adapted"), false);
}

TEST_F(Cli, EvalAdaptRefusesSettingsOutOfRangeAndSettingsWithoutIt) {
    const auto checkpoint = trained_run();
    const std::vector<std::string> eval = {"eval", checkpoint.string(), path("corpus.txt").string()};
    const auto with = [&](const std::vector<std::string>& extra) {
        std::vector<std::string> arguments = eval;
        arguments.insert(arguments.end(), extra.begin(), extra.end());
        return charlm(arguments);
    };
    expect_error(with({"--adapt", "--adapt-lr", "-0.1"}), {"--adapt-lr must be a number of at least 0, not -0.1"}, true);
    expect_error(with({"--adapt", "--adapt-decay", "1.5"}), {"--adapt-decay must be in [0, 1], not 1.5"}, true);
    expect_error(with({"--adapt", "--adapt-decay", "-1"}), {"--adapt-decay must be in [0, 1], not -1"}, true);
    expect_error(with({"--adapt", "--adapt-window", "0"}), {"--adapt-window must be at least 1 character, not 0"}, true);
    expect_error(with({"--adapt", "--adapt-window", "2.5"}), {"--adapt-window"}, true);
    expect_error(with({"--adapt-lr", "0.1"}), {"--adapt-lr requires --adapt"}, true);
    expect_error(with({"--adapt-window", "20"}), {"--adapt-window requires --adapt"}, true);
    expect_error(with({"--adapt", "--html", path("r.html").string()}), {"--adapt", "--html"}, true);
    // A step far too large: the loss stops being finite, and eval says so instead of printing it.
    expect_error(with({"--adapt", "--adapt-lr", "1e30", "--adapt-window", "10"}), {"diverged", "--adapt-lr"});
}

// ---- issue 12: sample, eval ----

TEST_F(Cli, SampleAdaptToWritesInTheStyleOfTheTextItAdaptedTo) {
    const auto checkpoint = trained_run();
    std::string style;
    for (int i = 0; i < 300; ++i) style += "dog ran on a mat\n";
    const auto text = write("style.txt", style);
    const std::vector<std::string> sample = {"sample", checkpoint.string(), "--prompt", "dog", "--greedy", "--length", "40", "--threads", "1"};
    const RunResult plain = charlm(sample);
    ASSERT_EQ(plain.exit_code, 0) << describe(plain);
    std::vector<std::string> adapting = sample;
    for (const char* argument : {"--adapt-to", "style.txt", "--adapt-lr", "0.01", "--adapt-window", "20"}) adapting.push_back(argument);
    const RunResult adapted = charlm(adapting);
    ASSERT_EQ(adapted.exit_code, 0) << describe(adapted);
    EXPECT_NE(adapted.out.find("dog ran on a mat\ndog ran on a mat"), std::string::npos) << describe(adapted);
    EXPECT_EQ(plain.out.find("dog ran on a mat\ndog ran on a mat"), std::string::npos) << "the test needs a text the model does "
                                                                                           "not write untaught\n" << describe(plain);
    EXPECT_NE(adapted.err.find("adapted to style.txt"), std::string::npos) << describe(adapted);
    expect_error(charlm({"sample", checkpoint.string(), "--adapt-lr", "0.1"}), {"--adapt-lr requires --adapt-to"}, true);
    expect_error(charlm({"sample", checkpoint.string(), "--adapt-to", text.string(), "--adapt-decay", "2"}), {"--adapt-decay"}, true);
    expect_error(charlm({"sample", checkpoint.string(), "--adapt-to", "-", "--prompt-file", "-"}), {"standard input"}, true);
}

TEST_F(Cli, SampleWithoutSeedPrintsTheSeedOnStderrAndThatSeedRepeatsTheSample) {
    const auto checkpoint = trained_run();
    const std::vector<std::string> arguments = {"sample", checkpoint.string(), "--prompt", "the ", "--length", "60"};
    const RunResult drawn = charlm(arguments);
    ASSERT_EQ(drawn.exit_code, 0) << describe(drawn);
    std::smatch match;
    ASSERT_TRUE(std::regex_search(drawn.err, match, std::regex(R"(seed (\d+) \(repeat with --seed (\d+)\))"))) << describe(drawn);
    EXPECT_EQ(match[1].str(), match[2].str());
    EXPECT_EQ(drawn.out.find("seed"), std::string::npos) << "stdout carries only the sample\n" << describe(drawn);
    std::vector<std::string> repeat = arguments;
    repeat.insert(repeat.end(), {"--seed", match[1].str()});
    const RunResult repeated = charlm(repeat);
    ASSERT_EQ(repeated.exit_code, 0) << describe(repeated);
    EXPECT_EQ(repeated.out, drawn.out);
    EXPECT_EQ(repeated.err.find("seed"), std::string::npos) << "a seed given is not repeated back\n" << describe(repeated);

    // --count draws SEED, SEED+1, ...: the range is named, and the first seed repeats them all.
    const RunResult counted = charlm({"sample", checkpoint.string(), "--length", "20", "--count", "3", "--json"});
    ASSERT_EQ(counted.exit_code, 0) << describe(counted);
    ASSERT_TRUE(std::regex_search(counted.err, match, std::regex(R"(seeds (\d+) to (\d+) \(repeat with --seed (\d+)\))")))
        << describe(counted);
    EXPECT_EQ(std::stoull(match[2].str()), std::stoull(match[1].str()) + 2);
    const RunResult recounted =
        charlm({"sample", checkpoint.string(), "--length", "20", "--count", "3", "--json", "--seed", match[3].str()});
    EXPECT_EQ(recounted.out, counted.out);

    // Greedy sampling draws nothing at random: no seed to repeat.
    const RunResult greedy = charlm({"sample", checkpoint.string(), "--length", "20", "--greedy"});
    ASSERT_EQ(greedy.exit_code, 0) << describe(greedy);
    EXPECT_EQ(greedy.err, "") << describe(greedy);
}

TEST_F(Cli, SampleWarnsThatGreedyIgnoresTemperatureTopKAndTopPGiven) {
    const auto checkpoint = trained_run();
    const std::vector<std::string> greedy = {"sample", checkpoint.string(), "--prompt", "the ", "--length", "40", "--greedy"};
    const RunResult plain = charlm(greedy);
    ASSERT_EQ(plain.exit_code, 0) << describe(plain);
    EXPECT_EQ(plain.err, "") << "nothing to warn about\n" << describe(plain);
    for (const auto& options : std::vector<std::vector<std::string>>{
             {"--temperature", "0.5"}, {"--top-k", "3"}, {"--top-p", "0.9"}, {"--temperature", "1", "--top-k", "0"}}) {
        SCOPED_TRACE(::testing::PrintToString(options));
        std::vector<std::string> arguments = greedy;
        arguments.insert(arguments.end(), options.begin(), options.end());
        const RunResult result = charlm(arguments);
        ASSERT_EQ(result.exit_code, 0) << describe(result);
        EXPECT_EQ(result.out, plain.out) << "greedy output does not change";
        EXPECT_NE(result.err.find("--greedy"), std::string::npos) << describe(result);
        EXPECT_NE(result.err.find("ignores"), std::string::npos) << describe(result);
        for (std::size_t i = 0; i < options.size(); i += 2)
            EXPECT_NE(result.err.find(options[i] + " " + options[i + 1]), std::string::npos) << describe(result);
    }
    // Without --greedy the same options are used, and nothing is said.
    const RunResult drawn = charlm({"sample", checkpoint.string(), "--length", "20", "--top-k", "3", "--seed", "2"});
    ASSERT_EQ(drawn.exit_code, 0) << describe(drawn);
    EXPECT_EQ(drawn.err, "") << describe(drawn);
}

// `--stop A --stop B` ends a sample at whichever of A and B it generates first, in either order given.
TEST_F(Cli, StopTextsAddUp) {
    const auto checkpoint = trained_run();
    const std::vector<std::string> base = {"sample", checkpoint.string(), "--prompt", "the ", "--length", "300", "--seed", "3"};
    const RunResult free = charlm(base);
    ASSERT_EQ(free.exit_code, 0) << describe(free);
    // In code points: the model may draw characters of more than one byte, and a stop text is whole characters.
    const std::u32string generated = code_points_of(free.out.substr(4));
    const std::u32string early_text = generated.substr(60, 3), late_text = generated.substr(200, 3);
    const std::string early = charlm::encode_utf8(early_text), late = charlm::encode_utf8(late_text);
    const std::size_t end = std::min(generated.find(early_text), generated.find(late_text)) + 3;
    for (const auto& [first, second] : {std::pair{early, late}, std::pair{late, early}}) {
        std::vector<std::string> arguments = base;
        arguments.insert(arguments.end(), {"--stop", first, "--stop", second});
        const RunResult stopped = charlm(arguments);
        ASSERT_EQ(stopped.exit_code, 0) << describe(stopped);
        EXPECT_EQ(stopped.out, "the " + charlm::encode_utf8(generated.substr(0, end)) + "\n")
            << "--stop '" << first << "' --stop '" << second << "'";
    }
    // Each alone ends it at its own first occurrence: the two together end it at the earlier.
    std::vector<std::string> late_only = base;
    late_only.insert(late_only.end(), {"--stop", late});
    EXPECT_EQ(charlm(late_only).out, "the " + charlm::encode_utf8(generated.substr(0, generated.find(late_text) + 3)) + "\n");
}

TEST_F(Cli, SampleWarnsThatAStopTextOutsideTheVocabularyCanNeverMatch) {
    const auto checkpoint = trained_run();
    // 'Z' and '!' never occur in the corpus.
    const RunResult result = charlm({"sample", checkpoint.string(), "--prompt", "the ", "--length", "50", "--seed", "3",
                                     "--stop", "Z!Z"});
    ASSERT_EQ(result.exit_code, 0) << describe(result);
    for (const std::string mention : {"--stop", "never", "'Z' (U+005A), '!' (U+0021)"})
        EXPECT_NE(result.err.find(mention), std::string::npos) << mention << "\n" << describe(result);
    EXPECT_EQ(count_lines(result.err), 1u) << "one warning, each character named once\n" << describe(result);
    EXPECT_EQ(code_points_of(result.out).size(), 4u + 50u + 1u) << "the sample runs to --length\n" << describe(result);
    // A stop text the model can produce: no warning.
    const RunResult known = charlm({"sample", checkpoint.string(), "--length", "50", "--seed", "3", "--stop", "at"});
    ASSERT_EQ(known.exit_code, 0) << describe(known);
    EXPECT_EQ(known.err, "") << describe(known);
}

TEST_F(Cli, SampleJsonHoldsTheTextThatIsStreamedOtherwise) {
    // The library keeps no sample; --json collects one to print it as one object, and it must be the same text.
    const auto checkpoint = trained_run();
    for (const std::string stop : {"", " "}) {
        SCOPED_TRACE("--stop '" + stop + "'");
        std::vector<std::string> arguments = {"sample", checkpoint.string(), "--prompt", "the ", "--length", "200", "--seed", "5"};
        if (!stop.empty()) arguments.insert(arguments.end(), {"--stop", stop});
        const RunResult streamed = charlm(arguments);
        ASSERT_EQ(streamed.exit_code, 0) << describe(streamed);
        arguments.push_back("--json");
        const RunResult collected = charlm(arguments);
        ASSERT_EQ(collected.exit_code, 0) << describe(collected);
        EXPECT_EQ(count_lines(collected.out), 1u) << describe(collected);
        const json record = json::parse(collected.out, nullptr, false);
        ASSERT_TRUE(record.is_object()) << describe(collected);
        EXPECT_EQ(record.at("prompt").get<std::string>() + record.at("text").get<std::string>() + "\n", streamed.out);
        if (!stop.empty()) {
            const std::string text = record.at("text").get<std::string>();
            ASSERT_FALSE(text.empty());
            EXPECT_EQ(text.back(), ' ') << "200 characters of this corpus hold a space";
            EXPECT_EQ(text.find(stop), text.size() - 1) << "the sample stops at the first";
        }
    }
}

TEST_F(Cli, EvalRefusesATextMostlyOutsideTheVocabularyUnlessAllowed) {
    const auto checkpoint = trained_run();
    // 20 of 40 characters are not in the corpus.
    const auto file = write("foreign.txt", "the cat sat on a matZQZQZQZQZQZQZQZQZQZQ");
    const auto before = snapshot(path("run"));
    for (const bool json_output : {false, true}) {
        SCOPED_TRACE(json_output ? "--json" : "table");
        std::vector<std::string> arguments = {"eval", checkpoint.string(), file.string()};
        if (json_output) arguments.push_back("--json");
        expect_error(charlm(arguments), {"foreign.txt", "50%", "20 of 40", "10%", "--allow-unknown"});
    }
    expect_unchanged(before, snapshot(path("run")));

    const RunResult allowed = charlm({"eval", checkpoint.string(), file.string(), "--json", "--allow-unknown"});
    ASSERT_EQ(allowed.exit_code, 0) << describe(allowed);
    const json figures = json::parse(allowed.out, nullptr, false);
    ASSERT_TRUE(figures.is_object()) << describe(allowed);
    EXPECT_EQ(figures.at("unknown_characters").get<int>(), 20);
    EXPECT_DOUBLE_EQ(figures.at("unknown_fraction").get<double>(), 0.5);
    EXPECT_EQ(figures.at("characters_scored").get<int>(), 19);
    EXPECT_NE(allowed.err.find("20 characters"), std::string::npos) << describe(allowed);
    EXPECT_NE(allowed.err.find("50%"), std::string::npos) << "the warning gives the share\n" << describe(allowed);
}

TEST_F(Cli, EvalWarnsWithTheShareOfUnknownCharactersItLeavesOut) {
    const auto checkpoint = trained_run();
    // One character of 100 is unknown: scored, with the share on stderr.
    std::string text;
    while (text.size() < 99) text += "the cat sat on a mat ";
    text.resize(99);
    const auto file = write("mostly.txt", text + "Z");
    const RunResult result = charlm({"eval", checkpoint.string(), file.string()});
    ASSERT_EQ(result.exit_code, 0) << describe(result);
    EXPECT_NE(result.out.find("1 unknown left out"), std::string::npos) << describe(result);
    EXPECT_NE(result.err.find("1 characters of"), std::string::npos) << describe(result);
    EXPECT_NE(result.err.find("(1% of its text)"), std::string::npos) << describe(result);
}

// =============================== help and version ===============================

TEST_F(Cli, HelpForTheAppAndEachSubcommand) {
    const std::map<std::vector<std::string>, std::vector<std::string>> expected = {
        {{"--help"}, {"train", "sample", "eval", "--help"}},
        {{"train", "--help"},
         {"CORPUS", "--out", "--resume", "--force", "--cell", "--layers", "--hidden", "--embed", "--seq", "--batch", "--lr",
          "--clip", "--val-fraction", "--steps", "--minutes", "--eval-every", "--seed", "--threads", "--init-from",
          "--keep-checkpoints"}},
        {{"sample", "--help"},
         {"CHECKPOINT", "--prompt", "--length", "--temperature", "--top-k", "--top-p", "--greedy", "--seed", "--threads",
          "--adapt-to"}},
        {{"eval", "--help"}, {"CHECKPOINT", "FILE", "--json", "--threads", "--adapt", "--adapt-lr", "--adapt-decay", "--adapt-window"}},
    };
    for (const auto& [arguments, mentions] : expected) {
        SCOPED_TRACE(arguments.size() == 1 ? "charlm --help" : "charlm " + arguments[0] + " --help");
        const RunResult result = charlm(arguments);
        EXPECT_EQ(result.exit_code, 0) << describe(result);
        EXPECT_EQ(result.err, "");
        for (const auto& mention : mentions) EXPECT_NE(result.out.find(mention), std::string::npos) << mention << "\n" << result.out;
    }
}

TEST_F(Cli, VersionPrintsTheVersion) {
    const RunResult result = charlm({"--version"});
    EXPECT_EQ(result.exit_code, 0) << describe(result);
    EXPECT_EQ(result.out.rfind("charlm ", 0), 0u) << describe(result);
}

// =============================== bad input: train ===============================

TEST_F(Cli, TrainRefusesAMissingCorpus) { expect_train_refused(path("missing.txt"), {"missing.txt", "no such file"}); }

TEST_F(Cli, TrainRefusesAnEmptyCorpus) { expect_train_refused(write("empty.txt", ""), {"empty.txt", "empty"}); }

TEST_F(Cli, TrainRefusesADirectoryAsCorpus) {
    fs::create_directories(path("texts"));
    expect_train_refused(path("texts"), {"texts", "directory"});
}

TEST_F(Cli, TrainRefusesInvalidUtf8AndNamesTheByteOffset) {
    expect_train_refused(write("latin1.txt", "hello\xff world, hello world\n"), {"latin1.txt", "UTF-8", "byte offset 5"});
}

TEST_F(Cli, TrainRefusesACorpusWithOneDistinctCharacter) {
    expect_train_refused(write("same.txt", std::string(500, 'a')), {"same.txt", "one distinct character", "'a'"});
}

TEST_F(Cli, TrainRefusesACorpusShorterThanOneWindow) {
    expect_train_refused(write("short.txt", "the cat sat\n"), {"short.txt", "--seq"});
}

TEST_F(Cli, TrainRefusesBadOptions) {
    const auto corpus = write("corpus.txt", make_corpus());
    expect_train_refused(corpus, {"--seq"}, {"--seq", "0"}, /*usage_error=*/true);
    expect_train_refused(corpus, {"--lr"}, {"--lr", "-1"}, /*usage_error=*/true);
    expect_train_refused(corpus, {"--val-fraction"}, {"--val-fraction", "1"}, /*usage_error=*/true);
    expect_train_refused(corpus, {"--val-fraction wants auto or a fraction of at least 0 and below 1, not 'half'"},
                         {"--val-fraction", "half"}, /*usage_error=*/true);
    expect_train_refused(corpus, {"--val-chars wants auto, 0 (all of them) or a count of characters, not 'lots'"},
                         {"--val-chars", "lots"}, /*usage_error=*/true);
    expect_train_refused(corpus, {"--val-chars", "'-5'"}, {"--val-chars", "-5"}, /*usage_error=*/true);
    expect_train_refused(corpus, {"--final-val must be auto, all or none, not 'most'"}, {"--final-val", "most"}, /*usage_error=*/true);
    expect_train_refused(corpus, {"--final-val all sets what the run's end scores of the held-out text, and this run has no validation text"},
                         {"--final-val", "all", "--val-fraction", "0"}, /*usage_error=*/true);
    expect_train_refused(corpus, {"lstm"}, {"--cell", "transformer"}, /*usage_error=*/true);
    expect_train_refused(corpus, {"unknown learning-rate schedule 'linear'; use constant, cosine or step"},
                         {"--lr-schedule", "linear"}, /*usage_error=*/true);
    expect_train_refused(corpus, {"--lr-decay sets the step schedule's decay", "--lr-schedule step"}, {"--lr-decay", "0.5"},
                         /*usage_error=*/true);
    expect_train_refused(corpus, {"--lr-decay-every", "is cosine"}, {"--lr-schedule", "cosine", "--lr-decay-every", "10"},
                         /*usage_error=*/true);
    {
        const auto before = snapshot(path("run"));
        expect_error(charlm({"train", "--resume", path("run").string(), "--lr-schedule", "Cosine"}), {"'Cosine'", "cosine"},
                     /*usage_error=*/true);
        expect_unchanged(before, snapshot(path("run")));
    }
    {
        const auto before = snapshot(path("run"));
        const RunResult result = charlm({"train", corpus.string(), "--out", path("run").string(), "--force", "--layers", "two"});
        expect_error(result, {"--layers"}, /*usage_error=*/true);
        expect_unchanged(before, snapshot(path("run")));
    }
}

TEST_F(Cli, TrainRefusesARunDirectoryThatHoldsARunWithoutForce) {
    const auto corpus = write("corpus.txt", make_corpus());
    train_tiny(corpus, "run");
    const auto before = snapshot(path("run"));
    std::vector<std::string> arguments = {"train", corpus.string(), "--out", path("run").string(), "--steps", "10"};
    arguments.insert(arguments.end(), kTinyModel.begin(), kTinyModel.end());
    const RunResult result = charlm(arguments);
    expect_error(result, {path("run").string(), "--resume", "--force"}, /*usage_error=*/true);
    expect_unchanged(before, snapshot(path("run")));
}

// A run that cannot be resumed (its last.safetensors gone) still owns what it made: its best checkpoint,
// the ones it kept, its metrics. Only the ids files, which any run encodes again, take no directory.
TEST_F(Cli, TrainRefusesADirectoryThatHoldsAnyRunFileWithoutForce) {
    const auto corpus = write("corpus.txt", make_corpus());
    train_tiny(corpus, "run", 30, {"--keep-checkpoints"});  // kTinyModel validates every 10 steps
    fs::remove(path("run") / "last.safetensors");
    ASSERT_TRUE(fs::exists(path("run") / "best.safetensors"));
    std::vector<std::string> arguments = {"train", write("other.txt", make_corpus(200)).string(), "--out", path("run").string(),
                                          "--steps", "10"};
    arguments.insert(arguments.end(), kTinyModel.begin(), kTinyModel.end());
    auto refused = [&](const std::vector<std::string>& mentions) {
        const auto before = snapshot(path("run"));
        const RunResult result = charlm(arguments);
        expect_error(result, mentions, /*usage_error=*/true);
        EXPECT_EQ(result.err.find("--resume"), std::string::npos) << "there is nothing to resume: " << result.err;
        expect_unchanged(before, snapshot(path("run")));
    };
    refused({"already holds a run", "best.safetensors", "metrics.jsonl", "kept checkpoints", "--force"});
    fs::remove(path("run") / "best.safetensors");
    fs::remove(path("run") / "metrics.jsonl");
    refused({"already holds a run", "kept checkpoints", "--force"});
    for (const auto& entry : fs::directory_iterator(path("run")))
        if (entry.path().filename().string().starts_with("step-")) fs::remove(entry.path());
    ASSERT_TRUE(fs::exists(path("run") / "corpus.ids"));
    const RunResult result = charlm(arguments);
    EXPECT_EQ(result.exit_code, 0) << describe(result);
}

// --patience without validation text can only be refused once the text is read; the refusal must still come
// before the run directory is touched: neither the ids of the run there re-encoded, nor its validation.ids
// removed, nor a copy of standard input left behind.
TEST_F(Cli, TrainRefusesAnOptionThatNeedsTheTextBeforeTheRunDirectoryChanges) {
    const auto corpus = write("corpus.txt", make_corpus());
    train_tiny(corpus, "run", 30, {"--val", write("val.txt", make_corpus(100)).string()});
    ASSERT_TRUE(fs::exists(path("run") / "validation.ids"));
    const auto other = write("other.txt", make_corpus(200) + "Zebra!\n");
    const auto before = snapshot(path("run"));
    for (const std::string& text : {other.string(), std::string("-")}) {
        std::vector<std::string> arguments = {"train", text, "--out", path("run").string(), "--force", "--steps", "10",
                                              "--val-fraction", "0", "--patience", "3"};
        arguments.insert(arguments.end(), kTinyModel.begin(), kTinyModel.end());
        const RunResult result = charlm(arguments, 60, other.string());
        expect_error(result, {"--patience 3", "no validation text"}, /*usage_error=*/true);
        expect_unchanged(before, snapshot(path("run")));
    }
}

// A real pipe whose reader exits: `charlm train ... 2>&1 | head -c 1` used to die of SIGPIPE unsaved, and
// `charlm sample ... | head -c 10` exited 141. Training saves and stops as on SIGTERM (130); a sample
// stops generating and ends quietly with 0, as its reader took what it wanted. `timeout` bounds a
// charlm that would go on writing into nothing.
TEST_F(Cli, AClosedPipeSavesTrainingAndEndsASampleQuietly) {
    const auto corpus = write("corpus.txt", make_corpus(2000));
    auto run_in_shell = [&](const std::string& script) {
        charlm::testing::ChildProcess shell({"-c", "cd \"$1\" && " + script, CHARLM_BINARY, path(".").string()}, path("."), "/bin/bash");
        const std::optional<int> exit_code = shell.wait_for_exit(150);
        EXPECT_EQ(exit_code, 0) << shell.err();
        return shell.out();
    };
    std::string train = "timeout 120 \"$0\" train corpus.txt --out run --steps 1000000";
    for (const std::string& option : kTinyModel) train += " " + option;
    const std::string trained = run_in_shell(train + " 2>&1 | head -c 1 >/dev/null; echo \"charlm exit ${PIPESTATUS[0]}\"");
    EXPECT_NE(trained.find("charlm exit 130"), std::string::npos) << trained;
    ASSERT_TRUE(fs::exists(path("run") / "last.safetensors"));
    EXPECT_LT(charlm::load_checkpoint(path("run") / "last.safetensors").training.step, 1000000);

    // One sample far longer than the reader takes; a JSON object per sample, far more of them than it takes.
    for (const std::string& sample : {std::string(" --length 100000000"), std::string(" --length 100 --json --count 1000000")}) {
        const std::string sampled = run_in_shell("timeout 60 \"$0\" sample run/last.safetensors --seed 1" + sample +
                                                 " 2>sample-stderr.txt | head -c 10 >/dev/null; echo \"charlm exit ${PIPESTATUS[0]}\"");
        EXPECT_NE(sampled.find("charlm exit 0"), std::string::npos) << sampled;
        EXPECT_EQ(read_bytes(path("sample-stderr.txt")), "") << "a reader that went is no error";
    }
}

// An option given twice kept its last value without a word (`sample --stop of --stop xyzq` ran past "of").
// Every option that takes one value refuses a second, naming it; the flags, which a repeat cannot change, and
// the options that take a list (plot's RUN_DIRs, --stop's texts: StopTextsAddUp) are not refused.
TEST_F(Cli, AnOptionGivenTwiceIsRefusedByName) {
    const fs::path checkpoint = trained_run();
    struct Case {
        std::vector<std::string> arguments;
        std::string message;
    };
    const Case cases[] = {
        {{"sample", checkpoint.string(), "--temperature", "0.5", "--temperature", "2"}, "--temperature was given twice; give it once"},
        {{"sample", checkpoint.string(), "--seed", "1", "--length", "5", "--seed=2"}, "--seed was given twice; give it once"},
        {{"train", "corpus.txt", "--steps", "3", "--steps", "4", "--steps", "5"}, "--steps was given 3 times; give it once"},
        {{"eval", checkpoint.string(), "corpus.txt", "--threads", "1", "--threads", "2"}, "--threads was given twice; give it once"},
    };
    for (const Case& given : cases) {
        const RunResult result = charlm(given.arguments);
        expect_error(result, {given.message}, /*usage_error=*/true);
    }
    const RunResult flags = charlm({"sample", checkpoint.string(), "--seed", "1", "--length", "5", "--json", "--json"});
    EXPECT_EQ(flags.exit_code, 0) << describe(flags);
}

TEST_F(Cli, TrainWithNeitherCorpusNorResumeIsRefused) {
    const RunResult result = charlm({"train"});
    expect_error(result, {"CORPUS"}, /*usage_error=*/true);
}

TEST_F(Cli, TrainResumeRefusesAMissingRun) {
    const RunResult result = charlm({"train", "--resume", path("nowhere").string(), "--steps", "10"});
    expect_error(result, {"nowhere"});
    EXPECT_FALSE(fs::exists(path("nowhere")));
}

TEST_F(Cli, TrainResumeRefusesACorruptLastCheckpointAndChangesNothing) {
    const auto corpus = write("corpus.txt", make_corpus());
    train_tiny(corpus, "run");
    const std::string good = read_bytes(path("run") / "last.safetensors");
    write_bytes(path("run") / "last.safetensors", good.substr(0, good.size() / 2));
    const auto before = snapshot(path("run"));
    const RunResult result = charlm({"train", "--resume", path("run").string(), "--steps", "50"});
    expect_error(result, {"last.safetensors"});
    expect_unchanged(before, snapshot(path("run")));
}

TEST_F(Cli, TrainResumeRefusesACorpusThatChanged) {
    const auto corpus = write("corpus.txt", make_corpus());
    train_tiny(corpus, "run");
    const auto before = snapshot(path("run"));
    write("corpus.txt", make_corpus() + "Zebra!\n");
    const RunResult result = charlm({"train", "--resume", path("run").string(), "--steps", "50"});
    expect_error(result, {"corpus.txt", "not the corpus the run started on", "--corpus PATH"});
    expect_unchanged(before, snapshot(path("run")));
}

// =============================== bad input: sample ===============================

class CliSampleOptions : public Cli {
protected:
    void expect_sample_refused(const std::vector<std::string>& options, const std::vector<std::string>& mentions,
                               bool usage_error = false) {
        SCOPED_TRACE(::testing::PrintToString(options));
        const std::vector<std::string> arguments = {"sample", checkpoint_.string(), "--prompt", "the", "--length", "20", "--seed", "1"};
        const auto before = snapshot(path("run"));
        // A refusal is immediate; the limit only stops a sampler that would otherwise run on.
        expect_error(charlm(with_options(arguments, options), 5), mentions, usage_error);
        expect_unchanged(before, snapshot(path("run")));
    }
    void SetUp() override {
        Cli::SetUp();
        checkpoint_ = trained_run();
    }
    fs::path checkpoint_;
};

TEST_F(CliSampleOptions, TheCommandTheyVaryWorks) {
    const RunResult result = charlm({"sample", checkpoint_.string(), "--prompt", "the", "--length", "20", "--seed", "1"});
    EXPECT_EQ(result.exit_code, 0) << describe(result);
    EXPECT_EQ(result.out.rfind("the", 0), 0u) << describe(result);
}

TEST_F(CliSampleOptions, RefusesTemperatureZero) { expect_sample_refused({"--temperature", "0"}, {"--temperature", "--greedy"}, /*usage_error=*/true); }
TEST_F(CliSampleOptions, RefusesNegativeTemperature) { expect_sample_refused({"--temperature", "-1"}, {"--temperature", "-1"}, /*usage_error=*/true); }
TEST_F(CliSampleOptions, RefusesTemperatureThatIsNotANumber) {
    expect_sample_refused({"--temperature", "abc"}, {"--temperature", "abc"}, /*usage_error=*/true);
}
TEST_F(CliSampleOptions, RefusesTemperatureNan) { expect_sample_refused({"--temperature", "nan"}, {"--temperature", "nan"}, /*usage_error=*/true); }
TEST_F(CliSampleOptions, RefusesTemperatureInfinity) { expect_sample_refused({"--temperature", "inf"}, {"--temperature"}, /*usage_error=*/true); }
TEST_F(CliSampleOptions, RefusesTopPZero) { expect_sample_refused({"--top-p", "0"}, {"--top-p", "0"}, /*usage_error=*/true); }
TEST_F(CliSampleOptions, RefusesTopPAboveOne) { expect_sample_refused({"--top-p", "1.5"}, {"--top-p", "1.5"}, /*usage_error=*/true); }
TEST_F(CliSampleOptions, RefusesTopPNan) { expect_sample_refused({"--top-p", "nan"}, {"--top-p"}, /*usage_error=*/true); }
TEST_F(CliSampleOptions, RefusesAnEmptyStopText) { expect_sample_refused({"--stop", ""}, {"--stop"}, /*usage_error=*/true); }
TEST_F(CliSampleOptions, RefusesNegativeTopK) { expect_sample_refused({"--top-k", "-1"}, {"--top-k"}, /*usage_error=*/true); }
TEST_F(CliSampleOptions, RefusesLengthThatIsNotANumber) {
    expect_sample_refused({"--length", "ten"}, {"--length"}, /*usage_error=*/true);
}
TEST_F(CliSampleOptions, RefusesNegativeLength) {
    // Must not wrap around to 2^64 - 5 characters and print forever.
    expect_sample_refused({"--length", "-5"}, {"--length"}, /*usage_error=*/true);
}
TEST_F(CliSampleOptions, RefusesAnUnknownOption) {
    expect_sample_refused({"--temprature", "0.5"}, {"--temprature", "charlm sample --help"}, /*usage_error=*/true);
}

TEST_F(CliSampleOptions, RefusesAPromptWithCharactersOutsideTheVocabulary) {
    // 'Z' and '!' never occur in the corpus: the error lists both, and nothing reaches stdout, not even the prompt.
    expect_sample_refused({"--prompt", "Zebra sat!"}, {"prompt", "'Z' (U+005A)", "'!' (U+0021)"});
}

TEST_F(CliSampleOptions, RefusesAPromptThatIsNotUtf8) {
    expect_sample_refused({"--prompt", "the\xff"}, {"--prompt", "UTF-8"});
}

TEST_F(Cli, SampleRequiresACheckpoint) {
    expect_error(charlm({"sample"}), {"CHECKPOINT"}, /*usage_error=*/true);
}

TEST_F(Cli, NoSubcommandIsAUsageError) {
    expect_error(charlm({}), {"charlm --help"}, /*usage_error=*/true);
    expect_error(charlm({"frobnicate"}), {"charlm --help"}, /*usage_error=*/true);
}

// =============================== bad checkpoints (sample and eval) ===============================

class CliBadCheckpoint : public Cli {
protected:
    void SetUp() override {
        Cli::SetUp();
        checkpoint_ = trained_run();
        good_bytes_ = read_bytes(checkpoint_);
    }
    // Both commands that read a checkpoint refuse `bad`, and the good run stays as it was.
    void expect_checkpoint_refused(const fs::path& bad, const std::vector<std::string>& mentions) {
        const auto before = snapshot(path("run"));
        {
            SCOPED_TRACE("sample " + bad.filename().string());
            expect_error(charlm({"sample", bad.string(), "--prompt", "the", "--length", "10", "--seed", "1"}), mentions);
        }
        {
            SCOPED_TRACE("eval " + bad.filename().string());
            expect_error(charlm({"eval", bad.string(), path("corpus.txt").string()}), mentions);
        }
        {
            SCOPED_TRACE("eval --json " + bad.filename().string());
            expect_error(charlm({"eval", bad.string(), path("corpus.txt").string(), "--json"}), mentions);
        }
        expect_unchanged(before, snapshot(path("run")));
    }
    fs::path checkpoint_;
    std::string good_bytes_;
};

TEST_F(CliBadCheckpoint, Missing) {
    expect_checkpoint_refused(path("run") / "nothing.safetensors", {"nothing.safetensors", "no such checkpoint"});
}

TEST_F(CliBadCheckpoint, ADirectory) { expect_checkpoint_refused(path("run"), {"directory"}); }

TEST_F(CliBadCheckpoint, RandomBytes) {
    std::mt19937 rng(99);
    std::string noise(4096, '\0');
    for (auto& byte : noise) byte = static_cast<char>(rng());
    expect_checkpoint_refused(write("noise.safetensors", noise), {"noise.safetensors"});
}

TEST_F(CliBadCheckpoint, Empty) { expect_checkpoint_refused(write("empty.safetensors", ""), {"empty.safetensors"}); }

TEST_F(CliBadCheckpoint, TruncatedCopy) {
    expect_checkpoint_refused(write("truncated.safetensors", good_bytes_.substr(0, good_bytes_.size() / 2)),
                              {"truncated.safetensors", "truncated"});
    expect_checkpoint_refused(write("short.safetensors", good_bytes_.substr(0, good_bytes_.size() - 1)),
                              {"short.safetensors"});
}

TEST_F(CliBadCheckpoint, ATextFileRenamed) {
    expect_checkpoint_refused(write("text.safetensors", make_corpus()), {"text.safetensors"});
}

TEST_F(CliBadCheckpoint, ATensorShapeEdited) {
    // Same number of elements, so the byte ranges still agree: only the model's shape check can catch it.
    json header = safetensors_header(good_bytes_);
    ASSERT_EQ(header.at("rnn.weight_hh_l0").at("shape"), json({64, 16}));
    header["rnn.weight_hh_l0"]["shape"] = {16, 64};
    expect_checkpoint_refused(write("transposed.safetensors", with_header(good_bytes_, header)),
                              {"transposed.safetensors", "rnn.weight_hh_l0"});
}

TEST_F(CliBadCheckpoint, AVocabularyThatDisagreesWithTheConfig) {
    json header = safetensors_header(good_bytes_);
    json vocab = json::parse(header.at("__metadata__").at("vocab").get<std::string>());
    vocab.erase(vocab.size() - 1);
    header["__metadata__"]["vocab"] = vocab.dump();
    expect_checkpoint_refused(write("vocab.safetensors", with_header(good_bytes_, header)), {"vocab.safetensors", "vocab"});
}

TEST_F(CliBadCheckpoint, ANonFiniteWeight) {
    const json header = safetensors_header(good_bytes_);
    std::uint64_t header_length = 0;
    std::memcpy(&header_length, good_bytes_.data(), 8);
    const auto begin = header.at("head.bias").at("data_offsets")[0].get<std::uint64_t>();
    std::string bytes = good_bytes_;
    const float nan = std::nanf("");
    std::memcpy(bytes.data() + 8 + header_length + begin, &nan, 4);
    expect_checkpoint_refused(write("nan.safetensors", bytes), {"nan.safetensors", "head.bias", "finite"});
}

// =============================== bad input: eval ===============================

TEST_F(Cli, EvalRefusesAnEmptyFile) {
    const auto checkpoint = trained_run();
    const auto before = snapshot(path("run"));
    expect_error(charlm({"eval", checkpoint.string(), write("empty.txt", "").string()}), {"empty.txt", "empty"});
    expect_error(charlm({"eval", checkpoint.string(), path("empty.txt").string(), "--json"}), {"empty.txt", "empty"});
    expect_unchanged(before, snapshot(path("run")));
}

TEST_F(Cli, EvalRefusesAMissingFileADirectoryAndInvalidUtf8) {
    const auto checkpoint = trained_run();
    const auto before = snapshot(path("run"));
    expect_error(charlm({"eval", checkpoint.string(), path("missing.txt").string()}), {"missing.txt", "no such file"});
    fs::create_directories(path("texts"));
    expect_error(charlm({"eval", checkpoint.string(), path("texts").string()}), {"texts", "directory"});
    expect_error(charlm({"eval", checkpoint.string(), write("bad.txt", "the c\xc3t").string()}), {"bad.txt", "byte offset 5"});
    expect_unchanged(before, snapshot(path("run")));
}

TEST_F(Cli, EvalRefusesATextWithNothingToScore) {
    const auto checkpoint = trained_run();
    expect_error(charlm({"eval", checkpoint.string(), write("unknown.txt", "ZZZZ QQQQ").string()}), {"nothing to score"});
    expect_error(charlm({"eval", checkpoint.string(), write("one.txt", "a").string()}), {"nothing to score"});
}

TEST_F(Cli, EvalRequiresCheckpointAndFile) {
    expect_error(charlm({"eval"}), {"CHECKPOINT"}, /*usage_error=*/true);
    expect_error(charlm({"eval", path("x.safetensors").string()}), {"FILE"}, /*usage_error=*/true);
}

}  // namespace

// ======================= more bad input (docs/bad-input.md) =======================

TEST_F(Cli, TrainRefusesZeroNegativeAndAbsurdSizes) {
    const auto corpus = write("corpus.txt", make_corpus());
    expect_train_refused(corpus, {"hidden size", "0"}, {"--hidden", "0"}, /*usage_error=*/true);
    expect_train_refused(corpus, {"layers", "-2"}, {"--layers", "-2"}, /*usage_error=*/true);
    expect_train_refused(corpus, {"--batch"}, {"--batch", "-4"}, /*usage_error=*/true);
    expect_train_refused(corpus, {"hidden size", "1000000"}, {"--hidden", "1000000"}, /*usage_error=*/true);
    expect_train_refused(corpus, {"too large"}, {"--seq", "100000", "--batch", "100000"}, /*usage_error=*/true);
    // Each rate's refusal names its option.
    expect_train_refused(corpus, {"(--dropout)", "1"}, {"--dropout", "1"}, /*usage_error=*/true);
    expect_train_refused(corpus, {"(--embed-dropout)", "-0.5"}, {"--embed-dropout", "-0.5"}, /*usage_error=*/true);
    expect_train_refused(corpus, {"(--weight-drop)", "1"}, {"--weight-drop", "1"}, /*usage_error=*/true);
    expect_train_refused(corpus, {"unknown dropout mask 'per-unit'"}, {"--dropout", "0.2", "--dropout-mask", "per-unit"}, /*usage_error=*/true);
    expect_train_refused(corpus, {"--ema", "1"}, {"--ema", "1"}, /*usage_error=*/true);
    // With no dropout, a choice of masks would be ignored.
    expect_train_refused(corpus, {"--dropout-mask", "both are 0"}, {"--dropout-mask", "step", "--dropout", "0", "--weight-drop", "0.2"}, /*usage_error=*/true);
    // Cosine decays over --steps: with --minutes alone there is nothing to decay over.
    std::vector<std::string> cosine = {"train", corpus.string(), "--out", path("cosine").string(), "--lr-schedule", "cosine", "--minutes", "1"};
    cosine.insert(cosine.end(), kTinyModel.begin(), kTinyModel.end());
    expect_error(charlm(cosine), {"cosine", "--steps"}, true);
    EXPECT_FALSE(fs::exists(path("cosine") / "last.safetensors"));
}

// How this process can run a command as the unprivileged user 65534 (nobody): setpriv (util-linux), or
// runuser; each is tried on `charlm --version`. Empty where neither works (not root, or not installed).
std::vector<std::string> as_unprivileged_user(const fs::path& directory) {
    if (::geteuid() != 0) return {};
    const std::vector<std::vector<std::string>> launchers = {
        {"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"},
        {"/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"},
        {"/usr/sbin/runuser", "-u", "nobody", "--"},
        {"/sbin/runuser", "-u", "nobody", "--"},
    };
    for (const auto& launcher : launchers) {
        if (::access(launcher.front().c_str(), X_OK) != 0) continue;
        const RunResult version = run_binary({"--version"}, directory, 60, "/dev/null", launcher);
        if (version.exit_code == 0 && version.out.rfind("charlm ", 0) == 0) return launcher;
    }
    return {};
}

// Root reads a file whatever its permissions: there the refusal is checked as the unprivileged user 65534,
// through setpriv or runuser, on a file in a directory that user reaches (the same user is shown to read
// and train on a readable file beside it, so that only the file's mode can refuse the other).
TEST_F(Cli, TrainRefusesAnUnreadableCorpus) {
    const auto corpus = write("locked.txt", make_corpus());
    fs::permissions(corpus, fs::perms::none);
    if (::geteuid() == 0) {
        train_tiny(write("good.txt", make_corpus()), "run");  // as root: the run that the refusal must leave intact
        for (fs::path reached = directory_; reached.has_relative_path(); reached = reached.parent_path())
            if ((fs::status(reached).permissions() & fs::perms::others_exec) == fs::perms::none) {
                if (reached != directory_) GTEST_SKIP() << "running as root, and user 65534 cannot reach " << reached;
                fs::permissions(reached, fs::perms::others_exec | fs::perms::others_read, fs::perm_options::add);
            }
        launcher_ = as_unprivileged_user(directory_);
        if (launcher_.empty()) GTEST_SKIP() << "running as root, and neither setpriv nor runuser can run charlm as user 65534";
        const auto readable = write("readable.txt", make_corpus());
        fs::permissions(readable, fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
        fs::create_directory(path("nobody"));
        ASSERT_EQ(::chown(path("nobody").c_str(), 65534, 65534), 0) << std::strerror(errno);
        const RunResult control = charlm({"train", readable.string(), "--out", (path("nobody") / "run").string(), "--steps", "1",
                                          "--layers", "1", "--hidden", "8", "--embed", "4", "--seq", "8", "--batch", "2"});
        ASSERT_EQ(control.exit_code, 0) << "user 65534 should train on a readable file here\n" << describe(control);
    }
    expect_train_refused(corpus, {"locked.txt", "cannot open"});
}

TEST_F(CliBadCheckpoint, AnotherProgramsSafetensors) {
    // A valid safetensors file without charlm's metadata, as another program would write it.
    const std::string header = R"({"weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    std::string bytes(8, '\0');
    const std::uint64_t length = header.size();
    std::memcpy(bytes.data(), &length, 8);
    bytes += header + std::string(8, '\0');
    expect_checkpoint_refused(write("other.safetensors", bytes), {"other.safetensors", "not a charlm checkpoint"});
}

TEST_F(Cli, InfoDescribesACheckpoint) {
    const auto checkpoint = trained_run();
    const RunResult text = charlm({"info", checkpoint.string()});
    EXPECT_EQ(text.exit_code, 0) << text.err;
    EXPECT_NE(text.out.find("parameters"), std::string::npos);
    const RunResult json_result = charlm({"info", checkpoint.string(), "--json"});
    ASSERT_EQ(json_result.exit_code, 0) << json_result.err;
    const auto description = json::parse(json_result.out);
    EXPECT_EQ(description.at("cell"), "lstm");
    EXPECT_GT(description.at("parameters").get<int>(), 0);
    expect_error(charlm({"info", path("none.safetensors").string()}), {"none.safetensors"});
}

TEST_F(Cli, SampleJsonCountAndStop) {
    const auto checkpoint = trained_run();
    const RunResult result = charlm({"sample", checkpoint.string(), "--count", "3", "--length", "20", "--seed", "4", "--json"});
    ASSERT_EQ(result.exit_code, 0) << result.err;
    std::istringstream lines(result.out);
    std::string line;
    int count = 0;
    while (std::getline(lines, line)) {
        const auto record = json::parse(line);
        EXPECT_EQ(record.at("seed").get<int>(), 4 + count);
        ++count;
    }
    EXPECT_EQ(count, 3);
}

// ---- issue 12: training, threads ----

// What OpenMP gives is not always what was asked: OMP_THREAD_LIMIT caps every team, OMP_DYNAMIC lets
// it shrink any region. The numbers must not change: eval, sample and training compared bit for bit.
TEST_F(Cli, ResultsAreTheSameWhateverTeamsOpenMPGives) {
    // Long enough for evaluation to read ~30 streams and for a --batch 32 window: two shares of rows.
    const auto corpus = write("corpus.txt", make_corpus(6000));
    const std::vector<std::string> model = {"--layers", "2", "--hidden", "32", "--embed", "8", "--seq", "16",
                                            "--batch", "32", "--eval-every", "5", "--steps", "5", "--seed", "3"};
    auto train_into = [&](const std::string& run, const std::string& threads) {
        std::vector<std::string> arguments = {"train", corpus.string(), "--out", path(run).string(), "--threads", threads};
        arguments.insert(arguments.end(), model.begin(), model.end());
        const RunResult result = charlm(arguments, 120);
        EXPECT_EQ(result.exit_code, 0) << describe(result);
        return charlm::load_checkpoint(path(run) / "last.safetensors");
    };
    const auto one = train_into("one", "1");
    const auto two = train_into("two", "2");
    const auto two_limited = [&] {
        const ScopedEnvironment limit("OMP_THREAD_LIMIT", "1");
        return train_into("two-limited", "2");
    }();
    const auto two_dynamic = [&] {
        const ScopedEnvironment dynamic("OMP_DYNAMIC", "true");
        return train_into("two-dynamic", "2");
    }();
    for (std::size_t i = 0; i < one.model->parameters().size(); ++i) {
        const auto& name = one.model->parameters()[i].name;
        EXPECT_EQ(two_limited.model->parameters()[i].value, one.model->parameters()[i].value) << name;
        EXPECT_EQ(two_dynamic.model->parameters()[i].value, two.model->parameters()[i].value) << name;
    }

    const std::string checkpoint = (path("one") / "last.safetensors").string();
    const std::vector<std::string> eval = {"eval", checkpoint, corpus.string(), "--json"};
    const std::vector<std::string> sample = {"sample", checkpoint, "--prompt", "the cat", "--length", "200", "--seed", "9"};
    for (const auto& command : {eval, sample}) {
        SCOPED_TRACE(command.front());
        auto with_threads = [&](const std::string& threads) {
            std::vector<std::string> arguments = command;
            arguments.insert(arguments.end(), {"--threads", threads});
            return arguments;
        };
        const RunResult reference = charlm(with_threads("1"));
        ASSERT_EQ(reference.exit_code, 0) << describe(reference);
        const RunResult under_limit = [&] {
            const ScopedEnvironment limit("OMP_THREAD_LIMIT", "1");
            return charlm(with_threads("2"));
        }();
        EXPECT_EQ(under_limit.exit_code, 0) << describe(under_limit);
        EXPECT_EQ(under_limit.out, reference.out);
        EXPECT_NE(under_limit.err.find("--threads 2 asks for more than OMP_THREAD_LIMIT allows; using 1"), std::string::npos)
            << under_limit.err;
        const RunResult no_teams = [&] {  // no region may have a team at all
            const ScopedEnvironment levels("OMP_MAX_ACTIVE_LEVELS", "0");
            return charlm(with_threads("2"));
        }();
        EXPECT_EQ(no_teams.out, reference.out);
        EXPECT_NE(no_teams.err.find("more than OMP_MAX_ACTIVE_LEVELS allows; using 1"), std::string::npos) << no_teams.err;
        const RunResult two_threads = charlm(with_threads("2"));
        const RunResult under_dynamic = [&] {
            const ScopedEnvironment dynamic("OMP_DYNAMIC", "true");
            return charlm(with_threads("2"));
        }();
        EXPECT_EQ(under_dynamic.out, two_threads.out);
    }
}

// More threads than the cores a process may run on make it slower, not faster: said, and obeyed all the same.
TEST_F(Cli, MoreThreadsThanCoresAreWarnedAboutAndGiveTheSameResult) {
    const fs::path checkpoint = trained_run();
    cpu_set_t usable;
    ASSERT_EQ(::sched_getaffinity(0, sizeof usable, &usable), 0);
    const int cores = CPU_COUNT(&usable);
    auto eval_with = [&](int threads) {
        return charlm({"eval", checkpoint.string(), path("corpus.txt").string(), "--json", "--threads", std::to_string(threads)});
    };
    const RunResult fitting = eval_with(cores), beyond = eval_with(cores + 1);
    ASSERT_EQ(fitting.exit_code, 0) << describe(fitting);
    ASSERT_EQ(beyond.exit_code, 0) << describe(beyond);
    EXPECT_EQ(fitting.err.find("is more than the"), std::string::npos) << describe(fitting);
    EXPECT_NE(beyond.err.find(fmt::format("--threads {} is more than the {} core{} this process may run on", cores + 1, cores,
                                          cores == 1 ? "" : "s")),
              std::string::npos)
        << describe(beyond);
    EXPECT_NEAR(json::parse(beyond.out).at("nats_per_character").get<double>(),
                json::parse(fitting.out).at("nats_per_character").get<double>(), 1e-5);
}

TEST_F(Cli, TrainThatDivergesSaysSoInOneLineAndKeepsTheLastGoodCheckpoint) {
    const auto corpus = write("corpus.txt", make_corpus());
    train_tiny(corpus, "run", 20);
    const auto before = snapshot(path("run"));
    for (const char* rate : {"1e38", "1e20"}) {
        SCOPED_TRACE(rate);
        const RunResult result = charlm({"train", "--resume", path("run").string(), "--lr", rate, "--clip", "0", "--steps", "60"});
        // Progress lines come first (training had begun); the error is the one last line.
        EXPECT_EQ(result.exit_code, 1) << describe(result);
        EXPECT_TRUE(result.out.empty()) << describe(result);
        const std::size_t last_line = result.err.rfind('\n', result.err.size() - 2) + 1;
        const std::string error = result.err.substr(last_line);
        EXPECT_EQ(error.rfind("charlm: error: training diverged: ", 0), 0u) << describe(result);
        for (const char* mention : {"keeps step 20", "--lr"}) EXPECT_NE(error.find(mention), std::string::npos) << error;
        EXPECT_EQ(error.find("-nan"), std::string::npos) << error;
        const auto after = snapshot(path("run"));
        EXPECT_EQ(after.at("last.safetensors"), before.at("last.safetensors"));
        EXPECT_EQ(after.at("best.safetensors"), before.at("best.safetensors"));
    }
    EXPECT_EQ(charlm({"info", (path("run") / "last.safetensors").string()}).exit_code, 0);
}

TEST_F(Cli, TrainResumeTakesTheOptionsARunMayChangeAndRefusesTheOthers) {
    const auto corpus = write("corpus.txt", make_corpus());
    train_tiny(corpus, "run", 20);
    const auto before = snapshot(path("run"));
    RunResult refused = charlm({"train", "--resume", path("run").string(), "--hidden", "64", "--steps", "40"});
    expect_error(refused, {"--hidden 64", "differs from the run's 16"}, true);
    EXPECT_EQ(refused.exit_code, 2);
    expect_unchanged(before, snapshot(path("run")));

    const RunResult resumed = charlm({"train", "--resume", path("run").string(), "--lr", "5e-4", "--steps", "40"});
    ASSERT_EQ(resumed.exit_code, 0) << describe(resumed);
    EXPECT_NE(resumed.err.find("--lr 0.0005 (was 0.002)"), std::string::npos) << resumed.err;
    if (std::thread::hardware_concurrency() > 1) {  // trained with --threads 1, resumed with every core
        EXPECT_NE(resumed.err.find("the run trained with --threads 1 and goes on with"), std::string::npos) << resumed.err;
    }
    const auto metrics = read_metrics(path("run") / "metrics.jsonl");
    ASSERT_FALSE(metrics.empty());
    EXPECT_EQ(metrics.back().at("learning_rate").get<double>(), 5e-4);
    EXPECT_EQ(metrics.back().at("step").get<int>(), 40);

    for (const auto& contradiction : std::vector<std::vector<std::string>>{
             {"--force"}, {"--out", path("elsewhere").string()}, {corpus.string()}}) {
        std::vector<std::string> arguments = {"train", "--resume", path("run").string(), "--steps", "50"};
        arguments.insert(arguments.end(), contradiction.begin(), contradiction.end());
        expect_error(charlm(arguments), {}, true);
    }
}

TEST_F(Cli, TrainResumeFollowsAMovedCorpusWhoseContentIsTheSame) {
    const auto corpus = write("corpus.txt", make_corpus());
    train_tiny(corpus, "run", 20);
    fs::rename(corpus, path("moved.txt"));
    expect_error(charlm({"train", "--resume", path("run").string(), "--steps", "30"}), {"corpus.txt", "--corpus PATH"});
    write("impostor.txt", make_corpus() + "x");
    expect_error(charlm({"train", "--resume", path("run").string(), "--corpus", path("impostor.txt").string(), "--steps", "30"}),
                 {"impostor.txt", "not the corpus the run started on"});
    const RunResult moved = charlm({"train", "--resume", path("run").string(), "--corpus", path("moved.txt").string(), "--steps", "30"});
    EXPECT_EQ(moved.exit_code, 0) << describe(moved);
    expect_error(charlm({"train", corpus.string(), "--corpus", path("moved.txt").string()}), {"--corpus"}, true);
}

TEST_F(Cli, TrainRefusesValidationFileAndFractionTogether) {
    const auto corpus = write("corpus.txt", make_corpus());
    const auto validation = write("validation.txt", make_corpus(40));
    expect_error(charlm({"train", corpus.string(), "--val", validation.string(), "--val-fraction", "0.2", "--out", path("run").string()}),
                 {"--val", "--val-fraction"}, true);
}

TEST_F(Cli, TrainRefusesZeroStepsAndZeroMinutes) {
    const auto corpus = write("corpus.txt", make_corpus());
    for (const auto& option : std::vector<std::vector<std::string>>{{"--steps", "0"}, {"--minutes", "0"}}) {
        std::vector<std::string> arguments = {"train", corpus.string(), "--out", path("run").string()};
        arguments.insert(arguments.end(), option.begin(), option.end());
        expect_error(charlm(arguments), {option.front()}, true);
        EXPECT_FALSE(fs::exists(path("run")));
    }
}

// `charlm train` drops 0.1 and averages the weights with decay 0.999 unless told otherwise
// (docs/quality.md's table); --dropout 0 and --ema 0 turn them off, and a resume keeps the run's own
// unless they are given again.
TEST_F(Cli, TrainDropsATenthAndAveragesByDefaultAndZeroTurnsEachOff) {
    const auto corpus = write("corpus.txt", make_corpus());
    train_tiny(corpus, "default", 10);
    train_tiny(corpus, "off", 10, {"--dropout", "0", "--ema", "0"});
    const charlm::Checkpoint by_default = charlm::load_checkpoint(path("default") / "last.safetensors");
    EXPECT_EQ(by_default.config.dropout, 0.1);
    EXPECT_EQ(by_default.training.options.value("ema", 0.0), 0.999);
    EXPECT_TRUE(by_default.average.has_value());
    EXPECT_TRUE(read_metrics(path("default") / "metrics.jsonl").front().contains("averaged_validation_loss"));
    const auto expect_off = [&](const char* when) {
        const charlm::Checkpoint off = charlm::load_checkpoint(path("off") / "last.safetensors");
        EXPECT_EQ(off.config.dropout, 0.0) << when;
        EXPECT_EQ(off.training.options.value("ema", 0.0), 0.0) << when;
        EXPECT_FALSE(off.average.has_value()) << when;
        for (const auto& record : read_metrics(path("off") / "metrics.jsonl"))
            EXPECT_FALSE(record.contains("averaged_validation_loss")) << when << ": " << record.dump();
    };
    expect_off("trained");
    const RunResult resumed = charlm({"train", "--resume", path("off").string(), "--steps", "20"});
    ASSERT_EQ(resumed.exit_code, 0) << describe(resumed);
    expect_off("resumed: the defaults are for new runs");
}

TEST_F(Cli, TrainWarnsAboutOptionsThatWouldDoNothing) {
    const auto corpus = write("corpus.txt", make_corpus());
    const RunResult dropout = train_tiny(corpus, "dropout", 10, {"--dropout", "0.3"});  // kTinyModel has one layer: its output
    EXPECT_EQ(dropout.exit_code, 0) << dropout.err;
    EXPECT_EQ(dropout.err.find("warning"), std::string::npos) << dropout.err;
    const RunResult warmup = train_tiny(corpus, "warmup", 10, {"--warmup", "50"});
    EXPECT_NE(warmup.err.find("--warmup 50 is longer than the run's 10 steps"), std::string::npos) << warmup.err;
    const RunResult exact = train_tiny(corpus, "exact", 10, {"--warmup", "10"});  // reaches --lr at its last step
    EXPECT_EQ(exact.err.find("--warmup"), std::string::npos) << exact.err;
}

TEST_F(Cli, TrainWithoutValidationSaysSoAndWritesNoBestCheckpoint) {
    const auto corpus = write("corpus.txt", make_corpus());
    const RunResult result = train_tiny(corpus, "run", 20, {"--val-fraction", "0"});
    EXPECT_NE(result.out.find("no validation text, so no best checkpoint"), std::string::npos) << result.out;
    EXPECT_EQ(result.out.find("best validation loss"), std::string::npos) << result.out;
    EXPECT_FALSE(fs::exists(path("run") / "best.safetensors"));
    // The average (--ema, on by default) has nothing to be scored on: said, with how to save its time.
    EXPECT_NE(result.err.find("(--ema 0.999) is kept for a resume but never scored"), std::string::npos) << result.err;
    const RunResult plain = train_tiny(corpus, "plain", 20, {"--val-fraction", "0", "--ema", "0"});
    EXPECT_EQ(plain.err.find("--ema"), std::string::npos) << plain.err;
    expect_error(charlm({"train", corpus.string(), "--out", path("patient").string(), "--val-fraction", "0", "--patience", "2"}),
                 {"--patience", "no validation text"}, true);
}

TEST_F(Cli, TrainReadsStandardInputThroughACopyInTheRunDirectory) {
    const std::string text = make_corpus();
    const auto corpus = write("corpus.txt", text);
    for (const std::string source : {"-", "/dev/stdin"}) {
        SCOPED_TRACE(source);
        fs::remove_all(path("run"));
        std::vector<std::string> arguments = {"train", source, "--out", path("run").string(), "--steps", "10"};
        arguments.insert(arguments.end(), kTinyModel.begin(), kTinyModel.end());
        const RunResult result = charlm(arguments, 60, corpus.string());
        ASSERT_EQ(result.exit_code, 0) << describe(result);
        EXPECT_EQ(read_bytes(path("run") / "corpus.txt"), text);
        // The copy is the run's corpus: a resume, with nothing on standard input, finds it.
        const RunResult resumed = charlm({"train", "--resume", path("run").string(), "--steps", "15"});
        EXPECT_EQ(resumed.exit_code, 0) << describe(resumed);
    }
}

// A training refused for its text made nothing from a file, but from standard input left the run
// directory it had made for the copy, holding only its lock. Whatever the text's fault and wherever
// it comes from, a refusal leaves no folder it made (parents included) and no lock in one it found.
TEST_F(Cli, ATrainingRefusedForItsTextLeavesNoDirectoryBehind) {
    struct Text {
        std::string name, bytes, mention;
    };
    const Text texts[] = {{"empty.txt", "", "empty"},
                          {"one.txt", std::string(500, 'a'), "one distinct character"},
                          {"latin1.txt", "hello\xff world, hello world\n", "UTF-8"},
                          {"short.txt", "the cat sat\n", "--seq"}};
    fs::create_directories(path("found"));
    for (const Text& text : texts) {
        const fs::path file = write(text.name, text.bytes);
        for (const std::string& source : {std::string("-"), file.string()}) {
            for (const std::string& out : {std::string("made/deeper/run"), std::string("found")}) {
                SCOPED_TRACE(text.name + " from " + source + " into " + out);
                std::vector<std::string> arguments = {"train", source, "--out", path(out).string()};
                arguments.insert(arguments.end(), kTinyModel.begin(), kTinyModel.end());
                expect_error(charlm(arguments, 60, file.string()), {text.mention});
                EXPECT_FALSE(fs::exists(path("made"))) << "a folder the refused run made is left";
                EXPECT_TRUE(fs::is_empty(path("found"))) << "the refused run left a file in a folder it found";
            }
        }
    }
}

// Options that could do nothing were taken without a word where --patience in the same case was refused:
// --val-chars or --keep-checkpoints without validation text, a --val-fraction that holds out nothing,
// --greedy --count 3 (three identical samples under three "seeds"). One rule refuses each: an option that
// acts only through something the run lacks. --greedy's --seed draws nothing, and is warned about as
// --greedy's --temperature is.
TEST_F(Cli, AnOptionThatWouldDoNothingIsRefusedByOneRule) {
    const auto corpus = write("corpus.txt", make_corpus());
    auto train = [&](const std::vector<std::string>& extra) {
        std::vector<std::string> arguments = {"train", corpus.string(), "--out", path("run").string(), "--steps", "10"};
        arguments.insert(arguments.end(), kTinyModel.begin(), kTinyModel.end());
        arguments.insert(arguments.end(), extra.begin(), extra.end());
        return charlm(arguments);
    };
    expect_error(train({"--val-fraction", "0", "--val-chars", "50"}),
                 {"--val-chars 50 sets how many held-out characters each validation scores, and this run has no validation text",
                  "leave --val-chars out"},
                 true);
    expect_error(train({"--val-fraction", "0", "--keep-checkpoints"}),
                 {"--keep-checkpoints keeps a checkpoint per validation", "no validation text"}, true);
    expect_error(train({"--val-fraction", "0", "--patience", "3"}), {"--patience 3 waits for a better validation loss"}, true);
    const std::size_t characters = code_points_of(make_corpus()).size();
    expect_error(train({"--val-fraction", "0.0001"}),
                 {fmt::format("--val-fraction 0.0001 holds out 0 of the {} characters", characters), "a validation needs at least 2",
                  "or 0 for no validation"},
                 true);
    expect_error(train({"--val", write("one.txt", "a").string()}), {"one.txt: the validation text has 1 character", "--val"});
    EXPECT_FALSE(fs::exists(path("run"))) << "each refused before the run directory was made";
    // What the rule leaves: --val-fraction 0 alone, and a share that holds out two characters.
    const RunResult least = train({"--val-fraction", fmt::format("{}", 1.5 / static_cast<double>(characters))});
    EXPECT_EQ(least.exit_code, 0) << describe(least);

    // A resume checks the options given again as a fresh run does: before the ids are mapped, or
    // written again where they are gone, so the refusal leaves the run directory as it was.
    std::vector<std::string> fresh = {"train", corpus.string(), "--out", path("plain").string(), "--steps", "10", "--val-fraction", "0"};
    fresh.insert(fresh.end(), kTinyModel.begin(), kTinyModel.end());
    ASSERT_EQ(charlm(fresh).exit_code, 0);
    fs::remove(path("plain") / "corpus.ids");
    const auto before = snapshot(path("plain"));
    for (const std::vector<std::string>& again : {std::vector<std::string>{"--patience", "2"}, {"--val-chars", "30"}, {"--keep-checkpoints"}}) {
        std::vector<std::string> resume = {"train", "--resume", path("plain").string(), "--steps", "20"};
        resume.insert(resume.end(), again.begin(), again.end());
        expect_error(charlm(resume), {again.front(), "no validation text"}, true);
        expect_unchanged(before, snapshot(path("plain")));
    }

    const fs::path checkpoint = path("run") / "last.safetensors";
    expect_error(charlm({"sample", checkpoint.string(), "--greedy", "--count", "3", "--json"}),
                 {"--greedy takes the most likely character every time, so --count 3 would print 3 identical samples"}, true);
    const RunResult seeded = charlm({"sample", checkpoint.string(), "--greedy", "--seed", "5", "--length", "10", "--json"});
    ASSERT_EQ(seeded.exit_code, 0) << describe(seeded);
    EXPECT_NE(seeded.err.find("--greedy always takes the most likely character, so it ignores --seed 5"), std::string::npos)
        << describe(seeded);
    EXPECT_TRUE(json::parse(seeded.out).at("seed").is_null()) << "no seed made a greedy text\n" << seeded.out;
}

// Figures that disagreed with each other, and a refusal that blamed the wrong option.
TEST_F(Cli, TheFiguresOfARunAgreeAndARefusalBlamesTheOptionAtFault) {
    const auto corpus = write("corpus.txt", make_corpus(2000));
    // Without validation, the summary's train loss is the last one the log and metrics.jsonl showed
    // (the mean over that report's steps), not the last step's alone.
    const RunResult plain = train_tiny(corpus, "plain", 25, {"--val-fraction", "0"});
    std::smatch match;
    ASSERT_TRUE(std::regex_search(plain.out, match, std::regex(R"(last train loss ([0-9.]+) nats/char)"))) << describe(plain);
    const auto metrics = read_metrics(path("plain") / "metrics.jsonl");
    ASSERT_FALSE(metrics.empty());
    EXPECT_EQ(metrics.back().at("step"), 25);
    EXPECT_EQ(match[1].str(), fixed4(metrics.back().at("train_loss").get<double>()));
    // The log counts the characters validation predicts, as the summary and metrics.jsonl do.
    const RunResult validated = train_tiny(corpus, "validated", 10, {"--val-chars", "20"});
    ASSERT_TRUE(std::regex_search(validated.out, match, std::regex(R"(on 20 of (\d+) held-out chars)"))) << describe(validated);
    const std::string held_out = match[1].str();
    EXPECT_NE(validated.err.find("validating on " + held_out + " (20 of them each time"), std::string::npos) << describe(validated);
    EXPECT_EQ(std::to_string(read_metrics(path("validated") / "metrics.jsonl").back().at("validation_characters").get<int>()), held_out);
    // A text long enough whose --val-fraction leaves too little to train on: --val-fraction is at fault.
    std::vector<std::string> arguments = {"train", corpus.string(), "--out", path("greedy").string(), "--val-fraction", "0.9999"};
    arguments.insert(arguments.end(), kTinyModel.begin(), kTinyModel.end());
    expect_error(charlm(arguments), {"--val-fraction 0.9999 holds out", "give a smaller --val-fraction"}, true);
}

// --resume's advice fitted neither a directory without last.safetensors ("give a .safetensors file
// written by 'charlm train'") nor a damaged one (the tensor named, and nothing to do next).
TEST_F(Cli, AResumeThatCannotGoOnSaysWhatTheDirectoryStillOffers) {
    fs::create_directories(path("empty"));
    expect_error(charlm({"train", "--resume", path("empty").string()}),
                 {"holds no run to resume (no last.safetensors)", "--out " + path("empty").string()});
    const auto corpus = write("corpus.txt", make_corpus());
    train_tiny(corpus, "run", 10);
    const std::string last = read_bytes(path("run") / "last.safetensors");
    write_bytes(path("run") / "last.safetensors", last.substr(0, last.size() / 2));
    const std::string best = (path("run") / "best.safetensors").string();
    expect_error(charlm({"train", "--resume", path("run").string()}),
                 {"last.safetensors", "the run cannot be resumed from it", "--init-from " + best, "--force"});
    fs::remove(path("run") / "last.safetensors");
    const RunResult missing = charlm({"train", "--resume", path("run").string()});
    expect_error(missing, {"no last.safetensors to resume the run from", "--init-from " + best, "--force"});
    EXPECT_EQ(missing.err.find("give a .safetensors file"), std::string::npos) << missing.err;
    fs::remove(best);
    expect_error(charlm({"train", "--resume", path("run").string()}), {"no last.safetensors to resume the run from", "--force"});
}

// The README says sample --adapt-to reads its text as eval --adapt does, yet it took a text that eval
// refuses as mostly outside the vocabulary; now it refuses it alike, and --allow-unknown takes it.
TEST_F(Cli, SampleAdaptToRefusesATextMostlyOutsideTheVocabularyAsEvalDoes) {
    const auto checkpoint = trained_run();
    const auto foreign = write("foreign.txt", "the cat sat on a matZQZQZQZQZQZQZQZQZQZQ");
    expect_error(charlm({"eval", checkpoint.string(), foreign.string(), "--adapt"}), {"foreign.txt", "50%", "--allow-unknown"});
    const std::vector<std::string> sample = {"sample", checkpoint.string(), "--length", "5", "--seed", "1", "--adapt-to", foreign.string()};
    expect_error(charlm(sample), {"foreign.txt", "50%", "--allow-unknown"});
    std::vector<std::string> allowed = sample;
    allowed.push_back("--allow-unknown");
    const RunResult taken = charlm(allowed);
    ASSERT_EQ(taken.exit_code, 0) << describe(taken);
    EXPECT_NE(taken.err.find("20 characters of " + foreign.string()), std::string::npos) << describe(taken);
    expect_error(charlm({"sample", checkpoint.string(), "--allow-unknown"}), {"--allow-unknown requires --adapt-to"}, true);
}

// Small words that were off: standard input named three ways, an empty prompt file refused where
// --prompt "" is taken, a file named like an option, a file given as --out, an --html folder exiting 2
// where a missing folder exits 1, and bench's text missing outside a checkout.
TEST_F(Cli, MessagesNameWhatTheUserGaveAndSayWhatToDo) {
    const auto checkpoint = trained_run();
    write("empty.txt", "");
    const RunResult from_file = charlm({"sample", checkpoint.string(), "--prompt-file", "empty.txt", "--length", "8", "--seed", "3"});
    const RunResult from_option = charlm({"sample", checkpoint.string(), "--prompt", "", "--length", "8", "--seed", "3"});
    ASSERT_EQ(from_file.exit_code, 0) << describe(from_file);
    EXPECT_EQ(from_file.out, from_option.out);
    // Standard input is "standard input" to every command, as to train.
    const RunResult eval_empty = charlm({"eval", checkpoint.string(), "-"}, 60, "/dev/null");
    expect_error(eval_empty, {"standard input"});
    EXPECT_EQ(eval_empty.err.find("/dev/stdin"), std::string::npos) << eval_empty.err;
    const auto bad = write("bad.txt", "ab\xff");
    const RunResult prompt_bad = charlm({"sample", checkpoint.string(), "--prompt-file", "-"}, 60, bad.string());
    expect_error(prompt_bad, {"standard input", "UTF-8"});
    const RunResult adapt_empty = charlm({"sample", checkpoint.string(), "--adapt-to", "-"}, 60, "/dev/null");
    expect_error(adapt_empty, {"standard input"});
    EXPECT_EQ(adapt_empty.err.find("/dev/stdin"), std::string::npos) << adapt_empty.err;
    // A file whose name starts with -.
    write("-my corpus.txt", make_corpus());
    expect_error(charlm({"train", "-my corpus.txt"}), {"-my corpus.txt", "'./-my corpus.txt'"}, true);
    // A file where the run directory goes, or where a folder of it goes.
    std::vector<std::string> out_file = {"train", "corpus.txt", "--out", "corpus.txt"};
    out_file.insert(out_file.end(), kTinyModel.begin(), kTinyModel.end());
    expect_error(charlm(out_file), {"corpus.txt: is a file, not a folder; choose another --out"});
    out_file[3] = "corpus.txt/run";
    expect_error(charlm(out_file), {"corpus.txt: is a file, not a folder to hold corpus.txt/run; choose another --out"});
    // --html into a folder is a path that cannot be written, as one into a missing folder: both exit 1.
    fs::create_directories(path("adir"));
    expect_error(charlm({"eval", checkpoint.string(), "corpus.txt", "--html", "adir"}), {"cannot write adir", "adir/report.html"});
    // bench outside a checkout, where its default text is not.
    expect_error(charlm({"bench", "--seconds", "0.01"}), {"data/kjv.txt", "--corpus FILE"});
}

TEST_F(Cli, SuggestedCommandsQuotePathsWithSpaces) {
    const auto corpus = write("corpus.txt", make_corpus());
    train_tiny(corpus, "my run", 10);
    std::vector<std::string> arguments = {"train", corpus.string(), "--out", path("my run").string()};
    arguments.insert(arguments.end(), kTinyModel.begin(), kTinyModel.end());
    expect_error(charlm(arguments), {"--resume '" + path("my run").string() + "'"}, true);
}

// ---- issue 12: exit codes, parser, plot, info ----

namespace {

// A copy of a checkpoint with its metadata changed by `edit`, which gets each entry as parsed JSON.
std::string with_metadata(const std::string& bytes, const std::function<void(json& config, json& vocab, json& training)>& edit) {
    json header = safetensors_header(bytes);
    auto& metadata = header["__metadata__"];
    json config = json::parse(metadata["config"].get<std::string>()), vocab = json::parse(metadata["vocab"].get<std::string>()),
         training = json::parse(metadata["training"].get<std::string>());
    edit(config, vocab, training);
    metadata["config"] = config.dump();
    metadata["vocab"] = vocab.dump();
    metadata["training"] = training.dump();
    return with_header(bytes, header);
}

// Runs charlm with stderr on a new pseudo-terminal, as a user at a terminal has it (stdin and stdout
// on /dev/null), and returns what the terminal received.
std::string stderr_on_a_terminal(const std::vector<std::string>& arguments, const fs::path& working_directory) {
    const int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    if (master < 0 || ::grantpt(master) != 0 || ::unlockpt(master) != 0) {
        ADD_FAILURE() << "no pseudo-terminal: " << std::strerror(errno);
        return {};
    }
    const std::string terminal = ::ptsname(master);
    // The parent keeps the terminal open too, so that reading it never ends before the child has opened it.
    const int held = ::open(terminal.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC);
    const std::string binary = CHARLM_BINARY, directory = working_directory.string();
    std::vector<std::string> argv_strings = {binary};
    argv_strings.insert(argv_strings.end(), arguments.begin(), arguments.end());
    std::vector<char*> argv;
    for (auto& argument : argv_strings) argv.push_back(argument.data());
    argv.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
        const int null_fd = ::open("/dev/null", O_RDWR);
        const int terminal_fd = ::open(terminal.c_str(), O_RDWR | O_NOCTTY);
        if (null_fd < 0 || terminal_fd < 0 || ::dup2(null_fd, STDIN_FILENO) < 0 || ::dup2(null_fd, STDOUT_FILENO) < 0 ||
            ::dup2(terminal_fd, STDERR_FILENO) < 0 || ::chdir(directory.c_str()) != 0)
            ::_exit(126);
        ::execv(binary.c_str(), argv.data());
        ::_exit(127);
    }
    std::string received;
    char buffer[4096];
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    for (bool exited = false; !exited;) {
        int status = 0;
        exited = ::waitpid(pid, &status, WNOHANG) == pid;
        if (!exited && std::chrono::steady_clock::now() > deadline) {
            ::kill(pid, SIGKILL);
            ADD_FAILURE() << "still running after a minute";
        }
        pollfd ready = {master, POLLIN, 0};
        ::poll(&ready, 1, exited ? 0 : 50);
        for (ssize_t count; (count = ::read(master, buffer, sizeof buffer)) > 0;) received.append(buffer, static_cast<std::size_t>(count));
    }
    ::close(held);
    ::close(master);
    return received;
}

std::size_t count_of(const std::string& text, char c) { return static_cast<std::size_t>(std::count(text.begin(), text.end(), c)); }

}  // namespace

// A parse error names what is wrong in words (never CLI11's "Could not convert" or a 309-digit bound),
// exits 2 on one line, and ends by saying where to read more. No checkpoint is needed: parsing fails first.
TEST_F(Cli, ParseErrorsSayWhatIsWrongAndWhereToReadMore) {
    auto expect_parse_error = [&](const std::vector<std::string>& arguments, const std::vector<std::string>& mentions,
                                  const std::string& help_command) {
        SCOPED_TRACE("charlm " + ::testing::PrintToString(arguments));
        const RunResult result = charlm(arguments);
        expect_error(result, mentions, /*usage_error=*/true);
        EXPECT_TRUE(result.err.ends_with("; see '" + help_command + " --help'\n")) << result.err;
        EXPECT_EQ(result.err.find("Could not convert"), std::string::npos) << result.err;
        EXPECT_LT(result.err.size(), 240u) << result.err;
    };
    expect_parse_error({"sample", "ck.safetensors", "--length", "ten"}, {"--length wants a whole number, not 'ten'"}, "charlm sample");
    expect_parse_error({"sample", "ck.safetensors", "--temperature", "abc"}, {"--temperature wants a number, not 'abc'"}, "charlm sample");
    expect_parse_error({"train", "c.txt", "--layers", "two"}, {"--layers wants a whole number, not 'two'"}, "charlm train");
    expect_parse_error({"frobnicate"}, {"unknown command 'frobnicate'", "train, sample, eval, serve, info, plot, bench"}, "charlm");
    expect_parse_error({"smaple", "ck.safetensors"}, {"unknown command 'smaple' (did you mean sample?)"}, "charlm");
    expect_parse_error({}, {"give a command: train, sample, eval, serve, info, plot, bench"}, "charlm");
    expect_parse_error({"sample", "ck.safetensors", "--threads", "-1"}, {"--threads must be between 0 and 1024, not -1"}, "charlm sample");
    expect_parse_error({"eval", "ck.safetensors", "f.txt", "--threads", "-1"}, {"--threads must be between 0 and 1024, not -1"}, "charlm eval");
    expect_parse_error({"bench", "--seconds", "0"}, {"--seconds must be above 0, not 0"}, "charlm bench");
    expect_parse_error({"sample"}, {"charlm sample needs CHECKPOINT: a .safetensors file"}, "charlm sample");
    expect_parse_error({"eval", "ck.safetensors"}, {"charlm eval needs FILE: UTF-8 text to score"}, "charlm eval");
    expect_parse_error({"info"}, {"charlm info needs CHECKPOINT"}, "charlm info");
    expect_parse_error({"sample", "ck.safetensors", "--length"}, {"--length needs a value"}, "charlm sample");
    expect_parse_error({"sample", "ck.safetensors", "--temprature", "0.5"},
                       {"charlm sample has no option --temprature (did you mean --temperature?)"}, "charlm sample");
    expect_parse_error({"sample", "ck.safetensors", "other.safetensors"},
                       {"unexpected argument 'other.safetensors'; charlm sample takes CHECKPOINT and options"}, "charlm sample");
    expect_parse_error({"sample", "ck.safetensors", "--length", "-5"}, {"--length must be between 0 and 1099511627776, not -5"},
                       "charlm sample");
    expect_parse_error({"train", "c.txt", "--hidden", "99999999999"}, {"--hidden cannot take 99999999999: it is out of range"},
                       "charlm train");
    expect_parse_error({"sample", "ck.safetensors", "--prompt", "a", "--prompt-file", "p.txt"}, {"--prompt", "--prompt-file", "not both"},
                       "charlm sample");
    expect_parse_error({"sample", "ck.safetensors", "--json=maybe"}, {"--json is a flag; give it without a value"}, "charlm sample");
}

// CLI11 alone reads 010 as octal 8 and 0x10 as 16, wraps -1 into 2^64 - 1 for an unsigned option and
// saturates a 20-digit number: every whole number is now plain decimal, or refused.
TEST_F(Cli, WholeNumbersAreDecimalAndNeverWrapAround) {
    const auto checkpoint = trained_run();
    auto generated = [&](const std::string& length) {
        const RunResult result = charlm({"sample", checkpoint.string(), "--length", length, "--seed", "3"});
        EXPECT_EQ(result.exit_code, 0) << describe(result);
        return code_points_of(result.out).size() - 1;  // less the final newline
    };
    EXPECT_EQ(generated("010"), 10u);
    EXPECT_EQ(generated("+7"), 7u);
    expect_error(charlm({"sample", checkpoint.string(), "--length", "0x10"}), {"--length wants a whole number, not '0x10'"}, true);
    expect_error(charlm({"sample", checkpoint.string(), "--seed", "-1"}), {"--seed wants a whole number of 0 or more, not '-1'"}, true);
    expect_error(charlm({"train", path("corpus.txt").string(), "--steps", "99999999999999999999"}),
                 {"--steps cannot take 99999999999999999999: it is out of range"}, true);
    expect_error(charlm({"train", path("corpus.txt").string(), "--steps", "10000000000000000000"}),  // past 2^63 - 1
                 {"--steps cannot take 10000000000000000000: it is out of range"}, true);
}

// The same bad value is the user's mistake on the command line (2) and a bad file in a checkpoint (1).
TEST_F(Cli, ABadConfigInACheckpointIsARuntimeErrorNotAUsageError) {
    const auto checkpoint = trained_run();
    const std::string good = read_bytes(checkpoint);
    const auto zero = write("zero.safetensors", with_metadata(good, [](json& config, json&, json&) { config["hidden_size"] = 0; }));
    const auto cell = write("cell.safetensors", with_metadata(good, [](json& config, json&, json&) { config["cell"] = "transformer"; }));
    expect_error(charlm({"info", zero.string()}), {"zero.safetensors", "hidden size must be between 1 and 16384, not 0"});
    expect_error(charlm({"sample", zero.string(), "--seed", "1"}), {"zero.safetensors", "hidden size"});
    expect_error(charlm({"info", cell.string()}), {"cell.safetensors", "unknown cell type 'transformer'"});
    expect_error(charlm({"train", path("corpus.txt").string(), "--out", path("other").string(), "--hidden", "0"}),
                 {"hidden size must be between 1 and 16384, not 0"}, /*usage_error=*/true);
}

// ---- plot ----

class CliPlot : public Cli {
protected:
    void SetUp() override {
        Cli::SetUp();
        fs::create_directories(path("run"));
        fs::create_directories(path("bin"));
        fs::create_directories(path("tmp"));
        write("run/metrics.jsonl", "{\"step\":10,\"train_loss\":3.1,\"validation_loss\":3.2,\"elapsed_seconds\":5}\n{\"step\":20,\"train_loss\":2.5}\n");
    }
    // A stand-in for gnuplot, first on PATH.
    void fake_gnuplot(const std::string& script) const {
        write("bin/gnuplot", "#!/bin/sh\n" + script);
        fs::permissions(path("bin/gnuplot"), fs::perms::owner_all);
    }
    bool no_temporary_files_left() const { return fs::is_empty(path("tmp")); }
};

TEST_F(CliPlot, StdoutCarriesOnlyThePngPathNotGnuplotsChatter) {
    // Like gnuplot's own warnings, on both of its streams; then it writes the PNG named in the script.
    fake_gnuplot("echo 'Warning: empty y range' ; echo 'font not found' >&2\n"
                 "sed -n \"s/^set output '\\(.*\\)'$/\\1/p\" \"$1\" | { read out; echo png > \"$out\"; }\n");
    const ScopedEnvironment search_path("PATH", path("bin").string() + ":/usr/bin:/bin");
    const ScopedEnvironment temporary("TMPDIR", path("tmp").string());
    const RunResult result = charlm({"plot", path("run").string()});
    ASSERT_EQ(result.exit_code, 0) << describe(result);
    EXPECT_EQ(result.out, (path("run") / "loss.png").string() + "\n");
    EXPECT_EQ(read_bytes(path("run") / "loss.png"), "png\n");
    const RunResult elsewhere = charlm({"plot", path("run").string(), "--output", path("curve.png").string()});
    ASSERT_EQ(elsewhere.exit_code, 0) << describe(elsewhere);
    EXPECT_EQ(elsewhere.out, path("curve.png").string() + "\n");
    // Two runs compared: one PNG for both, which must be named; the same run twice is two curves.
    expect_error(charlm({"plot", path("run").string(), path("run").string()}), {"--output FILE.png"}, /*usage_error=*/true);
    const RunResult compared = charlm({"plot", path("run").string(), path("run").string(), "--output", path("both.png").string()});
    ASSERT_EQ(compared.exit_code, 0) << describe(compared);
    EXPECT_EQ(compared.out, path("both.png").string() + "\n");
    EXPECT_EQ(read_bytes(path("both.png")), "png\n");
    expect_error(charlm({"plot", path("run").string(), "--by", "epoch", "--output", path("x.png").string()}), {"--by"}, true);
    EXPECT_TRUE(no_temporary_files_left());
}

TEST_F(CliPlot, NotInstalledIsToldApartFromFailed) {
    const ScopedEnvironment temporary("TMPDIR", path("tmp").string());
    {
        const ScopedEnvironment search_path("PATH", path("bin").string());  // no gnuplot anywhere on it
        expect_error(charlm({"plot", path("run").string()}), {"gnuplot is not installed (apt-get install gnuplot-nox)"});
    }
    fake_gnuplot("echo 'gnuplot> plot' ; printf '\\n  plot x\\n  ^\\n\"%s\" line 5: unknown or ambiguous terminal type\\n' \"$1\" >&2\n"
                 "exit 1\n");
    const ScopedEnvironment search_path("PATH", path("bin").string() + ":/usr/bin:/bin");
    expect_error(charlm({"plot", path("run").string()}), {"gnuplot failed: unknown or ambiguous terminal type"});
    EXPECT_FALSE(fs::exists(path("run") / "loss.png"));
    EXPECT_TRUE(no_temporary_files_left());
}

TEST_F(CliPlot, WithTheRealGnuplot) {
    if (std::system("command -v gnuplot > /dev/null 2>&1") != 0) GTEST_SKIP() << "gnuplot is not installed";
    const ScopedEnvironment temporary("TMPDIR", path("tmp").string());
    const RunResult result = charlm({"plot", path("run").string()});
    ASSERT_EQ(result.exit_code, 0) << describe(result);
    EXPECT_EQ(result.out, (path("run") / "loss.png").string() + "\n");
    EXPECT_EQ(read_bytes(path("run") / "loss.png").substr(0, 4), "\x89PNG");
    expect_error(charlm({"plot", path("run").string(), "--output", path("missing/loss.png").string()}),
                 {"gnuplot failed: cannot open file; output not changed (No such file or directory)"});
    EXPECT_TRUE(no_temporary_files_left());
}

// ---- colour ----

// https://no-color.org: with NO_COLOR set the log has no colour, even on a terminal that could show it.
TEST_F(Cli, NoColorTurnsTheLogsColourOffEvenOnATerminal) {
    const auto checkpoint = trained_run();
    const auto text = write("other.txt", "the cat sat on ZQZ mat!\n");  // unknown characters: a warning on stderr
    const std::vector<std::string> arguments = {"eval", checkpoint.string(), text.string(), "--allow-unknown"};
    const ScopedEnvironment terminal_type("TERM", "xterm-256color");
    {
        const ScopedEnvironment colour("NO_COLOR", "");  // empty counts as unset
        const std::string shown = stderr_on_a_terminal(arguments, directory_);
        EXPECT_NE(shown.find("not in the model's vocabulary"), std::string::npos) << shown;
        EXPECT_GT(count_of(shown, '\x1b'), 0u) << "without NO_COLOR a terminal gets colour; else this test proves nothing\n" << shown;
    }
    const ScopedEnvironment colour("NO_COLOR", "1");
    const std::string shown = stderr_on_a_terminal(arguments, directory_);
    EXPECT_NE(shown.find("not in the model's vocabulary"), std::string::npos) << shown;
    EXPECT_EQ(count_of(shown, '\x1b'), 0u) << shown;
}

// ---- info ----

TEST_F(Cli, InfoShowsWhatReproducingTheRunTakes) {
    const auto checkpoint = trained_run();
    const std::string corpus = fs::absolute(path("corpus.txt")).string();
    // As a run writes it: the corpus's path, size and hash, the characters trained on, and every option.
    const charlm::FileFingerprint fingerprint = charlm::fingerprint_file(path("corpus.txt"));
    RunResult text = charlm({"info", checkpoint.string()});
    ASSERT_EQ(text.exit_code, 0) << describe(text);
    for (const std::string& expected : {"corpus      " + corpus + " (" + std::to_string(fingerprint.size_bytes) + " bytes, sha256 " +
                                            fingerprint.sha256 + ")\n",
                                        std::string("trained     30 steps, "), std::string("\noptions\n")})
        EXPECT_NE(text.out.find(expected), std::string::npos) << expected << "\n" << text.out;
    for (const char* option : {"seq_length +16", "batch_size +4", "learning_rate +0.002", "model.hidden_size +16",
                                      "eval_every +10", "seed +1", "validation_fraction +auto"})
        EXPECT_TRUE(std::regex_search(text.out, std::regex("\n  " + std::string(option) + "\n"))) << option << "\n" << text.out;
    RunResult as_json = charlm({"info", checkpoint.string(), "--json"});
    ASSERT_EQ(as_json.exit_code, 0) << describe(as_json);
    json description = json::parse(as_json.out);
    EXPECT_EQ(description.at("corpus"), corpus);
    EXPECT_EQ(description.at("training_options").at("seq_length"), 16);
    EXPECT_EQ(description.at("corpus_sha256"), fingerprint.sha256);
    const double train_characters = description.at("train_characters").get<double>();
    EXPECT_GT(train_characters, 0);
    EXPECT_DOUBLE_EQ(description.at("epochs").get<double>(), 30.0 * 16 * 4 / train_characters);

    // A checkpoint from before runs recorded their corpus's size and hash: what there is, and no failure.
    const auto older = write("older.safetensors", with_metadata(read_bytes(checkpoint), [&](json&, json&, json& training) {
        for (const char* key : {"corpus_size_bytes", "corpus_sha256", "validation_file_size_bytes", "validation_file_sha256",
                                "train_characters"})
            training["options"].erase(key);
    }));
    text = charlm({"info", older.string()});
    ASSERT_EQ(text.exit_code, 0) << describe(text);
    for (const std::string& expected : {"corpus      " + corpus + " (size and hash not recorded in this checkpoint)\n",
                                        std::string("trained     30 steps\n")})
        EXPECT_NE(text.out.find(expected), std::string::npos) << expected << "\n" << text.out;
    as_json = charlm({"info", older.string(), "--json"});
    description = json::parse(as_json.out);
    EXPECT_TRUE(description.at("corpus_sha256").is_null());
    EXPECT_TRUE(description.at("epochs").is_null());

    // With what checkpoints are to record: the corpus's size and hash, and the characters trained on.
    const std::string sha256(64, 'c');
    const auto recorded = write("recorded.safetensors", with_metadata(read_bytes(checkpoint), [&](json&, json&, json& training) {
        training["options"]["corpus_size_bytes"] = 3456;
        training["options"]["corpus_sha256"] = sha256;
        training["options"]["validation_file_size_bytes"] = nullptr;
        training["options"]["validation_file_sha256"] = nullptr;
        training["options"]["train_characters"] = 1024;
    }));
    text = charlm({"info", recorded.string()});
    ASSERT_EQ(text.exit_code, 0) << describe(text);
    for (const std::string& expected : {"corpus      " + corpus + " (3456 bytes, sha256 " + sha256 + ")\n",
                                        std::string("trained     30 steps, 1.88 epochs\n"),  // 30 x 16 x 4 / 1024
                                        std::string("train text  1024 characters\n")})
        EXPECT_NE(text.out.find(expected), std::string::npos) << expected << "\n" << text.out;
    as_json = charlm({"info", recorded.string(), "--json"});
    description = json::parse(as_json.out);
    EXPECT_EQ(description.at("corpus_size_bytes"), 3456);
    EXPECT_EQ(description.at("corpus_sha256"), sha256);
    EXPECT_EQ(description.at("train_characters"), 1024);
    EXPECT_DOUBLE_EQ(description.at("epochs").get<double>(), 30.0 * 16 * 4 / 1024);
}

TEST_F(Cli, InfoShowsControlCharactersAndCombiningMarksEscapedNeverAsQuestionMarks) {
    const auto checkpoint = trained_run();
    // The same number of characters, four of them a NUL, U+0001, a carriage return and a combining acute accent.
    const auto odd = write("odd.safetensors", with_metadata(read_bytes(checkpoint), [](json&, json& vocab, json&) {
        std::vector<std::uint32_t> code_points = {0, 1, 13, 0x301};
        for (const auto& entry : vocab)
            if (code_points.size() < vocab.size() && entry != 0 && entry != 1 && entry != 13 && entry != 0x301)
                code_points.push_back(entry.get<std::uint32_t>());
        std::sort(code_points.begin(), code_points.end());
        vocab = code_points;
    }));
    const RunResult result = charlm({"info", odd.string()});
    ASSERT_EQ(result.exit_code, 0) << describe(result);
    const auto begin = result.out.find("vocabulary  ");
    ASSERT_NE(begin, std::string::npos) << result.out;
    const std::string line = result.out.substr(begin, result.out.find('\n', begin) - begin);
    for (const char* shown : {"\\0", "U+0001", "\\r", "U+0301", "\\n"}) EXPECT_NE(line.find(shown), std::string::npos) << shown << "\n" << line;
    EXPECT_EQ(line.find('?'), std::string::npos) << line;
    EXPECT_EQ(count_of(result.out, '\r') + count_of(result.out, '\0') + count_of(result.out, '\x01'), 0u) << "raw control characters on stdout";
}

TEST_F(Cli, AForcedRunThatFailsLeavesTheEarlierRunAsItWas) {
    const auto corpus = write("corpus.txt", make_corpus());
    train_tiny(corpus, "run", 20);
    const auto before = snapshot(path("run"));
    std::vector<std::string> arguments = {"train", corpus.string(), "--out", path("run").string(), "--force", "--steps", "30",
                                          "--lr", "1e38", "--clip", "0"};
    arguments.insert(arguments.end(), kTinyModel.begin(), kTinyModel.end());
    const RunResult result = charlm(with_options(arguments, {"--lr", "1e38"}));
    EXPECT_EQ(result.exit_code, 1) << describe(result);
    EXPECT_NE(result.err.find("no checkpoint of this run was saved yet"), std::string::npos) << result.err;
    expect_unchanged(before, snapshot(path("run")));  // best.safetensors and metrics.jsonl included
}

TEST_F(Cli, ResultsThatCannotReachStdoutAreAnError) {
    const std::string checkpoint = trained_run().string(), corpus = path("corpus.txt").string();
    // Through the shell, for its redirection to /dev/full, where every write fails with ENOSPC.
    for (const std::string& command : {"info '" + checkpoint + "'", "eval '" + checkpoint + "' '" + corpus + "'",
                                       "sample '" + checkpoint + "' --length 20 --seed 1"}) {
        const std::string line = "'" CHARLM_BINARY "' " + command + " >/dev/full 2>'" + path("err.txt").string() + "'";
        const int status = std::system(line.c_str());
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << line << " exited " << status;
        const std::string err = read_bytes(path("err.txt"));
        EXPECT_EQ(err.rfind("charlm: error: cannot write the results to standard output", 0), 0u) << err;
    }
}

TEST_F(Cli, ReadsWhereUsersPointAndNamesWhatTheyGave) {
    const auto corpus = write("corpus.txt", make_corpus());
    train_tiny(corpus, "run", 10);
    // --resume given the checkpoint file instead of its folder: the message says which to give.
    expect_error(charlm({"train", "--resume", (path("run") / "last.safetensors").string()}), {"--resume " + path("run").string()}, true);
    // An empty standard input is named as such, not by the copy's temporary name.
    std::vector<std::string> piped = {"train", "-", "--out", path("piped").string()};
    piped.insert(piped.end(), kTinyModel.begin(), kTinyModel.end());
    const RunResult empty = charlm(piped, 60, "/dev/null");
    expect_error(empty, {"standard input", "empty"});
    EXPECT_EQ(empty.err.find(".tmp-"), std::string::npos) << empty.err;
    // eval reads standard input with -.
    const RunResult file = charlm({"eval", (path("run") / "last.safetensors").string(), corpus.string(), "--json"});
    const RunResult piped_eval = charlm({"eval", (path("run") / "last.safetensors").string(), "-", "--json"}, 60, corpus.string());
    ASSERT_EQ(piped_eval.exit_code, 0) << describe(piped_eval);
    EXPECT_EQ(piped_eval.out, file.out);
    // A corpus whose name makes no directory name trains into runs/corpus, never runs/ or its parent.
    const auto dotted = write("..txt", make_corpus());
    std::vector<std::string> arguments = {"train", dotted.string(), "--steps", "5"};
    arguments.insert(arguments.end(), kTinyModel.begin(), kTinyModel.end());
    const RunResult unnamed = charlm(arguments);
    ASSERT_EQ(unnamed.exit_code, 0) << describe(unnamed);
    EXPECT_TRUE(fs::exists(path("runs") / "corpus" / "last.safetensors"));
}

// =============================== precision ===============================

TEST_F(Cli, PrecisionBf16IsRefusedWithTheReasonWhereTheCpuLacksTheInstructions) {
    const auto checkpoint = trained_run();
    const auto corpus = path("corpus.txt");
    ScopedEnvironment no_bf16("CHARLM_BF16", "0");  // what a CPU without AVX512_BF16 answers, on any machine
    const std::vector<std::string> mentions = {"--precision bf16 needs a CPU with bf16 instructions (AVX512_BF16)",
                                               "give --precision fp32 or auto"};
    expect_train_refused(corpus, mentions, {"--precision", "bf16"}, /*usage_error=*/true);
    expect_error(charlm({"sample", checkpoint.string(), "--precision", "bf16"}), mentions, true);
    expect_error(charlm({"eval", checkpoint.string(), corpus.string(), "--precision", "bf16"}), mentions, true);
    expect_error(charlm({"serve", checkpoint.string(), "--port", "0", "--precision", "bf16"}), mentions, true);
    expect_error(charlm({"bench", "--model", "2x128", "--seconds", "0.1", "--precision", "bf16"}), mentions, true);
    // auto is fp32 there, and training says why
    const RunResult automatic = train_tiny(corpus, "auto", 10);
    EXPECT_NE(automatic.err.find("products in fp32: this CPU has no bf16 instructions (AVX512_BF16)"), std::string::npos)
        << describe(automatic);
}

// CHARLM_BF16=emulate runs --precision bf16 on the products' emulation on any CPU (what the bf16 tests of the
// command line take where the CPU lacks the instructions); auto still never picks it, and a value that is
// neither 0 nor emulate is refused before any work, as CHARLM_KERNELS's are.
TEST_F(Cli, CharlmBf16EmulateRunsBf16AnywhereAndOtherValuesAreRefused) {
    const auto corpus = write("corpus.txt", make_corpus());
    {
        ScopedEnvironment emulate("CHARLM_BF16", "emulate");
        const RunResult bf16 = train_tiny(corpus, "emulated", 20, {"--precision", "bf16"});
        EXPECT_NE(bf16.err.find("products in bf16, as --precision bf16 asks"), std::string::npos) << describe(bf16);
        for (const json& record : read_metrics(path("emulated") / "metrics.jsonl")) EXPECT_EQ(record.at("precision"), "bf16");
        const RunResult fp32 = train_tiny(corpus, "fp32", 20, {"--precision", "fp32"});
        EXPECT_NE(read_metrics(path("emulated") / "metrics.jsonl").back().at("train_loss"),
                  read_metrics(path("fp32") / "metrics.jsonl").back().at("train_loss"))
            << "the emulated bf16 products left fp32's numbers unchanged";
        const auto longer = write("longer.txt", make_corpus(4000));  // bench's windows are 50 x 50
        const RunResult automatic = charlm({"bench", "--model", "2x128", "--seconds", "0.05", "--corpus", longer.string()});
        ASSERT_EQ(automatic.exit_code, 0) << describe(automatic);
        EXPECT_NE(automatic.err.find("bf16 products on their emulation, as CHARLM_BF16=emulate asks"), std::string::npos)
            << describe(automatic);
        EXPECT_NE(automatic.err.find("products in fp32: bf16 products would run on their emulation"), std::string::npos)
            << describe(automatic);
    }
    ScopedEnvironment unknown("CHARLM_BF16", "yes");
    expect_error(charlm({"train", corpus.string(), "--out", path("refused").string()}),
                 {"CHARLM_BF16=yes is not 0", "or emulate", "unset it"}, /*usage_error=*/true);
    EXPECT_FALSE(fs::exists(path("refused"))) << "the run directory was made before CHARLM_BF16 was refused";
    expect_error(charlm({"sample", (path("fp32") / "last.safetensors").string(), "--length", "5"}), {"CHARLM_BF16=yes"}, true);
}

TEST_F(Cli, TrainSaysAndRecordsItsPrecisionAndAResumeKeepsIt) {
    const auto corpus = write("corpus.txt", make_corpus());
    const RunResult fp32 = train_tiny(corpus, "fp32", 20, {"--precision", "fp32"});
    EXPECT_NE(fp32.err.find("products in fp32, as --precision fp32 asks"), std::string::npos) << describe(fp32);
    for (const json& record : read_metrics(path("fp32") / "metrics.jsonl")) EXPECT_EQ(record.at("precision"), "fp32");
    const RunResult info = charlm({"info", (path("fp32") / "last.safetensors").string()});
    EXPECT_NE(info.out.find("  precision "), std::string::npos) << describe(info);
    // The tiny model's hidden size is under 128: auto does not time it, and is fp32 on every machine (where the
    // CPU lacks the instructions, for that reason first).
    const RunResult automatic = train_tiny(corpus, "auto", 20);
    EXPECT_NE(automatic.err.find(charlm::cpu_runs_bf16() ? "products in fp32: a hidden size under 128"
                                                         : "products in fp32: this CPU has no bf16 instructions"),
              std::string::npos)
        << describe(automatic);

    const Bf16ForChildProcesses emulation_where_needed;  // the instructions, else their emulation

    const RunResult bf16 = train_tiny(corpus, "bf16", 20, {"--precision", "bf16"});
    EXPECT_NE(bf16.err.find("products in bf16, as --precision bf16 asks"), std::string::npos) << describe(bf16);
    train_tiny(corpus, "halves", 10, {"--precision", "bf16"});
    // Resumed with auto (the default), the run keeps its bf16 and goes on as one run would.
    const RunResult resumed = charlm({"train", "--resume", path("halves").string(), "--steps", "20"});
    ASSERT_EQ(resumed.exit_code, 0) << describe(resumed);
    EXPECT_NE(resumed.err.find("products in bf16, the run's so far"), std::string::npos) << describe(resumed);
    const auto straight = read_metrics(path("bf16") / "metrics.jsonl"), halves = read_metrics(path("halves") / "metrics.jsonl");
    ASSERT_EQ(straight.size(), halves.size());
    for (std::size_t i = 0; i < straight.size(); ++i) {
        EXPECT_EQ(halves[i].at("precision"), "bf16");
        EXPECT_EQ(halves[i].at("train_loss"), straight[i].at("train_loss")) << "record " << i;
        EXPECT_EQ(halves[i].at("validation_loss"), straight[i].at("validation_loss")) << "record " << i;
    }
    EXPECT_NE(straight.back().at("train_loss"), read_metrics(path("fp32") / "metrics.jsonl").back().at("train_loss"))
        << "bf16 products left fp32's numbers unchanged";
    // Resumed at another precision, it says the numbers will differ.
    const RunResult other = charlm({"train", "--resume", path("halves").string(), "--steps", "25", "--precision", "fp32"});
    ASSERT_EQ(other.exit_code, 0) << describe(other);
    EXPECT_NE(other.err.find("the run trained with bf16 products and goes on with fp32: its numbers will differ"), std::string::npos)
        << describe(other);
    // Any checkpoint samples at either precision.
    for (const char* precision : {"fp32", "bf16"}) {
        const RunResult sampled = charlm({"sample", (path("bf16") / "last.safetensors").string(), "--length", "20", "--seed", "3",
                                          "--precision", precision});
        EXPECT_EQ(sampled.exit_code, 0) << describe(sampled);
    }
}
