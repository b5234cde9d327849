// charlm serve's HTTP routes: what each method and path answers, the key, and server-sent events.
// What a request means and what an answer says are api.cpp's; the decoding is the decoder's; the
// connections (reading, writing, deadlines) are connection.cpp's.
#include <atomic>
#include <chrono>
#include <ctime>
#include <optional>

#include <fmt/format.h>

#include "charlm/report.hpp"
#include "serve/access.hpp"
#include "serve/api.hpp"
#include "serve/routes.hpp"

namespace charlm {

namespace {

using json = nlohmann::ordered_json;

void answer(HttpAnswer& response, int status, const json& body) {
    response.status = status;
    response.content_type = "application/json";
    response.body = json_text(body);
}

void answer(HttpAnswer& response, const RequestRefusal& refusal) {
    if (refusal.status == 503) response.set_header("Retry-After", "1");
    if (refusal.status == 401) response.set_header("WWW-Authenticate", "Bearer");
    answer(response, refusal.status, refusal.to_json());
}

}  // namespace

HttpAnswer refusal_answer(const RequestRefusal& refusal) {
    HttpAnswer response;
    answer(response, refusal);
    return response;
}

// What the handlers serve: the model and its decoder, from Routes::load() on. Handlers read them
// without a lock once `ready` is set: nothing changes them after that until stop().
struct ServedModel {
    explicit ServedModel(const ServerOptions& server_options) : options(server_options) {}

    const ServerOptions& options;
    std::optional<Checkpoint> checkpoint;
    std::string name;
    std::unique_ptr<BatchDecoder> decoder;
    std::atomic<bool> ready{false};
    std::atomic<std::uint64_t> next_id{1};

    void check_ready() const {
        if (!ready) throw RequestRefusal{503, "the model is still loading; try again shortly", "", "unavailable_error"};
    }
};

struct Routes::Served {
    Served(const ServerOptions& options, ServerMetrics& server_metrics) : model(options), keys(options.api_keys), metrics(server_metrics) {}
    ServedModel model;
    ApiKeys keys;
    ServerMetrics& metrics;
};

namespace {

// ---- the handlers -------------------------------------------------------------------------------------

void health(const ServedModel& served, HttpAnswer& response) {
    if (!served.ready) return answer(response, 503, HealthAnswer{}.to_json());
    answer(response, 200, HealthAnswer{served.decoder->load()}.to_json());
}

void models(const ServedModel& served, HttpAnswer& response) {
    served.check_ready();
    answer(response, 200, ModelsAnswer{*served.checkpoint, served.name, served.options}.to_json());
}

void metrics(const ServedModel& served, const ServerMetrics& server_metrics, HttpAnswer& response) {
    response.status = 200;
    response.content_type = "text/plain; version=0.0.4; charset=utf-8";
    response.body = server_metrics.exposition(served.ready ? std::optional<DecoderLoad>(served.decoder->load()) : std::nullopt);
}

// A handler whose every refusal is an answer; anything else it throws is the server's fault (500).
template <typename Handler>
void answer_or_refuse(const Handler& handler, HttpAnswer& response) {
    try {
        handler();
    } catch (const RequestRefusal& refusal) {
        answer(response, refusal);
    } catch (const DecoderBusy& busy) {
        answer(response, RequestRefusal{503, busy.what(), "", "unavailable_error"});
    } catch (const DecodeFailed& failure) {
        answer(response, RequestRefusal{500, failure.what(), "", "server_error"});
    } catch (const Error& error) {  // UsageError included
        answer(response, RequestRefusal{400, error.what(), ""});
    } catch (const std::exception& error) {
        answer(response, RequestRefusal{500, error.what(), "", "server_error"});
    }
}

std::size_t characters_in(const std::vector<ChoiceNews>& news) {
    std::size_t count = 0;
    for (const ChoiceNews& choice : news) count += choice.characters.size();
    return count;
}

// Every choice whole, once all have finished.
PendingAnswer answer_whole(std::shared_ptr<RequestMailbox> mailbox, const CompletionHead& head, const CompletionCall& call, ServerMetrics& server_metrics) {
    PendingAnswer pending{mailbox, false, {}, {}};
    pending.whole = [mailbox, head, seed = call.request.seed, prompt_length = call.request.prompt.size(), with_logprobs = call.with_logprobs,
                     &server_metrics] {
        HttpAnswer response;
        answer_or_refuse(
            [&] {
                std::vector<ChoiceNews> news;
                mailbox->wait_for_news(std::chrono::milliseconds(0), news);  // the request has ended: no wait
                server_metrics.count_generated(characters_in(news));
                answer(response, 200, CompletionAnswer{head, seed, news, prompt_length, with_logprobs}.to_json());
            },
            response);
        return response;
    };
    return pending;
}

// Server-sent events: each call sends what each choice released since the last, as one piece. The
// connection calls at most once per pace (kStreamPace, connection.cpp), and at once for the last piece.
PendingAnswer answer_stream(std::shared_ptr<RequestMailbox> mailbox, const CompletionHead& head, const CompletionCall& call, ServerMetrics& server_metrics) {
    PendingAnswer pending{mailbox, true, {}, {}};
    std::vector<std::size_t> offsets(static_cast<std::size_t>(call.request.choices), call.request.prompt.size());
    pending.events = [mailbox, offsets, head, with_logprobs = call.with_logprobs, seed = call.request.seed, first = true,
                      &server_metrics](bool& done) mutable {
        std::vector<ChoiceNews> news;
        std::string events;
        try {
            done = mailbox->wait_for_news(std::chrono::milliseconds(0), news);
        } catch (const Error& error) {  // the server stopping (503), or the model failing (500)
            const bool busy = dynamic_cast<const DecoderBusy*>(&error) != nullptr;
            const RequestRefusal failure{busy ? 503 : 500, error.what(), "", busy ? "unavailable_error" : "server_error"};
            done = true;
            return "data: " + json_text(failure.to_json()) + "\n\ndata: [DONE]\n\n";
        }
        server_metrics.count_generated(characters_in(news));
        for (std::size_t i = 0; i < news.size(); ++i) {
            if (news[i].characters.empty() && !news[i].finished) continue;
            const CompletionEvent event{head, first ? std::optional<std::uint64_t>(seed) : std::nullopt, i, news[i], offsets[i], with_logprobs};
            first = false;
            offsets[i] += news[i].characters.size();
            events += "data: " + json_text(event.to_json()) + "\n\n";
        }
        if (done) events += "data: [DONE]\n\n";
        return events;
    };
    return pending;
}

RouteOutcome completions(ServedModel& served, ServerMetrics& server_metrics, const std::string& body) {
    served.check_ready();
    const CompletionCall call = read_completion_request(body, served.checkpoint->vocab, served.options);
    const auto mailbox = served.decoder->complete(call.request);
    const CompletionHead head{fmt::format("cmpl-{}", served.next_id++), std::time(nullptr), served.name};
    if (call.stream) return answer_stream(mailbox, head, call, server_metrics);
    return answer_whole(mailbox, head, call, server_metrics);
}

RouteOutcome score(ServedModel& served, ServerMetrics& server_metrics, const std::string& body) {
    served.check_ready();
    const ScoreCall call = read_score_request(body, served.checkpoint->vocab, served.checkpoint->config, served.options);
    const auto mailbox = served.decoder->score(call.request);
    PendingAnswer pending{mailbox, false, {}, {}};
    pending.whole = [mailbox, text = call.request.text, name = served.name, unknown = call.unknown_characters, &server_metrics] {
        HttpAnswer response;
        answer_or_refuse(
            [&] {
                mailbox->wait_until_finished();  // it has: no wait
                server_metrics.count_scored(text.size());
                answer(response, 200, ScoreAnswer{mailbox->score(), text, name, unknown}.to_json());
            },
            response);
        return response;
    };
    return pending;
}

// ---- the routes ---------------------------------------------------------------------------------------

const char* method_of(const std::string& path) {
    if (path == "/v1/completions" || path == "/v1/score") return "POST";
    if (path == "/" || path == "/health" || path == "/v1/models" || path == "/metrics") return "GET";
    return nullptr;
}

RouteOutcome route(Routes::Served& served, const HttpRequest& request) {
    HttpAnswer response;
    const std::string& path = request.path;
    // The page and /health are open to all: the page asks for the key, and a load balancer asks /health.
    if (path != "/" && path != "/health" && !served.keys.empty() && !served.keys.admit(request.authorization)) {
        answer(response, RequestRefusal{401,
                                        request.authorization.empty()
                                            ? "this server needs an API key: send `Authorization: Bearer KEY`"
                                            : "the API key is not one this server takes; send `Authorization: Bearer KEY` with a key it was given",
                                        "", "authentication_error"});
        return response;
    }
    const char* allowed = method_of(path);
    if (!allowed) {
        answer(response, RequestRefusal{404,
                                        fmt::format("no such path: {} {}; the API has GET /, /health, /metrics, /v1/models and POST "
                                                    "/v1/completions, /v1/score",
                                                    request.method, path),
                                        ""});
        return response;
    }
    // HEAD is GET without the body: the connection leaves the body out.
    if (request.method != allowed && !(request.method == "HEAD" && std::string_view(allowed) == "GET")) {
        response.set_header("Allow", allowed);
        answer(response, RequestRefusal{405, fmt::format("{} takes {}, not {}", path, allowed, request.method), ""});
        return response;
    }
    ServedModel& model = served.model;
    if (path == "/") {
        const std::string_view page = serve_page();
        response.content_type = "text/html; charset=utf-8";
        response.body.assign(page);
        return response;
    }
    std::optional<RouteOutcome> pending;
    answer_or_refuse(
        [&] {
            if (path == "/health") return health(model, response);
            if (path == "/v1/models") return models(model, response);
            if (path == "/metrics") return metrics(model, served.metrics, response);
            if (request.body.empty()) throw RequestRefusal{400, "the body is empty; send a JSON object (docs/serve.md lists the fields)", ""};
            if (path == "/v1/completions") pending = completions(model, served.metrics, request.body);
            else pending = score(model, served.metrics, request.body);
        },
        response);
    if (pending) return std::move(*pending);
    return response;
}

}  // namespace

Routes::Routes(const ServerOptions& options, ServerMetrics& metrics) : served_(std::make_unique<Served>(options, metrics)) {}

Routes::~Routes() = default;

RouteOutcome Routes::answer(const HttpRequest& request) { return route(*served_, request); }

void Routes::load(Checkpoint checkpoint, std::string name) {
    ServedModel& served = served_->model;
    const ServerOptions& options = served.options;
    served.checkpoint = std::move(checkpoint);
    served.name = std::move(name);
    served.decoder = std::make_unique<BatchDecoder>(*served.checkpoint->model, served.checkpoint->vocab,
                                                    DecoderOptions{.slots = options.slots, .queued = options.queued, .threads = options.threads});
    served.ready = true;
}

std::optional<DecoderLoad> Routes::decoder_load() const {
    if (!served_->model.ready) return std::nullopt;
    return served_->model.decoder->load();
}

void Routes::stop() {
    if (served_->model.decoder) served_->model.decoder->stop();
}

}  // namespace charlm
