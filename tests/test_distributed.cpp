// Data-parallel training under mpirun, end to end: the same path as one process, resumes across process
// counts, Ctrl-C, a killed process, and processes that disagree. Skipped where MPI is not installed.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "charlm/batches.hpp"
#include "charlm/checkpoint.hpp"
#include "charlm/communicator.hpp"
#include "charlm/error.hpp"
#include "charlm/precision.hpp"
#include "test_helpers.hpp"

namespace {

namespace fs = std::filesystem;
using charlm::testing::TemporaryDirectory;
using charlm::testing::Bf16ForChildProcesses;

// ---- the one-process communicator and the agreement on errors ----

TEST(Communicator, OneProcessIsRankZeroOfOne) {
    const charlm::Communicator& alone = charlm::single_process();
    EXPECT_EQ(alone.rank(), 0);
    EXPECT_EQ(alone.size(), 1);
    EXPECT_TRUE(alone.is_first());
    std::vector<float> values{1.5f, -2.0f};
    alone.sum(values);
    EXPECT_EQ(values, (std::vector<float>{1.5f, -2.0f}));
    EXPECT_EQ(alone.gather_all("text"), std::vector<std::string>{"text"});
}

TEST(Communicator, OneProcessRunsWorkAndLetsItsErrorThroughUnchanged) {
    bool ran = false;
    charlm::run_on_every_process(charlm::single_process(), [&] { ran = true; });
    EXPECT_TRUE(ran);
    try {
        charlm::run_on_every_process(charlm::single_process(), [] { throw charlm::UsageError("bad option"); });
        FAIL() << "the error was swallowed";
    } catch (const charlm::UsageError& error) {
        EXPECT_STREQ(error.what(), "bad option");
        EXPECT_FALSE(error.shared_by_every_process());
    }
}

TEST(Communicator, AProcessOutsideAnyLauncherIsAlone) {
    charlm::testing::ScopedEnvironment open_mpi("OMPI_COMM_WORLD_SIZE", "1");
    EXPECT_FALSE(charlm::DistributedRun::launched_with_others());
    charlm::testing::ScopedEnvironment two("OMPI_COMM_WORLD_SIZE", "2");
    EXPECT_TRUE(charlm::DistributedRun::launched_with_others());
}

// ---- running mpirun ----

struct Outcome {
    int exit_code = -1;
    std::string out, err;
};

std::string read_file(const fs::path& path) {
    std::ifstream file(path, std::ios::binary);
    std::stringstream text;
    text << file.rdbuf();
    return text.str();
}

// `text` as one word for the shell.
std::string quoted(const std::string& text) {
    std::string word = "'";
    for (const char c : text) word += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return word + "'";
}

// Where mpirun and an MPI build of charlm are both here; else the reason to skip.
std::string why_no_mpi() {
    if (!charlm::DistributedRun::built_with_mpi()) return "charlm was built without MPI (libopenmpi-dev)";
    if (std::system("command -v mpirun > /dev/null 2>&1") != 0) return "mpirun is not installed (openmpi-bin)";
    return "";
}

#define SKIP_WITHOUT_MPI()                                          \
    do {                                                            \
        const std::string reason = why_no_mpi();                    \
        if (!reason.empty()) GTEST_SKIP() << "skipped: " << reason; \
    } while (0)

// Open MPI refuses root unless told (CI runs as root), and more processes than cores unless allowed.
// Under the sanitizers (scripts/test.sh --sanitize), LeakSanitizer would count what Open MPI keeps until
// exit, much of it in plugins it has unloaded by then: its leak check is left to the tests of one process.
std::string mpirun(int processes) {
    return "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 "
           "ASAN_OPTIONS=\"${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0\" mpirun -np " +
           std::to_string(processes) + " ";
}

class Distributed : public ::testing::Test {
protected:
    void SetUp() override {
        SKIP_WITHOUT_MPI();
        // Enough text for 100 steps of 16 streams x 20 and a held-out part.
        std::string text;
        std::mt19937_64 rng(7);
        const std::vector<std::string> words{"the ", "king ", "and ", "queen ", "said ", "to ", "me, ", "thou ", "art\n", "hark! "};
        while (text.size() < 60000) text += words[rng() % words.size()];
        std::ofstream(directory_.path() / "corpus.txt") << text;
    }

    // `command` through the shell in the test's directory, its streams kept apart.
    Outcome run(const std::string& command, int timeout_seconds = 120) {
        const fs::path out = directory_.path() / "out.txt", err = directory_.path() / "err.txt";
        const std::string full = "cd " + quoted(directory_.path().string()) + " && timeout -k 5 " + std::to_string(timeout_seconds) +
                                 " sh -c " + quoted(command) + " > " + quoted(out.string()) + " 2> " + quoted(err.string()) +
                                 " < /dev/null";
        const int status = std::system(full.c_str());
        return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_file(out), read_file(err)};
    }

    // The default regularization (--dropout 0.1, locked masks): the masks are keyed by the stream's place in the
    // whole batch, so that every process count draws the same ones.
    std::string train(const std::string& run_directory, int steps, const std::string& extra = "") {
        return std::string(CHARLM_BINARY) + " train corpus.txt --out " + run_directory + " --steps " + std::to_string(steps) +
               " --eval-every 10 --hidden 32 --layers 2 --embed 16 --batch 16 --seq 20 --threads 1 " + extra;
    }

    // The validation losses metrics.jsonl recorded, in order; with `whole`, the figures on all the
    // held-out text at the ends of runs as well.
    std::vector<double> validation_losses(const std::string& run_directory, bool whole = true) {
        std::vector<double> losses;
        std::ifstream file(directory_.path() / run_directory / "metrics.jsonl");
        for (std::string line; std::getline(file, line);) {
            const nlohmann::json record = nlohmann::json::parse(line);
            if (record.contains("validation_loss")) losses.push_back(record.at("validation_loss").get<double>());
            if (whole && record.contains("final_validation_loss")) losses.push_back(record.at("final_validation_loss").get<double>());
        }
        return losses;
    }

    // Within `tolerance` of the figures' size: processes sum the gradients in another order than one process does
    // (fp32 paths measured 2e-8 apart after 100 steps).
    void expect_same_path(const std::vector<double>& expected, const std::vector<double>& actual, const std::string& what,
                          double tolerance = 1e-4) {
        ASSERT_EQ(actual.size(), expected.size()) << what;
        ASSERT_FALSE(expected.empty()) << what;
        for (std::size_t i = 0; i < expected.size(); ++i)
            EXPECT_NEAR(actual[i], expected[i], tolerance * std::abs(expected[i])) << what << ", validation " << i;
    }

    charlm::Checkpoint checkpoint(const std::string& path) { return charlm::load_checkpoint(directory_.path() / path); }

    TemporaryDirectory directory_;
};

int count_errors(const std::string& err) {
    int count = 0;
    for (std::size_t at = 0; (at = err.find("charlm: error:", at)) != std::string::npos; ++at) ++count;
    return count;
}

TEST_F(Distributed, TwoAndThreeProcessesFollowOneProcessPath) {
    const Outcome one_run = run(train("one", 100));
    ASSERT_EQ(one_run.exit_code, 0);
    const std::string one_out = one_run.out;
    const Outcome two = run(mpirun(2) + train("two", 100));
    ASSERT_EQ(two.exit_code, 0) << two.err;
    // 16 streams over 3 processes: blocks of 6, 5 and 5.
    const Outcome three = run(mpirun(3) + train("three", 100));
    ASSERT_EQ(three.exit_code, 0) << three.err;
    // More processes than cores make each step wait, and charlm says so where that is the case.
    const bool crowded = std::thread::hardware_concurrency() < 3;
    EXPECT_EQ(three.err.find("every step will wait for a core") != std::string::npos, crowded) << three.err;
    const std::vector<double> one = validation_losses("one");
    EXPECT_EQ(one.size(), 11u);  // 10 validations on part of the held-out text, then one on all of it
    expect_same_path(one, validation_losses("two"), "2 processes");
    expect_same_path(one, validation_losses("three"), "3 processes");
    // Process 0 alone talks: one summary, one start line.
    EXPECT_EQ(std::count(two.out.begin(), two.out.end(), '\n'), std::count(one_out.begin(), one_out.end(), '\n')) << two.out;
    EXPECT_NE(two.err.find("2 processes share each batch"), std::string::npos) << two.err;
}

TEST_F(Distributed, TheSameProcessesAndThreadsGiveTheSameBits) {
    ASSERT_EQ(run(mpirun(2) + train("first", 30)).exit_code, 0);
    ASSERT_EQ(run(mpirun(2) + train("second", 30)).exit_code, 0);
    EXPECT_EQ(validation_losses("first"), validation_losses("second"));
    const charlm::Checkpoint first = checkpoint("first/last.safetensors"), second = checkpoint("second/last.safetensors");
    for (std::size_t i = 0; i < first.model->parameters().size(); ++i)
        EXPECT_TRUE(first.model->parameters()[i].value == second.model->parameters()[i].value) << first.model->parameters()[i].name;
}

// bf16 products (docs/speed.md) keep the promises of the fp32 path: processes follow one process's path within the
// same tolerance, and the same processes and threads give the same bits. The bf16 rounding is of each process's own
// operands, so only the order of the gradients' sums across processes differs, as in fp32.
TEST_F(Distributed, AtBf16ProcessesFollowOneProcessPathAndRepeatTheirBits) {
    const Bf16ForChildProcesses bf16;  // the instructions, else their emulation
    ASSERT_EQ(run(train("one", 100, "--precision bf16")).exit_code, 0);
    const Outcome processes = run(mpirun(2) + train("two", 100, "--precision bf16"));
    ASSERT_EQ(processes.exit_code, 0) << processes.err;
    ASSERT_EQ(run(mpirun(2) + train("again", 100, "--precision bf16")).exit_code, 0);
    ASSERT_EQ(run(train("fp32", 100, "--precision fp32")).exit_code, 0);
    // A wider bound than fp32's 1e-4: where the processes' sums leave a weight one fp32 bit apart, it may round to
    // the other bf16 neighbour, 2^-8 of it away, and the paths part faster (measured up to 1.0e-4 after 100 steps,
    // against 2e-8 at fp32).
    const std::vector<double> one = validation_losses("one"), two = validation_losses("two"), fp32 = validation_losses("fp32");
    expect_same_path(one, two, "2 processes at bf16", 3e-4);
    EXPECT_EQ(two, validation_losses("again"));
    // And the processes' path is nearer one process's than fp32's is: bf16's, not fp32's under another name.
    ASSERT_EQ(fp32.size(), one.size());
    double processes_apart = 0, fp32_apart = 0;
    for (std::size_t i = 0; i < one.size(); ++i) {
        processes_apart = std::max(processes_apart, std::abs(two[i] - one[i]));
        fp32_apart = std::max(fp32_apart, std::abs(fp32[i] - one[i]));
    }
    EXPECT_LT(processes_apart, fp32_apart);
    std::ifstream metrics(directory_.path() / "two" / "metrics.jsonl");
    for (std::string line; std::getline(metrics, line);) {
        const nlohmann::json record = nlohmann::json::parse(line);
        if (record.contains("step") && record.contains("train_loss")) {
            EXPECT_EQ(record.at("precision"), "bf16") << line;
        }
    }
}

TEST_F(Distributed, ACheckpointHoldsEveryStreamAndResumesOnAnyProcessCount) {
    ASSERT_EQ(run(train("whole", 100)).exit_code, 0);
    // 2 processes, then 1; and 1, then 3.
    ASSERT_EQ(run(mpirun(2) + train("two_then_one", 50)).exit_code, 0);
    const charlm::Checkpoint halfway = checkpoint("two_then_one/last.safetensors");
    ASSERT_TRUE(halfway.carried_state);
    EXPECT_EQ(halfway.carried_state->hidden.front().rows(), 16);  // all streams, not process 0's block
    EXPECT_GT(halfway.carried_state->hidden.front().bottomRows(8).cwiseAbs().maxCoeff(), 0.0f);  // process 1's, carried
    const Outcome one = run(std::string(CHARLM_BINARY) + " train --resume two_then_one --steps 100 --threads 1");
    ASSERT_EQ(one.exit_code, 0) << one.err;
    EXPECT_NE(one.err.find("trained on 2 processes and goes on with 1"), std::string::npos) << one.err;

    ASSERT_EQ(run(train("one_then_three", 50)).exit_code, 0);
    const Outcome three = run(mpirun(3) + std::string(CHARLM_BINARY) + " train --resume one_then_three --steps 100 --threads 1");
    ASSERT_EQ(three.exit_code, 0) << three.err;

    const std::vector<double> whole = validation_losses("whole", false);
    expect_same_path(whole, validation_losses("two_then_one", false), "2 processes, then 1");
    expect_same_path(whole, validation_losses("one_then_three", false), "1 process, then 3");
}

// Every process starts from the checkpoint's weights and draws the new characters' rows from the seed:
// the run follows one process's path, and process 0 alone keeps each validation's checkpoint.
TEST_F(Distributed, FineTuningFromACheckpointFollowsOneProcessPath) {
    ASSERT_EQ(run(train("base", 20)).exit_code, 0);
    std::string text;
    std::mt19937_64 rng(11);
    const std::vector<std::string> words{"el ", "rey ", "y ", "la ", "reina ", "¿dijo? ", "señor, ", "mañana\n", "¡oíd! "};
    while (text.size() < 30000) text += words[rng() % words.size()];
    std::ofstream(directory_.path() / "nuevo.txt") << text;
    const std::string tune = std::string(CHARLM_BINARY) + " train nuevo.txt --init-from base/best.safetensors --steps 30 --eval-every 10 "
                                                          "--batch 16 --seq 20 --threads 1 --dropout 0 --keep-checkpoints --out ";
    const Outcome one = run(tune + "one");
    ASSERT_EQ(one.exit_code, 0) << one.err;
    const Outcome two = run(mpirun(2) + tune + "two");
    ASSERT_EQ(two.exit_code, 0) << two.err;
    EXPECT_NE(two.err.find("the text adds "), std::string::npos) << two.err;
    expect_same_path(validation_losses("one"), validation_losses("two"), "2 processes");
    EXPECT_EQ(checkpoint("two/last.safetensors").vocab.code_points(), checkpoint("one/last.safetensors").vocab.code_points());
    std::size_t kept = 0;
    for (const auto& entry : fs::directory_iterator(directory_.path() / "two"))
        if (entry.path().filename().string().starts_with("step-")) ++kept;
    EXPECT_EQ(kept, 3u);
}

// Starts `command` through the shell in its own process group; returns the shell's pid.
pid_t start(const std::string& command, const fs::path& directory) {
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::setpgid(0, 0);
        if (::chdir(directory.c_str()) != 0) ::_exit(126);
        ::execl("/bin/sh", "sh", "-c", ("exec env " + command + " > out.txt 2> err.txt < /dev/null").c_str(), nullptr);
        ::_exit(127);
    }
    return pid;
}

// The exit code, or -1 where it did not end within `seconds` (it is then killed).
int wait_for(pid_t pid, double seconds) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    int status = 0;
    while (std::chrono::steady_clock::now() < deadline) {
        if (::waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ::kill(-pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return -1;
}

// A child process of `parent`, read from /proc (procps's pgrep may not be installed); 0 where none.
pid_t child_of(pid_t parent) {
    for (const auto& entry : fs::directory_iterator("/proc")) {
        const std::string name = entry.path().filename().string();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        // /proc/PID/stat: pid (command) state ppid ...; the command may hold spaces, so read after its ')'.
        const std::string stat = read_file(entry.path() / "stat");
        const std::size_t close = stat.rfind(')');
        if (close == std::string::npos) continue;
        std::istringstream rest(stat.substr(close + 1));
        std::string state;
        pid_t ppid = 0;
        if (rest >> state >> ppid && ppid == parent) return static_cast<pid_t>(std::stoi(name));
    }
    return 0;
}

bool wait_for_file(const fs::path& path, double seconds) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (!fs::exists(path))
        if (std::chrono::steady_clock::now() > deadline) return false;
        else std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return true;
}

// mpirun passes SIGUSR1 on to every process: each stops at the same step, the first saves, all exit 130.
TEST_F(Distributed, Sigusr1ToMpirunStopsEveryProcessAtOneStepAndTheFirstSaves) {
    const pid_t pid = start(mpirun(2) + train("stopped", 1000000), directory_.path());
    ASSERT_TRUE(wait_for_file(directory_.path() / "stopped" / "last.safetensors", 60));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ::kill(pid, SIGUSR1);
    EXPECT_EQ(wait_for(pid, 60), 130);
    const std::string err = read_file(directory_.path() / "err.txt"), out = read_file(directory_.path() / "out.txt");
    std::smatch stopped;
    ASSERT_TRUE(std::regex_search(err, stopped, std::regex("stopped at step (\\d+)"))) << err;
    EXPECT_NE(out.find("(interrupted)"), std::string::npos) << out;
    EXPECT_EQ(checkpoint("stopped/last.safetensors").training.step, std::stoll(stopped[1].str()));
}

// Ctrl-C reaches mpirun alone (each process has a process group of its own): it sends SIGTERM to
// every process a second later, which they answer as SIGUSR1, and reports 1 itself.
TEST_F(Distributed, CtrlCToMpirunStopsEveryProcessAtOneStepAndTheFirstSaves) {
    const pid_t pid = start(mpirun(2) + train("stopped", 1000000), directory_.path());
    ASSERT_TRUE(wait_for_file(directory_.path() / "stopped" / "last.safetensors", 60));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ::kill(pid, SIGINT);
    const int exit_code = wait_for(pid, 60);
    EXPECT_NE(exit_code, -1) << "mpirun did not end";
    EXPECT_NE(exit_code, 0);
    const std::string err = read_file(directory_.path() / "err.txt"), out = read_file(directory_.path() / "out.txt");
    std::smatch stopped;
    ASSERT_TRUE(std::regex_search(err, stopped, std::regex("stopped at step (\\d+)"))) << err;
    EXPECT_EQ(checkpoint("stopped/last.safetensors").training.step, std::stoll(stopped[1].str()));
}

TEST_F(Distributed, AKilledProcessEndsTheRunAndItResumes) {
    const pid_t pid = start(mpirun(2) + train("killed", 1000000), directory_.path());
    ASSERT_TRUE(wait_for_file(directory_.path() / "killed" / "last.safetensors", 60));
    // One of mpirun's children: a training process.
    const pid_t child = child_of(pid);
    ASSERT_GT(child, 0);
    ::kill(child, SIGKILL);
    // The run has a million steps to go: ending at all is the answer to the kill, so the limit only catches a hang.
    const int exit_code = wait_for(pid, 120);
    EXPECT_NE(exit_code, -1) << "the run waited for its killed process";
    EXPECT_NE(exit_code, 0);
    const std::int64_t saved = checkpoint("killed/last.safetensors").training.step;
    EXPECT_GT(saved, 0);
    const Outcome resumed = run(mpirun(2) + std::string(CHARLM_BINARY) + " train --resume killed --steps " + std::to_string(saved + 10) +
                                " --threads 1");
    EXPECT_EQ(resumed.exit_code, 0) << resumed.err;
    EXPECT_EQ(checkpoint("killed/last.safetensors").training.step, saved + 10);
}

TEST_F(Distributed, ProcessesThatReadDifferentTextsAreRefused) {
    std::ofstream(directory_.path() / "other.txt") << read_file(directory_.path() / "corpus.txt") << "one line more\n";
    // Process 1 reads other.txt, under another name as well.
    const std::string per_process = mpirun(2) + "sh -c 'if [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then cp other.txt text.txt.1; exec " +
                                    std::string(CHARLM_BINARY) +
                                    " train text.txt.1 --out differ --steps 10 --threads 1; else cp corpus.txt text.txt.0; exec " +
                                    std::string(CHARLM_BINARY) + " train text.txt.0 --out differ --steps 10 --threads 1; fi'";
    const Outcome outcome = run(per_process);
    EXPECT_EQ(outcome.exit_code, 2) << outcome.err;
    EXPECT_EQ(count_errors(outcome.err), 1) << outcome.err;
    EXPECT_NE(outcome.err.find("process 1 of 2"), std::string::npos) << outcome.err;
    EXPECT_NE(outcome.err.find("reads another text"), std::string::npos) << outcome.err;
    EXPECT_FALSE(fs::exists(directory_.path() / "differ" / "last.safetensors"));
}

TEST_F(Distributed, ProcessesGivenDifferentOptionsAreRefused) {
    const Outcome outcome = run(mpirun(2) + "sh -c 'exec " + std::string(CHARLM_BINARY) +
                                " train corpus.txt --out differ --steps 10 --threads 1 --lr 0.00$((OMPI_COMM_WORLD_RANK + 1))'");
    EXPECT_EQ(outcome.exit_code, 2) << outcome.err;
    EXPECT_EQ(count_errors(outcome.err), 1) << outcome.err;
    EXPECT_NE(outcome.err.find("was given other training options"), std::string::npos) << outcome.err;
    EXPECT_NE(outcome.err.find("learning_rate"), std::string::npos) << outcome.err;
}

// mpirun -np N charlm eval: each process scores a block of the streams, and the first alone prints the
// figure that one process gives.
TEST_F(Distributed, ScoringOnSeveralProcessesGivesTheOneProcessFigure) {
    ASSERT_EQ(run(train("model", 10)).exit_code, 0);
    const std::string eval = std::string(CHARLM_BINARY) + " eval model/last.safetensors corpus.txt --json --threads 1 --precision fp32";
    const Outcome one = run(eval);
    ASSERT_EQ(one.exit_code, 0) << one.err;
    const nlohmann::json alone = nlohmann::json::parse(one.out);
    for (const int processes : {2, 3}) {
        SCOPED_TRACE(processes);
        const Outcome several = run(mpirun(processes) + eval);
        ASSERT_EQ(several.exit_code, 0) << several.err;
        ASSERT_EQ(std::count(several.out.begin(), several.out.end(), '\n'), 1) << "the first process alone prints: " << several.out;
        const nlohmann::json shared = nlohmann::json::parse(several.out);
        EXPECT_EQ(shared.at("characters_scored"), alone.at("characters_scored"));
        const double expected = alone.at("nats_per_character").get<double>();
        EXPECT_NEAR(shared.at("nats_per_character").get<double>(), expected, 1e-6 * expected);
    }
    // Adapting reads one stream, and standard input reaches one process: both refused once, before any work.
    const Outcome adapting = run(mpirun(2) + eval + " --adapt");
    EXPECT_EQ(adapting.exit_code, 2) << adapting.err;
    EXPECT_EQ(count_errors(adapting.err), 1) << adapting.err;
    EXPECT_NE(adapting.err.find("--adapt reads the text as one stream"), std::string::npos) << adapting.err;
    const Outcome piped = run(mpirun(2) + std::string(CHARLM_BINARY) + " eval model/last.safetensors - --threads 1");
    EXPECT_EQ(piped.exit_code, 2) << piped.err;
    EXPECT_EQ(count_errors(piped.err), 1) << piped.err;
    EXPECT_NE(piped.err.find("save it to a file and score that"), std::string::npos) << piped.err;
    EXPECT_TRUE(piped.out.empty()) << piped.out;
}

TEST_F(Distributed, OnlyTrainingAndScoringRunAsSeveralProcesses) {
    ASSERT_EQ(run(train("model", 10)).exit_code, 0);
    const Outcome sample = run(mpirun(2) + std::string(CHARLM_BINARY) + " sample model/last.safetensors --length 10");
    EXPECT_EQ(sample.exit_code, 2);
    EXPECT_EQ(count_errors(sample.err), 1) << sample.err;
    EXPECT_NE(sample.err.find("without mpirun"), std::string::npos) << sample.err;
    EXPECT_TRUE(sample.out.empty()) << sample.out;
    // A pipe is read by one process only.
    const Outcome piped = run(mpirun(2) + std::string(CHARLM_BINARY) + " train /dev/stdin --out piped --steps 5 --threads 1");
    EXPECT_EQ(piped.exit_code, 2) << piped.err;
    EXPECT_EQ(count_errors(piped.err), 1) << piped.err;
    EXPECT_NE(piped.err.find("cannot all read a pipe"), std::string::npos) << piped.err;
    // A shell's process substitution, which mpirun does not pass on (<(cat corpus.txt)).
    const Outcome substituted = run(mpirun(2) + std::string(CHARLM_BINARY) + " train /dev/fd/63 --out substituted --steps 5 --threads 1");
    EXPECT_EQ(substituted.exit_code, 2) << substituted.err;
    EXPECT_NE(substituted.err.find("save the text to a file first"), std::string::npos) << substituted.err;
    // More processes than streams.
    std::string crowded_command = train("crowded", 5);  // with --batch 2 in place of its 16: an option given twice is refused
    crowded_command.replace(crowded_command.find("--batch 16"), std::string("--batch 16").size(), "--batch 2");
    const Outcome crowded = run(mpirun(3) + crowded_command);
    EXPECT_EQ(crowded.exit_code, 2) << crowded.err;
    EXPECT_EQ(count_errors(crowded.err), 1) << crowded.err;
    EXPECT_NE(crowded.err.find("3 processes share --batch 2"), std::string::npos) << crowded.err;
}

}  // namespace
