// Checks train.cpp: a run writes its files, resuming is exact, and existing runs are not overwritten.
#include <gtest/gtest.h>

#include "charlm/checkpoint.hpp"
#include "charlm/error.hpp"
#include "charlm/plot.hpp"
#include "charlm/train.hpp"
#include "test_helpers.hpp"

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

// Resumes the run in `run_directory` to `steps` in all, as `charlm train --resume RUN --steps N` does.
TrainResult resume_to(const std::filesystem::path& run_directory, std::int64_t steps) {
    ResumeRequest request;
    request.run_directory = run_directory;
    request.options.steps = steps;
    request.given = {"--steps"};
    return resume_training(request);
}

TEST(Train, WritesCheckpointsAndMetricsAndLearns) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.steps = 60;
    options.learning_rate = 1e-2;
    const TrainResult result = train(options);
    EXPECT_EQ(result.steps, 60);
    EXPECT_TRUE(std::filesystem::exists(options.run_directory / "last.safetensors"));
    EXPECT_TRUE(std::filesystem::exists(options.run_directory / "best.safetensors"));
    const std::string metrics = read_bytes(options.run_directory / "metrics.jsonl");
    EXPECT_NE(metrics.find("\"validation_loss\""), std::string::npos);
    const Checkpoint best = load_checkpoint(options.run_directory / "best.safetensors");
    EXPECT_DOUBLE_EQ(best.training.best_validation_loss, result.best_validation_loss);
    EXPECT_LT(result.best_validation_loss, std::log(static_cast<double>(best.vocab.size())) - 0.5);
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

TEST(Train, ResumingWithDropoutAndAScheduleIsExactToo) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    auto configure = [&](const std::string& run, std::int64_t steps) {
        TrainOptions options = tiny_options(directory, run);
        options.model.dropout = 0.3;
        options.lr_schedule = "step";
        options.lr_decay_every = 6;
        options.warmup_steps = 5;
        options.steps = steps;
        return options;
    };
    train(configure("straight", 20));
    // 9 steps, then a resume to 20: both runs see the same learning rates (warmup, then step
    // decay), the same dropout masks and the same data.
    train(configure("halves", 9));
    resume_to(directory.path() / "halves", 20);
    const Checkpoint a = load_checkpoint(directory.path() / "straight" / "last.safetensors");
    const Checkpoint b = load_checkpoint(directory.path() / "halves" / "last.safetensors");
    EXPECT_EQ(b.training.step, 20);
    EXPECT_EQ(a.training.data_position, b.training.data_position);
    for (std::size_t i = 0; i < a.model->parameters().size(); ++i)
        EXPECT_EQ(a.model->parameters()[i].value, b.model->parameters()[i].value) << a.model->parameters()[i].name;
}

TEST(Train, PatienceStopsEarly) {
    TemporaryDirectory directory;
    directory.write("corpus.txt", small_corpus());
    TrainOptions options = tiny_options(directory, "run");
    options.learning_rate = 0.5;  // far too high: validation stops improving at once
    options.eval_every = 2;
    options.patience = 2;
    options.steps = 200;
    const TrainResult result = train(options);
    EXPECT_EQ(result.stopped_by, StopReason::patience);
    EXPECT_LT(result.steps, 200);
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
    options.learning_rate = -1;
    EXPECT_THROW(train(options), Error);
    options = tiny_options(directory, "run");
    options.model.hidden_size = 1 << 20;
    EXPECT_THROW(train(options), Error);
    EXPECT_FALSE(std::filesystem::exists(options.run_directory / "last.safetensors"));
}

}  // namespace
}  // namespace charlm
