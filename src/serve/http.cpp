// charlm serve's HTTP layer (cpp-httplib): the routes, server-sent events, and the Server that listens.
// What a request means and what an answer says are api.cpp's; the decoding is the decoder's.
#include "charlm/server.hpp"

#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <httplib.h>

#include "charlm/report.hpp"
#include "serve/api.hpp"
#include "serve/served_models.hpp"

namespace charlm {

namespace {

using json = nlohmann::ordered_json;

// A stream sends at most one event per pace (about 60 a second): smooth to watch, and cheap to serve.
constexpr std::chrono::milliseconds kStreamPace{16};

void answer(httplib::Response& response, int status, const json& body) {
    response.status = status;
    response.set_content(json_text(body), "application/json");
}

void answer(httplib::Response& response, const RequestRefusal& refusal) {
    if (refusal.status == 503) response.set_header("Retry-After", "1");
    answer(response, refusal.status, refusal.to_json());
}

// ---- the handlers -------------------------------------------------------------------------------------

void health(const ServedModels& served, httplib::Response& response) {
    answer(response, served.all_loaded() ? 200 : 503, served.health().to_json());
}

void models(ServedModels& served, httplib::Response& response) {
    served.check_loaded();
    answer(response, 200, served.models_answer().to_json());
}

// Every choice whole, once all have finished.
void answer_whole(RequestMailbox& mailbox, const CompletionHead& head, const CompletionCall& call, httplib::Response& response) {
    std::vector<ChoiceNews> news;
    mailbox.wait_until_finished();
    mailbox.wait_for_news(std::chrono::milliseconds(0), news);
    answer(response, 200, CompletionAnswer{head, call.request.seed, news, call.request.prompt.size(), call.with_logprobs, call.request.echo}.to_json());
}

// Server-sent events: each wake-up sends what each choice released since the last, as one piece.
void answer_stream(std::shared_ptr<RequestMailbox> mailbox, const CompletionHead& head, const CompletionCall& call,
                   httplib::Response& response) {
    response.set_header("Cache-Control", "no-cache");
    const std::size_t echoed = call.request.echo ? call.request.prompt.size() : 0;  // an echoed prompt's offsets start at 0
    auto offsets = std::make_shared<std::vector<std::size_t>>(static_cast<std::size_t>(call.request.choices), call.request.prompt.size() - echoed);
    const bool with_logprobs = call.with_logprobs;
    const std::uint64_t seed = call.request.seed;
    response.set_chunked_content_provider(
        "text/event-stream",
        [mailbox, offsets, head, with_logprobs, seed, echoed, first = true](std::size_t, httplib::DataSink& sink) mutable {
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
                events = "data: " + json_text(failure.to_json()) + "\n\ndata: [DONE]\n\n";
                sink.write(events.data(), events.size());
                sink.done();
                return true;
            }
            for (std::size_t i = 0; i < news.size(); ++i) {
                const std::string choice_events = completion_events(head, first ? std::optional<std::uint64_t>(seed) : std::nullopt, i, news[i],
                                                                    (*offsets)[i], echoed, with_logprobs);
                if (choice_events.empty()) continue;
                first = false;
                (*offsets)[i] += news[i].characters.size();
                events += choice_events;
            }
            if (done) events += "data: [DONE]\n\n";
            if (!events.empty() && !sink.write(events.data(), events.size())) return false;  // the client left
            if (events.empty() && !sink.is_writable()) return false;
            if (done) sink.done();
            return true;
        },
        [mailbox](bool) { mailbox->cancel(); });  // finished or not, the slot is no longer wanted
}

void completions(ServedModels& models, const std::string& text, httplib::Response& response) {
    const auto body = read_body(text);
    ServedModel& served = models.pick(requested_model(body));
    const CompletionCall call = read_completion_request(body, served.checkpoint->vocab, served.options);
    const auto mailbox = served.decoder->complete(call.request);
    const CompletionHead head{fmt::format("cmpl-{}", served.next_id++), std::time(nullptr), served.name};
    if (call.stream) answer_stream(mailbox, head, call, response);
    else answer_whole(*mailbox, head, call, response);
}

void score(ServedModels& models, const std::string& text, httplib::Response& response) {
    const auto body = read_body(text);
    ServedModel& served = models.pick(requested_model(body));
    const ScoreCall call = read_score_request(body, served.checkpoint->vocab, served.checkpoint->config, served.options);
    const auto mailbox = served.decoder->score(call.request);
    mailbox->wait_until_finished();
    answer(response, 200, ScoreAnswer{mailbox->score(), call.request.text, served.name, call.unknown_characters}.to_json());
}

// ---- the routes ---------------------------------------------------------------------------------------

// A handler whose every refusal is an answer; anything else it throws is the server's fault (500).
template <typename Handler>
void answer_or_refuse(const Handler& handler, httplib::Response& response) {
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
    }
}

void route_gets(httplib::Server& http, ServedModels& served) {
    http.Get("/", [](const httplib::Request&, httplib::Response& response) {
        const std::string_view page = serve_page();
        response.set_content(page.data(), page.size(), "text/html; charset=utf-8");
    });
    http.Get("/health", [&served](const httplib::Request&, httplib::Response& response) {
        answer_or_refuse([&] { health(served, response); }, response);
    });
    http.Get("/v1/models", [&served](const httplib::Request&, httplib::Response& response) {
        answer_or_refuse([&] { models(served, response); }, response);
    });
}

// The bodies are read through a content reader: httplib caps a body sent as a form (what curl -d and
// urllib send unless told otherwise) at 8 KB and answered 413 past it; read this way, only
// set_payload_max_length applies, whatever the Content-Type.
void route_posts(httplib::Server& http, ServedModels& served, const ServerOptions& options) {
    const std::size_t max_body = options.max_body_bytes;
    auto with_body = [max_body](auto handler) {
        return [handler, max_body](const httplib::Request&, httplib::Response& response, const httplib::ContentReader& read) {
            std::string body;
            const bool whole = read([&](const char* data, std::size_t length) {
                body.append(data, length);
                return true;
            });
            // httplib reads no body as none to read: that is a request without one, not one cut short.
            if (body.empty() && response.status != 413)
                return answer(response, RequestRefusal{400, "the body is empty; send a JSON object (docs/serve.md lists the fields)", ""});
            if (!whole) {  // past the size limit (httplib has set 413), or the client stopped sending
                const bool too_large = response.status == 413;
                return answer(response, RequestRefusal{too_large ? 413 : 400,
                                                       too_large ? fmt::format("the body is larger than this server takes ({} bytes)", max_body)
                                                                 : std::string("the body could not be read in full"), ""});
            }
            answer_or_refuse([&] { handler(body, response); }, response);
        };
    };
    http.Post("/v1/completions", with_body([&served](const std::string& body, httplib::Response& response) { completions(served, body, response); }));
    http.Post("/v1/score", with_body([&served](const std::string& body, httplib::Response& response) { score(served, body, response); }));
}

// 405 with the method the path takes.
void route_wrong_methods(httplib::Server& http) {
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
}

// What httplib answers itself (no such path, a body too large, a malformed request) gets a JSON body
// too; an exception that escapes a handler is a 500, told to the log.
void handle_errors(httplib::Server& http, const ServerOptions& options) {
    const std::size_t max_body = options.max_body_bytes;
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
    const ServerLog log = options.log;
    http.set_exception_handler([log](const httplib::Request&, httplib::Response& response, std::exception_ptr error) {
        std::string message = "internal error";
        try {
            if (error) std::rethrow_exception(error);
        } catch (const std::exception& e) {
            message = e.what();
        } catch (...) {
        }
        if (log) log(ServerLogLevel::error, message);
        answer(response, RequestRefusal{500, message, "", "server_error"});
    });
    if (log)
        http.set_logger([log](const httplib::Request& request, const httplib::Response& response) {
            log(ServerLogLevel::debug, fmt::format("{} {} {}", request.method, request.path, response.status));
        });
}

}  // namespace

// ---- the server ---------------------------------------------------------------------------------------

struct Server::State {
    ServerOptions options;
    httplib::Server http;
    std::thread listener;
    int port = 0;
    int listening_socket = -1;
    std::unique_ptr<ServedModels> served;  // made once the options are
};

Server::Server(ServerOptions options) : state_(std::make_unique<State>()) {
    if (options.host.empty()) throw UsageError("--host needs an address, such as 127.0.0.1 or 0.0.0.0");
    if (options.port < 0 || options.port > 65535) throw UsageError(fmt::format("--port must be 0 to 65535, not {}", options.port));
    if (options.slots < 1 || options.slots > 256) throw UsageError(fmt::format("--parallel must be 1 to 256, not {}", options.slots));
    if (options.queued < 0 || options.queued > 4096) throw UsageError(fmt::format("--queue must be 0 to 4096, not {}", options.queued));
    if (options.max_tokens < 1) throw UsageError("--max-tokens must be at least 1");
    if (options.models < 1 || options.models > 64) throw UsageError(fmt::format("a server serves 1 to 64 models, not {}", options.models));
    state_->options = std::move(options);
    state_->served = std::make_unique<ServedModels>(state_->options);
}

Server::~Server() { stop(); }

void Server::start() {
    ::signal(SIGPIPE, SIG_IGN);
    State& s = *state_;
    const ServerOptions& options = s.options;
    route_gets(s.http, *s.served);
    route_posts(s.http, *s.served, options);
    route_wrong_methods(s.http);
    handle_errors(s.http, options);
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

void Server::load(Checkpoint checkpoint, std::string name) { state_->served->load(std::move(checkpoint), std::move(name)); }

void Server::stop() {
    State& s = *state_;
    s.served->stop();  // the requests in flight fail now, so that their handlers return
    s.http.stop();
    if (s.listener.joinable()) s.listener.join();
}

}  // namespace charlm
