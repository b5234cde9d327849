// Peer benchmark: speed of oneDNN's own fp32 LSTM primitives on the CPU, the yardstick for charlm's LSTM stack.
//
// Measures the bare LSTM stack (no embedding, no output layer, no optimizer):
//   train   : forward_training + backward over a seq x batch window, including what a real trainer must also
//             do each step: zero the weight gradients and convert weights / gradients between the trainer's
//             plain layout (ldigo) and the layouts the primitives prefer ("any"), when these differ;
//   forward : forward_inference over the same window (weights converted once, as in inference);
//   step1   : seq 1, batch 1 forward_inference, carrying h and c from step to step (a sampler's loop).
// Layer grouping: layer 0 has input size embed, so it is its own primitive; layers 1..L-1 share input size
// hidden and run as ONE multi-layer primitive by default (measured on this machine, 3x512, 2 threads: train equal,
// step1 18% faster than one primitive per layer); --per-layer forces one primitive per layer for comparison.
// Threads: --threads N calls omp_set_num_threads(N) before any primitive is created (this oneDNN build uses
// the OpenMP runtime); OMP_NUM_THREADS is therefore overridden.
// Output: one JSON object per line on stdout.
#include <oneapi/dnnl/dnnl.hpp>
#include <omp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

using namespace dnnl;
using tag = memory::format_tag;
using Steps = std::vector<std::function<void()>>;
constexpr auto f32 = memory::data_type::f32;
constexpr auto left_to_right = rnn_direction::unidirectional_left2right;

struct Options {
    int layers = 2, hidden = 128, embed = 64, seq = 50, batch = 50, threads = 2;
    double seconds = 3;
    bool gemm = false, per_layer = false;
};

// A group of consecutive layers with the same input size, run by one oneDNN primitive.
struct Segment {
    int layer_count, input_size, hidden;
    memory weights_layer, weights_iter, bias;  // the "trainer's" master copies, plain layout
};

static std::unique_ptr<engine> cpu_engine;
static std::unique_ptr<stream> cpu_stream;
static std::mt19937 random_generator(1234);

static memory::desc sequence_desc(int seq, int batch, int channels) { return {{seq, batch, channels}, f32, tag::tnc}; }
static memory::desc state_desc(int layers, int batch, int hidden) { return {{layers, 1, batch, hidden}, f32, tag::ldnc}; }
static memory::desc weights_desc(int layers, int input, int hidden, tag layout) {
    return {{layers, 1, input, 4, hidden}, f32, layout};
}
static memory::desc bias_desc(int layers, int hidden) { return {{layers, 1, 4, hidden}, f32, tag::ldgo}; }

static memory filled_memory(const memory::desc &desc, float scale) {
    memory result(desc, *cpu_engine);
    auto *data = static_cast<float *>(result.get_data_handle());
    std::uniform_real_distribution<float> uniform(-scale, scale);
    for (size_t i = 0; i < desc.get_size() / sizeof(float); ++i) data[i] = scale == 0 ? 0.0f : uniform(random_generator);
    return result;
}

static void add_zeroing(Steps &steps, const memory &target) {
    steps.push_back([target] { std::memset(target.get_data_handle(), 0, target.get_desc().get_size()); });
}

// Returns source itself if it already has the wanted layout, else new memory plus (in steps) a reorder into it.
static memory in_layout(const memory &source, const memory::desc &wanted, Steps &steps) {
    if (source.get_desc() == wanted) return source;
    memory converted(wanted, *cpu_engine);
    reorder conversion(source, converted);
    steps.push_back([conversion, source = memory(source), converted]() mutable {
        conversion.execute(*cpu_stream, source, converted);
    });
    return converted;
}

static void add_primitive(Steps &steps, const primitive &p, const std::unordered_map<int, memory> &arguments) {
    steps.push_back([p, arguments] { p.execute(*cpu_stream, arguments); });
}

static lstm_forward::primitive_desc forward_desc(prop_kind kind, const Segment &s, int seq, int batch) {
    lstm_forward::desc desc(kind, left_to_right, sequence_desc(seq, batch, s.input_size),
            state_desc(s.layer_count, batch, s.hidden), state_desc(s.layer_count, batch, s.hidden),
            weights_desc(s.layer_count, s.input_size, s.hidden, tag::any),
            weights_desc(s.layer_count, s.hidden, s.hidden, tag::any), bias_desc(s.layer_count, s.hidden),
            sequence_desc(seq, batch, s.hidden), state_desc(s.layer_count, batch, s.hidden),
            state_desc(s.layer_count, batch, s.hidden));
    return {desc, *cpu_engine};
}

static std::vector<Segment> make_segments(const Options &o) {
    std::vector<Segment> segments;
    auto add = [&](int count, int input) {
        Segment s{count, input, o.hidden, {}, {}, {}};
        float scale = 1.0f / std::sqrt(float(o.hidden));
        s.weights_layer = filled_memory(weights_desc(count, input, o.hidden, tag::ldigo), scale);
        s.weights_iter = filled_memory(weights_desc(count, o.hidden, o.hidden, tag::ldigo), scale);
        s.bias = filled_memory(bias_desc(count, o.hidden), scale);
        segments.push_back(s);
    };
    add(1, o.embed);
    if (o.per_layer)
        for (int l = 1; l < o.layers; ++l) add(1, o.hidden);
    else if (o.layers > 1)
        add(o.layers - 1, o.hidden);
    return segments;
}

// One training step of the stack: forward_training through all segments, then backward through them in reverse.
static Steps build_train(const Options &o, std::vector<Segment> &segments) {
    const int seq = o.seq, batch = o.batch, count = int(segments.size());
    Steps forward_steps, backward_steps;
    std::vector<lstm_forward::primitive_desc> forward_descs;
    std::vector<std::unordered_map<int, memory>> forward_arguments;
    memory input = filled_memory(sequence_desc(seq, batch, o.embed), 1.0f);
    for (auto &s : segments) {
        auto pd = forward_desc(prop_kind::forward_training, s, seq, batch);
        std::unordered_map<int, memory> arguments{
                {DNNL_ARG_SRC_LAYER, input},
                {DNNL_ARG_SRC_ITER, filled_memory(pd.src_iter_desc(), 0.5f)},
                {DNNL_ARG_SRC_ITER_C, filled_memory(pd.src_iter_c_desc(), 0.5f)},
                {DNNL_ARG_WEIGHTS_LAYER, in_layout(s.weights_layer, pd.weights_layer_desc(), forward_steps)},
                {DNNL_ARG_WEIGHTS_ITER, in_layout(s.weights_iter, pd.weights_iter_desc(), forward_steps)},
                {DNNL_ARG_BIAS, in_layout(s.bias, pd.bias_desc(), forward_steps)},
                {DNNL_ARG_DST_LAYER, memory(pd.dst_layer_desc(), *cpu_engine)},
                {DNNL_ARG_DST_ITER, memory(pd.dst_iter_desc(), *cpu_engine)},
                {DNNL_ARG_DST_ITER_C, memory(pd.dst_iter_c_desc(), *cpu_engine)},
                {DNNL_ARG_WORKSPACE, memory(pd.workspace_desc(), *cpu_engine)}};
        add_primitive(forward_steps, lstm_forward(pd), arguments);
        input = arguments.at(DNNL_ARG_DST_LAYER);
        forward_descs.push_back(pd);
        forward_arguments.push_back(arguments);
    }
    memory diff_output = filled_memory(sequence_desc(seq, batch, o.hidden), 0.1f);  // as if from the output layer
    for (int k = count - 1; k >= 0; --k) {
        Segment &s = segments[k];
        auto &forward = forward_arguments[k];
        const int layers = s.layer_count, input_size = s.input_size, hidden = s.hidden;
        lstm_backward::desc desc(prop_kind::backward, left_to_right, sequence_desc(seq, batch, input_size),
                state_desc(layers, batch, hidden), state_desc(layers, batch, hidden),
                weights_desc(layers, input_size, hidden, tag::any), weights_desc(layers, hidden, hidden, tag::any),
                bias_desc(layers, hidden), sequence_desc(seq, batch, hidden), state_desc(layers, batch, hidden),
                state_desc(layers, batch, hidden), sequence_desc(seq, batch, input_size),
                state_desc(layers, batch, hidden), state_desc(layers, batch, hidden),
                weights_desc(layers, input_size, hidden, tag::any), weights_desc(layers, hidden, hidden, tag::any),
                bias_desc(layers, hidden), sequence_desc(seq, batch, hidden), state_desc(layers, batch, hidden),
                state_desc(layers, batch, hidden));
        lstm_backward::primitive_desc pd(desc, *cpu_engine, forward_descs[k]);
        memory diff_weights_layer(pd.diff_weights_layer_desc(), *cpu_engine);
        memory diff_weights_iter(pd.diff_weights_iter_desc(), *cpu_engine);
        memory diff_bias(pd.diff_bias_desc(), *cpu_engine);
        add_zeroing(backward_steps, diff_weights_layer);  // oneDNN accumulates into weight gradients
        add_zeroing(backward_steps, diff_weights_iter);
        add_zeroing(backward_steps, diff_bias);
        std::unordered_map<int, memory> arguments{
                {DNNL_ARG_SRC_LAYER, forward.at(DNNL_ARG_SRC_LAYER)},
                {DNNL_ARG_SRC_ITER, forward.at(DNNL_ARG_SRC_ITER)},
                {DNNL_ARG_SRC_ITER_C, forward.at(DNNL_ARG_SRC_ITER_C)},
                {DNNL_ARG_WEIGHTS_LAYER, in_layout(s.weights_layer, pd.weights_layer_desc(), backward_steps)},
                {DNNL_ARG_WEIGHTS_ITER, in_layout(s.weights_iter, pd.weights_iter_desc(), backward_steps)},
                {DNNL_ARG_BIAS, in_layout(s.bias, pd.bias_desc(), backward_steps)},
                {DNNL_ARG_DST_LAYER, forward.at(DNNL_ARG_DST_LAYER)},
                {DNNL_ARG_DST_ITER, forward.at(DNNL_ARG_DST_ITER)},
                {DNNL_ARG_DST_ITER_C, forward.at(DNNL_ARG_DST_ITER_C)},
                {DNNL_ARG_WORKSPACE, forward.at(DNNL_ARG_WORKSPACE)},
                {DNNL_ARG_DIFF_DST_LAYER, diff_output},
                {DNNL_ARG_DIFF_DST_ITER, filled_memory(pd.diff_dst_iter_desc(), 0)},  // window's end: no carry-in
                {DNNL_ARG_DIFF_DST_ITER_C, filled_memory(pd.diff_dst_iter_c_desc(), 0)},
                {DNNL_ARG_DIFF_SRC_LAYER, memory(pd.diff_src_layer_desc(), *cpu_engine)},
                {DNNL_ARG_DIFF_SRC_ITER, memory(pd.diff_src_iter_desc(), *cpu_engine)},
                {DNNL_ARG_DIFF_SRC_ITER_C, memory(pd.diff_src_iter_c_desc(), *cpu_engine)},
                {DNNL_ARG_DIFF_WEIGHTS_LAYER, diff_weights_layer},
                {DNNL_ARG_DIFF_WEIGHTS_ITER, diff_weights_iter},
                {DNNL_ARG_DIFF_BIAS, diff_bias}};
        add_primitive(backward_steps, lstm_backward(pd), arguments);
        // Hand the gradients back to the optimizer in its plain layout.
        in_layout(diff_weights_layer, weights_desc(layers, input_size, hidden, tag::ldigo), backward_steps);
        in_layout(diff_weights_iter, weights_desc(layers, hidden, hidden, tag::ldigo), backward_steps);
        diff_output = arguments.at(DNNL_ARG_DIFF_SRC_LAYER);
    }
    forward_steps.insert(forward_steps.end(), backward_steps.begin(), backward_steps.end());
    return forward_steps;
}

// forward_inference over seq x batch. With carry_state, each call starts from the previous call's final h and c
// (two argument sets with source and destination state swapped, used alternately).
static std::vector<Steps> build_inference(const Options &o, std::vector<Segment> &segments, int seq, int batch) {
    Steps setup;
    std::vector<Steps> alternating(2);
    memory input = filled_memory(sequence_desc(seq, batch, o.embed), 1.0f);
    for (auto &s : segments) {
        auto pd = forward_desc(prop_kind::forward_inference, s, seq, batch);
        memory h[2] = {filled_memory(pd.src_iter_desc(), 0.5f), filled_memory(pd.dst_iter_desc(), 0.5f)};
        memory c[2] = {filled_memory(pd.src_iter_c_desc(), 0.5f), filled_memory(pd.dst_iter_c_desc(), 0.5f)};
        memory output(pd.dst_layer_desc(), *cpu_engine);
        lstm_forward primitive(pd);
        memory weights_layer = in_layout(s.weights_layer, pd.weights_layer_desc(), setup);
        memory weights_iter = in_layout(s.weights_iter, pd.weights_iter_desc(), setup);
        memory bias = in_layout(s.bias, pd.bias_desc(), setup);
        for (int parity = 0; parity < 2; ++parity)
            add_primitive(alternating[parity], primitive,
                    {{DNNL_ARG_SRC_LAYER, input}, {DNNL_ARG_SRC_ITER, h[parity]}, {DNNL_ARG_SRC_ITER_C, c[parity]},
                            {DNNL_ARG_WEIGHTS_LAYER, weights_layer}, {DNNL_ARG_WEIGHTS_ITER, weights_iter},
                            {DNNL_ARG_BIAS, bias}, {DNNL_ARG_DST_LAYER, output},
                            {DNNL_ARG_DST_ITER, h[1 - parity]}, {DNNL_ARG_DST_ITER_C, c[1 - parity]}});
        input = output;
    }
    for (auto &step : setup) step();  // weights are fixed during inference: convert once
    cpu_stream->wait();
    return alternating;
}

static double now_seconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Seconds per call of run(counter), after a warm-up of about a tenth of the budget (at least 3 calls).
static double seconds_per_call(const std::function<void(long)> &run, double seconds) {
    long counter = 0;
    double start = now_seconds();
    for (int i = 0; i < 3 || now_seconds() - start < 0.1 * seconds; ++i) run(counter++);
    cpu_stream->wait();
    long calls = 0;
    start = now_seconds();
    double elapsed;
    do {
        run(counter++);
        cpu_stream->wait();
        ++calls;
    } while ((elapsed = now_seconds() - start) < seconds);
    return elapsed / calls;
}

static void run_steps(const Steps &steps) {
    for (auto &step : steps) step();
}

static void measure_gemm(const Options &o) {
    const long size = 2048;
    std::vector<float> a(size * size, 0.5f), b(size * size, 0.25f), c(size * size);
    auto run = [&](long) { sgemm('N', 'N', size, size, size, 1.0f, a.data(), size, b.data(), size, 0.0f, c.data(), size); };
    double seconds = seconds_per_call(run, o.seconds);
    std::printf("{\"peer\":\"onednn\",\"threads\":%d,\"gemm_size\":%ld,\"gemm_gflops\":%.1f}\n", o.threads, size,
            2.0 * size * size * size / seconds * 1e-9);
}

static void measure_lstm(const Options &o) {
    std::vector<Segment> segments = make_segments(o);
    Steps train = build_train(o, segments);
    double train_seconds = seconds_per_call([&](long) { run_steps(train); }, o.seconds);
    auto forward = build_inference(o, segments, o.seq, o.batch);
    double forward_seconds = seconds_per_call([&](long i) { run_steps(forward[i % 2]); }, o.seconds);
    auto step1 = build_inference(o, segments, 1, 1);
    double step1_seconds = seconds_per_call([&](long i) { run_steps(step1[i % 2]); }, o.seconds);

    double parameters = 0;  // LSTM stack only: 4 gates x hidden x (input + hidden + 1 bias)
    for (int l = 0; l < o.layers; ++l) parameters += 4.0 * o.hidden * ((l == 0 ? o.embed : o.hidden) + o.hidden + 1);
    const double chars = double(o.seq) * o.batch;
    std::printf("{\"peer\":\"onednn\",\"model\":\"%dx%d\",\"layers\":%d,\"hidden\":%d,\"embed\":%d,\"seq\":%d,"
                "\"batch\":%d,\"threads\":%d,\"grouping\":\"%s\",\"train_cps\":%.0f,\"forward_cps\":%.0f,"
                "\"step1_cps\":%.0f,\"train_gflops\":%.1f}\n",
            o.layers, o.hidden, o.layers, o.hidden, o.embed, o.seq, o.batch, o.threads,
            o.per_layer ? "per_layer" : "layer0+rest", chars / train_seconds, chars / forward_seconds,
            1.0 / step1_seconds, 6.0 * parameters * chars / train_seconds * 1e-9);
}

int main(int argc, char **argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string name = argv[i];
        auto value = [&] {
            if (i + 1 >= argc) { std::fprintf(stderr, "missing value for %s\n", name.c_str()); std::exit(2); }
            return argv[++i];
        };
        if (name == "--layers") o.layers = std::atoi(value());
        else if (name == "--hidden") o.hidden = std::atoi(value());
        else if (name == "--embed") o.embed = std::atoi(value());
        else if (name == "--seq") o.seq = std::atoi(value());
        else if (name == "--batch") o.batch = std::atoi(value());
        else if (name == "--threads") o.threads = std::atoi(value());
        else if (name == "--seconds") o.seconds = std::atof(value());
        else if (name == "--gemm") o.gemm = true;
        else if (name == "--per-layer") o.per_layer = true;
        else {
            std::fprintf(stderr,
                    "usage: %s [--layers L] [--hidden H] [--embed E] [--seq T] [--batch B] [--threads N]"
                    " [--seconds S] [--per-layer] | --gemm [--threads N] [--seconds S]\n", argv[0]);
            return 2;
        }
    }
    omp_set_num_threads(o.threads);
    cpu_engine = std::make_unique<engine>(engine::kind::cpu, 0);
    cpu_stream = std::make_unique<stream>(*cpu_engine);
    if (o.gemm) measure_gemm(o);
    else measure_lstm(o);
    return 0;
}
