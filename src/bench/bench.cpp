// Measures training, evaluation and sampling speed of the library's own code, and the machine's GEMM peak.
#include "charlm/bench.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <functional>
#include <optional>
#include <random>

#include <Eigen/Core>
#include <fmt/format.h>

#include "charlm/batches.hpp"
#include "charlm/clock.hpp"
#include "charlm/error.hpp"
#include "nn/gemm.hpp"
#include "charlm/model.hpp"
#include "charlm/optim.hpp"
#include "charlm/sample.hpp"
#include "charlm/text.hpp"
#include "charlm/threads.hpp"
#include "charlm/train.hpp"

namespace charlm {

namespace {

// Calls `work` for a short warm-up (caches, workspaces sized on the first window, thread pools spun up),
// then repeatedly for about `seconds`; returns seconds per call.
double seconds_per_call(const std::function<void()>& work, double seconds) {
    const double warmup_seconds = std::min(0.5, seconds / 4);
    const auto warmup_start = Clock::now();
    do work();
    while (seconds_since(warmup_start) < warmup_seconds);
    long calls = 0;
    const auto start = Clock::now();
    double elapsed_seconds = 0;
    do {
        work();
        ++calls;
        elapsed_seconds = seconds_since(start);
    } while (elapsed_seconds < seconds);
    return elapsed_seconds / static_cast<double>(calls);
}

double peak_rss_megabytes() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return static_cast<double>(usage.ru_maxrss) / 1024.0;  // Linux reports kilobytes
}

// The same product size as the oneDNN peer's --gemm, so the two peaks compare directly; through gemm(),
// the fastest product this build has.
double measure_gemm_gflops(double seconds, Precision precision) {
    const Eigen::Index size = 2048;
    Matrix<float> left = Matrix<float>::Constant(size, size, 0.5f);
    Matrix<float> right = Matrix<float>::Constant(size, size, 0.25f);
    Matrix<float> product(size, size);
    const double seconds_each = seconds_per_call(
        [&] { gemm<float>(left, Transpose::no, right, Transpose::no, 0.0f, product, precision); }, seconds);
    return 2.0 * static_cast<double>(size) * size * size / seconds_each / 1e9;
}

// A description of what count_flops() counts, for the JSON and the table.
constexpr const char* kFlopCounted =
    "FLOP of the matrix products that run (a multiply-add is 2), forward and backward; the first layer's input "
    "projection is a table lookup, its table made once per training window";

ModelConfig config_of(const BenchModel& shape, const Vocab& vocab) {
    ModelConfig config;
    config.cell = CellType::lstm;
    config.vocab_size = static_cast<int>(vocab.size());
    config.embed_size = shape.embed_size;
    config.hidden_size = shape.hidden_size;
    config.layers = shape.layers;
    config.validate();
    return config;
}

nlohmann::json measure_model(const BenchModel& shape, TokenSpan ids, const Vocab& vocab, double seconds, Precision precision) {
    const ModelConfig config = config_of(shape, vocab);
    Model<float> model(config);
    model.set_precision(precision);
    std::mt19937_64 rng(1);
    model.initialize(rng);
    const double chars_per_window = static_cast<double>(shape.seq_length) * shape.batch_size;

    // Training: train()'s own step, without its validation and checkpoints.
    Adam optimizer(model.parameters());
    BatchStream stream(ids, shape.seq_length, shape.batch_size);
    Batch batch;
    ModelState<float> state = model.initial_state(shape.batch_size);
    const double train_seconds = seconds_per_call(
        [&] {
            stream.next(batch);
            train_step(model, optimizer, batch, state, 5.0, 2e-3);
        },
        seconds);
    const double memory_megabytes = peak_rss_megabytes();

    // Evaluation: the same windows, forward and loss only, the weights frozen as 'charlm eval' freezes them.
    model.set_weights_frozen(true);
    BatchStream eval_stream(ids, shape.seq_length, shape.batch_size);
    ModelState<float> eval_state = model.initial_state(shape.batch_size);
    const double eval_seconds = seconds_per_call(
        [&] {
            eval_stream.next(batch);
            if (batch.starts_streams) eval_state.reset();
            model.forward(batch.inputs, shape.seq_length, shape.batch_size, eval_state);
            model.loss(batch.targets);
        },
        seconds);

    // Sampling: batch 1, one character per call, as 'charlm sample' draws them.
    Sampler sampler(model, vocab, 1);
    sampler.prime(U"");
    SampleOptions sample_options;
    sample_options.temperature = 1.0;
    const double sample_seconds = seconds_per_call([&] { sampler.next(sample_options); }, seconds);

    const FlopsPerCharacter flops = count_flops(config, shape.seq_length, shape.batch_size);
    const double train_chars_per_second = chars_per_window / train_seconds;
    const double eval_chars_per_second = chars_per_window / eval_seconds;
    const double sample_chars_per_second = 1.0 / sample_seconds;
    return {
        {"model", fmt::format("lstm {}x{}", shape.layers, shape.hidden_size)},
        {"precision", to_string(precision)},
        {"layers", shape.layers},
        {"hidden", shape.hidden_size},
        {"embed", shape.embed_size},
        {"seq", shape.seq_length},
        {"batch", shape.batch_size},
        {"parameters", config.parameter_count()},
        {"train_chars_per_second", train_chars_per_second},
        {"eval_chars_per_second", eval_chars_per_second},
        {"sample_chars_per_second", sample_chars_per_second},
        {"train_flop_per_character", flops.train},
        {"eval_flop_per_character", flops.evaluate},
        {"sample_flop_per_character", flops.sample},
        {"train_gflops", flops.train * train_chars_per_second / 1e9},
        {"eval_gflops", flops.evaluate * eval_chars_per_second / 1e9},
        {"sample_gflops", flops.sample * sample_chars_per_second / 1e9},
        {"peak_rss_megabytes", memory_megabytes},
    };
}

}  // namespace

FlopsPerCharacter count_flops(const ModelConfig& config, int seq_length, int batch_size) {
    const double V = config.vocab_size, E = config.embed_size, H = config.hidden_size, L = config.layers;
    const double gates = config.gate_count();
    const double G = gates * H;  // the gates' width
    const double T = seq_length, B = batch_size, TB = T * B;
    // rows x inner times inner x columns
    auto product = [](double rows, double inner, double columns) { return 2 * rows * inner * columns; };
    // Where the first layer's input projection is a table lookup: the rule of input_projection.cpp's
    // through_table(), with the weights changing (training) and frozen (test_bench.cpp checks both).
    const bool table_in_training = 2 * V <= TB;
    const bool table_when_frozen = V * G <= static_cast<double>(std::int64_t{1} << 24);

    // Per window of T x B characters. Forward, every layer: h_{t-1} W_hh^T; above the first: x W_ih^T.
    const double recurrent_and_above = L * product(TB, H, G) + (L - 1) * product(TB, H, G) + product(TB, H, V);
    const double first_layer_rows = product(TB, E, G);  // embedded rows times W_ih^T, where there is no table
    const double train_forward = recurrent_and_above + (table_in_training ? product(V, E, G) : first_layer_rows);
    // Backward: the head's weight gradient and its input's; per layer, the W_hh gradient over every
    // step and dL/dh sent back for all but the first step; above the first layer, the W_ih gradient and
    // the input's; the first layer, from the table's gradient (V x G) to W_ih's and the embedding's.
    const double train_backward = 2 * product(TB, V, H) + L * product(G, TB, H) + L * product((T - 1) * B, G, H) +
                                  (L - 1) * 2 * product(TB, G, H) +
                                  (table_in_training ? 2 * product(V, G, E) : 2 * product(TB, G, E));
    FlopsPerCharacter flops;
    flops.train = (train_forward + train_backward) / TB;
    flops.evaluate = (recurrent_and_above + (table_when_frozen ? 0 : first_layer_rows)) / TB;
    flops.sample = flops.evaluate;  // one character's products are a window's divided by its characters
    flops.table_in_training = table_in_training;
    flops.table_when_frozen = table_when_frozen;
    return flops;
}

std::vector<BenchModel> default_bench_models() {
    return {
        {.layers = 2, .hidden_size = 128, .embed_size = 64, .seq_length = 50, .batch_size = 50},
        {.layers = 2, .hidden_size = 256, .embed_size = 64, .seq_length = 100, .batch_size = 64},
        {.layers = 3, .hidden_size = 512, .embed_size = 64, .seq_length = 100, .batch_size = 50},
    };
}

std::vector<BenchModel> select_bench_models(const std::vector<std::string>& names) {
    std::vector<BenchModel> selected;
    for (const BenchModel& model : default_bench_models()) {
        const std::string name = fmt::format("{}x{}", model.layers, model.hidden_size);
        if (std::find(names.begin(), names.end(), name) != names.end()) selected.push_back(model);
    }
    for (const std::string& name : names) {
        const bool known = std::any_of(selected.begin(), selected.end(), [&](const BenchModel& model) {
            return fmt::format("{}x{}", model.layers, model.hidden_size) == name;
        });
        if (!known) throw UsageError(fmt::format("unknown benchmark model '{}'; use 2x128, 2x256 or 3x512", name));
    }
    return selected;
}

std::filesystem::path default_bench_corpus() {
    const std::filesystem::path shakespeare = "../shared/data/tinyshakespeare.txt";
    std::error_code error;
    if (std::filesystem::exists(shakespeare, error)) return shakespeare;
    return "data/kjv.txt";
}

nlohmann::json run_benchmark(const BenchOptions& options) {
    if (options.seconds_per_measurement <= 0) throw Error("the seconds per measurement must be positive");
    check_precision_runs_here(options.precision);
    set_thread_count(options.threads);
    // Read as 'charlm train' reads it: streamed into ids of as few bytes each as the vocabulary needs.
    const Vocab vocab = Vocab::from_files({options.corpus});
    const CompactIds compact_ids = CompactIds::encode_file(options.corpus, vocab);
    const TokenSpan ids = compact_ids.span();
    for (const BenchModel& shape : options.models) {
        if (ids.size() < static_cast<std::size_t>(shape.seq_length) * shape.batch_size + 1)
            throw Error(fmt::format("{} is too short for windows of {} x {} characters; give a longer corpus",
                                    options.corpus.string(), shape.seq_length, shape.batch_size));
    }

    const auto note = [&](const std::string& line) {
        if (options.note) options.note(line);
    };
    note("kernels: " + kernels_in_use_and_why());
    const double gemm_gflops = measure_gemm_gflops(options.seconds_per_measurement, Precision::fp32);
    note(fmt::format("GEMM 2048^3 through {}: {:.1f} GFLOP/s on {} thread{}", gemm_backend(), gemm_gflops, Eigen::nbThreads(),
                     Eigen::nbThreads() == 1 ? "" : "s"));
    // The bf16 roofline, where the CPU multiplies bf16 (elsewhere the emulation would time nothing worth knowing).
    std::optional<double> bf16_gemm_gflops;
    if (cpu_runs_bf16()) {
        bf16_gemm_gflops = measure_gemm_gflops(options.seconds_per_measurement, Precision::bf16);
        note(fmt::format("GEMM 2048^3 in bf16 with fp32 sums: {:.1f} GFLOP/s", *bf16_gemm_gflops));
    }
    nlohmann::json models = nlohmann::json::array();
    for (const BenchModel& shape : options.models) {
        const PrecisionDecision decision =
            decide_precision(options.precision, product_shapes(config_of(shape, vocab), shape.batch_size, shape.seq_length));
        note(fmt::format("measuring lstm {}x{} at {} x {}, products in {}", shape.layers, shape.hidden_size, shape.seq_length,
                         shape.batch_size, decision.reason));
        nlohmann::json row = measure_model(shape, ids, vocab, options.seconds_per_measurement, decision.precision);
        row["precision_reason"] = decision.reason;
        const double peak = decision.precision == Precision::bf16 && bf16_gemm_gflops ? *bf16_gemm_gflops : gemm_gflops;
        row["fraction_of_gemm_peak"] = row["train_gflops"].get<double>() / peak;
        row["eval_fraction_of_gemm_peak"] = row["eval_gflops"].get<double>() / peak;
        models.push_back(std::move(row));
    }
    return {
        {"threads", Eigen::nbThreads()},
        {"seconds_per_measurement", options.seconds_per_measurement},
        {"corpus", options.corpus.string()},
        {"vocab_size", vocab.size()},
        {"kernels", kernels_in_use()},
        {"gemm_backend", gemm_backend()},
        {"gemm_gflops", gemm_gflops},
        {"bf16_gemm_gflops", bf16_gemm_gflops ? nlohmann::json(*bf16_gemm_gflops) : nlohmann::json(nullptr)},
        {"flop_counted", kFlopCounted},
        {"models", models},
    };
}

}  // namespace charlm
