// Checks src/train/: a run writes its files, resuming is exact and obeys or refuses each option, every
// end leaves a checkpoint that loads, divergence writes nothing, existing runs are not overwritten, and
// the progress sink hears every event in order, as metrics.jsonl records it.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <map>
#include <numeric>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "charlm/atomic_file.hpp"
#include "charlm/checkpoint.hpp"
#include "charlm/display.hpp"
#include "charlm/error.hpp"
#include "charlm/eval.hpp"
#include "charlm/plot.hpp"
#include "charlm/run_lock.hpp"
#include "charlm/sample.hpp"
#include "charlm/train.hpp"
#include "cli/commands.hpp"
#include "cli/terminal.hpp"
#include "test_helpers.hpp"
#include "text_helpers.hpp"
#include "train/options.hpp"
#include "train/run_directory.hpp"

namespace charlm {
namespace {

using testing::read_bytes;
using testing::TemporaryDirectory;

std::string small_corpus() {
    std::string text;
    for (int i = 0; i < 60; ++i) text += "To be, or not to be: that is the question. Ser o no ser, ésa es la cuestión.\n";
    return text;
}

TrainOptions tiny_options(const TemporaryDirectory& directory, const std::string& run) {
    TrainOptions options;
    options.corpus = directory.path() / "corpus.txt";
    options.run_directory = directory.path() / run;
    options.model.layers = 2;
    options.model.hidden_size = 16;
    options.model.embed_size = 8;
    options.seq_length = 16;
    options.batch_size = 4;
    options.eval_every = 7;
    options.steps = 20;
    return options;
}

// Every event of a run, in order, as a sink hears it.
class RecordingProgress : public TrainingProgress {
public:
    struct Event {
        std::string kind;  // warning, note, started, step, checkpoint, report, finished
        std::int64_t step = 0;
    };
    std::vector<Event> events;
    std::vector<std::string> warnings, notes;
    std::vector<RunDescription> runs;
    std::vector<StepProgress> steps;
    std::vector<SavedCheckpoint> checkpoints;
    std::vector<bool> checkpoint_was_there;  // whether each checkpoint's file existed when its event came
    std::vector<ProgressReport> reports;
    std::vector<TrainResult> results;
    std::function<void(const StepProgress&)> on_step;  // runs inside step_taken: to look at files, or ask for a stop

    void warning(const std::string& message) override {
        events.push_back({"warning"});
        warnings.push_back(message);
    }
    void note(const std::string& message) override {
        events.push_back({"note"});
        notes.push_back(message);
    }
    void run_started(const RunDescription& run) override {
        events.push_back({"started", run.first_step});
        runs.push_back(run);
    }
    void step_taken(const StepProgress& progress) override {
        events.push_back({"step", progress.step});
        steps.push_back(progress);
        if (on_step) on_step(progress);
    }
    void checkpoint_saved(const SavedCheckpoint& checkpoint) override {
        events.push_back({checkpoint.kind == CheckpointKind::last ? "checkpoint last" : "checkpoint best", checkpoint.step});
        checkpoints.push_back(checkpoint);
        checkpoint_was_there.push_back(std::filesystem::is_regular_file(checkpoint.path));
    }
    void progress_reported(const ProgressReport& report) override {
        events.push_back({"report", report.step});
        reports.push_back(report);
    }
    void run_finished(const TrainResult& result) override {
        events.push_back({"finished", result.steps});
        results.push_back(result);
    }

    std::size_t count(const std::string& kind) const {
        return static_cast<std::size_t>(std::count_if(events.begin(), events.end(), [&](const Event& event) { return event.kind == kind; }));
    }
    // The steps that step_taken and the reports name, in the order they came.
    std::vector<std::int64_t> steps_in_order() const {
        std::vector<std::int64_t> numbers;
        for (const auto& event : events)
            if (event.kind == "step" || event.kind == "report") numbers.push_back(event.step);
        return numbers;
    }
    std::vector<std::int64_t> evaluated_steps() const {
        std::vector<std::int64_t> numbers;
        for (const auto& report : reports)
            if (report.evaluated) numbers.push_back(report.step);
        return numbers;
    }
};

std::vector<std::int64_t> one_to(std::int64_t last) {
    std::vector<std::int64_t> numbers(static_cast<std::size_t>(last));
    std::iota(numbers.begin(), numbers.end(), std::int64_t{1});
    return numbers;
}

std::vector<nlohmann::json> metrics_records(const std::filesystem::path& run_directory) {
    std::vector<nlohmann::json> records;
    std::ifstream in(run_directory / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) records.push_back(nlohmann::json::parse(line));
    return records;
}

// metrics.jsonl says what the reports said, one record each, with the same keys as ever, and a
// validation loss the characters it covers; a loss on all the held-out text at the run's end (where
// the validations scored part of it) is a record of its own, the last, and is left out here.
void expect_metrics_match_reports(const std::filesystem::path& run_directory, const std::vector<ProgressReport>& reports) {
    auto records = metrics_records(run_directory);
    if (!records.empty() && records.back().contains("final_validation_loss")) records.pop_back();
    ASSERT_EQ(records.size(), reports.size());
    for (std::size_t i = 0; i < records.size(); ++i) {
        SCOPED_TRACE(records[i].dump());
        const ProgressReport& report = reports[i];
        EXPECT_EQ(records[i].size(), report.validation_loss ? 9u : report.evaluated ? 8u : 7u);
        EXPECT_EQ(records[i].at("precision").get<std::string>(), to_string(report.precision));
        EXPECT_EQ(records[i].at("step").get<std::int64_t>(), report.step);
        EXPECT_EQ(records[i].at("epoch").get<double>(), report.epoch);
        EXPECT_EQ(records[i].at("train_loss").get<double>(), report.train_loss);
        EXPECT_EQ(records[i].at("learning_rate").get<double>(), report.learning_rate);
        EXPECT_EQ(records[i].at("chars_per_second").get<double>(), report.chars_per_second);
        EXPECT_EQ(records[i].at("elapsed_seconds").get<double>(), report.elapsed_seconds);
        EXPECT_EQ(records[i].contains("validation_loss"), report.evaluated);
        if (report.validation_loss) {
            EXPECT_EQ(records[i].at("validation_loss").get<double>(), *report.validation_loss);
            EXPECT_EQ(records[i].at("validation_characters").get<std::size_t>(), report.validation_characters);
        } else if (report.evaluated) {
            EXPECT_TRUE(records[i].at("validation_loss").is_null());
        }
    }
}

// Resumes the run in `run_directory` to `steps` in all, as `charlm train --resume RUN --steps N` does.
TrainResult resume_to_with(const std::filesystem::path& run_directory, std::int64_t steps, TrainingProgress& progress) {
    ResumeRequest request;
    request.run_directory = run_directory;
    request.options.steps = steps;
    request.given = {"--steps"};
    return resume_training(request, progress);
}
TrainResult resume_to(const std::filesystem::path& run_directory, std::int64_t steps) {
    return resume_to_with(run_directory, steps, silent_progress());
}

// 20 steps straight, and 9 steps then a resume to 20, of the options `configure` makes for a run's
// name and steps: the two runs' last checkpoints, which an exact resume makes equal.
std::pair<Checkpoint, Checkpoint> straight_and_resumed(const TemporaryDirectory& directory,
                                                       const std::function<TrainOptions(const std::string&, std::int64_t)>& configure) {
    train(configure("straight", 20));
    train(configure("halves", 9));
    resume_to(directory.path() / "halves", 20);
    return {load_checkpoint(directory.path() / "straight" / "last.safetensors"),
            load_checkpoint(directory.path() / "halves" / "last.safetensors")};
}

// Add-alpha smoothing of the one-character model below: every held-out pair occurs in the training text of
// the corpus it scores, so a small alpha barely moves the figure and leaves that model at its strongest.
constexpr double kBigramSmoothing = 0.01;

// The mean cross-entropy, in nats, of each held-out character given only the one before it, under the
// bigram model counted on `training`: P(b | a) = (count(a, b) + alpha) / (count(a) + alpha V), with alpha
// kBigramSmoothing. The best a model without memory beyond the current character does, near enough;
// the pairs are those evaluate_loss scores on `held_out` read as one stream.
double bigram_cross_entropy(const std::vector<TokenId>& training, const std::vector<TokenId>& held_out, std::size_t vocab_size) {
    std::vector<double> pairs(vocab_size * vocab_size, 0.0), contexts(vocab_size, 0.0);
    for (std::size_t i = 0; i + 1 < training.size(); ++i) {
        pairs[static_cast<std::size_t>(training[i]) * vocab_size + static_cast<std::size_t>(training[i + 1])] += 1;
        contexts[static_cast<std::size_t>(training[i])] += 1;
    }
    double nats = 0;
    for (std::size_t i = 0; i + 1 < held_out.size(); ++i) {
        const auto a = static_cast<std::size_t>(held_out[i]), b = static_cast<std::size_t>(held_out[i + 1]);
        nats -= std::log((pairs[a * vocab_size + b] + kBigramSmoothing) / (contexts[a] + kBigramSmoothing * static_cast<double>(vocab_size)));
    }
    return nats / static_cast<double>(held_out.size() - 1);
}

// Learning means more than the next character's frequencies after the current one: the trained model,
// reading the held-out text as one stream, must beat the bigram model of the training text by this many
// nats per character. On small_corpus() the bigram model scores 1.186 (the held-out text's own bigram
// frequencies 1.185), and the run below reached 0.043 to 0.081 over seeds 1 to 6: it has learned where
// it is in the sentence, which only its recurrent state can tell it.
constexpr double kLearnedMarginNats = 0.5;

TEST(Train, WritesCheckpointsAndMetricsAndLearns) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.model.layers = 1;
    options.model.hidden_size = 32;
    options.batch_size = 8;
    options.eval_every = 20;
    options.steps = 100;
    options.learning_rate_schedule.peak_learning_rate = 1e-2;
    const TrainResult result = train(options);
    EXPECT_EQ(result.steps, 100);
    EXPECT_TRUE(std::filesystem::exists(options.run_directory / "last.safetensors"));
    EXPECT_TRUE(std::filesystem::exists(options.run_directory / "best.safetensors"));
    const std::string metrics = read_bytes(options.run_directory / "metrics.jsonl");
    EXPECT_NE(metrics.find("\"validation_loss\""), std::string::npos);
    Checkpoint best = load_checkpoint(options.run_directory / "best.safetensors");
    EXPECT_DOUBLE_EQ(best.training.best_validation_loss, result.best_validation_loss);

    // The run's split of the text: the first part trains, the last validation_fraction is held out.
    const std::vector<TokenId> ids = best.vocab.encode(decode_utf8(small_corpus(), "corpus"));
    const auto held_out_count = static_cast<std::ptrdiff_t>(held_out_size(options, ids.size()));
    const std::vector<TokenId> training(ids.begin(), ids.end() - held_out_count), held_out(ids.end() - held_out_count, ids.end());
    const double bigram = bigram_cross_entropy(training, held_out, best.vocab.size());
    const double learned = evaluate_loss(*best.model, held_out, static_cast<int>(held_out.size()), 1).mean();
    RecordProperty("bigram_nats", fmt::format("{:.4f}", bigram));
    RecordProperty("learned_nats", fmt::format("{:.4f}", learned));
    EXPECT_LT(learned, bigram - kLearnedMarginNats) << "the model learned no more than the bigram model of its text";
}

TEST(Train, TellsItsProgressSinkEveryEventInOrder) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.model.layers = 1;
    options.learning_rate_schedule.warmup_steps = 30;  // longer than the run: a warning
    RecordingProgress progress;
    const TrainResult result = train(options, progress);
    ASSERT_EQ(result.steps, 20);

    ASSERT_EQ(progress.warnings.size(), 1u);
    EXPECT_EQ(progress.warnings[0].rfind("--warmup 30 is longer than the run's 20 steps", 0), 0u) << progress.warnings[0];
    ASSERT_EQ(progress.count("started"), 1u);
    const auto started = std::find_if(progress.events.begin(), progress.events.end(), [](const auto& event) { return event.kind == "started"; });
    EXPECT_TRUE(std::none_of(progress.events.begin(), started, [](const auto& event) { return event.kind != "warning"; }))
        << "warnings about the options come first";
    const RunDescription& run = progress.runs.front();
    EXPECT_FALSE(run.resumed);
    EXPECT_EQ(run.first_step, 0);
    EXPECT_EQ(run.model.layers, 1);
    EXPECT_EQ(run.model.cell, CellType::lstm);
    EXPECT_EQ(run.seq_length, 16);
    EXPECT_EQ(run.batch_size, 4);
    const Checkpoint last = load_checkpoint(result.last_checkpoint);
    EXPECT_EQ(run.train_characters, last.training.options.at("train_characters").get<std::size_t>());
    EXPECT_EQ(run.validation_characters, validation_size(run.train_characters + run.validation_characters, 0.05));
    EXPECT_GT(run.validation_characters, 1u);

    // Every step once, in order; validations at each --eval-every and at the last step.
    EXPECT_EQ(progress.steps_in_order(), one_to(20));
    EXPECT_EQ(progress.evaluated_steps(), (std::vector<std::int64_t>{7, 14, 20}));
    for (const StepProgress& step : progress.steps) {
        EXPECT_EQ(step.total_steps, 20);
        EXPECT_DOUBLE_EQ(step.epoch, step.step * 16.0 * 4 / static_cast<double>(run.train_characters)) << "characters trained on / training characters";
        EXPECT_TRUE(std::isfinite(step.train_loss) && step.train_loss > 0);
        EXPECT_DOUBLE_EQ(step.learning_rate, 2e-3 * static_cast<double>(step.step) / 30);  // warming up
        EXPECT_TRUE(step.remaining_seconds.has_value());
    }
    EXPECT_TRUE(progress.reports.front().new_best) << "the first validation is the best yet";
    for (const ProgressReport& report : progress.reports)
        EXPECT_TRUE(!report.evaluated || (report.validation_loss && std::isfinite(*report.validation_loss))) << report.step;

    // Each evaluation: last.safetensors, best.safetensors where it is a new best, then the report.
    for (std::size_t i = 0; i < progress.events.size(); ++i) {
        if (progress.events[i].kind != "report") continue;
        const auto& report = *std::find_if(progress.reports.begin(), progress.reports.end(),
                                           [&](const ProgressReport& r) { return r.step == progress.events[i].step; });
        if (!report.evaluated) continue;
        const std::size_t saves = report.new_best ? 2 : 1;
        ASSERT_GE(i, saves);
        EXPECT_EQ(progress.events[i - saves].kind, "checkpoint last");
        EXPECT_EQ(progress.events[i - saves].step, report.step);
        if (report.new_best) {
            EXPECT_EQ(progress.events[i - 1].kind, "checkpoint best");
            EXPECT_EQ(progress.events[i - 1].step, report.step);
        }
    }
    EXPECT_EQ(std::count(progress.checkpoint_was_there.begin(), progress.checkpoint_was_there.end(), true),
              static_cast<std::ptrdiff_t>(progress.checkpoints.size()));
    for (const SavedCheckpoint& checkpoint : progress.checkpoints)
        EXPECT_EQ(checkpoint.path, checkpoint.kind == CheckpointKind::last ? result.last_checkpoint : result.best_checkpoint);

    ASSERT_EQ(progress.count("finished"), 1u);
    EXPECT_EQ(progress.events.back().kind, "finished");
    EXPECT_EQ(progress.results.front().steps, 20);
    EXPECT_EQ(progress.results.front().best_validation_loss, result.best_validation_loss);
    expect_metrics_match_reports(options.run_directory, progress.reports);
}

TEST(Train, AFreshRunKeepsItsMetricsUntilItsFirstCheckpointTakesTheDirectoryOver) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.steps = 7;
    train(options);
    const std::string earlier = read_bytes(options.run_directory / "metrics.jsonl");
    ASSERT_FALSE(earlier.empty());

    options.overwrite = true;
    options.steps = 20;
    RecordingProgress progress;
    std::vector<std::string> metrics_at_steps;
    progress.on_step = [&](const StepProgress&) { metrics_at_steps.push_back(read_bytes(options.run_directory / "metrics.jsonl")); };
    train(options, progress);
    ASSERT_GE(metrics_at_steps.size(), 6u);
    for (std::size_t i = 0; i < 6; ++i) EXPECT_EQ(metrics_at_steps[i], earlier) << "step " << i + 1;
    EXPECT_EQ(metrics_records(options.run_directory).size(), 4u)
        << "this run's records alone: three reports and the last step's loss on all the held-out text";
    expect_metrics_match_reports(options.run_directory, progress.reports);
}

TEST(Train, AStopRequestSavesTheStepWithoutValidatingAndSaysHowToGoOn) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.validation_characters = 40;  // a subset: a run's end would then score all the held-out text
    RecordingProgress progress;
    progress.on_step = [](const StepProgress& step) {
        if (step.step == 3) {
            EXPECT_TRUE(request_training_stop()) << "the loop runs, and hears it";
        }
    };
    const TrainResult result = train(options, progress);
    EXPECT_EQ(result.stopped_by, StopReason::interrupted);
    EXPECT_EQ(result.steps, 4) << "decided once per step: the step after the request is the last";
    EXPECT_EQ(load_checkpoint(result.last_checkpoint).training.step, 4);
    EXPECT_TRUE(progress.evaluated_steps().empty()) << "a stop request saves without a validation pass";
    EXPECT_FALSE(result.final_validation_loss.has_value()) << "nor a pass over all the held-out text";
    ASSERT_EQ(progress.checkpoints.size(), 1u);
    EXPECT_EQ(progress.checkpoints[0].kind, CheckpointKind::last);
    EXPECT_EQ(progress.checkpoints[0].step, 4);
    ASSERT_FALSE(progress.warnings.empty());
    EXPECT_NE(progress.warnings.back().find("stopped at step 4; continue with: charlm train --resume "), std::string::npos)
        << progress.warnings.back();
    EXPECT_EQ(progress.events.back().kind, "finished");
    // The request was this run's: the next training in the same process runs to its end.
    options.overwrite = true;
    EXPECT_EQ(train(options).steps, 20);
}

TEST(Train, AForcedRunStoppedBeforeItsFirstValidationLeavesNoEarlierBest) {
    // The earlier run's best.safetensors beside this run's last.safetensors would be taken for this run's.
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.steps = 7;
    train(options);
    ASSERT_TRUE(std::filesystem::exists(options.run_directory / "best.safetensors"));
    options.overwrite = true;
    options.steps = 20;
    RecordingProgress progress;
    progress.on_step = [](const StepProgress& step) {
        if (step.step == 2) request_training_stop();
    };
    const TrainResult result = train(options, progress);
    EXPECT_EQ(result.stopped_by, StopReason::interrupted);
    EXPECT_EQ(load_checkpoint(result.last_checkpoint).training.step, 3);
    EXPECT_FALSE(std::filesystem::exists(options.run_directory / "best.safetensors"));
}

TEST(Train, AResumeWithNothingToDoTakesNoStepAndClaimsNoLoss) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.steps = 5;
    train(options);
    ResumeRequest request;
    request.run_directory = options.run_directory;
    RecordingProgress progress;
    const TrainResult result = resume_training(request, progress);
    EXPECT_EQ(result.steps, 5);
    EXPECT_FALSE(result.last_train_loss.has_value()) << "no step taken, so no loss of one";
    for (const auto& event : progress.events) EXPECT_NE(event.kind, "started") << "nothing to announce";
    ASSERT_FALSE(progress.warnings.empty());
    EXPECT_NE(progress.warnings.back().find("nothing to do"), std::string::npos) << progress.warnings.back();
}

TEST(Train, ARunBoundedByMinutesIsAnnouncedAndTakesItsSteps) {
    // The bound is measured from the loop's start; measured from anything earlier, it would end the run
    // before its first step.
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.minutes = 1;
    options.steps = 3;
    RecordingProgress progress;
    const TrainResult result = train(options, progress);
    EXPECT_EQ(result.steps, 3);
    EXPECT_EQ(result.stopped_by, StopReason::steps);
    EXPECT_EQ(progress.runs.size(), 1u);
}

TEST(Train, TheStepSchedulesDecayOptionsAreRefusedWhereTheyWouldDoNothing) {
    TrainOptions options;
    for (auto kind : {LearningRateSchedule::Kind::constant, LearningRateSchedule::Kind::cosine}) {
        options.learning_rate_schedule.kind = kind;
        for (const std::string flag : {"--lr-decay", "--lr-decay-every"}) {
            try {
                check_options_take_effect(options, {"--lr", flag});
                ADD_FAILURE() << flag << " with " << LearningRateSchedule::name(kind) << " was accepted";
            } catch (const UsageError& error) {
                EXPECT_NE(std::string(error.what()).find("--lr-schedule step"), std::string::npos) << error.what();
            }
        }
        EXPECT_NO_THROW(check_options_take_effect(options, {"--lr", "--warmup"}));
    }
    options.learning_rate_schedule.kind = LearningRateSchedule::Kind::step;
    EXPECT_NO_THROW(check_options_take_effect(options, {"--lr-decay", "--lr-decay-every"}));

    // and on a resume, against the run's own schedule
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions run = tiny_options(directory, "run");
    run.steps = 3;
    train(run);
    ResumeRequest request;
    request.run_directory = run.run_directory;
    request.options.learning_rate_schedule.decay_factor = 0.25;
    request.given = {"--lr-decay"};
    EXPECT_THROW(resume_training(request), UsageError);
}

TEST(Train, ResumingGivesTheSameParametersBitForBit) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions straight = tiny_options(directory, "straight");
    straight.steps = 24;
    train(straight);

    TrainOptions halves = tiny_options(directory, "halves");
    halves.steps = 12;
    train(halves);
    const TrainResult resumed = resume_to(halves.run_directory, 24);
    EXPECT_EQ(resumed.steps, 24);

    const Checkpoint a = load_checkpoint(straight.run_directory / "last.safetensors");
    const Checkpoint b = load_checkpoint(halves.run_directory / "last.safetensors");
    for (std::size_t i = 0; i < a.model->parameters().size(); ++i)
        EXPECT_EQ(a.model->parameters()[i].value, b.model->parameters()[i].value) << a.model->parameters()[i].name;
    EXPECT_EQ(a.optimizer->first_moments()[1], b.optimizer->first_moments()[1]);
    EXPECT_EQ(a.training.data_position, b.training.data_position);
}

TEST(Train, TheRunDirectoryHoldsTheIdsOfItsTexts) {
    TemporaryDirectory directory;
    const auto corpus = directory.write("corpus.txt", small_corpus());
    const auto validation = directory.write("validation.txt", "Ser o no ser.\n");
    TrainOptions options = tiny_options(directory, "run");
    options.validation_file = validation;
    options.steps = 3;
    train(options);
    const Checkpoint last = load_checkpoint(options.run_directory / "last.safetensors");
    for (const auto& [text, name] : {std::pair{corpus, "corpus.ids"}, std::pair{validation, "validation.ids"}}) {
        std::string why_not;
        const std::optional<MappedIds> ids = MappedIds::open(options.run_directory / name, fingerprint_file(text), last.vocab, &why_not);
        ASSERT_TRUE(ids) << name << ": " << why_not;
        EXPECT_EQ(testing::to_vector(ids->span()), last.vocab.encode(read_text_file(text))) << name;
    }
}

// An ids file that a resume cannot trust (missing, cut short, corrupt, another text's) is encoded again
// and the run goes on exactly as one that never stopped; a good one is mapped as it is.
TEST(Train, AResumeEncodesAgainAnIdsFileItCannotTrustAndGoesOnExactly) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions straight = tiny_options(directory, "straight");
    straight.steps = 24;
    train(straight);
    const Checkpoint expected = load_checkpoint(straight.run_directory / "last.safetensors");
    const auto other = directory.write("other.txt", small_corpus() + "Ser.\n");
    MappedIds::encode(directory.path() / "other.ids", other, fingerprint_file(other), expected.vocab);

    const auto inode_of = [](const std::filesystem::path& path) {
        struct stat status {};
        return ::stat(path.c_str(), &status) == 0 ? status.st_ino : ino_t{0};
    };
    using Damage = std::function<void(const std::filesystem::path&)>;
    const std::vector<std::pair<std::string, Damage>> damages = {
        {"kept", [](const std::filesystem::path&) {}},
        {"missing", [](const std::filesystem::path& ids) { std::filesystem::remove(ids); }},
        {"cut short", [](const std::filesystem::path& ids) { std::filesystem::resize_file(ids, std::filesystem::file_size(ids) - 10); }},
        {"corrupt", [](const std::filesystem::path& ids) {
             std::fstream file(ids, std::ios::in | std::ios::out | std::ios::binary);
             file.seekp(300);
             file.put('\x7f');
         }},
        {"another text's", [&](const std::filesystem::path& ids) {
             std::filesystem::copy_file(directory.path() / "other.ids", ids, std::filesystem::copy_options::overwrite_existing);
         }},
    };
    for (const auto& [name, damage] : damages) {
        SCOPED_TRACE(name);
        TrainOptions halves = tiny_options(directory, name);
        halves.steps = 12;
        train(halves);
        const auto ids = halves.run_directory / "corpus.ids";
        const auto stale = halves.run_directory / ".corpus.ids.tmp-AbC123";  // of a process killed while encoding
        std::ofstream(stale) << "partial";
        const ino_t before = inode_of(ids);
        damage(ids);
        ResumeRequest request;
        request.run_directory = halves.run_directory;
        request.options.steps = 24;
        request.given = {"--steps"};
        RecordingProgress progress;
        EXPECT_EQ(resume_training(request, progress).steps, 24);

        const Checkpoint resumed = load_checkpoint(halves.run_directory / "last.safetensors");
        for (std::size_t i = 0; i < expected.model->parameters().size(); ++i)
            EXPECT_EQ(expected.model->parameters()[i].value, resumed.model->parameters()[i].value) << expected.model->parameters()[i].name;
        EXPECT_EQ(expected.training.data_position, resumed.training.data_position);
        EXPECT_TRUE(MappedIds::open(ids, fingerprint_file(directory.path() / "corpus.txt"), resumed.vocab));
        EXPECT_FALSE(std::filesystem::exists(stale));
        const bool encoded_again = std::any_of(progress.notes.begin(), progress.notes.end(), [](const std::string& note) {
            return note.find("corpus.ids") != std::string::npos && note.find("encoding") != std::string::npos;
        });
        if (name == "kept") {
            EXPECT_EQ(inode_of(ids), before);
            EXPECT_FALSE(encoded_again);
        } else {
            if (name != "missing") {
                EXPECT_NE(inode_of(ids), before);  // (a freed inode's number may come back)
            }
            EXPECT_EQ(encoded_again, name != "missing");  // a file that is there and refused is worth a note
        }
    }
}

// Where the ids file is a directory, the resume says so and names that path alone; and a --force run
// without --val clears an earlier run's validation.ids, which nothing would read (both found by a
// new-user pass: the first message blamed the corpus, garbled).
TEST(Train, TheIdsPathsOfTheRunDirectoryAreKeptClean) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    const auto validation = directory.write("validation.txt", "Ser o no ser.\n");
    TrainOptions options = tiny_options(directory, "run");
    options.steps = 3;
    options.validation_file = validation;
    train(options);
    ASSERT_TRUE(std::filesystem::exists(options.run_directory / "validation.ids"));
    options.validation_file.reset();
    options.overwrite = true;
    train(options);
    EXPECT_FALSE(std::filesystem::exists(options.run_directory / "validation.ids"));

    std::filesystem::remove(options.run_directory / "corpus.ids");
    std::filesystem::create_directory(options.run_directory / "corpus.ids");
    ResumeRequest request;
    request.run_directory = options.run_directory;
    request.options.steps = 6;
    request.given = {"--steps"};
    try {
        resume_training(request);
        FAIL() << "resumed over a directory where the ids go";
    } catch (const Error& error) {
        EXPECT_EQ(std::string(error.what()),
                  (options.run_directory / "corpus.ids").string() + ": is not a file, and the run keeps the corpus's ids there; move it away");
    }
}

// Every kind of mask is drawn from the run's generator, which the checkpoint keeps: a resumed run
// draws the masks that one uninterrupted run would.
TEST(Train, ResumingWithDropoutAndAScheduleIsExactToo) {
    struct Rates {
        const char* name;
        double dropout, embed_dropout, weight_drop;
        DropoutMask mask;
        DropoutKeys keys = DropoutKeys::stream;
    };
    for (const Rates& rates : {Rates{"step", 0.3, 0, 0, DropoutMask::step}, Rates{"locked", 0.3, 0, 0, DropoutMask::locked},
                               Rates{"embedding", 0, 0.3, 0, DropoutMask::locked}, Rates{"weights", 0, 0, 0.3, DropoutMask::locked},
                               Rates{"all", 0.2, 0.1, 0.3, DropoutMask::step},
                               // A run begun before masks were keyed by stream goes on keyed as it was.
                               Rates{"all, keyed locally", 0.2, 0.1, 0.3, DropoutMask::step, DropoutKeys::local}}) {
        SCOPED_TRACE(rates.name);
        TemporaryDirectory directory;
        directory.write("corpus.txt", small_corpus());
        auto configure = [&](const std::string& run, std::int64_t steps) {
            TrainOptions options = tiny_options(directory, run);
            options.model.layers = 2;
            options.model.dropout = rates.dropout;
            options.model.embed_dropout = rates.embed_dropout;
            options.model.weight_drop = rates.weight_drop;
            options.model.dropout_mask = rates.mask;
            options.model.dropout_keys = rates.keys;
            options.learning_rate_schedule.kind = LearningRateSchedule::Kind::step;
            options.learning_rate_schedule.decay_every_steps = 6;
            options.learning_rate_schedule.warmup_steps = 5;
            options.steps = steps;
            return options;
        };
        // Both runs see the same learning rates (warmup, then step decay), the same dropout masks
        // and the same data.
        const auto [a, b] = straight_and_resumed(directory, configure);
        const Checkpoint plain = [&] {
            TrainOptions options = configure("plain", 20);
            options.model.dropout = options.model.embed_dropout = options.model.weight_drop = 0;
            train(options);
            return load_checkpoint(options.run_directory / "last.safetensors");
        }();
        EXPECT_EQ(b.training.step, 20);
        EXPECT_EQ(a.training.data_position, b.training.data_position);
        EXPECT_EQ(b.config.dropout, rates.dropout);
        EXPECT_EQ(b.config.embed_dropout, rates.embed_dropout);
        EXPECT_EQ(b.config.weight_drop, rates.weight_drop);
        EXPECT_EQ(b.config.dropout_mask, rates.mask);
        EXPECT_EQ(b.config.dropout_keys, rates.keys);
        for (std::size_t i = 0; i < a.model->parameters().size(); ++i)
            EXPECT_EQ(a.model->parameters()[i].value, b.model->parameters()[i].value) << a.model->parameters()[i].name;
        EXPECT_NE(a.model->parameters()[1].value, plain.model->parameters()[1].value) << "the masks changed nothing";
    }
}

// A run that learns its training text by heart, validated on other text: its validation loss climbs,
// and the run says so once, naming the best step, rather than train on silently.
TEST(Train, WarnsOnceWhenTheValidationLossRisesAsTheModelOverfits) {
    TemporaryDirectory directory;
    std::mt19937_64 rng(5);
    auto random_text = [&](std::size_t size) {
        std::string text;
        for (std::size_t i = 0; i < size; ++i) text += static_cast<char>('a' + rng() % 8);
        return text;
    };
    const std::string line = random_text(200);
    std::string corpus;
    for (int i = 0; i < 30; ++i) corpus += line;
    directory.write("corpus.txt", corpus);
    const auto validation = directory.write("validation.txt", random_text(2000));
    TrainOptions options = tiny_options(directory, "run");
    options.validation_file = validation;
    options.model.hidden_size = 64;
    options.learning_rate_schedule.peak_learning_rate = 1e-2;
    options.eval_every = 10;
    options.steps = 150;
    RecordingProgress progress;
    const TrainResult result = train(options, progress);
    const auto overfitting = std::count_if(progress.warnings.begin(), progress.warnings.end(), [](const std::string& warning) {
        return warning.find("the model is overfitting its training text") != std::string::npos;
    });
    EXPECT_EQ(overfitting, 1) << fmt::format("{}", fmt::join(progress.warnings, "\n"));
    const Checkpoint best = load_checkpoint(result.best_checkpoint);
    EXPECT_GT(best.training.best_step, 0);
    EXPECT_LT(best.training.best_step, 150);
    // Said right after the report of the validation it names, never before it: the warnings in order of events.
    std::size_t warning_index = 0;
    for (std::size_t i = 0; i < progress.events.size(); ++i) {
        if (progress.events[i].kind != "warning") continue;
        const std::string& warning = progress.warnings.at(warning_index++);
        if (warning.find("overfitting") == std::string::npos) continue;
        EXPECT_NE(warning.find(fmt::format("at step {}", best.training.best_step)), std::string::npos) << warning;
        EXPECT_NE(warning.find("3 validations in a row without a new best"), std::string::npos) << warning;
        ASSERT_GT(i, 0u);
        EXPECT_EQ(progress.events[i - 1].kind, "report") << "the warning follows its validation's report line";
    }
}

TEST(Train, PatienceStopsEarly) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.learning_rate_schedule.peak_learning_rate = 0.5;  // far too high: validation stops improving at once
    options.eval_every = 2;
    options.patience = 2;
    options.steps = 200;
    const TrainResult result = train(options);
    EXPECT_EQ(result.stopped_by, StopReason::patience);
    EXPECT_LT(result.steps, 200);
}

TEST(Train, TheAutomaticValidationIsAQuarterOfTheCharactersTrainedBetweenValidations) {
    TrainOptions options;  // --eval-every 200, --seq 100, --batch 64
    EXPECT_FALSE(options.validation_characters.has_value()) << "automatic unless given";
    options.model.vocab_size = 30;  // for the checkpoints' JSON below
    EXPECT_EQ(periodic_validation_characters(options), 320'000u);
    options.eval_every = 50;
    options.batch_size = 32;
    EXPECT_EQ(periodic_validation_characters(options), 40'000u);
    options.eval_every = options.seq_length = options.batch_size = 1;
    EXPECT_EQ(periodic_validation_characters(options), 1u) << "never 0, which means all of them";
    options.validation_characters = 0;
    EXPECT_EQ(periodic_validation_characters(options), 0u);
    options.validation_characters = 12345;
    EXPECT_EQ(periodic_validation_characters(options), 12345u);
    // Checkpoints keep the choice, automatic included.
    EXPECT_EQ(TrainOptions::from_json(options.to_json()).validation_characters, std::optional<std::uint64_t>(12345));
    options.validation_characters.reset();
    EXPECT_EQ(options.to_json().at("validation_characters"), "auto");
    EXPECT_FALSE(TrainOptions::from_json(options.to_json()).validation_characters.has_value());
}

// The held-out part of small_corpus() under tiny_options, as the run reads it.
std::vector<TokenId> held_out_ids(const Vocab& vocab) {
    const std::vector<TokenId> ids = vocab.encode(decode_utf8(small_corpus(), "corpus"));
    const std::size_t held_out = validation_size(ids.size(), 0.05);
    return {ids.end() - static_cast<std::ptrdiff_t>(held_out), ids.end()};
}

// --ema: the validation scores the averaged weights beside the last step's, and best.safetensors holds
// whichever scored lower. One validation, at the last step, makes that step the best.
TEST(Train, AveragedWeightsAreValidatedAndTheBetterOnesKeptAsBest) {
    for (double decay : {0.5, 0.99}) {
        SCOPED_TRACE(decay);
        TemporaryDirectory directory;
        directory.write("corpus.txt", small_corpus());
        TrainOptions options = tiny_options(directory, "run");
        options.average_decay = decay;
        options.eval_every = 20;
        options.keep_checkpoints = true;
        options.validation_characters = 100;  // part of the held-out text, so that the run's end scores all of it
        RecordingProgress progress;
        const TrainResult result = train(options, progress);
        const ProgressReport& report = progress.reports.back();
        ASSERT_TRUE(report.validation_loss && report.averaged_validation_loss);
        ASSERT_LT(result.validation_characters, result.held_out_characters);
        EXPECT_NE(*report.validation_loss, *report.averaged_validation_loss);
        const bool averaged_better = *report.averaged_validation_loss < *report.validation_loss;
        EXPECT_EQ(result.best_is_averaged, averaged_better);
        EXPECT_DOUBLE_EQ(result.best_validation_loss, std::min(*report.validation_loss, *report.averaged_validation_loss));
        const Checkpoint last = load_checkpoint(result.last_checkpoint);
        Checkpoint best = load_checkpoint(result.best_checkpoint);
        ASSERT_TRUE(last.average.has_value());
        EXPECT_FALSE(best.average.has_value()) << "best.safetensors is for sampling: weights only";
        EXPECT_EQ(best.training.best_is_averaged, averaged_better);
        for (std::size_t i = 0; i < best.model->parameters().size(); ++i)
            EXPECT_EQ(best.model->parameters()[i].value, averaged_better ? (*last.average)[i] : last.model->parameters()[i].value);
        // The kept checkpoint of that validation holds the same weights as best, named by the lower loss.
        const Checkpoint kept = load_checkpoint(options.run_directory / kept_checkpoint_name(20, result.best_validation_loss));
        for (std::size_t i = 0; i < best.model->parameters().size(); ++i)
            EXPECT_EQ(kept.model->parameters()[i].value, best.model->parameters()[i].value);
        // The end's pass over all the held-out text scores the weights the validation preferred, and
        // says which: they are best.safetensors' (evaluation reads that file).
        ASSERT_TRUE(result.final_validation_loss.has_value());
        EXPECT_EQ(result.final_validation_is_averaged, averaged_better);
        EXPECT_NEAR(evaluate_loss(*best.model, held_out_ids(best.vocab), 16, 4).mean(), *result.final_validation_loss, 1e-6);
    }
}

// The average is in last.safetensors: a resumed run averages on as one uninterrupted run does; one that
// starts averaging on resume starts from its weights, and says so.
TEST(Train, ResumingWithAveragedWeightsIsExact) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    auto configure = [&](const std::string& run, std::int64_t steps) {
        TrainOptions options = tiny_options(directory, run);
        options.average_decay = 0.9;
        options.steps = steps;
        return options;
    };
    const auto [a, b] = straight_and_resumed(directory, configure);
    ASSERT_TRUE(a.average && b.average);
    for (std::size_t i = 0; i < a.model->parameters().size(); ++i) {
        EXPECT_EQ(a.model->parameters()[i].value, b.model->parameters()[i].value) << a.model->parameters()[i].name;
        EXPECT_EQ((*a.average)[i], (*b.average)[i]) << a.model->parameters()[i].name;
        EXPECT_NE((*a.average)[i], a.model->parameters()[i].value) << "the average lags the weights";
    }
    EXPECT_EQ(load_checkpoint(directory.path() / "straight" / "best.safetensors").training.best_is_averaged, a.training.best_is_averaged);

    TrainOptions plain = tiny_options(directory, "later");
    plain.steps = 9;
    train(plain);
    ResumeRequest request;
    request.run_directory = plain.run_directory;
    request.options.steps = 12;
    request.options.average_decay = 0.9;
    request.given = {"--steps", "--ema"};
    RecordingProgress progress;
    resume_training(request, progress);
    EXPECT_TRUE(std::any_of(progress.notes.begin(), progress.notes.end(), [](const std::string& note) {
        return note == "--ema 0.9: the average of the parameters starts at step 9";
    })) << fmt::format("{}", fmt::join(progress.notes, "\n"));
    EXPECT_TRUE(load_checkpoint(plain.run_directory / "last.safetensors").average.has_value());
}

TEST(Train, ValidatesOnTheSameSubsetEachTimeAndOnAllTheHeldOutTextAtTheEndWhereItIsShort) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.validation_characters = 40;
    RecordingProgress progress;
    const TrainResult result = train(options, progress);
    Checkpoint last = load_checkpoint(result.last_checkpoint);
    const std::vector<TokenId> held_out = held_out_ids(last.vocab);
    const std::size_t all = held_out.size() - 1;
    ASSERT_GT(all, 200u);
    const EvaluationSelection subset{.max_characters = 40};
    EXPECT_EQ(evaluation_pair_count(held_out, 4, subset), 40u) << "10 steps of each of the 4 streams";
    ASSERT_EQ(progress.runs.size(), 1u);
    EXPECT_EQ(progress.runs[0].periodic_validation_characters, 40u);
    EXPECT_EQ(progress.evaluated_steps(), (std::vector<std::int64_t>{7, 14, 20}));
    for (const ProgressReport& report : progress.reports) {
        if (!report.evaluated) continue;
        EXPECT_EQ(report.validation_characters, 40u);
        EXPECT_EQ(report.held_out_characters, all);
    }
    // The last validation, of the subset, and the pass over all of it at the end: the same parameters.
    EXPECT_NEAR(*progress.reports.back().validation_loss, evaluate_loss(*last.model, held_out, 16, 4, subset).mean(), 1e-9);
    ASSERT_TRUE(result.final_validation_loss.has_value());
    EXPECT_NEAR(*result.final_validation_loss, evaluate_loss(*last.model, held_out, 16, 4).mean(), 1e-9);
    EXPECT_NE(*result.final_validation_loss, *progress.reports.back().validation_loss);
    EXPECT_EQ(result.validation_characters, 40u);
    EXPECT_EQ(result.held_out_characters, all);
    ASSERT_EQ(progress.results.size(), 1u);
    EXPECT_EQ(progress.results[0].final_validation_loss, result.final_validation_loss);
    // Said before it begins, since on a large text it takes a while: after the last save, before the end.
    ASSERT_FALSE(progress.notes.empty());
    EXPECT_EQ(progress.notes.back(), fmt::format("scoring all {} held-out characters at step 20 (each validation scored 40 of them)", all));
    ASSERT_GE(progress.events.size(), 3u);
    EXPECT_EQ(progress.events[progress.events.size() - 2].kind, "note");
    EXPECT_EQ(progress.events[progress.events.size() - 3].kind, "report");
    // metrics.jsonl: each validation's characters, and the full figure last.
    const auto records = metrics_records(options.run_directory);
    ASSERT_FALSE(records.empty());
    EXPECT_EQ(records.back(), (nlohmann::json{{"step", 20}, {"final_validation_loss", *result.final_validation_loss},
                                              {"validation_characters", all}, {"held_out_characters", all}}));
    expect_metrics_match_reports(options.run_directory, progress.reports);
}

TEST(Train, ValidatingOnAllTheHeldOutTextNeedsNoPassAtTheEnd) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    // --val-chars 0; and automatic, with a quarter of 100 x 16 x 4 characters between validations: more than it holds.
    for (const bool automatic : {false, true}) {
        SCOPED_TRACE(automatic);
        TrainOptions options = tiny_options(directory, automatic ? "automatic" : "zero");
        if (automatic) options.eval_every = 100;
        else options.validation_characters = 0;
        RecordingProgress progress;
        const TrainResult result = train(options, progress);
        EXPECT_FALSE(result.final_validation_loss.has_value());
        EXPECT_EQ(result.validation_characters, result.held_out_characters);
        EXPECT_EQ(progress.runs.at(0).periodic_validation_characters, progress.runs.at(0).validation_characters - 1);
        ASSERT_FALSE(progress.evaluated_steps().empty());
        for (const ProgressReport& report : progress.reports)
            if (report.evaluated) {
                EXPECT_EQ(report.validation_characters, report.held_out_characters);
            }
        for (const std::string& note : progress.notes) EXPECT_EQ(note.find("scoring all"), std::string::npos) << note;
        EXPECT_FALSE(metrics_records(options.run_directory).back().contains("final_validation_loss"));
        expect_metrics_match_reports(options.run_directory, progress.reports);
    }
}

// A corpus whose held-out half (--val-fraction 0.5) is past kFinalValidationFloor: the run's end may
// not score all of it automatically, after 20 steps of 16 x 4 characters.
std::string corpus_past_the_final_floor() {
    std::string text;
    for (int i = 0; text.size() < 2 * kFinalValidationFloor + 60'000; ++i)
        text += fmt::format("Line {}: to be, or not to be: that is the question. Ser o no ser, ésa es la cuestión.\n", i % 97);
    return text;
}

TEST(Train, TheRunsEndScoresAnEvenlySpreadPartWhereAllOfItWouldCostTooMuch) {
    TemporaryDirectory directory;
    const std::string corpus = corpus_past_the_final_floor();
    directory.write("corpus.txt", corpus);
    TrainOptions options = tiny_options(directory, "run");
    options.validation_fraction = 0.5;
    options.validation_characters = 40;
    // 20 steps trained 20 x 16 x 4 characters: the share of them is far below the floor, which bounds the pass.
    ASSERT_EQ(final_validation_characters(options, 20), kFinalValidationFloor);
    RecordingProgress progress;
    const TrainResult result = train(options, progress);
    Checkpoint last = load_checkpoint(result.last_checkpoint);
    const std::vector<TokenId> ids = last.vocab.encode(decode_utf8(corpus, "corpus"));
    const std::vector<TokenId> held_out(ids.end() - static_cast<std::ptrdiff_t>(validation_size(ids.size(), 0.5)), ids.end());
    const EvaluationSelection bounded{.max_characters = kFinalValidationFloor};
    const std::size_t covered = evaluation_pair_count(held_out, 4, bounded);
    ASSERT_GT(held_out.size() - 1, covered) << "the pass covers part of the held-out text, not all of it";
    EXPECT_GE(covered, kFinalValidationFloor);
    ASSERT_TRUE(result.final_validation_loss.has_value());
    EXPECT_EQ(result.final_validation_characters, covered);
    EXPECT_EQ(result.held_out_characters, held_out.size() - 1);
    EXPECT_NEAR(*result.final_validation_loss, evaluate_loss(*last.model, held_out, 16, 4, bounded).mean(), 1e-9);
    EXPECT_NE(*result.final_validation_loss, evaluate_loss(*last.model, held_out, 16, 4).mean()) << "not the figure of all of it";
    ASSERT_FALSE(progress.notes.empty());
    EXPECT_EQ(progress.notes.back(), fmt::format("scoring {} of the {} held-out characters at step 20, spread evenly (each validation "
                                                 "scored 40; --final-val all scores all of them)",
                                                 format_count(covered), format_count(held_out.size() - 1)));
    // metrics.jsonl says what the figure covers, and of how many.
    EXPECT_EQ(metrics_records(options.run_directory).back(),
              (nlohmann::json{{"step", 20}, {"final_validation_loss", *result.final_validation_loss},
                              {"validation_characters", covered}, {"held_out_characters", held_out.size() - 1}}));

    // --final-val all: every character, however long; none: no pass at all.
    options.final_validation = FinalValidation::all;
    options.run_directory = directory.path() / "all";
    const TrainResult all = train(options);
    ASSERT_TRUE(all.final_validation_loss.has_value());
    EXPECT_EQ(all.final_validation_characters, held_out.size() - 1);
    EXPECT_NEAR(*all.final_validation_loss, evaluate_loss(*last.model, held_out, 16, 4).mean(), 1e-9) << "the same weights, all of it";
    options.final_validation = FinalValidation::none;
    options.run_directory = directory.path() / "none";
    RecordingProgress quiet;
    const TrainResult none = train(options, quiet);
    EXPECT_FALSE(none.final_validation_loss.has_value());
    for (const std::string& note : quiet.notes) EXPECT_EQ(note.find("scoring"), std::string::npos) << note;
    EXPECT_FALSE(metrics_records(options.run_directory).back().contains("final_validation_loss"));
}

TEST(Train, TheAutomaticHeldOutPartIsFivePercentUpToItsBoundAndAGivenFractionWins) {
    TrainOptions options;  // --val-fraction auto
    EXPECT_EQ(held_out_size(options, 1'000'000), 50'000u);
    EXPECT_EQ(held_out_size(options, 200'000'000), kMostAutomaticHeldOut) << "5% would be 10M: the bound itself";
    EXPECT_EQ(held_out_size(options, 10'000'000'000), kMostAutomaticHeldOut) << "not 500M";
    EXPECT_EQ(validation_fraction_text(options), "auto");
    options.validation_fraction = 0.05;  // given, even at auto's share: no bound
    EXPECT_EQ(held_out_size(options, 10'000'000'000), 500'000'000u);
    EXPECT_EQ(validation_fraction_text(options), "0.05");
    // Recorded as the command line gave it, so that a resume splits the text as the run did.
    options.model.vocab_size = 10;
    TrainOptions automatic = options;
    automatic.validation_fraction = std::nullopt;
    EXPECT_EQ(automatic.to_json().at("validation_fraction"), "auto");
    EXPECT_EQ(TrainOptions::from_json(automatic.to_json()).validation_fraction, std::nullopt);
    EXPECT_EQ(TrainOptions::from_json(options.to_json()).validation_fraction, 0.05);
}

TEST(Train, TheBoundOfTheRunsEndGrowsWithTheCharactersTrained) {
    TrainOptions options;
    options.seq_length = 100;
    options.batch_size = 64;
    EXPECT_EQ(final_validation_characters(options, 1), kFinalValidationFloor);
    // 10,000 steps of 6,400 characters: 64M trained, of which the share is 19.2M.
    EXPECT_EQ(final_validation_characters(options, 10'000), static_cast<std::uint64_t>(kFinalValidationShare * 64'000'000));
    EXPECT_GT(final_validation_characters(options, 20'000), final_validation_characters(options, 10'000));
    options.final_validation = FinalValidation::all;
    EXPECT_EQ(final_validation_characters(options, 1), 0u) << "0: all of it";
}

TEST(Train, AStopRequestDuringTheRunsEndScoringEndsItAtOnceWithTheCheckpointsIntact) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", corpus_past_the_final_floor());
    TrainOptions options = tiny_options(directory, "run");
    options.validation_fraction = 0.5;
    options.validation_characters = 40;
    options.final_validation = FinalValidation::all;
    // Ctrl-C as the pass begins: the note that announces it comes just before its first window.
    class StoppingAtTheScoring : public RecordingProgress {
    public:
        void note(const std::string& message) override {
            RecordingProgress::note(message);
            if (message.starts_with("scoring")) request_training_stop();
        }
    } progress;
    const TrainResult result = train(options, progress);
    EXPECT_TRUE(result.final_validation_cut_short);
    EXPECT_FALSE(result.final_validation_loss.has_value()) << "no figure of a pass cut short";
    EXPECT_EQ(result.stopped_by, StopReason::steps) << "the run itself had finished";
    EXPECT_EQ(result.steps, 20);
    ASSERT_FALSE(progress.warnings.empty());
    EXPECT_NE(progress.warnings.back().find("stopped during the scoring of the held-out text"), std::string::npos) << progress.warnings.back();
    EXPECT_EQ(load_checkpoint(result.last_checkpoint).training.step, 20);
    EXPECT_EQ(load_checkpoint(result.best_checkpoint).training.step, 20);
    EXPECT_FALSE(metrics_records(options.run_directory).back().contains("final_validation_loss"));
    // The next run in this process is not stopped by this one's request.
    options.run_directory = directory.path() / "next";
    options.final_validation = FinalValidation::automatic;
    EXPECT_TRUE(train(options).final_validation_loss.has_value());
}

TEST(Train, ResumeKeepsOrChangesTheValidationCharacters) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.validation_characters = 40;
    options.steps = 7;
    train(options);
    // With given_value, --val-chars is given: `value` (none: auto).
    auto resume = [&](std::int64_t steps, RecordingProgress& progress, bool given_value, std::optional<std::uint64_t> value = {}) {
        ResumeRequest request;
        request.run_directory = options.run_directory;
        request.options.steps = steps;
        request.given = {"--steps"};
        if (given_value) {
            request.options.validation_characters = value;
            request.given.push_back("--val-chars");
        }
        return resume_training(request, progress);
    };
    auto stored = [&] { return load_checkpoint(options.run_directory / "last.safetensors").training.options.at("validation_characters"); };

    RecordingProgress kept;
    EXPECT_TRUE(resume(10, kept, false).final_validation_loss.has_value());
    EXPECT_EQ(stored(), 40);
    EXPECT_EQ(kept.reports.back().validation_characters, 40u);
    EXPECT_TRUE(kept.warnings.empty());

    RecordingProgress whole;
    const TrainResult after_whole = resume(14, whole, true, 0);
    EXPECT_FALSE(after_whole.final_validation_loss.has_value());
    EXPECT_EQ(stored(), 0);
    EXPECT_EQ(whole.reports.back().validation_characters, whole.reports.back().held_out_characters);
    ASSERT_FALSE(whole.notes.empty());
    EXPECT_NE(whole.notes[0].find("--val-chars 0 (was 40)"), std::string::npos) << whole.notes[0];
    // The figures from now on cover another part of the text than the best so far.
    ASSERT_EQ(whole.warnings.size(), 1u);
    EXPECT_EQ(whole.warnings[0].rfind(fmt::format("each validation now scores {0} of the {0} held-out characters, not 40", after_whole.held_out_characters), 0), 0u)
        << whole.warnings[0];
    EXPECT_NE(whole.warnings[0].find("give --val-chars 40 to keep them as they were"), std::string::npos) << whole.warnings[0];
    // The summary's best figure says what it covered: all the text where a validation since scored a
    // new best, else the 40 characters it was scored on before (a new-user pass found the summary
    // claiming the new coverage for the old figure).
    const bool improved = std::any_of(whole.reports.begin(), whole.reports.end(), [](const auto& report) { return report.new_best; });
    EXPECT_EQ(after_whole.validation_characters, improved ? after_whole.held_out_characters : 40u);
    EXPECT_EQ(load_checkpoint(options.run_directory / "last.safetensors").training.best_validation_characters,
              improved ? after_whole.held_out_characters : 40u);

    RecordingProgress automatic;
    resume(15, automatic, true);
    EXPECT_EQ(stored(), "auto");
    EXPECT_NE(automatic.notes.at(0).find("--val-chars auto (was 0)"), std::string::npos) << automatic.notes[0];
    EXPECT_EQ(automatic.reports.back().validation_characters, 112u) << "a quarter of 7 x 16 x 4";
    ASSERT_EQ(automatic.warnings.size(), 1u);
    EXPECT_NE(automatic.warnings[0].find("give --val-chars 0 to keep them as they were"), std::string::npos) << automatic.warnings[0];
}

TEST(Train, PlotDrawsTheLossCurves) {
    if (std::system("command -v gnuplot >/dev/null 2>&1") != 0) GTEST_SKIP() << "gnuplot is not installed (apt-get install gnuplot-nox)";
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    train(options);
    const auto png = directory.path() / "loss.png";
    plot_losses(options.run_directory, png);
    const std::string bytes = read_bytes(png);
    ASSERT_GT(bytes.size(), 1000u);
    EXPECT_EQ(bytes.substr(1, 3), "PNG");
    EXPECT_THROW(plot_losses(directory.path(), png), Error);  // no metrics.jsonl there
}

TEST(Train, RefusesToOverwriteAnExistingRun) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.steps = 3;
    train(options);
    const std::string before = read_bytes(options.run_directory / "last.safetensors");
    EXPECT_THROW(train(options), Error);
    EXPECT_EQ(read_bytes(options.run_directory / "last.safetensors"), before);
    options.overwrite = true;
    EXPECT_NO_THROW(train(options));
}

TEST(Train, RefusesBadTextsAndOptions) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    directory.write("one.txt", std::string(500, 'a'));
    directory.write("short.txt", "tiny text");
    TrainOptions options = tiny_options(directory, "run");
    options.corpus = directory.path() / "one.txt";
    EXPECT_THROW(train(options), Error);
    options.corpus = directory.path() / "short.txt";
    EXPECT_THROW(train(options), Error);
    options = tiny_options(directory, "run");
    options.seq_length = 0;
    EXPECT_THROW(train(options), Error);
    options = tiny_options(directory, "run");
    options.learning_rate_schedule.peak_learning_rate = -1;
    EXPECT_THROW(train(options), Error);
    options = tiny_options(directory, "run");
    options.model.hidden_size = 1 << 20;
    EXPECT_THROW(train(options), Error);
    EXPECT_FALSE(std::filesystem::exists(options.run_directory / "last.safetensors"));
}

// The message of the Error that `run` throws, or a failure naming `expected` where it throws none.
template <typename Run>
std::string error_of(Run&& run, const std::string& expected = "an Error") {
    try {
        run();
    } catch (const Error& error) {
        return error.what();
    }
    ADD_FAILURE() << "expected " << expected;
    return {};
}

// Rewrites a run's last.safetensors with its training options changed by `edit`, as a crafted file would be.
void edit_training_options(const std::filesystem::path& run_directory, const std::function<void(nlohmann::json&)>& edit) {
    const auto last = run_directory / "last.safetensors";
    Checkpoint checkpoint = load_checkpoint(last);
    edit(checkpoint.training.options);
    save_checkpoint(last, *checkpoint.model, checkpoint.vocab, checkpoint.training, &*checkpoint.optimizer,
                    &*checkpoint.carried_state);
}

bool all_finite(const Checkpoint& checkpoint) {
    for (const auto& parameter : checkpoint.model->parameters())
        if (!parameter.value.allFinite()) return false;
    return true;
}

TEST(Train, DivergenceStopsAndKeepsTheLastGoodCheckpoint) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.steps = 14;
    train(options);
    const auto last = options.run_directory / "last.safetensors";
    const std::string good = read_bytes(last);
    // A learning rate that makes a weight infinite at once, and one that only sends the loss soaring.
    for (const char* rate : {"1e38", "1e20"}) {
        SCOPED_TRACE(rate);
        ResumeRequest request;
        request.run_directory = options.run_directory;
        request.options.learning_rate_schedule.peak_learning_rate = std::stod(rate);
        request.options.clip = 0;
        request.options.steps = 40;
        request.given = {"--lr", "--clip", "--steps"};
        const std::string message = error_of([&] { resume_training(request); }, "divergence");
        EXPECT_NE(message.find("training diverged"), std::string::npos) << message;
        EXPECT_NE(message.find("keeps step 14"), std::string::npos) << message;
        EXPECT_EQ(read_bytes(last), good);  // nothing of the diverged state written
        EXPECT_TRUE(all_finite(load_checkpoint(last)));
    }
}

TEST(Train, DivergenceBeforeTheFirstCheckpointSaysThereIsNone) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.learning_rate_schedule.peak_learning_rate = 1e38;
    options.clip = 0;
    const std::string message = error_of([&] { train(options); }, "divergence");
    EXPECT_NE(message.find("no checkpoint of this run was saved yet"), std::string::npos) << message;
    EXPECT_FALSE(std::filesystem::exists(options.run_directory / "last.safetensors"));
    EXPECT_FALSE(std::filesystem::exists(options.run_directory / "best.safetensors"));
}

TEST(Train, EveryWayARunEndsSavesItsLastStep) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    auto expect_saved = [](const TrainResult& result) {
        const Checkpoint last = load_checkpoint(result.last_checkpoint);
        EXPECT_EQ(last.training.step, result.steps);
        EXPECT_TRUE(std::filesystem::exists(result.best_checkpoint));
    };
    // --minutes, between validations: the step it stops on is validated and saved.
    TrainOptions minutes = tiny_options(directory, "minutes");
    minutes.steps = 0;
    minutes.minutes = 0.5 / 60;
    minutes.eval_every = 1000000;
    const TrainResult by_minutes = train(minutes);
    EXPECT_EQ(by_minutes.stopped_by, StopReason::minutes);
    EXPECT_GT(by_minutes.steps, 0);
    expect_saved(by_minutes);
    // --steps that are no multiple of --eval-every.
    TrainOptions steps = tiny_options(directory, "steps");
    steps.steps = 11;
    const TrainResult by_steps = train(steps);
    EXPECT_EQ(by_steps.stopped_by, StopReason::steps);
    EXPECT_EQ(by_steps.steps, 11);
    expect_saved(by_steps);
    // --patience.
    TrainOptions patience = tiny_options(directory, "patience");
    patience.learning_rate_schedule.peak_learning_rate = 0.5;
    patience.eval_every = 2;
    patience.patience = 2;
    patience.steps = 200;
    const TrainResult by_patience = train(patience);
    EXPECT_EQ(by_patience.stopped_by, StopReason::patience);
    expect_saved(by_patience);
}

TEST(Train, ResumeAppliesTheOptionsARunMayChange) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.steps = 10;
    train(options);
    ResumeRequest request;
    request.run_directory = options.run_directory;
    request.options.learning_rate_schedule.peak_learning_rate = 5e-4;
    request.options.model.dropout = 0.2;
    request.options.eval_every = 3;
    request.options.steps = 14;
    request.given = {"--lr", "--dropout", "--eval-every", "--steps"};
    RecordingProgress progress;
    const TrainResult result = resume_training(request, progress);
    EXPECT_EQ(result.steps, 14);
    ASSERT_EQ(progress.runs.size(), 1u);
    EXPECT_TRUE(progress.runs[0].resumed);
    EXPECT_EQ(progress.runs[0].first_step, 10);
    EXPECT_EQ(progress.steps_in_order(), (std::vector<std::int64_t>{11, 12, 13, 14}));
    ASSERT_FALSE(progress.notes.empty());
    EXPECT_NE(progress.notes[0].find("at step 10; changed: --lr 0.0005 (was 0.002), --dropout 0.2 (was 0)"), std::string::npos)
        << progress.notes[0];
    // --eval-every 3 makes each (automatic) validation score less than before: a warning says so.
    ASSERT_EQ(progress.warnings.size(), 1u);
    EXPECT_EQ(progress.warnings[0].rfind("each validation now scores 48 of the ", 0), 0u) << progress.warnings[0];
    const Checkpoint last = load_checkpoint(options.run_directory / "last.safetensors");
    EXPECT_EQ(last.training.options.at("learning_rate").get<double>(), 5e-4);
    EXPECT_EQ(last.training.options.at("eval_every").get<int>(), 3);
    EXPECT_EQ(last.config.dropout, 0.2);
    // The rate the steps after the resume used, as metrics.jsonl logged it (a validation at step 12).
    std::ifstream metrics(options.run_directory / "metrics.jsonl");
    std::string line, last_report;
    while (std::getline(metrics, line))
        if (line.find("learning_rate") != std::string::npos) last_report = line;
    EXPECT_EQ(nlohmann::json::parse(last_report).at("learning_rate").get<double>(), 5e-4) << last_report;
}

TEST(Train, ResumeRefusesOptionsTheCheckpointFixes) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.steps = 5;
    train(options);
    const std::string before = read_bytes(options.run_directory / "last.safetensors");
    auto refused = [&](const std::string& flag, const std::function<void(TrainOptions&)>& set) {
        ResumeRequest request;
        request.run_directory = options.run_directory;
        request.options = options;
        set(request.options);
        request.given = {flag};
        try {
            resume_training(request);
            ADD_FAILURE() << flag << " was not refused";
        } catch (const UsageError& error) {
            EXPECT_NE(std::string(error.what()).find(flag), std::string::npos) << error.what();
        }
    };
    refused("--hidden", [](TrainOptions& o) { o.model.hidden_size = 64; });
    refused("--layers", [](TrainOptions& o) { o.model.layers = 3; });
    refused("--cell", [](TrainOptions& o) { o.model.cell = CellType::gru; });
    refused("--seq", [](TrainOptions& o) { o.seq_length = 32; });
    refused("--batch", [](TrainOptions& o) { o.batch_size = 8; });
    refused("--seed", [](TrainOptions& o) { o.seed = 99; });
    refused("--val-fraction", [](TrainOptions& o) { o.validation_fraction = 0.2; });
    EXPECT_EQ(read_bytes(options.run_directory / "last.safetensors"), before);
    // The same value as the run's is no change, and is accepted.
    ResumeRequest same;
    same.run_directory = options.run_directory;
    same.options = options;
    same.options.steps = 6;
    same.given = {"--hidden", "--seq", "--steps"};
    EXPECT_EQ(resume_training(same).steps, 6);
}

TEST(Train, ResumeChecksTheCorpusAndFollowsAMovedOne) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.steps = 5;
    train(options);
    const Checkpoint first = load_checkpoint(options.run_directory / "last.safetensors");
    EXPECT_EQ(first.training.options.at("corpus_sha256").get<std::string>().size(), 64u);
    EXPECT_EQ(first.training.options.at("corpus_size_bytes").get<std::uint64_t>(), small_corpus().size());

    std::filesystem::rename(directory.path() / "corpus.txt", directory.path() / "moved.txt");
    std::string message = error_of([&] { resume_to(options.run_directory, 8); });
    EXPECT_NE(message.find("--corpus"), std::string::npos) << message;

    ResumeRequest request;
    request.run_directory = options.run_directory;
    request.options.steps = 8;
    request.given = {"--steps"};
    request.corpus = directory.path() / "other.txt";
    directory.write("other.txt", small_corpus() + "more");
    message = error_of([&] { resume_training(request); });
    EXPECT_NE(message.find("not the corpus the run started on"), std::string::npos) << message;

    request.corpus = directory.path() / "moved.txt";
    EXPECT_EQ(resume_training(request).steps, 8);
    const Checkpoint moved = load_checkpoint(options.run_directory / "last.safetensors");
    EXPECT_EQ(moved.training.options.at("corpus").get<std::string>(), (directory.path() / "moved.txt").string());
}

TEST(Train, ACraftedCheckpointCannotMakeARunReadAnotherFile) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    directory.write("secret.txt", std::string(200, 's') + small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.steps = 5;
    train(options);
    edit_training_options(options.run_directory, [&](nlohmann::json& stored) {
        stored["corpus"] = (directory.path() / "secret.txt").string();
    });
    const std::string message = error_of([&] { resume_to(options.run_directory, 8); });
    EXPECT_NE(message.find("secret.txt: not the corpus the run started on"), std::string::npos) << message;
}

TEST(Train, AnUnknownScheduleInACheckpointIsTheFilesFaultNotTheUsers) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.steps = 3;
    train(options);
    edit_training_options(options.run_directory, [](nlohmann::json& stored) { stored["lr_schedule"] = "linear"; });
    try {
        resume_to(options.run_directory, 8);
        ADD_FAILURE() << "resumed";
    } catch (const UsageError& error) {
        ADD_FAILURE() << "a usage error, where the checkpoint is at fault: " << error.what();
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("unknown learning-rate schedule, 'linear'"), std::string::npos) << error.what();
    }
}

TEST(Train, ACheckpointFromBeforeValCharsGoesOnValidatingOnAllTheHeldOutText) {
    // Its best loss is a figure of all the held-out text: only figures of all of it compare with it.
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.steps = 7;
    train(options);
    edit_training_options(options.run_directory, [](nlohmann::json& stored) {
        ASSERT_EQ(stored.erase("validation_characters"), 1u);
    });
    RecordingProgress progress;
    const TrainResult result = resume_to_with(options.run_directory, 14, progress);
    EXPECT_EQ(result.steps, 14);
    EXPECT_FALSE(result.final_validation_loss.has_value());
    EXPECT_TRUE(progress.warnings.empty());
    ASSERT_FALSE(progress.reports.empty());
    EXPECT_EQ(progress.reports.back().validation_characters, progress.reports.back().held_out_characters);
    EXPECT_EQ(load_checkpoint(result.last_checkpoint).training.options.at("validation_characters"), 0);
}

TEST(Train, TheMemoryGuardOfAResumeUsesTheCheckpointsTensors) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.steps = 3;
    train(options);
    // Options that claim a 1-unit model, with windows so long that the real 16-unit one would not fit.
    edit_training_options(options.run_directory, [](nlohmann::json& stored) {
        stored["model"]["hidden_size"] = 1;
        stored["seq_length"] = 40'000'000;
    });
    const std::string message = error_of([&] { resume_to(options.run_directory, 8); });
    EXPECT_NE(message.find("too large"), std::string::npos) << message;
}

TEST(Train, OneTrainingPerRunDirectory) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    std::filesystem::create_directories(options.run_directory);
    {
        const RunLock held(options.run_directory);
        const std::string message = error_of([&] { train(options); });
        EXPECT_NE(message.find("in use by another training (pid " + std::to_string(::getpid()) + ")"), std::string::npos)
            << message;
        EXPECT_FALSE(std::filesystem::exists(options.run_directory / "last.safetensors"));
    }
    EXPECT_EQ(train(options).steps, 20);  // released with its holder
}

TEST(Train, WithoutValidationTextThereIsNoBestCheckpoint) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.validation_fraction = 0;
    RecordingProgress progress;
    const TrainResult result = train(options, progress);
    EXPECT_FALSE(result.validated);
    ASSERT_EQ(progress.warnings.size(), 1u);
    EXPECT_EQ(progress.warnings[0].rfind("no validation text", 0), 0u) << progress.warnings[0];
    EXPECT_EQ(progress.evaluated_steps(), (std::vector<std::int64_t>{7, 14, 20}));
    for (const SavedCheckpoint& checkpoint : progress.checkpoints) EXPECT_EQ(checkpoint.kind, CheckpointKind::last);
    for (const ProgressReport& report : progress.reports) EXPECT_FALSE(report.validation_loss || report.new_best);
    expect_metrics_match_reports(options.run_directory, progress.reports);  // validation_loss: null
    EXPECT_TRUE(result.best_checkpoint.empty());
    EXPECT_FALSE(std::filesystem::exists(options.run_directory / "best.safetensors"));
    EXPECT_EQ(load_checkpoint(result.last_checkpoint).training.step, 20);
    options.patience = 3;
    options.overwrite = true;
    EXPECT_THROW(train(options), UsageError);
}

TEST(Train, ReadsACorpusFromAPipeThroughACopyInTheRunDirectory) {
    TemporaryDirectory directory;
    const auto fifo = directory.path() / "corpus.fifo";
    ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
    std::thread writer([&] { std::ofstream(fifo, std::ios::binary) << small_corpus(); });
    TrainOptions options = tiny_options(directory, "run");
    options.corpus = fifo;
    options.steps = 5;
    const TrainResult result = train(options);
    writer.join();
    EXPECT_EQ(result.steps, 5);
    const auto copy = options.run_directory / "corpus.txt";
    EXPECT_EQ(read_bytes(copy), small_corpus());
    const Checkpoint last = load_checkpoint(result.last_checkpoint);
    EXPECT_EQ(last.training.options.at("corpus").get<std::string>(), std::filesystem::absolute(copy).string());
    EXPECT_EQ(resume_to(options.run_directory, 8).steps, 8);  // the copy is what a resume reads
}

TEST(Train, RefusesPathsThatACheckpointCannotRecord) {
    TemporaryDirectory directory;
    const auto corpus = directory.write("bad\xff.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.corpus = corpus;
    const std::string message = error_of([&] { train(options); });
    EXPECT_NE(message.find("not UTF-8"), std::string::npos) << message;
    EXPECT_NE(message.find("bad\\xFF.txt"), std::string::npos) << message;
    EXPECT_FALSE(std::filesystem::exists(options.run_directory));
}

TEST(Train, AnExplodedValidationLossIsCaughtBeforeItIsSaved) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.learning_rate_schedule.peak_learning_rate = 1e20;  // the first update already explodes; the step after it would say so too late
    options.eval_every = 1;
    const std::string message = error_of([&] { train(options); }, "divergence");
    EXPECT_NE(message.find("the validation loss became"), std::string::npos) << message;
    EXPECT_FALSE(std::filesystem::exists(options.run_directory / "last.safetensors"));
    EXPECT_FALSE(std::filesystem::exists(options.run_directory / "best.safetensors"));
}

TEST(Train, AModelTooLargeForThisMachineIsRefusedBeforeAnythingIsAllocated) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.model.hidden_size = 16384;  // within the bounds of a config: a billion parameters, 30 GB to train
    options.model.layers = 1;
    if (static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGE_SIZE)) > 30e9)
        GTEST_SKIP() << "this machine has the memory for it";
    try {
        train(options);
        ADD_FAILURE() << "not refused";
    } catch (const UsageError& error) {
        EXPECT_NE(std::string(error.what()).find("GB for its parameters"), std::string::npos) << error.what();
    }
    EXPECT_FALSE(std::filesystem::exists(options.run_directory));
}

// ---- --init-from ----

std::string english_corpus() {
    std::string text;
    for (int i = 0; i < 60; ++i) text += "To be, or not to be: that is the question.\n";
    return text;
}

// Beside english_corpus()'s characters, eight new ones: ? S c l ¿ É ñ ó.
std::string spanish_corpus() {
    std::string text;
    for (int i = 0; i < 60; ++i) text += "¿Ser o no ser? Ésa es la cuestión, señor.\n";
    return text;
}

// A run on english_corpus() in "base" and one that starts from its best checkpoint on spanish_corpus().
struct FineTuning {
    TemporaryDirectory directory;
    TrainOptions base;
    std::filesystem::path checkpoint;

    FineTuning() {
        directory.write("english.txt", english_corpus());
        directory.write("spanish.txt", spanish_corpus());
        base = tiny_options(directory, "base");
        base.corpus = directory.path() / "english.txt";
        base.steps = 30;
        train(base);
        checkpoint = base.run_directory / "best.safetensors";
    }
    TrainOptions tuning(const std::string& run) const {
        TrainOptions options = tiny_options(directory, run);
        options.corpus = directory.path() / "spanish.txt";
        options.init_from = TrainOptions::InitFrom{checkpoint, {}};
        return options;
    }
};

TEST(Train, AModelWithNewCharactersKeepsTheTrainedWeightsToTheBitAndDrawsTheNewRowsAsAFreshModelDoes) {
    ModelConfig config;
    config.vocab_size = 5;
    config.embed_size = 4;
    config.hidden_size = 6;
    config.layers = 2;
    Model<float> trained(config);
    std::mt19937_64 trained_rng(3);
    trained.initialize(trained_rng);

    std::mt19937_64 rng(9);
    ModelConfig rates;
    rates.dropout = 0.25;
    rates.embed_dropout = 0.1;
    rates.weight_drop = 0.3;
    rates.dropout_mask = DropoutMask::step;
    Model<float> widened = model_with_new_characters(trained, 8, rates, rng);
    EXPECT_EQ(widened.config().vocab_size, 8);
    EXPECT_EQ(widened.config().dropout, 0.25) << "the new run's";
    EXPECT_EQ(widened.config().embed_dropout, 0.1);
    EXPECT_EQ(widened.config().weight_drop, 0.3);
    EXPECT_EQ(widened.config().dropout_mask, DropoutMask::step);
    EXPECT_EQ(widened.config().hidden_size, 6);
    ModelConfig fresh_config = config;
    fresh_config.vocab_size = 8;
    Model<float> fresh(fresh_config);
    std::mt19937_64 fresh_rng(9);
    fresh.initialize(fresh_rng);
    EXPECT_EQ(rng(), fresh_rng()) << "it draws what a fresh model draws, and leaves the generator where a fresh run leaves it";

    ASSERT_EQ(widened.parameters().size(), trained.parameters().size());
    for (std::size_t i = 0; i < widened.parameters().size(); ++i) {
        const Matrix<float>& old = trained.parameters()[i].value;
        const Matrix<float>& now = widened.parameters()[i].value;
        const Matrix<float>& drawn = fresh.parameters()[i].value;
        SCOPED_TRACE(widened.parameters()[i].name);
        ASSERT_EQ(now.rows(), drawn.rows());
        ASSERT_EQ(now.cols(), drawn.cols());
        // The trained characters' rows (the bias's columns) and every recurrent weight as trained; the new
        // characters' as a fresh model of 8 characters draws them.
        for (Eigen::Index row = 0; row < now.rows(); ++row)
            for (Eigen::Index col = 0; col < now.cols(); ++col)
                ASSERT_EQ(now(row, col), row < old.rows() && col < old.cols() ? old(row, col) : drawn(row, col)) << row << ", " << col;
    }
    EXPECT_EQ(widened.find_parameter("embedding.weight")->value.rows(), 8);
    EXPECT_EQ(widened.find_parameter("head.bias")->value.cols(), 8);

    // On a text of the trained characters, the trained characters' logits are what they were.
    const std::vector<TokenId> inputs = {0, 3, 1, 4, 2, 2, 0, 1};  // 4 steps x 2 streams
    ModelState<float> trained_state = trained.initial_state(2), widened_state = widened.initial_state(2);
    trained.forward(inputs, 4, 2, trained_state);
    widened.forward(inputs, 4, 2, widened_state);
    const Matrix<float> old_logits = widened.logits().leftCols(5);
    EXPECT_LT((old_logits - trained.logits()).cwiseAbs().maxCoeff(), 1e-6f);
    EXPECT_LT((widened_state.hidden.back() - trained_state.hidden.back()).cwiseAbs().maxCoeff(), 1e-6f);
    EXPECT_THROW(model_with_new_characters(trained, 4, ModelConfig{}, rng), Error) << "characters are added, never taken away";
}

TEST(Train, FineTuningStartsFromTheCheckpointsWeightsWithItsIdsAndTheNewCharactersDrawnFromTheSeed) {
    FineTuning fine_tuning;
    Checkpoint trained = load_checkpoint(fine_tuning.checkpoint);
    const Vocab vocab = trained.vocab.extended_by(testing::vocab_of_text(decode_utf8(spanish_corpus(), "spanish")));
    ASSERT_EQ(vocab.size(), trained.vocab.size() + 8);

    // One step at a rate so small that Adam's update (about the rate itself) is below half a unit in the
    // last place of every weight: the run's checkpoint holds the weights it started from.
    TrainOptions options = fine_tuning.tuning("start");
    options.steps = 1;
    options.learning_rate_schedule.peak_learning_rate = 1e-30;
    options.model.weight_drop = 0.2;  // the new run's regularization, not the checkpoint's
    options.model.embed_dropout = 0.1;
    RecordingProgress progress;
    train(options, progress);
    Checkpoint started = load_checkpoint(options.run_directory / "last.safetensors");
    EXPECT_EQ(started.config.weight_drop, 0.2);
    EXPECT_EQ(started.config.embed_dropout, 0.1);
    EXPECT_EQ(started.vocab.code_points(), vocab.code_points()) << "the trained characters keep their ids; the new ones follow";
    std::mt19937_64 rng(options.seed);
    const Model<float> expected = model_with_new_characters(*trained.model, static_cast<int>(vocab.size()), ModelConfig{}, rng);
    for (std::size_t i = 0; i < expected.parameters().size(); ++i)
        EXPECT_EQ(started.model->parameters()[i].value, expected.parameters()[i].value) << expected.parameters()[i].name;
    const Matrix<float>& embedding = started.model->find_parameter("embedding.weight")->value;
    EXPECT_EQ(Matrix<float>(embedding.topRows(static_cast<Eigen::Index>(trained.vocab.size()))),
              trained.model->find_parameter("embedding.weight")->value);

    // The log says where the run started and which characters its text added.
    ASSERT_FALSE(progress.notes.empty());
    const std::string& note = progress.notes.front();
    EXPECT_NE(note.find(fmt::format("starting from {} (step {}) with a fresh optimizer", fine_tuning.checkpoint.string(),
                                    trained.training.step)),
              std::string::npos)
        << note;
    EXPECT_NE(note.find(fmt::format("the text adds 8 characters to its {}: '?' (U+003F), 'S' (U+0053)", trained.vocab.size())),
              std::string::npos)
        << note;
    EXPECT_NE(note.find("'ñ' (U+00F1)"), std::string::npos) << note;
}

TEST(Train, FineTuningOnATextWithNewCharactersLearnsItAndRecordsWhereItStarted) {
    FineTuning fine_tuning;
    const Checkpoint trained = load_checkpoint(fine_tuning.checkpoint);
    TrainOptions options = fine_tuning.tuning("tune");
    options.steps = 60;
    options.eval_every = 10;
    options.learning_rate_schedule.peak_learning_rate = 1e-2;
    options.model.dropout = 0.1;  // the new run's own
    RecordingProgress progress;
    const TrainResult result = train(options, progress);
    EXPECT_EQ(result.steps, 60) << "the new run's steps, from 0";

    std::vector<double> validation_losses;
    for (const ProgressReport& report : progress.reports)
        if (report.validation_loss) validation_losses.push_back(*report.validation_loss);
    ASSERT_GE(validation_losses.size(), 2u);
    EXPECT_LT(validation_losses.back(), validation_losses.front() - 0.3) << "it learns the new text";

    const Checkpoint last = load_checkpoint(options.run_directory / "last.safetensors");
    EXPECT_EQ(last.config.hidden_size, trained.config.hidden_size);
    EXPECT_EQ(last.config.dropout, 0.1);
    EXPECT_EQ(last.optimizer->step_count(), 60) << "a fresh optimizer";
    const nlohmann::json description = describe_checkpoint(last);
    EXPECT_EQ(description.at("init_from").at("checkpoint"), std::filesystem::absolute(fine_tuning.checkpoint).string());
    EXPECT_EQ(description.at("init_from").at("step"), trained.training.step);
    EXPECT_DOUBLE_EQ(description.at("epochs").get<double>(), 60.0 * 16 * 4 / last.training.options.at("train_characters").get<double>());
    EXPECT_NE(format_checkpoint_description(description)
                  .find(fmt::format("init from   {} (at its step {})\n", std::filesystem::absolute(fine_tuning.checkpoint).string(),
                                    trained.training.step)),
              std::string::npos)
        << format_checkpoint_description(description);

    // Its best checkpoint samples from a prompt of the new characters.
    Checkpoint best = load_checkpoint(options.run_directory / "best.safetensors");
    std::u32string sample;
    generate(*best.model, best.vocab, U"¿Ser o no ser? É", 60, SampleOptions{}, 1, [&](char32_t c) { sample += c; });
    EXPECT_EQ(sample.size(), 60u);
    for (char32_t c : sample) EXPECT_TRUE(best.vocab.contains(c));

    // It resumes as any run does, its vocabulary in the order of its ids, and still says where it started.
    EXPECT_EQ(resume_to(options.run_directory, 65).steps, 65);
    const Checkpoint resumed = load_checkpoint(options.run_directory / "last.safetensors");
    EXPECT_EQ(resumed.vocab.code_points(), last.vocab.code_points());
    EXPECT_EQ(describe_checkpoint(resumed).at("init_from"), description.at("init_from"));
    ResumeRequest again;
    again.run_directory = options.run_directory;
    again.options.init_from = TrainOptions::InitFrom{fine_tuning.checkpoint, {}};
    again.given = {"--init-from"};
    EXPECT_THROW(resume_training(again), UsageError) << "--init-from starts a run; --resume continues one";
}

TEST(Train, InitFromTakesTheModelsShapeFromItsCheckpointAndRefusesOptionsThatContradictIt) {
    FineTuning fine_tuning;  // lstm, 2 layers x 16, embedding 8
    auto refused = [&](const std::string& flag, const std::string& given, const std::string& theirs,
                       const std::function<void(ModelConfig&)>& set) {
        TrainOptions options = fine_tuning.tuning("refused");
        set(options.model);
        options.init_from->given = {"--steps", flag};
        try {
            train(options);
            ADD_FAILURE() << flag << " was not refused";
        } catch (const UsageError& error) {
            EXPECT_NE(std::string(error.what()).find(fmt::format("{} {} contradicts --init-from {}, whose model has {} {}", flag, given,
                                                                 fine_tuning.checkpoint.string(), flag, theirs)),
                      std::string::npos)
                << error.what();
        }
        EXPECT_FALSE(std::filesystem::exists(options.run_directory)) << flag;
    };
    refused("--hidden", "64", "16", [](ModelConfig& model) { model.hidden_size = 64; });
    refused("--layers", "3", "2", [](ModelConfig& model) { model.layers = 3; });
    refused("--embed", "32", "8", [](ModelConfig& model) { model.embed_size = 32; });
    refused("--cell", "gru", "lstm", [](ModelConfig& model) { model.cell = CellType::gru; });

    // Not given, the options' values are not the user's: the checkpoint's shape, whatever they hold.
    TrainOptions defaults = fine_tuning.tuning("defaults");
    defaults.model.hidden_size = 256;
    defaults.model.layers = 1;
    defaults.model.cell = CellType::rnn;
    defaults.steps = 3;
    defaults.init_from->given = {"--steps", "--dropout"};
    defaults.model.dropout = 0.2;
    train(defaults);
    const Checkpoint last = load_checkpoint(defaults.run_directory / "last.safetensors");
    EXPECT_EQ(last.config.cell, CellType::lstm);
    EXPECT_EQ(last.config.layers, 2);
    EXPECT_EQ(last.config.hidden_size, 16);
    EXPECT_EQ(last.config.dropout, 0.2);
    // Given with the checkpoint's own values, they contradict nothing.
    TrainOptions same = fine_tuning.tuning("same");
    same.steps = 3;
    same.init_from->given = {"--hidden", "--cell", "--layers", "--embed"};
    EXPECT_EQ(train(same).steps, 3);
}

TEST(Train, AnInitFromCheckpointThatCannotBeReadIsRefusedBeforeTheRunDirectoryIsTouched) {
    FineTuning fine_tuning;
    const auto garbage = fine_tuning.directory.write("garbage.safetensors", "not a checkpoint at all");
    for (const auto& [checkpoint, expected] : std::vector<std::pair<std::filesystem::path, std::string>>{
             {fine_tuning.directory.path() / "missing.safetensors", "no such checkpoint"},
             {garbage, "garbage.safetensors"},
             {fine_tuning.base.run_directory, "is a directory"}}) {
        TrainOptions options = fine_tuning.tuning("new");
        options.init_from->checkpoint = checkpoint;
        EXPECT_NE(error_of([&] { train(options); }).find(expected), std::string::npos) << checkpoint;
        EXPECT_FALSE(std::filesystem::exists(options.run_directory)) << checkpoint;
    }
    // Over a run, with --force: the run is as it was.
    TrainOptions options = fine_tuning.tuning("base");
    options.overwrite = true;
    options.init_from->checkpoint = garbage;
    std::map<std::string, std::string> before;
    for (const auto& entry : std::filesystem::directory_iterator(options.run_directory))
        before[entry.path().filename().string()] = read_bytes(entry.path());
    error_of([&] { train(options); });
    std::map<std::string, std::string> after;
    for (const auto& entry : std::filesystem::directory_iterator(options.run_directory))
        after[entry.path().filename().string()] = read_bytes(entry.path());
    EXPECT_EQ(after, before);
}

// ---- --keep-checkpoints ----

TEST(Train, KeptCheckpointsAreNamedAsCharRnnNamesThem) {
    EXPECT_EQ(kept_checkpoint_name(1200, 1.48217), "step-001200-val-1.4822.safetensors");
    EXPECT_EQ(kept_checkpoint_name(7, 0.5), "step-000007-val-0.5000.safetensors");
    EXPECT_EQ(kept_checkpoint_name(1234567, 12.25), "step-1234567-val-12.2500.safetensors");
}

// The sweep after a crash removes the temporaries of the run's own writes, and no file of the user's.
TEST(Train, RunDirectoryKnowsItsKeptCheckpointsAndStaleTemporaries) {
    EXPECT_TRUE(run_files::is_kept_checkpoint_name(kept_checkpoint_name(1200, 1.48217)));
    EXPECT_TRUE(run_files::is_kept_checkpoint_name(kept_checkpoint_name(1234567, 12.25)));
    EXPECT_FALSE(run_files::is_kept_checkpoint_name("step-12-val-1.4822.safetensors"));
    EXPECT_FALSE(run_files::is_kept_checkpoint_name(run_files::kBestCheckpoint));
    for (const char* stale : {".last.safetensors.tmp-AbC123", ".best.safetensors.tmp-x", ".corpus.ids.tmp-AbC123",
                              ".validation.ids.tmp-AbC123", ".corpus.txt.tmp-AbC123", ".validation.txt.tmp-AbC123",
                              ".step-001200-val-1.4822.safetensors.tmp-AbC123"})
        EXPECT_TRUE(run_files::is_stale_temporary(stale)) << stale;
    for (const char* kept : {"last.safetensors", ".lock", ".notes.txt.tmp-AbC123", "last.safetensors.tmp-AbC123", ".tmp-AbC123",
                             ".metrics.jsonl"})
        EXPECT_FALSE(run_files::is_stale_temporary(kept)) << kept;
    EXPECT_EQ(file_of_temporary(".last.safetensors.tmp-AbC123"), "last.safetensors");
    EXPECT_EQ(file_of_temporary("last.safetensors"), std::nullopt);
}

// The names of the run directory's kept checkpoints, in order.
std::vector<std::string> kept_checkpoints(const std::filesystem::path& run_directory) {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(run_directory))
        if (entry.path().filename().string().starts_with("step-")) names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
}

TEST(Train, KeepCheckpointsKeepsEachValidationsWeightsUnderItsStepAndLoss) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.keep_checkpoints = true;
    RecordingProgress progress;
    train(options, progress);
    std::vector<std::string> expected;
    for (const ProgressReport& report : progress.reports)
        if (report.validation_loss) expected.push_back(kept_checkpoint_name(report.step, *report.validation_loss));
    ASSERT_EQ(expected.size(), 3u);  // steps 7, 14 and 20
    EXPECT_EQ(kept_checkpoints(options.run_directory), expected);
    // Each one after last.safetensors (and best.safetensors), before the report, with its path.
    std::size_t kept = 0;
    for (std::size_t i = 0; i < progress.checkpoints.size(); ++i) {
        if (progress.checkpoints[i].kind != CheckpointKind::kept) continue;
        EXPECT_EQ(progress.checkpoints[i].path, options.run_directory / expected[kept]);
        ASSERT_GE(i, 1u);
        EXPECT_EQ(progress.checkpoints[i - 1].step, progress.checkpoints[i].step);
        ++kept;
    }
    EXPECT_EQ(kept, 3u);
    // The weights validated, loadable as any checkpoint for sampling and evaluation: step 20's are the last's.
    const Checkpoint last = load_checkpoint(options.run_directory / "last.safetensors");
    Checkpoint at_20 = load_checkpoint(options.run_directory / expected.back());
    EXPECT_EQ(at_20.training.step, 20);
    EXPECT_FALSE(at_20.optimizer.has_value()) << "weights only, as best.safetensors";
    for (std::size_t i = 0; i < last.model->parameters().size(); ++i)
        EXPECT_EQ(at_20.model->parameters()[i].value, last.model->parameters()[i].value) << last.model->parameters()[i].name;
    EXPECT_FALSE(last.training.options.contains("keep_checkpoints")) << "this invocation's choice, not the run's";
    // The best is one of them.
    const Checkpoint best = load_checkpoint(options.run_directory / "best.safetensors");
    const Checkpoint same_step = load_checkpoint(options.run_directory / kept_checkpoint_name(best.training.step, best.training.best_validation_loss));
    EXPECT_EQ(same_step.model->parameters()[0].value, best.model->parameters()[0].value);

    // Without it, none.
    TrainOptions plain = tiny_options(directory, "plain");
    train(plain);
    EXPECT_TRUE(kept_checkpoints(plain.run_directory).empty());
}

TEST(Train, KeepCheckpointsIsGivenOrNotOnEachResume) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.steps = 10;  // validates at 7 and 10, keeping nothing
    train(options);
    EXPECT_TRUE(kept_checkpoints(options.run_directory).empty());

    ResumeRequest request;
    request.run_directory = options.run_directory;
    request.options.steps = 20;
    request.options.keep_checkpoints = true;
    request.given = {"--steps", "--keep-checkpoints"};
    RecordingProgress progress;
    resume_training(request, progress);
    std::vector<std::string> expected;
    for (const ProgressReport& report : progress.reports)
        if (report.validation_loss) expected.push_back(kept_checkpoint_name(report.step, *report.validation_loss));
    ASSERT_EQ(expected.size(), 2u);  // 14 and 20
    EXPECT_TRUE(expected[0].starts_with("step-000014-val-")) << expected[0];
    EXPECT_EQ(kept_checkpoints(options.run_directory), expected);
    EXPECT_EQ(load_checkpoint(options.run_directory / expected.back()).training.step, 20);
    for (const std::string& note : progress.notes) EXPECT_EQ(note.find("--keep-checkpoints"), std::string::npos) << "not a change of the run: " << note;

    // Left out on the next resume, it keeps no more.
    resume_to(options.run_directory, 30);
    EXPECT_EQ(kept_checkpoints(options.run_directory), expected);
}

// It kept none, with a warning; by the rule for every option that acts only through validation
// (--patience, --val-chars), it is refused, before the run directory is made.
TEST(Train, KeepCheckpointsWithoutValidationTextIsRefused) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.validation_fraction = 0;
    options.keep_checkpoints = true;
    try {
        train(options);
        ADD_FAILURE() << "not refused";
    } catch (const UsageError& error) {
        EXPECT_EQ(std::string(error.what()).rfind("--keep-checkpoints keeps a checkpoint per validation, named by its loss, and "
                                                  "this run has no validation text",
                                                  0),
                  0u)
            << error.what();
    }
    EXPECT_FALSE(std::filesystem::exists(options.run_directory));
    options.validation_characters = 40;
    options.keep_checkpoints = false;
    EXPECT_THROW(train(options), UsageError) << "--val-chars 40, by the same rule";
    options.validation_characters.reset();
    EXPECT_EQ(train(options).steps, options.steps) << "without them, a run without validation text";
}

TEST(Train, AForcedRunSaysThatTheCheckpointsAnEarlierRunKeptStay) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.keep_checkpoints = true;
    options.steps = 7;
    train(options);
    const std::vector<std::string> earlier = kept_checkpoints(options.run_directory);
    ASSERT_EQ(earlier.size(), 1u);
    options.overwrite = true;
    options.keep_checkpoints = false;
    RecordingProgress progress;
    train(options, progress);
    EXPECT_EQ(kept_checkpoints(options.run_directory), earlier) << "the user's to keep";
    ASSERT_FALSE(progress.warnings.empty());
    EXPECT_NE(progress.warnings.front().find("holds 1 checkpoint that an earlier run kept"), std::string::npos) << progress.warnings.front();
}

}  // namespace
// ---- the training options' one table ----------------------------------------------------------------

namespace {

// A value other than the default for each option the table parses from text.
const std::map<std::string_view, std::string> kOtherTexts = {
    {"--cell", "gru"}, {"--dropout-mask", "step"}, {"--lr-schedule", "cosine"}, {"--val-chars", "123"}, {"--final-val", "all"}, {"--val-fraction", "0.1"}};

void set_other_than_default(const TrainOptionSpec& row, TrainOptions& options) {
    std::visit([&](auto binding) {
        using Binding = decltype(binding);
        if constexpr (std::is_same_v<Binding, TextOption>) {
            ASSERT_TRUE(kOtherTexts.contains(row.flag)) << row.flag << ": give the test a value for it";
            binding.parse(options, kOtherTexts.at(row.flag));
        } else if constexpr (std::is_same_v<Binding, OptionField<bool>>) {
            binding(options) = !binding(options);
        } else if constexpr (std::is_same_v<Binding, OptionField<double>>) {
            binding(options) += 0.25;
        } else {
            binding(options) += 3;
        }
    }, row.binding);
}

// The row's value in `options`, as text, whatever its type.
std::string value_text(const TrainOptionSpec& row, TrainOptions options) {
    return std::visit([&](auto binding) -> std::string {
        if constexpr (std::is_same_v<decltype(binding), TextOption>) return binding.show(options);
        else return fmt::format("{}", binding(options));
    }, row.binding);
}

TrainOptions options_with_a_vocabulary() {
    TrainOptions options;
    options.model.vocab_size = 10;  // ModelConfig::from_json refuses a model of no characters
    return options;
}

}  // namespace

TEST(Train, EachOptionOfTheTableIsRecordedUnderItsKeyAndReadBack) {
    const TrainOptions defaults = options_with_a_vocabulary();
    TrainOptions options = defaults;
    for (const TrainOptionSpec& row : train_option_table()) set_other_than_default(row, options);
    const nlohmann::json json = options.to_json();
    const TrainOptions back = TrainOptions::from_json(json);
    for (const TrainOptionSpec& row : train_option_table()) {
        SCOPED_TRACE(std::string(row.flag));
        ASSERT_NE(value_text(row, options), value_text(row, defaults));
        if (row.json_pointer.empty()) {  // this invocation's choice: not recorded
            EXPECT_EQ(value_text(row, back), value_text(row, defaults));
            continue;
        }
        const nlohmann::json::json_pointer pointer{std::string(row.json_pointer)};
        ASSERT_TRUE(json.contains(pointer));
        EXPECT_EQ(value_text(row, back), value_text(row, options));
        if (row.json_pointer.starts_with("/model/")) continue;  // ModelConfig's JSON, read with the model's
        // A checkpoint without the key: one from before the option (read as its row says), or an incomplete one.
        nlohmann::json without = json;
        without.erase(std::string(row.json_pointer.substr(1)));
        if (row.when_absent.empty()) {
            EXPECT_THROW(TrainOptions::from_json(without), Error);
            continue;
        }
        nlohmann::json as_absent = json;
        as_absent[pointer] = nlohmann::json::parse(row.when_absent);
        EXPECT_EQ(value_text(row, TrainOptions::from_json(without)), value_text(row, TrainOptions::from_json(as_absent)));
    }
}

TEST(Train, AResumeChangesOrRefusesEachOptionAsItsRowSays) {
    const TrainOptions run = options_with_a_vocabulary();
    const nlohmann::json stored = run.to_json();
    for (const TrainOptionSpec& row : train_option_table()) {
        SCOPED_TRACE(std::string(row.flag));
        ResumeRequest request;
        request.options = run;
        set_other_than_default(row, request.options);
        request.given = {std::string(row.flag)};
        std::vector<std::string> changes;
        if (row.json_pointer.empty()) {  // given or not on each resume, and nothing to merge
            EXPECT_EQ(options_for_resume(stored, request, changes), stored);
            EXPECT_TRUE(changes.empty());
            continue;
        }
        const nlohmann::json::json_pointer pointer{std::string(row.json_pointer)};
        if (row.on_resume == OnResume::fixed) {
            try {
                options_for_resume(stored, request, changes);
                ADD_FAILURE() << "not refused";
            } catch (const UsageError& error) {
                EXPECT_TRUE(std::string(error.what()).starts_with(std::string(row.flag) + " ")) << error.what();
                EXPECT_NE(std::string(error.what()).find("which its checkpoint fixes"), std::string::npos) << error.what();
            }
            continue;
        }
        nlohmann::json merged = options_for_resume(stored, request, changes);
        EXPECT_EQ(merged.at(pointer), request.options.to_json().at(pointer));
        ASSERT_EQ(changes.size(), 1u);
        EXPECT_TRUE(changes[0].starts_with(std::string(row.flag) + " ")) << changes[0];
        merged[pointer] = stored.at(pointer);
        EXPECT_EQ(merged, stored) << "it changed more than its own key";
    }
    ResumeRequest request;
    request.options = run;
    request.given = {"--threads"};  // not an option of the run
    std::vector<std::string> changes;
    EXPECT_THROW(options_for_resume(stored, request, changes), UsageError);
}

TEST(Train, TheCommandLineDeclaresEachOptionOfTheTableInItsOrderWithItsHelp) {
    CLI::App app;
    const cli::Command command = cli::add_train_command(app);
    std::vector<std::string> of_the_table, others;
    for (const CLI::Option* option : command.app->get_options()) {
        if (option->get_lnames().empty()) continue;  // CORPUS
        const std::string flag = "--" + option->get_lnames().front();
        const TrainOptionSpec* row = find_train_option(flag);
        if (!row) {
            others.push_back(flag);
            continue;
        }
        of_the_table.push_back(flag);
        EXPECT_EQ(option->get_description(), row->help) << flag;
        if (const auto* text = std::get_if<TextOption>(&row->binding)) {
            EXPECT_EQ(option->get_default_str(), text->show(TrainOptions())) << flag;
        }
    }
    std::vector<std::string> table;
    for (const TrainOptionSpec& row : train_option_table()) table.emplace_back(row.flag);
    EXPECT_EQ(of_the_table, table);
    // The invocation's own options, declared by hand.
    EXPECT_EQ(others, (std::vector<std::string>{"--help", "--out", "--resume", "--corpus", "--force", "--init-from", "--val", "--quiet",
                                                "--threads", "--precision"}));
}

}  // namespace charlm
