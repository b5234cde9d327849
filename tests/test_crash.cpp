// Crash safety of `charlm train`: SIGKILL at any moment leaves checkpoints that load and a run that resumes; SIGTERM and SIGINT save and exit 130.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "charlm/checkpoint.hpp"
#include "charlm/error.hpp"
#include "child_process.hpp"
#include "test_helpers.hpp"

namespace {

namespace fs = std::filesystem;
using charlm::testing::ChildProcess;
using charlm::testing::read_file;
using Clock = std::chrono::steady_clock;
using charlm::testing::TemporaryDirectory;

// A corpus of a few thousand words with multi-byte characters, the same on every run.
fs::path write_corpus(const TemporaryDirectory& directory) {
    const std::vector<std::string> words = {"the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "naïve",
                                            "café", "κόσμε", "日本語", "crème", "brûlée", "and", "of", "to", "a"};
    std::mt19937_64 rng(7);
    std::string text;
    for (int i = 0; i < 2500; ++i) {
        text += words[rng() % words.size()];
        text += (i % 12 == 11) ? ".\n" : " ";
    }
    return directory.write("corpus.txt", text);
}

// The step bound is out of reach: a run that finished by itself before its kill would test nothing.
const std::vector<std::string> kTinyModel = {"--layers", "1", "--hidden", "32", "--embed", "8", "--seq", "16",
                                             "--batch", "4", "--steps", "10000000", "--threads", "1"};

std::vector<std::string> fresh_train(const fs::path& corpus, const fs::path& run, const std::string& eval_every) {
    std::vector<std::string> arguments = {"train", corpus.string(), "--out", run.string(), "--eval-every", eval_every};
    arguments.insert(arguments.end(), kTinyModel.begin(), kTinyModel.end());
    return arguments;
}

// Loads a checkpoint as sample, eval and --resume do; a half-written file fails here.
std::optional<charlm::Checkpoint> load(const fs::path& path) {
    try {
        return charlm::load_checkpoint(path);
    } catch (const charlm::Error& error) {
        ADD_FAILURE() << path << " does not load: " << error.what();
        return std::nullopt;
    }
}

// What a killed run may leave in its directory: the checkpoints, the metrics, the corpus's ids, the lock
// file (whose lock died with the process), and temporary files (".NAME.tmp-XXXXXX") that are never read, since
// rename() is the only way a checkpoint appears.
// Returns how many temporary files there are.
int expect_only_expected_files(const fs::path& run) {
    int temporaries = 0;
    for (const auto& entry : fs::directory_iterator(run)) {
        const std::string name = entry.path().filename().string();
        const bool temporary = name.rfind(".last.safetensors.tmp-", 0) == 0 || name.rfind(".best.safetensors.tmp-", 0) == 0 ||
                               name.rfind(".corpus.ids.tmp-", 0) == 0;
        temporaries += temporary;
        EXPECT_TRUE(temporary || name == "last.safetensors" || name == "best.safetensors" || name == "metrics.jsonl" ||
                    name == "corpus.ids" || name == ".lock")
            << "unexpected file in the run directory: " << name;
    }
    return temporaries;
}

// How long a wait for something the test is sure to see may last: long enough that only a hang reaches it,
// however slow or shared the machine (the sanitizers, ctest -j). No assertion is about how fast things are.
constexpr double kHangSeconds = 120;

// Waits until `child` has used `cpu_seconds` of CPU time (or has exited): a point in its work that a busy
// machine does not move, unlike a moment on the wall clock.
void wait_for_cpu_seconds(ChildProcess& child, double cpu_seconds) {
    const auto give_up = Clock::now() + std::chrono::duration<double>(kHangSeconds);
    while (child.cpu_seconds() < cpu_seconds && !child.poll_exit() && Clock::now() < give_up)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

TEST(CrashSafety, KillingTrainingAtRandomMomentsNeverCorruptsCheckpointsAndResumeContinues) {
    TemporaryDirectory directory;
    const fs::path corpus = write_corpus(directory);
    const fs::path run = directory.path() / "run";
    const fs::path last = run / "last.safetensors", best = run / "best.safetensors";
    std::mt19937_64 rng(20240611);
    // Moments in CPU time (a step of this model takes about a millisecond of it): a few hundred steps at most.
    std::uniform_real_distribution<double> kill_after_cpu_seconds(0.1, 1.0);

    std::int64_t previous_step = -1;
    int temporaries_left = 0, kills_between_write_and_rename = 0;
    std::vector<std::int64_t> steps_after_round;
    constexpr int kRounds = 8;
    for (int round = 0; round < kRounds; ++round) {
        // Until a last.safetensors exists there is nothing to resume, so the run starts afresh.
        const bool resuming = fs::exists(last);
        const auto arguments = resuming ? std::vector<std::string>{"train", "--resume", run.string(), "--threads", "1"}
                                        : fresh_train(corpus, run, "5");
        fs::create_directories(directory.path() / "logs");
        // Odd rounds kill at the moment that matters most: last.safetensors's temporary written and flushed,
        // not yet renamed (atomic_file.cpp's fault-injection point pauses there and says so); even rounds
        // at a random moment of CPU time.
        const bool between_write_and_rename = round % 2 == 1;
        std::optional<charlm::testing::ScopedEnvironment> pause;
        if (between_write_and_rename) pause.emplace("CHARLM_TEST_PAUSE_BEFORE_RENAME", "last.safetensors");
        ChildProcess child(arguments, directory.path() / "logs");
        pause.reset();
        double delay = 0;
        if (between_write_and_rename) {
            const auto give_up = Clock::now() + std::chrono::duration<double>(kHangSeconds);
            while (child.err().find("paused before renaming") == std::string::npos && !child.poll_exit() && Clock::now() < give_up)
                std::this_thread::sleep_for(std::chrono::milliseconds(5));
            ASSERT_NE(child.err().find("paused before renaming"), std::string::npos)
                << "round " << round << ": never reached the rename\n--- stderr ---\n" << child.err();
        } else {
            delay = kill_after_cpu_seconds(rng);
            wait_for_cpu_seconds(child, delay);
        }
        ASSERT_FALSE(child.poll_exit()) << "round " << round << ": charlm exited with " << *child.wait_for_exit(0)
                                        << " before it was killed\n--- stderr ---\n" << child.err();
        child.send(SIGKILL);
        ASSERT_EQ(child.wait_for_exit(kHangSeconds), 128 + SIGKILL) << "round " << round;

        SCOPED_TRACE("round " + std::to_string(round) + (resuming ? " (--resume)" : " (fresh)") + ", killed " +
                     (between_write_and_rename ? std::string("between write and rename") : "after " + std::to_string(delay) + " s of CPU time"));
        temporaries_left = expect_only_expected_files(run);
        if (between_write_and_rename) {
            // The kill left the written temporary behind, and last.safetensors as it was before the save.
            EXPECT_GE(temporaries_left, 1) << "no temporary left by a kill between write and rename";
            kills_between_write_and_rename += temporaries_left >= 1;
            if (resuming) {
                const auto before = load(last);
                ASSERT_TRUE(before.has_value());
                EXPECT_EQ(before->training.step, previous_step) << "last.safetensors changed though its rename never happened";
            } else {
                EXPECT_FALSE(fs::exists(last)) << "last.safetensors appeared though its rename never happened";
            }
        }
        if (fs::exists(best)) load(best);
        if (!fs::exists(last)) {
            EXPECT_FALSE(resuming) << "last.safetensors disappeared";
            steps_after_round.push_back(previous_step);
            continue;
        }
        const auto checkpoint = load(last);
        ASSERT_TRUE(checkpoint.has_value());
        EXPECT_TRUE(checkpoint->optimizer.has_value() && checkpoint->carried_state.has_value())
            << "last.safetensors lacks what --resume needs";
        const std::int64_t step = checkpoint->training.step;
        EXPECT_GE(step, previous_step) << "the step count went backwards";
        EXPECT_TRUE(fs::exists(best)) << "last.safetensors exists but best.safetensors does not";
        previous_step = step;
        steps_after_round.push_back(step);
    }
    std::string trail;
    for (auto step : steps_after_round) trail += std::to_string(step) + " ";
    RecordProperty("steps_after_each_round", trail);
    std::cout << "[          ] steps in last.safetensors after each kill: " << trail << "; temporary files left by kills: "
              << temporaries_left << "\n";
    EXPECT_EQ(kills_between_write_and_rename, kRounds / 2) << "kills that landed between a checkpoint's write and its rename";
    ASSERT_GT(previous_step, 0) << "no round ever wrote a checkpoint";
    // Resuming must make progress, not just survive: the run ends well past where the first checkpoint was.
    const auto first_checkpointed = std::find_if(steps_after_round.begin(), steps_after_round.end(), [](auto s) { return s >= 0; });
    EXPECT_GT(previous_step, *first_checkpointed) << "--resume never advanced the run";

    // And the run that survived eight kills still resumes cleanly to a bound.
    ChildProcess finish({"train", "--resume", run.string(), "--threads", "1", "--steps", std::to_string(previous_step + 10)},
                        directory.path() / "logs");
    ASSERT_EQ(finish.wait_for_exit(kHangSeconds), 0) << finish.err();
    const auto final_checkpoint = load(last);
    ASSERT_TRUE(final_checkpoint.has_value());
    EXPECT_EQ(final_checkpoint->training.step, previous_step + 10);
}

// Ctrl-C (SIGINT) and SIGTERM both stop after the current step, save last.safetensors and say how to resume.
void expect_stop_signal_saves(int signal_number) {
    TemporaryDirectory directory;
    const fs::path corpus = write_corpus(directory);
    const fs::path run = directory.path() / "run";
    // No periodic checkpoint for a very long time: whatever last.safetensors holds, the signal saved.
    fs::create_directories(directory.path() / "logs");
    ChildProcess child(fresh_train(corpus, run, "1000000"), directory.path() / "logs");
    const auto deadline = Clock::now() + std::chrono::duration<double>(kHangSeconds);
    while (child.err().find("training ") == std::string::npos && Clock::now() < deadline && !child.poll_exit())
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_TRUE(child.running()) << "charlm exited early\n--- stderr ---\n" << child.err();
    ASSERT_NE(child.err().find("training "), std::string::npos) << "training never started\n" << child.err();
    // Some steps into the loop: a step of this model takes about a millisecond of CPU time.
    wait_for_cpu_seconds(child, 0.3);
    ASSERT_FALSE(fs::exists(run / "last.safetensors")) << "a checkpoint was written before the signal";

    child.send(signal_number);
    const auto exit_code = child.wait_for_exit(kHangSeconds);
    ASSERT_TRUE(exit_code.has_value()) << "charlm did not stop after the signal (waited " << kHangSeconds << " s)";
    EXPECT_EQ(*exit_code, 130) << child.err();
    EXPECT_NE(child.err().find("--resume"), std::string::npos) << "stderr does not say how to resume:\n" << child.err();
    ASSERT_TRUE(fs::exists(run / "last.safetensors")) << "the signal did not save last.safetensors\n" << child.err();
    const auto checkpoint = load(run / "last.safetensors");
    ASSERT_TRUE(checkpoint.has_value());
    EXPECT_GT(checkpoint->training.step, 0);
    EXPECT_TRUE(checkpoint->optimizer.has_value() && checkpoint->carried_state.has_value());
    expect_only_expected_files(run);

    // The saved run resumes from there.
    ChildProcess resume({"train", "--resume", run.string(), "--threads", "1", "--steps",
                         std::to_string(checkpoint->training.step + 5)},
                        directory.path() / "logs");
    ASSERT_EQ(resume.wait_for_exit(kHangSeconds), 0) << resume.err();
    const auto resumed = load(run / "last.safetensors");
    ASSERT_TRUE(resumed.has_value());
    EXPECT_EQ(resumed->training.step, checkpoint->training.step + 5);
}

TEST(CrashSafety, SigtermSavesLastCheckpointAndExits130) { expect_stop_signal_saves(SIGTERM); }

TEST(CrashSafety, SigintSavesLastCheckpointAndExits130) { expect_stop_signal_saves(SIGINT); }

// Two trainings into one run directory would trample each other's checkpoints: the second is refused
// with the first's pid, and a first one killed with SIGKILL leaves no lock behind.
TEST(CrashSafety, ASecondTrainingInTheSameDirectoryIsRefusedAndAKilledOneLeavesNoLock) {
    TemporaryDirectory directory;
    const fs::path corpus = write_corpus(directory);
    const fs::path run = directory.path() / "run";
    for (const char* logs : {"first", "second", "third"}) fs::create_directories(directory.path() / logs);
    ChildProcess first(fresh_train(corpus, run, "1000000"), directory.path() / "first");
    const auto deadline = Clock::now() + std::chrono::duration<double>(kHangSeconds);
    while (first.err().find("training ") == std::string::npos && Clock::now() < deadline && !first.poll_exit())
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_TRUE(first.running()) << first.err();

    std::vector<std::string> again = fresh_train(corpus, run, "5");
    again.push_back("--force");  // even --force: it starts a run over, never shares one
    ChildProcess second(again, directory.path() / "second");
    EXPECT_EQ(second.wait_for_exit(kHangSeconds), 1) << second.err();
    EXPECT_NE(second.err().find("in use by another training (pid " + std::to_string(first.pid()) + ")"), std::string::npos)
        << second.err();
    EXPECT_TRUE(first.running()) << "the refused run disturbed the first\n" << first.err();

    first.send(SIGKILL);
    ASSERT_TRUE(first.wait_for_exit(kHangSeconds).has_value());
    std::vector<std::string> after = {"train", corpus.string(), "--out", run.string(), "--force", "--steps", "5",
                                      "--layers", "1", "--hidden", "32", "--embed", "8", "--seq", "16", "--batch", "4",
                                      "--threads", "1"};
    ChildProcess third(after, directory.path() / "third");
    EXPECT_EQ(third.wait_for_exit(kHangSeconds), 0) << third.err();
    EXPECT_TRUE(load(run / "last.safetensors").has_value());
}

}  // namespace
