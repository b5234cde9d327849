// Speed benchmark of the library's own training, evaluation and sampling code on fixed reference models.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "charlm/model.hpp"
#include "charlm/precision.hpp"

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
    // The products' precision, decided for each model as a run of its shape would decide it (auto times it).
    PrecisionChoice precision = PrecisionChoice::automatic;
    double seconds_per_measurement = 3.0;
    std::vector<BenchModel> models = default_bench_models();
    // Only sets the vocabulary and the token ids; the speed hardly depends on the text.
    std::filesystem::path corpus = default_bench_corpus();
    // Hears of the GEMM peak and of each model as its measurement starts, one line each; may be empty.
    std::function<void(const std::string&)> note;
};

// Floating-point operations per character in the matrix products that charlm really runs for a model,
// a multiply-add counted as two, so that a rate compares with a GEMM's. What is not a product (gate
// activations, softmax, Adam, clipping) is left out, as a GEMM peak leaves it out. The first layer's
// input projection is a lookup in a vocabulary x gates table, not a product: counted is the table's
// making (once per training window; never while the weights are frozen for evaluation and sampling)
// and, backward, the two products from the table's gradient, spread over the window's characters;
// where the table would cost more than it saves, the embedded rows' products instead. The embedding
// itself does no arithmetic. The carried state gets no gradient, so a window's first step sends none
// back. Evaluation and batch-1 sampling run the same products per character.
struct FlopsPerCharacter {
    double train = 0;     // forward and backward over windows of seq_length x batch_size
    double evaluate = 0;  // forward, weights frozen
    double sample = 0;    // forward of one character, weights frozen
    bool table_in_training = false;  // whether the first layer's input is a table lookup in training
    bool table_when_frozen = false;  // and in evaluation and sampling
};
FlopsPerCharacter count_flops(const ModelConfig& config, int seq_length, int batch_size);

// Tells options.note of each measurement as it starts.
// {"threads", "kernels" (the kernels' level, charlm/precision.hpp), "gemm_backend", "gemm_gflops", "bf16_gemm_gflops" (where the CPU runs bf16; else null), "flop_counted",
//  "corpus", "vocab_size", "models": [{"model", "seq", "batch", "precision", "precision_reason", "parameters", "train_chars_per_second", "eval_chars_per_second", "sample_chars_per_second",
//  "train_flop_per_character", "eval_flop_per_character", "sample_flop_per_character", "train_gflops", "eval_gflops",
//  "sample_gflops", "fraction_of_gemm_peak" (training's, of the peak at the row's precision), "eval_fraction_of_gemm_peak",
//  "peak_rss_megabytes"}, ...]}.
// Throws Error for an unreadable corpus.
nlohmann::json run_benchmark(const BenchOptions& options);

}  // namespace charlm
