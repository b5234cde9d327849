// libFuzzer target: any bytes as the body of /v1/completions and of /v1/score. Each is refused with a
// RequestRefusal (a 4xx status and a message) or read into a request the decoder can serve; anything
// else thrown, or a request out of range, is a crash (the server would answer it with a 500 or worse).
// The model a body names is read the same way, and a completion's events (with echo, the prompt cut
// from the generated characters) must be JSON that adds up to its text.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <nlohmann/json.hpp>

#include "charlm/decode.hpp"
#include "charlm/sample.hpp"
#include "charlm/utf8.hpp"
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

// A stream's events for a choice whose characters are the (echoed) prompt and two generated ones, sent
// in two pieces cut at `split`: each event JSON, the prompt never sharing an event with generated text,
// and the texts adding up to prompt + generated.
void check_events(const charlm::CompletionCall& call, std::size_t split) {
    const charlm::CompletionRequest& request = call.request;
    std::vector<charlm::DrawnCharacter> characters;
    const std::size_t echoed = request.echo ? request.prompt.size() : 0;
    for (std::size_t i = 0; i < echoed; ++i) characters.push_back({request.prompt[i], i == 0 ? std::nanf("") : -1.0f, {}});
    characters.push_back({U'a', -0.5f, {{U'b', -1.0f}}});
    characters.push_back({U'\n', -0.25f, {}});
    split %= characters.size() + 1;
    const charlm::CompletionHead head{"cmpl-1", 0, "m"};
    std::string expected, sent;
    for (const auto& c : characters) expected += charlm::encode_utf8(c.character);
    charlm::ChoiceNews first{{characters.begin(), characters.begin() + static_cast<std::ptrdiff_t>(split)}, false, charlm::FinishReason::length};
    charlm::ChoiceNews second{{characters.begin() + static_cast<std::ptrdiff_t>(split), characters.end()}, true, charlm::FinishReason::length};
    const std::string events = charlm::completion_events(head, request.seed, 0, first, 0, echoed, call.with_logprobs) +
                               charlm::completion_events(head, std::nullopt, 0, second, split, echoed, call.with_logprobs);
    for (std::size_t at = 0; at < events.size();) {
        const std::size_t end = events.find("\n\n", at);
        check(end != std::string::npos && events.compare(at, 6, "data: ") == 0);
        const auto event = nlohmann::json::parse(events.substr(at + 6, end - at - 6));
        const std::string text = event["choices"][0]["text"].get<std::string>();
        const std::size_t before = charlm::decode_utf8(sent, "sent").size(), length = charlm::decode_utf8(text, "text").size();
        if (call.with_logprobs && length > 0) check(event["choices"][0]["logprobs"]["text_offset"][0].get<std::size_t>() == before);
        // No event holds both the prompt's last character and a generated one.
        check(!(before < echoed && before + length > echoed));
        sent += text;
        at = end + 2;
    }
    check(sent == expected);
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
        check_events(call, size);
    } catch (const charlm::RequestRefusal& refusal) {
        check_refusal(refusal);
    }
    try {
        const auto parsed = charlm::read_body(body);
        const std::string model = charlm::requested_model(parsed);
        check(model.empty() || parsed.at("model").get<std::string>() == model);
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
