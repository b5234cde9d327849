// libFuzzer target: any bytes as the body of /v1/completions and of /v1/score. Each is refused with a
// RequestRefusal (a 4xx status and a message) or read into a request the decoder can serve; anything
// else thrown, or a request out of range, is a crash (the server would answer it with a 500 or worse).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "charlm/decode.hpp"
#include "charlm/sample.hpp"
#include "serve/api.hpp"
#include "../text_helpers.hpp"

namespace {

const charlm::Vocab& vocab() {
    static const charlm::Vocab vocab = charlm::testing::vocab_of_text(U"\n !,.;:'abcdefghijklmnopqrstuvwxyzABC é你🙂");
    return vocab;
}

charlm::ModelConfig config() {
    charlm::ModelConfig config;
    config.vocab_size = static_cast<int>(vocab().size());
    config.hidden_size = 8;
    config.layers = 2;
    return config;
}

charlm::ServerOptions options() {
    charlm::ServerOptions options;
    options.max_tokens = 100;
    options.max_score_characters = 50;
    options.slots = 4;
    return options;
}

void check(bool condition) {
    if (!condition) std::abort();
}

void check_refusal(const charlm::RequestRefusal& refusal) {
    check(refusal.status >= 400 && refusal.status < 500 && !refusal.message.empty());
}

bool all_known(const std::u32string& text) {
    for (char32_t c : text)
        if (!vocab().contains(c)) return false;
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view body(reinterpret_cast<const char*>(data), size);
    try {
        const charlm::CompletionCall call = charlm::read_completion_request(body, vocab(), options());
        const charlm::CompletionRequest& request = call.request;
        check(all_known(request.prompt) && request.prompt.size() <= 50);
        check(request.max_characters <= 100);
        check(request.choices >= 1 && request.choices <= 4);
        check(request.alternatives >= 0 && request.alternatives <= 10);
        check(std::isfinite(request.temperature) && request.temperature > 0);
        check(request.top_p > 0 && request.top_p <= 1 && request.top_k >= 0);
        check(request.stops.size() <= 4);
        for (const auto& stop : request.stops) check(!stop.empty() && stop.size() <= 64);
        charlm::validate(request.drawing());  // throws (a crash here) for what the decoder would refuse
    } catch (const charlm::RequestRefusal& refusal) {
        check_refusal(refusal);
    }
    try {
        const charlm::ScoreCall call = charlm::read_score_request(body, vocab(), config(), options());
        const charlm::ScoreRequest& request = call.request;
        check(all_known(request.text) && request.text.size() >= 2 && request.text.size() <= 50);
        check(request.top >= 0 && request.top <= 10 && request.most_varying >= 0 && request.most_varying <= 64);
        check(request.neurons.size() <= 64);
        for (const auto& neuron : request.neurons) charlm::check_neuron(config(), neuron);
    } catch (const charlm::RequestRefusal& refusal) {
        check_refusal(refusal);
    }
    return 0;
}
