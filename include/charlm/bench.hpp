// Speed benchmark of the library's own training, evaluation and sampling code on fixed reference models.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace charlm {

// One reference model: an LSTM stack of `layers` x `hidden_size` measured on windows of seq_length x batch_size.
struct BenchModel {
    int layers = 2;
    int hidden_size = 128;
    int embed_size = 64;
    int seq_length = 50;
    int batch_size = 50;
};

// The three sizes that the peer benchmarks (bench/onednn_lstm.cpp, scripts/bench_torch.py) also measure,
// smallest first: peak RSS is a process-wide high-water mark, so a small model measured after a big one
// would report the big one's memory.
std::vector<BenchModel> default_bench_models();

// The reference models named "LAYERSxHIDDEN" (e.g. "3x512"), in default order; throws Error for another name.
std::vector<BenchModel> select_bench_models(const std::vector<std::string>& names);

// The Shakespeare corpus next to the checkout when present, else data/kjv.txt.
std::filesystem::path default_bench_corpus();

struct BenchOptions {
    int threads = 0;                 // 0 uses every core
    double seconds_per_measurement = 3.0;
    std::vector<BenchModel> models = default_bench_models();
    // Only sets the vocabulary and the token ids; the speed hardly depends on the text.
    std::filesystem::path corpus = default_bench_corpus();
};

// Logs each model to stderr as it is measured.
// {"threads", "gemm_backend", "gemm_gflops", "corpus", "vocab_size", "models": [{"model", "seq", "batch", "parameters",
//  "train_chars_per_second", "eval_chars_per_second", "sample_chars_per_second", "train_gflops",
//  "fraction_of_gemm_peak", "peak_rss_megabytes"}, ...]}. Throws Error for an unreadable corpus.
nlohmann::json run_benchmark(const BenchOptions& options);

// An aligned text table of run_benchmark()'s result, for a terminal.
std::string format_benchmark_table(const nlohmann::json& result);

}  // namespace charlm
