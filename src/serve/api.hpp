// The API of docs/serve.md as data: request bodies read into the decoder's requests (or refused with a
// RequestRefusal), and each answer as a result with its own to_json. No HTTP here: http.cpp sends them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "charlm/checkpoint.hpp"
#include "charlm/decode.hpp"
#include "charlm/server.hpp"

namespace charlm {

// ---- requests ---------------------------------------------------------------------------------------

// A request refused: its HTTP status, a message that says what to send instead, the field at fault
// ("" for the body as a whole) and OpenAI's error type.
struct RequestRefusal {
    int status = 400;
    std::string message;
    std::string param;
    std::string type = "invalid_request_error";

    nlohmann::ordered_json to_json() const;  // {"error": {...}}, OpenAI's shape
};

// A request body parsed once: its JSON object, or a RequestRefusal (not JSON, not an object, nested
// too deep). The model it names is read first, as the model decides which characters the rest may have.
nlohmann::ordered_json read_body(std::string_view body);
// The body's "model": "" where it is left out (or null); a RequestRefusal where it is not a string.
std::string requested_model(const nlohmann::ordered_json& body);

// A /v1/completions body read as docs/serve.md says: what to decode, and how to answer.
struct CompletionCall {
    CompletionRequest request;
    bool stream = false;
    bool with_logprobs = false;
};
// Throws RequestRefusal for anything docs/serve.md does not allow, and nothing else: whatever passes is
// a request the decoder can serve (characters of the vocabulary, values in range, at most
// options.max_tokens characters).
CompletionCall read_completion_request(const nlohmann::ordered_json& body, const Vocab& vocab, const ServerOptions& options);
CompletionCall read_completion_request(std::string_view body, const Vocab& vocab, const ServerOptions& options);

struct ScoreCall {
    ScoreRequest request;
    std::size_t unknown_characters = 0;  // left out of the text (skip_unknown)
};
// The same for a /v1/score body.
ScoreCall read_score_request(const nlohmann::ordered_json& body, const Vocab& vocab, const ModelConfig& config, const ServerOptions& options);
ScoreCall read_score_request(std::string_view body, const Vocab& vocab, const ModelConfig& config, const ServerOptions& options);

// ---- answers ----------------------------------------------------------------------------------------

// GET /health: "loading" until every model is loaded, then "ok"; the slots summed over the models,
// and each loaded model's own.
struct HealthAnswer {
    struct Model {
        std::string name;
        DecoderLoad load;
    };
    bool loading = true;
    std::vector<Model> models;  // those loaded so far
    nlohmann::ordered_json to_json() const;
};

// GET /v1/models: every model served, with what the page needs to know of each.
struct ModelsAnswer {
    struct Model {
        const Checkpoint& checkpoint;
        const std::string& name;
    };
    std::vector<Model> models;
    const ServerOptions& options;
    nlohmann::ordered_json to_json() const;
};

// What every completion answer and stream event begins with.
struct CompletionHead {
    std::string id;  // cmpl-N
    std::time_t created = 0;
    std::string model;
    nlohmann::ordered_json to_json() const;
};

// A completion read all at once: every choice whole, and the usage. With echo, each choice's
// characters begin with the prompt's own (CompletionRequest::echo), which the usage does not count as
// generated.
struct CompletionAnswer {
    const CompletionHead& head;
    std::uint64_t seed = 0;
    const std::vector<ChoiceNews>& choices;  // each choice's characters, all of them
    std::size_t prompt_length = 0;
    bool with_logprobs = false;
    bool echo = false;
    nlohmann::ordered_json to_json() const;
};

// What a stream sends for one choice's news: "data: {...}\n\n" events, the first with `seed` when
// given; empty where there is nothing to send. `first_offset` is the first character's place in
// prompt + completion. A piece that holds both the end of an echoed prompt (`echo_length`, 0 without
// echo) and generated characters is cut there, so that the prompt goes as an event of its own.
std::string completion_events(const CompletionHead& head, std::optional<std::uint64_t> seed, std::size_t index, const ChoiceNews& news,
                              std::size_t first_offset, std::size_t echo_length, bool with_logprobs);

// POST /v1/score: score_to_json with the model and the characters left out.
struct ScoreAnswer {
    const ScoreResult& result;
    const std::u32string& text;
    const std::string& model;
    std::size_t unknown_characters = 0;
    nlohmann::ordered_json to_json() const;
};

}  // namespace charlm
