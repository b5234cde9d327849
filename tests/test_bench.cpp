// Checks bench.cpp on a tiny model: every figure present and sensible, each measurement announced, FLOP counted as
// the code runs them, bad names refused; and the CLI's table of the result (cli/terminal.cpp) readable.
#include <gtest/gtest.h>

#include "charlm/bench.hpp"
#include "charlm/error.hpp"
#include "cli/terminal.hpp"
#include "nn/input_projection.hpp"
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
    options.precision = PrecisionChoice::fp32;
    std::vector<std::string> notes;
    options.note = [&](const std::string& line) { notes.push_back(line); };
    const nlohmann::json result = run_benchmark(options);
    // The library writes nothing itself: the kernels in use, the GEMM peaks (bf16's where the CPU has it)
    // and each model reach the caller as lines.
    const bool bf16_peak = cpu_runs_bf16();
    ASSERT_EQ(notes.size(), bf16_peak ? 4u : 3u);
    EXPECT_EQ(notes[0], "kernels: " + kernels_in_use_and_why());
    EXPECT_EQ(notes[0].rfind("kernels: " + kernels_in_use() + ", ", 0), 0u) << notes[0];
    EXPECT_EQ(result.at("kernels").get<std::string>(), kernels_in_use());
    EXPECT_EQ(notes[1].rfind("GEMM 2048^3 through ", 0), 0u) << notes[1];
    EXPECT_NE(notes[1].find(" GFLOP/s on 1 thread"), std::string::npos) << notes[1];
    EXPECT_EQ(notes[1].find("1 threads"), std::string::npos) << notes[1];
    if (bf16_peak) {
        EXPECT_EQ(notes[2].rfind("GEMM 2048^3 in bf16 with fp32 sums: ", 0), 0u) << notes[2];
    }
    EXPECT_EQ(notes.back(), "measuring lstm 1x8 at 5 x 4, products in fp32, as --precision fp32 asks");
    EXPECT_EQ(result.at("bf16_gemm_gflops").is_null(), !bf16_peak);

    EXPECT_EQ(result.at("threads").get<int>(), 1);
    EXPECT_GT(result.at("gemm_gflops").get<double>(), 0);
    EXPECT_EQ(result.at("vocab_size").get<int>(), 28);  // 26 letters, space and full stop
    ASSERT_EQ(result.at("models").size(), 1u);
    const auto& row = result.at("models")[0];
    EXPECT_EQ(row.at("model").get<std::string>(), "lstm 1x8");
    EXPECT_EQ(row.at("precision").get<std::string>(), "fp32");
    for (const char* figure : {"train_chars_per_second", "eval_chars_per_second", "sample_chars_per_second", "train_gflops",
                               "fraction_of_gemm_peak", "peak_rss_megabytes"})
        EXPECT_GT(row.at(figure).get<double>(), 0) << figure;
    // The FLOP of what runs (Bench.CountsTheProductsThatRunPerCharacter's first model), not 6 x parameters.
    EXPECT_DOUBLE_EQ(row.at("train_flop_per_character").get<double>(), 3545.6);
    EXPECT_DOUBLE_EQ(row.at("eval_flop_per_character").get<double>(), 960);
    EXPECT_DOUBLE_EQ(row.at("sample_flop_per_character").get<double>(), 960);
    EXPECT_NEAR(row.at("train_gflops").get<double>(), 3545.6 * row.at("train_chars_per_second").get<double>() / 1e9, 1e-9);
    EXPECT_NEAR(row.at("eval_gflops").get<double>(), 960 * row.at("eval_chars_per_second").get<double>() / 1e9, 1e-9);
    EXPECT_NEAR(row.at("sample_gflops").get<double>(), 960 * row.at("sample_chars_per_second").get<double>() / 1e9, 1e-9);
    EXPECT_NEAR(row.at("fraction_of_gemm_peak").get<double>(),
                row.at("train_gflops").get<double>() / result.at("gemm_gflops").get<double>(), 1e-12);
    EXPECT_NEAR(row.at("eval_fraction_of_gemm_peak").get<double>(),
                row.at("eval_gflops").get<double>() / result.at("gemm_gflops").get<double>(), 1e-12);
    EXPECT_NE(result.at("flop_counted").get<std::string>().find("table lookup"), std::string::npos);

    const std::string table = format_benchmark_table(result);
    EXPECT_NE(table.find("lstm 1x8"), std::string::npos) << table;
    EXPECT_NE(table.find("5x4"), std::string::npos) << table;
    EXPECT_NE(table.find("eval GF/s"), std::string::npos) << table;
    EXPECT_NE(table.find(result.at("flop_counted").get<std::string>()), std::string::npos) << "says what it counts\n" << table;
    nlohmann::json one_thread = result;
    one_thread["threads"] = 1;
    EXPECT_EQ(format_benchmark_table(one_thread).rfind("charlm bench: 1 thread, GEMM", 0), 0u) << "not \"1 threads\"";
}

ModelConfig bench_config(CellType cell, int layers, int vocab, int embed, int hidden) {
    ModelConfig config;
    config.cell = cell;
    config.layers = layers;
    config.vocab_size = vocab;
    config.embed_size = embed;
    config.hidden_size = hidden;
    return config;
}

TEST(Bench, CountsTheProductsThatRunPerCharacter) {
    // Worked by hand, a product of m x k by k x n as 2mkn, per window of T x B characters.
    {
        // LSTM, 1 layer, V 28, E 4, H 8 (gates G = 32), 5 x 4 = 20 characters: 2V > 20, so training
        // multiplies the embedded rows; frozen weights keep the table.
        // forward: h W_hh^T 2*20*8*32 = 10240, head 2*20*8*28 = 8960, x W_ih^T 2*20*4*32 = 5120
        // backward: head 2 * 2*20*28*8 = 17920, W_hh gradient 2*32*20*8 = 10240, dL/dh for 4 of 5 steps
        // 2*16*32*8 = 8192, W_ih gradient and the input's 2 * 2*20*32*4 = 10240
        const FlopsPerCharacter flops = count_flops(bench_config(CellType::lstm, 1, 28, 4, 8), 5, 4);
        EXPECT_DOUBLE_EQ(flops.train, (10240 + 8960 + 5120 + 17920 + 10240 + 8192 + 10240) / 20.0);  // 3545.6
        EXPECT_DOUBLE_EQ(flops.evaluate, (10240 + 8960) / 20.0);  // the first layer's input: a lookup
        EXPECT_DOUBLE_EQ(flops.sample, flops.evaluate);
        EXPECT_FALSE(flops.table_in_training);
        EXPECT_TRUE(flops.table_when_frozen);
    }
    {
        // LSTM, 2 layers, V 5, E 3, H 4 (G = 16), 4 x 3 = 12 characters: 2V <= 12, the table in training too.
        // forward: h W_hh^T 2 * 2*12*4*16 = 3072, the second layer's x W_ih^T 1536, head 2*12*4*5 = 480,
        // the table 2*5*3*16 = 480
        // backward: head 2 * 2*12*5*4 = 960, W_hh gradients 2 * 2*16*12*4 = 3072, dL/dh for 3 of 4 steps
        // 2 * 2*9*16*4 = 2304, the second layer's W_ih and input gradients 2 * 2*12*16*4 = 3072, the
        // table's gradient to W_ih and to the embedding 2 * 2*5*16*3 = 960
        const FlopsPerCharacter flops = count_flops(bench_config(CellType::lstm, 2, 5, 3, 4), 4, 3);
        EXPECT_DOUBLE_EQ(flops.train, (3072 + 1536 + 480 + 480 + 960 + 3072 + 2304 + 3072 + 960) / 12.0);  // 1328
        EXPECT_DOUBLE_EQ(flops.evaluate, (3072 + 1536 + 480) / 12.0);
        EXPECT_TRUE(flops.table_in_training);
    }
    {
        // The Elman cell: one gate (G = H = 4); otherwise the previous model's first layer and head.
        // forward 2*12*4*4 = 384 + 480 + table 2*5*3*4 = 120; backward 960 + 2*4*12*4 = 384 + 2*9*4*4 = 288
        // + 2 * 2*5*4*3 = 240
        const FlopsPerCharacter flops = count_flops(bench_config(CellType::rnn, 1, 5, 3, 4), 4, 3);
        EXPECT_DOUBLE_EQ(flops.train, (384 + 480 + 120 + 960 + 384 + 288 + 240) / 12.0);
        EXPECT_DOUBLE_EQ(flops.evaluate, (384 + 480) / 12.0);
        // and the GRU's three gates
        EXPECT_DOUBLE_EQ(count_flops(bench_config(CellType::gru, 1, 5, 3, 4), 4, 3).evaluate, (3 * 384 + 480) / 12.0);
    }
}

// Whether input_projection.cpp's project_input() takes the first layer's input from its table for a window of
// `rows` tokens, with the weights changing (version 0) or frozen.
bool projects_through_table(int vocab, int embed, int gate_width, Eigen::Index rows, bool frozen) {
    const Matrix<float> embedding = Matrix<float>::Zero(vocab, embed), weight_ih = Matrix<float>::Zero(gate_width, embed);
    const Matrix<float> weight_hh = Matrix<float>::Zero(gate_width, 1), bias = Matrix<float>::Zero(1, gate_width);
    const std::vector<TokenId> tokens(static_cast<std::size_t>(rows), 0);
    ProjectionCache<float> cache;
    Matrix<float> projection(rows, gate_width);
    return project_input<float>(LayerInput<float>(tokens, embedding), LayerWeights<float>{weight_ih, weight_hh, bias, bias, frozen ? 1u : 0u},
                                cache, projection);
}

TEST(Bench, CountsTheTableWhereTheFirstLayerReallyUsesIt) {
    // count_flops() repeats input_projection.cpp's rule; if that rule changes, this says so.
    struct Case {
        CellType cell;
        int vocab, embed, hidden, seq, batch;
    };
    for (const Case& c : {Case{CellType::lstm, 65, 64, 128, 50, 50},  // the reference 2x128 on Shakespeare
                          Case{CellType::lstm, 28, 4, 8, 5, 4},        // 2V > T*B: no table in training
                          Case{CellType::gru, 10, 4, 8, 5, 4},         // 2V == T*B: the table
                          Case{CellType::lstm, 70000, 4, 64, 1, 3}}) { // V x G above 2^24: no table, even frozen
        SCOPED_TRACE("vocab " + std::to_string(c.vocab) + ", " + std::to_string(c.seq) + " x " + std::to_string(c.batch));
        const FlopsPerCharacter flops = count_flops(bench_config(c.cell, 1, c.vocab, c.embed, c.hidden), c.seq, c.batch);
        const int gate_width = (c.cell == CellType::lstm ? 4 : 3) * c.hidden;
        EXPECT_EQ(flops.table_in_training, projects_through_table(c.vocab, c.embed, gate_width, c.seq * c.batch, false));
        EXPECT_EQ(flops.table_when_frozen, projects_through_table(c.vocab, c.embed, gate_width, c.seq * c.batch, true));
    }
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
