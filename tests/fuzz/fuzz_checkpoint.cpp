// libFuzzer target: arbitrary bytes into the checkpoint loader; only a clean charlm::Error is an acceptable refusal.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "charlm/checkpoint.hpp"
#include "charlm/error.hpp"
#include "charlm/model.hpp"
#include "charlm/threads.hpp"
#include "charlm/train.hpp"

namespace {

// A forward step allocates (steps x batch) x (vocab + 4 x hidden) floats on top of the parameters;
// beyond this the fuzzer would spend its time in allocation rather than in the parser.
constexpr std::size_t kMostParametersToRun = 4'000'000;

// Loads `bytes` as a checkpoint; a checkpoint that loads must also run a forward window.
void load_and_run(std::string_view bytes) {
    try {
        charlm::Checkpoint checkpoint = charlm::parse_checkpoint(bytes, "fuzz");
        if (!checkpoint.model || checkpoint.config.parameter_count() > kMostParametersToRun) return;
        auto& model = *checkpoint.model;
        const int vocab_size = checkpoint.config.vocab_size;
        const int steps = vocab_size < 4 ? vocab_size : 4;
        std::vector<charlm::TokenId> inputs;
        for (int step = 0; step < steps; ++step) inputs.push_back(static_cast<charlm::TokenId>((step * 7919) % vocab_size));
        auto state = model.initial_state(1);
        model.forward(inputs, steps, 1, state);
        if (model.logits().rows() != steps || model.logits().cols() != vocab_size) __builtin_trap();
    } catch (const charlm::Error&) {
        // The loader refused the file with a message: the expected outcome for almost every input.
    }
}

// The readers of the metadata's JSON objects, on their own: a seed that is just a config or a
// run's options lets mutations reach every field's value directly (for example "layers": 1e10).
void read_metadata_objects(std::string_view text) {
    if (text.size() > 16384) return;  // keeps nlohmann's recursive parser far from the stack's end
    const auto json = nlohmann::json::parse(text, nullptr, false);
    if (json.is_discarded() || !json.is_object()) return;
    try {
        charlm::ModelConfig::from_json(json);
    } catch (const charlm::Error&) {
    }
    try {
        charlm::TrainOptions::from_json(json);  // what --resume reads from a checkpoint
    } catch (const charlm::Error&) {
    }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    charlm::set_thread_count(1);  // OpenMP thread pools only slow the fuzzer down and muddy ASan reports
    return 0;
}

// Three readings of the input. As it is: the file's own header length, which catches bad lengths.
// For input that starts with '{', as "JSON header, NUL, tensor data" with the length computed here:
// a mutation that lengthens a value in the header still gives a well-formed file, which the raw
// reading almost never does, since the length prefix would no longer match. And that JSON alone,
// as a model config and as training options.
extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);
    load_and_run(bytes);
    if (!bytes.empty() && bytes.front() == '{') {
        const std::size_t header_end = std::min(bytes.find('\0'), bytes.size());
        const std::uint64_t header_length = header_end;
        std::string file(8, '\0');
        std::memcpy(file.data(), &header_length, 8);  // little-endian, as parse_safetensors checks at compile time
        file.append(bytes.substr(0, header_end));
        if (header_end < bytes.size()) file.append(bytes.substr(header_end + 1));
        load_and_run(file);
        read_metadata_objects(bytes.substr(0, header_end));
    }
    return 0;
}
