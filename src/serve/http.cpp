// charlm serve's HTTP routes: what each method and path answers, the key, and server-sent events.
// What a request means and what an answer says are api.cpp's; the decoding is the decoder's; the
// connections (reading, writing, deadlines) are connection.cpp's.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "charlm/report.hpp"
#include "serve/access.hpp"
#include "serve/api.hpp"
#include "serve/routes.hpp"
#include "serve/served_models.hpp"

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

struct Routes::Served {
    Served(const ServerOptions& server_options, ServerMetrics& server_metrics)
        : options(server_options), models(server_options), keys(server_options.api_keys), metrics(server_metrics) {}
    const ServerOptions& options;
    ServedModels models;
    ApiKeys keys;
    ServerMetrics& metrics;
    // Completion ids unique across the models and the server's runs, as OpenAI's are: a token drawn at start
    // (48 random bits), then a count ("cmpl-3f9a0c12d4e7-1").
    const std::string id_prefix = fmt::format("cmpl-{:012x}-", std::random_device{}() * 0x10000ull + (std::random_device{}() & 0xffffu));
    std::atomic<std::uint64_t> next_id{1};
};

namespace {

// ---- the handlers -------------------------------------------------------------------------------------

void health(const ServedModels& served, HttpAnswer& response) {
    answer(response, served.all_loaded() ? 200 : 503, served.health().to_json());
}

void models(const ServedModels& served, HttpAnswer& response) {
    served.check_loaded();
    answer(response, 200, served.models_answer().to_json());
}

// Each loaded model's load, by name: while the others load, those ready already count.
void metrics(const ServedModels& served, const ServerMetrics& server_metrics, HttpAnswer& response) {
    std::vector<std::pair<std::string, DecoderLoad>> loads;
    for (const ServedModel* model : served.loaded()) loads.emplace_back(model->name, model->decoder->load());
    response.status = 200;
    response.content_type = "text/plain; version=0.0.4; charset=utf-8";
    response.body = server_metrics.exposition(loads);
}

// The server's fault (500): the client is told, and so is the log, since the client may never show it
// and /metrics only counts it.
RequestRefusal server_fault(const ServerLog& log, std::string_view path, const std::string& message) {
    if (log) log(ServerLogLevel::error, fmt::format("{} answered 500: {}", path, message));
    return RequestRefusal{500, message, "", "server_error"};
}

// A handler whose every refusal is an answer; anything else it throws is the server's fault (500).
template <typename Handler>
void answer_or_refuse(const Handler& handler, HttpAnswer& response, const ServerLog& log, std::string_view path) {
    try {
        handler();
    } catch (const RequestRefusal& refusal) {
        answer(response, refusal);
    } catch (const DecoderBusy& busy) {
        answer(response, RequestRefusal{503, busy.what(), "", "unavailable_error"});
    } catch (const DecodeFailed& failure) {
        answer(response, server_fault(log, path, failure.what()));
    } catch (const Error& error) {  // UsageError included
        answer(response, RequestRefusal{400, error.what(), ""});
    } catch (const std::exception& error) {
        answer(response, server_fault(log, path, error.what()));
    }
}

// The characters of a piece that a model generated: those past the echoed prompt (`echo_length`, 0
// without echo), where the piece starts at `offset` of prompt + completion. The echoed ones were scored.
std::size_t generated_in(std::size_t piece, std::size_t offset, std::size_t echo_length) {
    return piece - (offset < echo_length ? std::min(echo_length - offset, piece) : 0);
}

// Every choice whole, once all have finished.
PendingAnswer answer_whole(std::shared_ptr<RequestMailbox> mailbox, const CompletionHead& head, const CompletionCall& call, ServerMetrics& server_metrics,
                           const ServerLog& log) {
    PendingAnswer pending{mailbox, false, {}, {}};
    pending.whole = [mailbox, head, seed = call.request.seed, prompt_length = call.request.prompt.size(), with_logprobs = call.with_logprobs,
                     echo = call.request.echo, &server_metrics, &log] {
        HttpAnswer response;
        answer_or_refuse(
            [&] {
                std::vector<ChoiceNews> news;
                mailbox->wait_for_news(std::chrono::milliseconds(0), news);  // the request has ended: no wait
                const std::size_t echoed = echo ? prompt_length : 0;
                for (const ChoiceNews& choice : news) {
                    const std::size_t generated = generated_in(choice.characters.size(), 0, echoed);
                    server_metrics.count_generated(head.model, generated);
                    server_metrics.count_scored(head.model, choice.characters.size() - generated);
                }
                answer(response, 200, CompletionAnswer{head, seed, news, prompt_length, with_logprobs, echo}.to_json());
            },
            response, log, "/v1/completions");
        return response;
    };
    return pending;
}

// Server-sent events: each call sends what each choice released since the last, as one piece. The
// connection calls at most once per pace (kStreamPace, connection.cpp), and at once for the last piece,
// and only once the last piece is written: past options.stream_backlog_bytes of news a client has not
// read, the decoder pauses the request's choices (RequestMailbox::bound_news) rather than hold more.
PendingAnswer answer_stream(std::shared_ptr<RequestMailbox> mailbox, const CompletionHead& head, const CompletionCall& call, ServerMetrics& server_metrics,
                            const ServerOptions& options) {
    mailbox->bound_news(options.stream_backlog_bytes);
    PendingAnswer pending{mailbox, true, {}, {}};
    const std::size_t echoed = call.request.echo ? call.request.prompt.size() : 0;  // an echoed prompt's offsets start at 0
    std::vector<std::size_t> offsets(static_cast<std::size_t>(call.request.choices), call.request.prompt.size() - echoed);
    pending.events = [mailbox, offsets, head, with_logprobs = call.with_logprobs, seed = call.request.seed, echoed, first = true,
                      &server_metrics, &log = options.log](bool& done) mutable {
        std::vector<ChoiceNews> news;
        std::string events;
        try {
            done = mailbox->wait_for_news(std::chrono::milliseconds(0), news);
        } catch (const Error& error) {  // the server stopping (503), or the model failing (500)
            const bool busy = dynamic_cast<const DecoderBusy*>(&error) != nullptr;
            const RequestRefusal failure =
                busy ? RequestRefusal{503, error.what(), "", "unavailable_error"} : server_fault(log, "/v1/completions", error.what());
            done = true;
            return "data: " + json_text(failure.to_json()) + "\n\ndata: [DONE]\n\n";
        }
        for (std::size_t i = 0; i < news.size(); ++i) {
            const std::string choice_events = completion_events(head, first ? std::optional<std::uint64_t>(seed) : std::nullopt, i, news[i],
                                                                offsets[i], echoed, with_logprobs);
            if (choice_events.empty()) continue;
            first = false;
            const std::size_t piece = news[i].characters.size();
            const std::size_t generated = generated_in(piece, offsets[i], echoed);
            server_metrics.count_generated(head.model, generated);
            server_metrics.count_scored(head.model, piece - generated);
            offsets[i] += piece;
            events += choice_events;
        }
        if (done) events += "data: [DONE]\n\n";
        return events;
    };
    return pending;
}

// The body is read once, and the model it names first: the model decides which characters the rest may have.
RouteOutcome completions(Routes::Served& routes, const std::string& text) {
    const auto body = read_body(text);
    ServedModel& served = routes.models.pick(requested_model(body));
    const CompletionCall call = read_completion_request(body, served.checkpoint->vocab, served.options);
    const auto mailbox = served.decoder->complete(call.request);
    const CompletionHead head{routes.id_prefix + std::to_string(routes.next_id++), std::time(nullptr), served.name};
    if (call.stream) return answer_stream(mailbox, head, call, routes.metrics, routes.options);
    return answer_whole(mailbox, head, call, routes.metrics, routes.options.log);
}

RouteOutcome score(Routes::Served& routes, const std::string& text) {
    const auto body = read_body(text);
    ServedModel& served = routes.models.pick(requested_model(body));
    const ScoreCall call = read_score_request(body, served.checkpoint->vocab, served.checkpoint->config, served.options);
    const auto mailbox = served.decoder->score(call.request);
    PendingAnswer pending{mailbox, false, {}, {}};
    pending.whole = [mailbox, text = call.request.text, name = served.name, unknown = call.unknown_characters, &server_metrics = routes.metrics,
                     &log = routes.options.log] {
        HttpAnswer response;
        answer_or_refuse(
            [&] {
                mailbox->wait_until_finished();  // it has: no wait
                server_metrics.count_scored(name, text.size());
                answer(response, 200, ScoreAnswer{mailbox->score(), text, name, unknown}.to_json());
            },
            response, log, "/v1/score");
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
                                        request.authorization.empty() ? "this server needs an API key: send `Authorization: Bearer KEY`"
                                        : !ApiKeys::names_bearer(request.authorization)
                                            ? "the Authorization header names no Bearer scheme; send `Authorization: Bearer KEY`"
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
    if (path == "/") {
        const std::string_view page = serve_page();
        response.content_type = "text/html; charset=utf-8";
        response.body.assign(page);
        return response;
    }
    std::optional<RouteOutcome> pending;
    answer_or_refuse(
        [&] {
            if (path == "/health") return health(served.models, response);
            if (path == "/v1/models") return models(served.models, response);
            if (path == "/metrics") return metrics(served.models, served.metrics, response);
            if (request.body.empty()) throw RequestRefusal{400, "the body is empty; send a JSON object (docs/serve.md lists the fields)", ""};
            if (path == "/v1/completions") pending = completions(served, request.body);
            else pending = score(served, request.body);
        },
        response, served.options.log, path);
    if (pending) return std::move(*pending);
    return response;
}

}  // namespace

Routes::Routes(const ServerOptions& options, ServerMetrics& metrics) : served_(std::make_unique<Served>(options, metrics)) {}

Routes::~Routes() = default;

RouteOutcome Routes::answer(const HttpRequest& request) { return route(*served_, request); }

void Routes::load(Checkpoint checkpoint, std::string name) { served_->models.load(std::move(checkpoint), std::move(name)); }

void Routes::stop() { served_->models.stop(); }

}  // namespace charlm
