// Reading the API's request bodies into decoder requests, and its answers into JSON (see api.hpp).
#include "serve/api.hpp"

#include <algorithm>
#include <cmath>
#include <random>
#include <span>

#include <fmt/format.h>

#include "charlm/json_limits.hpp"
#include "charlm/report.hpp"
#include "charlm/sample.hpp"

namespace charlm {

namespace {

using json = nlohmann::ordered_json;

// Nesting deeper than this is refused before parsing: no legitimate request comes near it.
constexpr int kDeepestNesting = 32;
constexpr int kMostAlternatives = 10;
constexpr int kMostChoices = 8;
constexpr std::size_t kMostStops = 4;
constexpr std::size_t kMostNeurons = 64;
constexpr int kMostVarying = 64;

[[noreturn]] void refuse(std::string param, std::string message) { throw RequestRefusal{400, std::move(message), std::move(param)}; }

json parse_body_text(std::string_view text) {
    if (!json_nesting_within(text, kDeepestNesting))
        refuse("", fmt::format("the JSON is nested deeper than {} levels", kDeepestNesting));
    try {
        json body = json::parse(text);
        if (!body.is_object()) refuse("", "the body must be a JSON object");
        return body;
    } catch (const json::exception& error) {  // a syntax error, or a number past a double's range (1e700)
        refuse("", fmt::format("the body is not valid JSON: {}", error.what()));
    }
}

// A request's fields, each read once with its type and range checked; fields nobody read are refused.
class Fields {
public:
    explicit Fields(const json& body) : body_(body) {}

    const json* find(const std::string& name) {
        read_.push_back(name);
        const auto found = body_.find(name);
        return found == body_.end() || found->is_null() ? nullptr : &*found;
    }
    bool flag(const std::string& name, bool fallback) {
        const json* value = find(name);
        if (!value) return fallback;
        if (!value->is_boolean()) refuse(name, fmt::format("{} must be true or false", name));
        return value->get<bool>();
    }
    double number(const std::string& name, double fallback) {
        const json* value = find(name);
        if (!value) return fallback;
        if (!value->is_number()) refuse(name, fmt::format("{} must be a number", name));
        return value->get<double>();
    }
    // A whole number in [least, most]; `most_reason` says where the upper bound comes from.
    std::int64_t whole(const std::string& name, std::int64_t fallback, std::int64_t least, std::int64_t most,
                       const std::string& most_reason = "") {
        const json* value = find(name);
        if (!value) return fallback;
        const bool whole_float = value->is_number_float() && std::floor(value->get<double>()) == value->get<double>();
        if (!value->is_number() || (value->is_number_float() && !whole_float))
            refuse(name, fmt::format("{} must be a whole number", name));
        // 1e3 and 10.0 are whole; a number past 2^64 arrives as a float too.
        const bool too_big = whole_float ? value->get<double>() > static_cast<double>(most)
                                         : value->is_number_unsigned() && value->get<std::uint64_t>() > static_cast<std::uint64_t>(most);
        const bool too_small = whole_float && value->get<double>() < static_cast<double>(least);
        const std::int64_t number = too_big ? most : too_small ? least - 1 : whole_float ? static_cast<std::int64_t>(value->get<double>()) : value->get<std::int64_t>();
        if (too_big || number < least || number > most)
            refuse(name, fmt::format("{} must be between {} and {}{}, not {}", name, least, most, most_reason, value->dump()));
        return number;
    }
    std::string text(const std::string& name, const std::string& fallback) {
        const json* value = find(name);
        if (!value) return fallback;
        if (!value->is_string()) refuse(name, fmt::format("{} must be a string", name));
        return value->get<std::string>();
    }
    // Fields OpenAI's clients send that charlm has nothing to do with: accepted at their no-op value.
    void only_default(const std::string& name, const json& no_op) {
        const json* value = find(name);
        if (value && *value != no_op)
            refuse(name, fmt::format("{} is not supported by a character model; leave it out or send {}", name, no_op.dump()));
    }
    // Refuses whatever field nobody read: a misspelt or unsupported option must not pass unnoticed.
    void check_all_read() const {
        for (const auto& [name, value] : body_.items())
            if (std::find(read_.begin(), read_.end(), name) == read_.end())
                refuse(name, fmt::format("unknown field \"{}\"; docs/serve.md lists the fields", name));
    }

private:
    const json& body_;
    std::vector<std::string> read_;
};

// The text of a field as code points, with the characters the model never saw dropped (skip_unknown)
// or refused in a list.
// JSON strings are valid UTF-8 once parsed; a refusal all the same, should one not be.
std::u32string code_points_of(const std::string& bytes, const std::string& param) {
    try {
        return decode_utf8(bytes, param);
    } catch (const Error& error) {
        refuse(param, error.what());
    }
}

std::u32string known_text(const std::string& bytes, const Vocab& vocab, const std::string& param, bool skip_unknown,
                          std::size_t& unknown_count) {
    const std::u32string text = code_points_of(bytes, param);
    std::u32string known;
    for (char32_t c : text)
        if (vocab.contains(c)) known += c;
    unknown_count = text.size() - known.size();
    if (unknown_count > 0 && !skip_unknown)
        refuse(param, fmt::format("the {} has characters the model never saw: {}; remove them or send \"skip_unknown\": true", param,
                                  unknown_characters(text, vocab, 400)));
    return known;
}

// A character without a prediction (an echoed prompt's first: nothing came before it) has a NaN
// log-probability, written null as OpenAI writes its first token's, with a null top_logprobs.
json logprobs_json(std::span<const DrawnCharacter> characters, std::size_t first_offset) {
    json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(), offsets = json::array();
    for (std::size_t i = 0; i < characters.size(); ++i) {
        const DrawnCharacter& c = characters[i];
        tokens.push_back(encode_utf8(c.character));
        token_logprobs.push_back(json_float(c.logprob));
        json top = json::object();
        for (const CharacterLogprob& alternative : c.top) top[encode_utf8(alternative.character)] = json_float(alternative.logprob);
        top_logprobs.push_back(std::isnan(c.logprob) ? json(nullptr) : std::move(top));
        offsets.push_back(first_offset + i);
    }
    return {{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top_logprobs}, {"text_offset", offsets}};
}

std::string text_of(std::span<const DrawnCharacter> characters) {
    std::string text;
    for (const DrawnCharacter& c : characters) text += encode_utf8(c.character);
    return text;
}

const char* finish_name(FinishReason reason) { return reason == FinishReason::stop ? "stop" : "length"; }

}  // namespace

// ---- requests ---------------------------------------------------------------------------------------

json RequestRefusal::to_json() const {
    return {{"error", {{"message", message}, {"type", type}, {"param", param.empty() ? json(nullptr) : json(param)}, {"code", status}}}};
}

json read_body(std::string_view text) { return parse_body_text(text); }

std::string requested_model(const json& body) {
    const auto found = body.find("model");
    if (found == body.end() || found->is_null()) return "";
    if (!found->is_string()) refuse("model", "model must be a string: the name of a model GET /v1/models lists");
    return found->get<std::string>();
}

CompletionCall read_completion_request(std::string_view text, const Vocab& vocab, const ServerOptions& options) {
    return read_completion_request(parse_body_text(text), vocab, options);
}

CompletionCall read_completion_request(const json& body, const Vocab& vocab, const ServerOptions& options) {
    Fields fields(body);
    CompletionCall call;
    CompletionRequest& request = call.request;
    std::string prompt_bytes;
    if (const json* prompt = fields.find("prompt")) {
        if (prompt->is_array() && prompt->size() == 1 && (*prompt)[0].is_string()) prompt_bytes = (*prompt)[0].get<std::string>();
        else if (prompt->is_string()) prompt_bytes = prompt->get<std::string>();
        else refuse("prompt", "prompt must be a string (or an array of one string: send one prompt per request)");
    }
    const bool skip_unknown = fields.flag("skip_unknown", false);
    std::size_t unknown = 0;
    request.prompt = known_text(prompt_bytes, vocab, "prompt", skip_unknown, unknown);
    if (request.prompt.size() > options.max_score_characters)
        refuse("prompt", fmt::format("the prompt has {} characters; this server reads at most {}", request.prompt.size(), options.max_score_characters));
    request.max_characters = static_cast<std::size_t>(fields.whole("max_tokens", std::min<std::int64_t>(200, static_cast<std::int64_t>(options.max_tokens)), 0, static_cast<std::int64_t>(options.max_tokens), " (this server's --max-tokens)"));
    request.temperature = fields.number("temperature", 1.0);
    if (!(request.temperature > 0) || request.temperature > 100)
        refuse("temperature", fmt::format("temperature must be above 0 and at most 100, not {}{}", fields.find("temperature")->dump(),
                                          request.temperature > 100 ? ""
                                                                    : " (for the most likely character every time, send \"top_k\": 1)"));
    request.top_p = fields.number("top_p", 1.0);
    if (!(request.top_p > 0 && request.top_p <= 1)) refuse("top_p", "top_p must be above 0 and at most 1");
    request.top_k = static_cast<int>(fields.whole("top_k", 0, 0, 1'000'000'000));
    const json* seed = fields.find("seed");
    if (seed && (!seed->is_number_integer() || (seed->is_number_integer() && !seed->is_number_unsigned() && seed->get<std::int64_t>() < 0)))
        refuse("seed", "seed must be a whole number from 0 to 18446744073709551615");
    // A drawn seed stays below 2^53, so that a client reading JSON numbers as doubles (JavaScript) can
    // send it back exactly.
    request.seed = seed ? seed->get<std::uint64_t>()
                        : ((std::uint64_t{std::random_device{}()} << 32) | std::random_device{}()) & ((std::uint64_t{1} << 53) - 1);
    if (const json* stop = fields.find("stop")) {
        const json stops = stop->is_string() ? json::array({*stop}) : *stop;
        if (!stops.is_array() || stops.size() > kMostStops || !std::all_of(stops.begin(), stops.end(), [](const json& s) { return s.is_string(); }))
            refuse("stop", fmt::format("stop must be a string or an array of at most {} strings", kMostStops));
        for (const json& s : stops) {
            const std::u32string text = code_points_of(s.get<std::string>(), "stop");
            if (text.empty()) refuse("stop", "a stop text cannot be empty");
            if (text.size() > 64) refuse("stop", "a stop text may have at most 64 characters");
            request.stops.push_back(text);
        }
    }
    request.choices = static_cast<int>(fields.whole("n", 1, 1, std::min(kMostChoices, options.slots)));
    call.stream = fields.flag("stream", false);
    request.alternatives = static_cast<int>(fields.whole("logprobs", 0, 0, kMostAlternatives));
    call.with_logprobs = fields.find("logprobs") != nullptr;
    request.logprobs = call.with_logprobs;
    fields.text("model", "");
    fields.text("user", "");
    request.echo = fields.flag("echo", false);
    fields.only_default("best_of", request.choices);
    fields.only_default("frequency_penalty", 0);
    fields.only_default("presence_penalty", 0);
    fields.only_default("suffix", nullptr);
    fields.only_default("logit_bias", json::object());
    fields.check_all_read();

    return call;
}

ScoreCall read_score_request(std::string_view text, const Vocab& vocab, const ModelConfig& config, const ServerOptions& options) {
    return read_score_request(parse_body_text(text), vocab, config, options);
}

ScoreCall read_score_request(const json& body, const Vocab& vocab, const ModelConfig& config, const ServerOptions& options) {
    Fields fields(body);
    ScoreCall call;
    ScoreRequest& request = call.request;
    const json* text_field = fields.find("text");
    if (!text_field || !text_field->is_string()) refuse("text", "text must be a string of at least 2 characters");
    const bool skip_unknown = fields.flag("skip_unknown", false);
    std::size_t& unknown = call.unknown_characters;
    request.text = known_text(text_field->get<std::string>(), vocab, "text", skip_unknown, unknown);
    if (request.text.size() < 2) refuse("text", fmt::format("text must have at least 2 characters the model knows; it has {}", request.text.size()));
    if (request.text.size() > options.max_score_characters)
        refuse("text", fmt::format("the text has {} characters; this server scores at most {} (charlm eval --html scores a file)",
                                   request.text.size(), options.max_score_characters));
    request.top = static_cast<int>(fields.whole("top", 5, 0, kMostAlternatives));
    request.most_varying = static_cast<int>(fields.whole("most_varying", 16, 0, kMostVarying));
    if (const json* neurons = fields.find("neurons")) {
        if (!neurons->is_array() || neurons->size() > kMostNeurons)
            refuse("neurons", fmt::format("neurons must be an array of at most {} [layer, unit] or [layer, unit, \"hidden\"|\"cell\"]", kMostNeurons));
        for (const json& n : *neurons) {
            const bool shaped = n.is_array() && (n.size() == 2 || n.size() == 3) && n[0].is_number_integer() && n[1].is_number_integer() &&
                                (n.size() == 2 || (n[2].is_string() && (n[2] == "hidden" || n[2] == "cell")));
            if (!shaped) refuse("neurons", fmt::format("each neuron is [layer, unit] or [layer, unit, \"hidden\"|\"cell\"], not {}", n.dump()));
            const auto layer = n[0].get<std::int64_t>(), unit = n[1].get<std::int64_t>();
            if (layer < 0 || layer > 1'000'000 || unit < 0 || unit > 1'000'000)
                refuse("neurons", fmt::format("no neuron {}", n.dump()));
            const Neuron neuron{static_cast<int>(layer), static_cast<int>(unit), n.size() == 3 && n[2] == "cell"};
            try {
                check_neuron(config, neuron);
            } catch (const UsageError& error) {
                refuse("neurons", fmt::format("{}: {}", n.dump(), error.what()));
            }
            request.neurons.push_back(neuron);
        }
    }
    fields.text("model", "");
    fields.check_all_read();

    return call;
}

// ---- answers ----------------------------------------------------------------------------------------

json HealthAnswer::to_json() const {
    if (loading && models.empty()) return {{"status", "loading"}};
    DecoderLoad total;
    json listed = json::array();
    for (const Model& model : models) {
        total.slots_idle += model.load.slots_idle;
        total.slots_busy += model.load.slots_busy;
        total.requests_queued += model.load.requests_queued;
        listed.push_back({{"id", model.name}, {"status", "ok"}, {"slots_idle", model.load.slots_idle},
                          {"slots_processing", model.load.slots_busy}, {"requests_queued", model.load.requests_queued}});
    }
    return {{"status", loading ? "loading" : "ok"}, {"slots_idle", total.slots_idle}, {"slots_processing", total.slots_busy},
            {"requests_queued", total.requests_queued}, {"models", std::move(listed)}};
}

json ModelsAnswer::to_json() const {
    json data = json::array();
    for (const Model& model : models) {
        const ModelConfig& config = model.checkpoint.config;
        const Vocab& vocab = model.checkpoint.vocab;
        const json meta = {{"cell", to_string(config.cell)}, {"layers", config.layers}, {"hidden_size", config.hidden_size},
                           {"embed_size", config.embed_size}, {"vocab_size", config.vocab_size},
                           {"parameters", config.parameter_count()}, {"step", model.checkpoint.training.step},
                           {"vocabulary", encode_utf8(std::u32string(vocab.code_points().begin(), vocab.code_points().end()))},
                           {"has_cell_state", config.has_cell_state()}, {"max_tokens", options.max_tokens},
                           {"max_text_characters", options.max_score_characters}, {"slots", options.slots}};
        data.push_back({{"id", model.name}, {"object", "model"}, {"owned_by", "charlm"}, {"created", std::time(nullptr)}, {"meta", meta}});
    }
    return {{"object", "list"}, {"data", std::move(data)}};
}

json CompletionHead::to_json() const { return {{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", model}}; }

json CompletionAnswer::to_json() const {
    json result = head.to_json();
    json listed = json::array();
    std::size_t generated = 0;
    const std::size_t echoed = echo ? prompt_length : 0;
    for (std::size_t i = 0; i < choices.size(); ++i) {
        const std::vector<DrawnCharacter>& characters = choices[i].characters;
        generated += characters.size() - std::min(echoed, characters.size());
        listed.push_back({{"index", i}, {"text", text_of(characters)}, {"finish_reason", finish_name(choices[i].reason)},
                          {"logprobs", with_logprobs ? logprobs_json(characters, prompt_length - echoed) : json(nullptr)}});
    }
    result["seed"] = seed;
    result["choices"] = std::move(listed);
    result["usage"] = {{"prompt_tokens", prompt_length}, {"completion_tokens", generated}, {"total_tokens", prompt_length + generated}};
    return result;
}

std::string completion_events(const CompletionHead& head, std::optional<std::uint64_t> seed, std::size_t index, const ChoiceNews& news,
                              std::size_t first_offset, std::size_t echo_length, bool with_logprobs) {
    if (news.characters.empty() && !news.finished) return "";
    const std::span<const DrawnCharacter> characters(news.characters);
    const std::size_t cut = first_offset < echo_length ? std::min(echo_length - first_offset, characters.size()) : 0;
    std::string events;
    auto event = [&](std::span<const DrawnCharacter> piece, std::size_t offset, bool last) {
        json data = head.to_json();
        if (seed) data["seed"] = *seed;  // the first event says which seed repeats the stream
        seed.reset();
        data["choices"] = json::array({{{"index", index}, {"text", text_of(piece)},
                                        {"finish_reason", last && news.finished ? json(finish_name(news.reason)) : json(nullptr)},
                                        {"logprobs", with_logprobs ? logprobs_json(piece, offset) : json(nullptr)}}});
        events += "data: " + json_text(data) + "\n\n";
    };
    if (cut > 0 && cut < characters.size()) {  // the prompt's end and the first generated characters came together
        event(characters.first(cut), first_offset, false);
        event(characters.subspan(cut), first_offset + cut, true);
    } else {
        event(characters, first_offset, true);
    }
    return events;
}

json ScoreAnswer::to_json() const {
    json answer = score_to_json(result, text);
    answer["model"] = model;
    answer["unknown_characters"] = unknown_characters;
    return answer;
}

}  // namespace charlm
