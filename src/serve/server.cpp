// charlm serve: HTTP routes, request checking and server-sent events over a BatchDecoder (docs/serve.md).
#include "charlm/server.hpp"

#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <ctime>
#include <mutex>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <httplib.h>
#include <spdlog/spdlog.h>

#include "charlm/text.hpp"

namespace charlm {

std::string_view serve_page() {
    static constexpr std::string_view page =
#include "charlm_page.inc"
        ;
    return page;
}

namespace {

using json = nlohmann::ordered_json;

// Nesting deeper than this is refused before parsing: no legitimate request comes near it.
constexpr int kDeepestNesting = 32;
constexpr int kMostAlternatives = 10;
constexpr int kMostChoices = 8;
constexpr std::size_t kMostStops = 4;
constexpr std::size_t kMostNeurons = 64;
constexpr int kMostVarying = 64;
// A stream sends at most one event per pace (about 60 a second): smooth to watch, and cheap to serve.
constexpr std::chrono::milliseconds kStreamPace{16};

[[noreturn]] void refuse(std::string param, std::string message) { throw RequestRefusal{400, std::move(message), std::move(param)}; }

json error_body(const RequestRefusal& refusal) {
    return {{"error", {{"message", refusal.message}, {"type", refusal.type},
                       {"param", refusal.param.empty() ? json(nullptr) : json(refusal.param)}, {"code", refusal.status}}}};
}

std::string dump(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

void answer(httplib::Response& response, int status, const json& body) {
    response.status = status;
    response.set_content(dump(body), "application/json");
}

void answer(httplib::Response& response, const RequestRefusal& refusal) {
    if (refusal.status == 503) response.set_header("Retry-After", "1");
    answer(response, refusal.status, error_body(refusal));
}

// The deepest nesting of arrays and objects in a JSON text, counted without parsing it (strings skipped).
int nesting_depth(std::string_view text) {
    int depth = 0, deepest = 0;
    bool in_string = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (in_string) {
            if (c == '\\') ++i;
            else if (c == '"') in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            deepest = std::max(deepest, ++depth);
        } else if (c == ']' || c == '}') {
            --depth;
        }
    }
    return deepest;
}

json parse_body(std::string_view text) {
    if (nesting_depth(text) > kDeepestNesting)
        refuse("", fmt::format("the JSON is nested deeper than {} levels", kDeepestNesting));
    try {
        json body = json::parse(text);
        if (!body.is_object()) refuse("", "the body must be a JSON object");
        return body;
    } catch (const json::exception& error) {  // a syntax error, or a number past a double's range (1e700)
        refuse("", fmt::format("the body is not valid JSON: {}", error.what()));
    }
}

// A number a float can hold, for the output: the shortest text that reads back as the same float.
json tidy(float value) {
    if (!std::isfinite(value)) return nullptr;
    return std::stod(fmt::format("{}", value));
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
    std::u32string text = code_points_of(bytes, param);
    std::u32string known;
    std::string unknown;
    unknown_count = 0;
    for (char32_t c : text) {
        if (vocab.contains(c)) {
            known += c;
            continue;
        }
        ++unknown_count;
        const std::string name = describe_code_point(c);
        if (unknown.find(name) == std::string::npos && unknown.size() < 400) unknown += (unknown.empty() ? "" : ", ") + name;
    }
    if (unknown_count > 0 && !skip_unknown)
        refuse(param, fmt::format("the {} has characters the model never saw: {}; remove them or send \"skip_unknown\": true", param, unknown));
    return known;
}

json logprobs_json(const std::vector<DrawnCharacter>& characters, std::size_t first_offset) {
    json tokens = json::array(), token_logprobs = json::array(), top_logprobs = json::array(), offsets = json::array();
    for (std::size_t i = 0; i < characters.size(); ++i) {
        const DrawnCharacter& c = characters[i];
        tokens.push_back(encode_utf8(c.character));
        token_logprobs.push_back(tidy(c.logprob));
        json top = json::object();
        for (const CharacterLogprob& alternative : c.top) top[encode_utf8(alternative.character)] = tidy(alternative.logprob);
        top_logprobs.push_back(std::move(top));
        offsets.push_back(first_offset + i);
    }
    return {{"tokens", tokens}, {"token_logprobs", token_logprobs}, {"top_logprobs", top_logprobs}, {"text_offset", offsets}};
}

std::string text_of(const std::vector<DrawnCharacter>& characters) {
    std::string text;
    for (const DrawnCharacter& c : characters) text += encode_utf8(c.character);
    return text;
}

const char* finish_name(FinishReason reason) { return reason == FinishReason::stop ? "stop" : "length"; }

}  // namespace

nlohmann::ordered_json score_to_json(const ScoreResult& result, const std::u32string& text) {
    json characters = json::array(), losses = json::array(), tops = json::array();
    for (std::size_t i = 0; i < text.size(); ++i) {
        characters.push_back(encode_utf8(text[i]));
        losses.push_back(tidy(result.losses[i]));
        if (result.top[i].empty() && i == 0) {
            tops.push_back(nullptr);
            continue;
        }
        json top = json::array();
        for (const CharacterLogprob& p : result.top[i]) top.push_back({encode_utf8(p.character), tidy(std::exp(p.logprob))});
        tops.push_back(std::move(top));
    }
    json neurons = json::array();
    for (const NeuronTrace& trace : result.neurons) {
        json activations = json::array();
        for (float a : trace.activations) activations.push_back(tidy(a));
        neurons.push_back({{"layer", trace.neuron.layer}, {"unit", trace.neuron.unit}, {"state", trace.neuron.cell ? "cell" : "hidden"},
                           {"activations", std::move(activations)}});
    }
    json most_varying = json::array();
    for (const NeuronSpread& spread : result.most_varying)
        most_varying.push_back({{"layer", spread.neuron.layer}, {"unit", spread.neuron.unit},
                                {"state", spread.neuron.cell ? "cell" : "hidden"}, {"std", tidy(static_cast<float>(spread.standard_deviation))}});
    const double nats = result.loss.mean();
    return {{"characters", text.size()}, {"characters_scored", result.loss.count}, {"nats_per_character", nats},
            {"perplexity", perplexity_of(nats)}, {"bits_per_character", bits_per_character_of(nats)},
            {"text", std::move(characters)}, {"loss", std::move(losses)}, {"top", std::move(tops)},
            {"neurons", std::move(neurons)}, {"most_varying", std::move(most_varying)}};
}

std::string score_report_html(nlohmann::ordered_json score, const std::string& file_name, std::size_t characters_total,
                              const nlohmann::ordered_json& whole_file) {
    const std::size_t rendered = score["characters"].get<std::size_t>();
    score["report"] = {{"file", file_name}, {"characters_total", characters_total}, {"characters_rendered", rendered},
                       {"whole_file", whole_file}};
    // In a <script> element nothing may read as "</script>": every '<' goes as \u003c, which JSON.parse reads back.
    std::string data;
    for (char c : dump(score)) {
        if (c == '<') data += "\\u003c";
        else data += c;
    }
    const std::string placeholder = R"(<script id="charlm-report" type="application/json">null</script>)";
    std::string page(serve_page());
    const std::size_t at = page.find(placeholder);
    if (at == std::string::npos) throw Error("the built-in page has no place for a report");
    page.replace(at, placeholder.size(), R"(<script id="charlm-report" type="application/json">)" + data + "</script>");
    return page;
}

CompletionCall read_completion_request(std::string_view text, const Vocab& vocab, const ServerOptions& options) {
    const json body = parse_body(text);
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
    request.options.temperature = fields.number("temperature", 1.0);
    if (!(request.options.temperature > 0) || request.options.temperature > 100)
        refuse("temperature", fmt::format("temperature must be above 0 and at most 100, not {} (for the most likely character every time, send \"top_k\": 1)",
                                          fields.find("temperature")->dump()));
    request.options.top_p = fields.number("top_p", 1.0);
    if (!(request.options.top_p > 0 && request.options.top_p <= 1)) refuse("top_p", "top_p must be above 0 and at most 1");
    request.options.top_k = static_cast<int>(fields.whole("top_k", 0, 0, 1'000'000'000));
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
    fields.text("model", "");
    fields.text("user", "");
    fields.only_default("echo", false);
    fields.only_default("best_of", request.choices);
    fields.only_default("frequency_penalty", 0);
    fields.only_default("presence_penalty", 0);
    fields.only_default("suffix", nullptr);
    fields.only_default("logit_bias", json::object());
    fields.check_all_read();

    return call;
}

ScoreCall read_score_request(std::string_view text, const Vocab& vocab, const ModelConfig& config, const ServerOptions& options) {
    const json body = parse_body(text);
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

struct Server::State {
    ServerOptions options;
    httplib::Server http;
    std::thread listener;
    int port = 0;
    int listening_socket = -1;
    std::atomic<std::uint64_t> next_id{1};

    // The model and its decoder, from load() on. Handlers read them without a lock once `ready` is set:
    // nothing changes them after that until stop(), which first stops the listener's handlers.
    std::optional<Checkpoint> checkpoint;
    std::string model_name;
    std::unique_ptr<BatchDecoder> decoder;
    std::atomic<bool> ready{false};

    void routes();
    void health(httplib::Response& response);
    void models(httplib::Response& response);
    void completions(const std::string& body, httplib::Response& response);
    void score(const std::string& body, httplib::Response& response);
    void check_ready() const {
        if (!ready) throw RequestRefusal{503, "the model is still loading; try again shortly", "", "unavailable_error"};
    }
};

void Server::State::health(httplib::Response& response) {
    if (!ready) return answer(response, 503, {{"status", "loading"}});
    const DecoderLoad load = decoder->load();
    answer(response, 200, {{"status", "ok"}, {"slots_idle", load.slots_idle}, {"slots_processing", load.slots_busy},
                           {"requests_queued", load.requests_queued}});
}

void Server::State::models(httplib::Response& response) {
    check_ready();
    const ModelConfig& config = checkpoint->config;
    const json meta = {{"cell", to_string(config.cell)}, {"layers", config.layers}, {"hidden_size", config.hidden_size},
                       {"embed_size", config.embed_size}, {"vocab_size", config.vocab_size},
                       {"parameters", config.parameter_count()}, {"step", checkpoint->training.step},
                       {"vocabulary", encode_utf8(std::u32string(checkpoint->vocab.code_points().begin(), checkpoint->vocab.code_points().end()))},
                       {"has_cell_state", config.has_cell_state()}, {"max_tokens", options.max_tokens},
                       {"max_text_characters", options.max_score_characters}, {"slots", options.slots}};
    answer(response, 200, {{"object", "list"}, {"data", json::array({{{"id", model_name}, {"object", "model"}, {"owned_by", "charlm"},
                                                                      {"created", std::time(nullptr)}, {"meta", meta}}})}});
}

void Server::State::completions(const std::string& body, httplib::Response& response) {
    check_ready();
    const CompletionCall call = read_completion_request(body, checkpoint->vocab, options);
    const CompletionRequest& request = call.request;
    const bool stream = call.stream, with_logprobs = call.with_logprobs;
    const auto mailbox = decoder->complete(request);
    const std::string id = fmt::format("cmpl-{}", next_id++);
    const std::time_t created = std::time(nullptr);
    const std::size_t prompt_length = request.prompt.size();
    const json head = {{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", model_name}};

    if (!stream) {
        std::vector<std::vector<DrawnCharacter>> texts(static_cast<std::size_t>(request.choices));
        std::vector<FinishReason> reasons(texts.size(), FinishReason::length);
        std::vector<ChoiceNews> news;
        mailbox->wait_until_finished();
        mailbox->wait_for_news(std::chrono::milliseconds(0), news);
        for (std::size_t i = 0; i < news.size(); ++i) {
            texts[i] = std::move(news[i].characters);
            reasons[i] = news[i].reason;
        }
        json choices = json::array();
        std::size_t generated = 0;
        for (std::size_t i = 0; i < texts.size(); ++i) {
            generated += texts[i].size();
            choices.push_back({{"index", i}, {"text", text_of(texts[i])}, {"finish_reason", finish_name(reasons[i])},
                               {"logprobs", with_logprobs ? logprobs_json(texts[i], prompt_length) : json(nullptr)}});
        }
        json result = head;
        result["seed"] = request.seed;
        result["choices"] = std::move(choices);
        result["usage"] = {{"prompt_tokens", prompt_length}, {"completion_tokens", generated}, {"total_tokens", prompt_length + generated}};
        return answer(response, 200, result);
    }

    // Server-sent events: each wake-up sends what each choice released since the last, as one piece.
    response.set_header("Cache-Control", "no-cache");
    auto offsets = std::make_shared<std::vector<std::size_t>>(static_cast<std::size_t>(request.choices), prompt_length);
    const std::uint64_t seed_used = request.seed;
    response.set_chunked_content_provider(
        "text/event-stream",
        [mailbox, offsets, head, with_logprobs, seed_used, first = true](std::size_t, httplib::DataSink& sink) mutable {
            std::vector<ChoiceNews> news;
            bool done = false;
            std::string events;
            // At most one event per pace: a piece is what the decoder made meanwhile. An event per
            // character would cost a wake-up, a JSON object and a write for each, for each client. The
            // last piece goes at once: waiting out the pace after the end slowed a client's next request.
            try {
                done = mailbox->wait_for_news(std::chrono::milliseconds(250), news, first ? std::chrono::milliseconds(0) : kStreamPace);
            } catch (const Error& error) {  // the server stopping (503), or the model failing (500)
                const bool busy = dynamic_cast<const DecoderBusy*>(&error) != nullptr;
                const RequestRefusal failure{busy ? 503 : 500, error.what(), "", busy ? "unavailable_error" : "server_error"};
                events = "data: " + dump(error_body(failure)) + "\n\ndata: [DONE]\n\n";
                sink.write(events.data(), events.size());
                sink.done();
                return true;
            }
            for (std::size_t i = 0; i < news.size(); ++i) {
                if (news[i].characters.empty() && !news[i].finished) continue;
                json event = head;
                if (first) event["seed"] = seed_used;  // the first event says which seed repeats the stream
                first = false;
                event["choices"] = json::array({{{"index", i}, {"text", text_of(news[i].characters)},
                                                 {"finish_reason", news[i].finished ? json(finish_name(news[i].reason)) : json(nullptr)},
                                                 {"logprobs", with_logprobs ? logprobs_json(news[i].characters, (*offsets)[i]) : json(nullptr)}}});
                (*offsets)[i] += news[i].characters.size();
                events += "data: " + dump(event) + "\n\n";
            }
            if (done) events += "data: [DONE]\n\n";
            if (!events.empty() && !sink.write(events.data(), events.size())) return false;  // the client left
            if (events.empty() && !sink.is_writable()) return false;
            if (done) sink.done();
            return true;
        },
        [mailbox](bool) { mailbox->cancel(); });  // finished or not, the slot is no longer wanted
}

void Server::State::score(const std::string& body, httplib::Response& response) {
    check_ready();
    const ScoreCall call = read_score_request(body, checkpoint->vocab, checkpoint->config, options);
    const ScoreRequest& request = call.request;
    const std::size_t unknown = call.unknown_characters;
    const auto mailbox = decoder->score(request);
    mailbox->wait_until_finished();
    json result = score_to_json(mailbox->score(), request.text);
    result["model"] = model_name;
    result["unknown_characters"] = unknown;
    answer(response, 200, result);
}

void Server::State::routes() {
    // Every handler's refusal is an answer; anything else it throws is the server's fault (500).
    auto guarded = [this](auto handler) {
        return [this, handler](const httplib::Request& request, httplib::Response& response) {
            try {
                handler(request, response);
            } catch (const RequestRefusal& refusal) {
                answer(response, refusal);
            } catch (const DecoderBusy& busy) {
                answer(response, RequestRefusal{503, busy.what(), "", "unavailable_error"});
            } catch (const DecodeFailed& failure) {
                answer(response, RequestRefusal{500, failure.what(), "", "server_error"});
            } catch (const UsageError& error) {
                answer(response, RequestRefusal{400, error.what(), ""});
            } catch (const Error& error) {
                answer(response, RequestRefusal{400, error.what(), ""});
            }
        };
    };
    http.Get("/", [](const httplib::Request&, httplib::Response& response) {
        const std::string_view page = serve_page();
        response.set_content(page.data(), page.size(), "text/html; charset=utf-8");
    });
    http.Get("/health", guarded([this](const httplib::Request&, httplib::Response& response) { health(response); }));
    http.Get("/v1/models", guarded([this](const httplib::Request&, httplib::Response& response) { models(response); }));
    // The bodies are read through a content reader: httplib caps a body sent as a form (what curl -d and
    // urllib send unless told otherwise) at 8 KB and answered 413 past it; read this way, only
    // set_payload_max_length applies, whatever the Content-Type.
    const std::size_t max_body = options.max_body_bytes;
    auto with_body = [guarded, max_body](auto handler) {
        return [guarded, handler, max_body](const httplib::Request& request, httplib::Response& response, const httplib::ContentReader& read) {
            std::string body;
            const bool whole = read([&](const char* data, std::size_t length) {
                body.append(data, length);
                return true;
            });
            if (!whole) {  // past the size limit (httplib has set 413), or the client stopped sending
                const bool too_large = response.status == 413;
                return answer(response, RequestRefusal{too_large ? 413 : 400,
                                                       too_large ? fmt::format("the body is larger than this server takes ({} bytes)", max_body)
                                                                 : std::string("the body could not be read in full"), ""});
            }
            guarded([&](const httplib::Request& r, httplib::Response& s) { handler(r, s, body); })(request, response);
        };
    };
    http.Post("/v1/completions", with_body([this](const httplib::Request&, httplib::Response& response, const std::string& body) {
        completions(body, response);
    }));
    http.Post("/v1/score", with_body([this](const httplib::Request&, httplib::Response& response, const std::string& body) {
        score(body, response);
    }));
    auto wrong_method = [](const char* allowed) {
        return [allowed](const httplib::Request& request, httplib::Response& response) {
            response.set_header("Allow", allowed);
            answer(response, RequestRefusal{405, fmt::format("{} takes {}, not {}", request.path, allowed, request.method), ""});
        };
    };
    for (const char* path : {"/v1/completions", "/v1/score"}) {
        http.Get(path, wrong_method("POST"));
        http.Put(path, wrong_method("POST"));
        http.Patch(path, wrong_method("POST"));
        http.Delete(path, wrong_method("POST"));
        http.Options(path, wrong_method("POST"));
    }
    for (const char* path : {"/", "/health", "/v1/models"}) {
        http.Post(path, wrong_method("GET"));
        http.Put(path, wrong_method("GET"));
        http.Patch(path, wrong_method("GET"));
        http.Delete(path, wrong_method("GET"));
        http.Options(path, wrong_method("GET"));
    }
    // What httplib answers itself (no such path, a body too large, a malformed request) gets a JSON body too.
    http.set_error_handler([max_body](const httplib::Request& request, httplib::Response& response) {
        if (!response.body.empty()) return;
        std::string message = fmt::format("HTTP {}", response.status);
        if (response.status == 404)
            message = fmt::format("no such path: {} {}; the API has GET /, /health, /v1/models and POST /v1/completions, /v1/score",
                                  request.method, request.path);
        else if (response.status == 413)
            message = fmt::format("the body is larger than this server takes ({} bytes)", max_body);
        else if (response.status == 400)
            message = "a malformed HTTP request";
        answer(response, RequestRefusal{response.status, message, ""});
    });
    http.set_exception_handler([](const httplib::Request&, httplib::Response& response, std::exception_ptr error) {
        std::string message = "internal error";
        try {
            if (error) std::rethrow_exception(error);
        } catch (const std::exception& e) {
            message = e.what();
        } catch (...) {
        }
        spdlog::error("{}", message);
        answer(response, RequestRefusal{500, message, "", "server_error"});
    });
    http.set_logger([](const httplib::Request& request, const httplib::Response& response) {
        spdlog::debug("{} {} {}", request.method, request.path, response.status);
    });
}

Server::Server(ServerOptions options) : state_(std::make_unique<State>()) {
    if (options.host.empty()) throw UsageError("--host needs an address, such as 127.0.0.1 or 0.0.0.0");
    if (options.port < 0 || options.port > 65535) throw UsageError(fmt::format("--port must be 0 to 65535, not {}", options.port));
    if (options.slots < 1 || options.slots > 256) throw UsageError(fmt::format("--parallel must be 1 to 256, not {}", options.slots));
    if (options.queued < 0 || options.queued > 4096) throw UsageError(fmt::format("--queue must be 0 to 4096, not {}", options.queued));
    if (options.max_tokens < 1) throw UsageError("--max-tokens must be at least 1");
    state_->options = options;
}

Server::~Server() { stop(); }

void Server::start() {
    ::signal(SIGPIPE, SIG_IGN);
    State& s = *state_;
    s.routes();
    const ServerOptions& options = s.options;
    s.http.set_payload_max_length(options.max_body_bytes);
    // Without it, an answer's first chunk on a reused connection waited ~40 ms for the client's delayed
    // ACK of the headers (Nagle): a 1-client stream ran at a tenth of its speed.
    s.http.set_tcp_nodelay(true);
    s.http.set_read_timeout(options.timeout_seconds, 0);
    s.http.set_write_timeout(options.timeout_seconds, 0);
    s.http.set_keep_alive_timeout(std::min(options.timeout_seconds, 5));
    // A thread per connection: every slot and queue place may hold a stream, and a few more answer
    // /health and the page meanwhile.
    const std::size_t connections = static_cast<std::size_t>(options.slots + options.queued + 8);
    s.http.new_task_queue = [connections] { return new httplib::ThreadPool(connections); };
    // httplib's default, SO_REUSEPORT, lets a second server bind the same port and take half of the
    // first one's connections without a word; SO_REUSEADDR alone allows a quick restart and refuses that.
    s.http.set_socket_options([&s](socket_t socket) {
        const int yes = 1;
        ::setsockopt(socket, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
        s.listening_socket = socket;
    });
    s.port = options.port == 0 ? s.http.bind_to_any_port(options.host) : (s.http.bind_to_port(options.host, options.port) ? options.port : -1);
    if (s.port < 0)
        throw Error(fmt::format("cannot listen on {}:{}: the port is taken or the address is not this machine's; try another --port or --host",
                                options.host, options.port));
    // httplib listens with a backlog of 5: 16 clients connecting at once overflowed it (the kernel drops
    // their handshakes, and some clients failed to read an answer). Listening again sets a deeper one.
    if (s.listening_socket >= 0) ::listen(s.listening_socket, 1024);
    s.listener = std::thread([&s] { s.http.listen_after_bind(); });
    // stop() before the listener runs would find nothing to stop, and the listener would then run on.
    while (!s.http.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

int Server::port() const { return state_->port; }

std::string Server::url() const {
    const std::string& host = state_->options.host;
    return fmt::format("http://{}:{}/", host.find(':') != std::string::npos ? "[" + host + "]" : host, state_->port);
}

void Server::load(Checkpoint checkpoint, std::string name) {
    State& s = *state_;
    s.checkpoint = std::move(checkpoint);
    s.model_name = std::move(name);
    s.decoder = std::make_unique<BatchDecoder>(*s.checkpoint->model, s.checkpoint->vocab,
                                               DecoderOptions{.slots = s.options.slots, .queued = s.options.queued, .threads = s.options.threads});
    s.ready = true;
}

void Server::stop() {
    State& s = *state_;
    if (s.decoder) s.decoder->stop();  // the requests in flight fail now, so that their handlers return
    s.http.stop();
    if (s.listener.joinable()) s.listener.join();
}

}  // namespace charlm
