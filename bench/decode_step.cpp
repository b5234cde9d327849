// One decoding step of B streams against frozen weights, in the process, as 'charlm serve' takes it (rows computed as
// if alone, the step in one team): fp32 and bf16 in turns, without HTTP, mailboxes or the I/O thread, and with or
// without each row's draw after the step (--draws), and its log-partition (--logprobs, what a client asking
// "logprobs" adds), as the decoder adds them, shared among the threads as it shares them. Says how much of a
// served character is the model's step, and how much of the precisions' ratio survives the work that bf16 does
// not touch.
// Usage: decode_step_bench CHECKPOINT [--streams 16] [--threads 2] [--steps 3000] [--rounds 7] [--draws [--logprobs]]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "charlm/checkpoint.hpp"
#include "charlm/model.hpp"
#include "charlm/precision.hpp"
#include "charlm/sample.hpp"
#include "charlm/threads.hpp"
#include "nn/row_shares.hpp"
#include "nn/text_scorer.hpp"

namespace {

struct Options {
    std::string checkpoint;
    int streams = 16, threads = 2, steps = 3000, rounds = 7;
    bool draws = false, logprobs = false;
};

// Microseconds a step, over options.steps steps after 200 to warm up.
double time_steps(charlm::Model<float>& model, const Options& options) {
    using namespace charlm;
    const WeightsFreeze<float> freeze(model);
    model.set_rows_as_if_alone(true);
    const int B = options.streams;
    ModelState<float> state = model.initial_state(B);
    std::vector<TokenId> inputs(static_cast<std::size_t>(B));
    std::mt19937 rng(1);
    for (TokenId& id : inputs) id = static_cast<TokenId>(rng() % static_cast<unsigned>(model.config().vocab_size));
    std::vector<TokenDrawer> drawers(static_cast<std::size_t>(B));
    const SampleOptions drawing;
    std::vector<double> partitions(static_cast<std::size_t>(B));
    const auto step = [&] {
        model.forward(inputs, 1, B, state);
        if (!options.draws) return;
        const Matrix<float>& logits = model.logits();
        for_each_row_share(B, 4, [&](Eigen::Index first, Eigen::Index rows) {  // as the decoder shares them
            for (Eigen::Index row = first; row < first + rows; ++row) {
                const std::span<const float> values(logits.row(row).data(), static_cast<std::size_t>(logits.cols()));
                inputs[static_cast<std::size_t>(row)] = drawers[static_cast<std::size_t>(row)].draw(values, drawing, 0.5);
                if (options.logprobs) partitions[static_cast<std::size_t>(row)] = log_partition(values);
            }
        });
    };
    for (int i = 0; i < 200; ++i) step();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < options.steps; ++i) step();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    model.set_rows_as_if_alone(false);
    return seconds / options.steps * 1e6;
}

int usage() {
    std::fprintf(stderr, "usage: decode_step_bench CHECKPOINT [--streams 16] [--threads 2] [--steps 3000] [--rounds 7] [--draws [--logprobs]]\n");
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    using namespace charlm;
    Options options;
    for (int i = 1; i < argc; ++i) {
        const std::string argument = argv[i];
        int* count = argument == "--streams" ? &options.streams
                     : argument == "--threads" ? &options.threads
                     : argument == "--steps"   ? &options.steps
                     : argument == "--rounds"  ? &options.rounds
                                               : nullptr;
        if (count != nullptr) {
            if (i + 1 >= argc || (*count = std::atoi(argv[++i])) <= 0) return usage();
        } else if (argument == "--draws") {
            options.draws = true;
        } else if (argument == "--logprobs") {
            options.logprobs = true;
        } else if (argument.starts_with("-") || !options.checkpoint.empty()) {
            return usage();
        } else {
            options.checkpoint = argument;
        }
    }
    if (options.checkpoint.empty() || (options.logprobs && !options.draws)) return usage();
    try {
        set_thread_count(options.threads);
        Checkpoint checkpoint = load_checkpoint(options.checkpoint);
        Model<float>& model = *checkpoint.model;
        // The precisions take turns, so that the machine's drift falls on both; each round's ratio is its own.
        std::vector<double> fp32, bf16, ratios;
        for (int round = 0; round < options.rounds; ++round) {
            model.set_precision(Precision::fp32);
            fp32.push_back(time_steps(model, options));
            model.set_precision(Precision::bf16);
            bf16.push_back(time_steps(model, options));
            ratios.push_back(fp32.back() / bf16.back());
        }
        const auto median = [](std::vector<double> values) {
            std::sort(values.begin(), values.end());
            return values[values.size() / 2];
        };
        std::printf("%d streams, %d threads, %s: fp32 %.1f us a step (least %.1f), bf16 %.1f us (least %.1f); "
                    "fp32 / bf16: median of the rounds' ratios %.2f (%.2f-%.2f)\n",
                    options.streams, options.threads, options.logprobs ? "step, draws and logprobs" : options.draws ? "step and draws" : "step alone", median(fp32),
                    *std::min_element(fp32.begin(), fp32.end()), median(bf16), *std::min_element(bf16.begin(), bf16.end()),
                    median(ratios), *std::min_element(ratios.begin(), ratios.end()), *std::max_element(ratios.begin(), ratios.end()));
    } catch (const std::exception& error) {
        std::fprintf(stderr, "decode_step_bench: %s\n", error.what());
        return 1;
    }
}
