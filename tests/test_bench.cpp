// Checks bench.cpp on a tiny model: every figure present and sensible, the table readable, bad names refused.
#include <gtest/gtest.h>

#include "charlm/bench.hpp"
#include "charlm/error.hpp"
#include "test_helpers.hpp"

namespace charlm {
namespace {

TEST(Bench, MeasuresEveryFigureOfASmallModel) {
    testing::TemporaryDirectory directory;
    std::string text;
    for (int i = 0; i < 200; ++i) text += "the quick brown fox jumps over the lazy dog. ";
    BenchOptions options;
    options.threads = 1;
    options.seconds_per_measurement = 0.05;
    options.corpus = directory.write("corpus.txt", text);
    options.models = {{.layers = 1, .hidden_size = 8, .embed_size = 4, .seq_length = 5, .batch_size = 4}};
    const nlohmann::json result = run_benchmark(options);

    EXPECT_EQ(result.at("threads").get<int>(), 1);
    EXPECT_GT(result.at("gemm_gflops").get<double>(), 0);
    EXPECT_EQ(result.at("vocab_size").get<int>(), 28);  // 26 letters, space and full stop
    ASSERT_EQ(result.at("models").size(), 1u);
    const auto& row = result.at("models")[0];
    EXPECT_EQ(row.at("model").get<std::string>(), "lstm 1x8");
    for (const char* figure : {"train_chars_per_second", "eval_chars_per_second", "sample_chars_per_second", "train_gflops",
                               "fraction_of_gemm_peak", "peak_rss_megabytes"})
        EXPECT_GT(row.at(figure).get<double>(), 0) << figure;
    // 6 x parameters FLOP per character trained
    EXPECT_NEAR(row.at("train_gflops").get<double>(),
                6.0 * row.at("parameters").get<double>() * row.at("train_chars_per_second").get<double>() / 1e9, 1e-9);

    const std::string table = format_benchmark_table(result);
    EXPECT_NE(table.find("lstm 1x8"), std::string::npos) << table;
    EXPECT_NE(table.find("5x4"), std::string::npos) << table;
}

TEST(Bench, RefusesACorpusShorterThanOneWindow) {
    testing::TemporaryDirectory directory;
    BenchOptions options;
    options.corpus = directory.write("short.txt", "too short");
    EXPECT_THROW(run_benchmark(options), Error);
}

TEST(Bench, SelectsReferenceModelsByName) {
    const auto selected = select_bench_models({"3x512", "2x128"});
    ASSERT_EQ(selected.size(), 2u);
    EXPECT_EQ(selected[0].hidden_size, 128);  // default order, smallest first
    EXPECT_EQ(selected[1].hidden_size, 512);
    EXPECT_THROW(select_bench_models({"2x129"}), Error);
}

}  // namespace
}  // namespace charlm
