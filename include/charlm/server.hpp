// charlm serve: an HTTP server (Debian's cpp-httplib) for completions, scores and the page that shows
// them, over one BatchDecoder. docs/serve.md is its API.
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "charlm/checkpoint.hpp"
#include "charlm/decode.hpp"

namespace charlm {

struct ServerOptions {
    std::string host = "127.0.0.1";
    int port = 8080;                              // 0: any free port (port() says which)
    int threads = 0;                              // compute threads of the decoder; 0: one per core
    int slots = 32;                               // choices decoded at once, as one batch
    int queued = 64;                              // choices that may wait for a slot; past that, 503
    std::size_t max_tokens = 4096;                // the most characters one completion may ask for
    std::size_t max_score_characters = 20000;     // the longest text /v1/score takes
    std::size_t max_body_bytes = std::size_t{1} << 20;
    int timeout_seconds = 10;                     // a client that sends or takes nothing for this long is dropped
};

class Server {
public:
    explicit Server(ServerOptions options);
    ~Server();  // stop()
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    // Binds and listens on a thread of its own; until load(), /health answers 503. Throws Error where
    // the address cannot be had (in use, not this machine's). Ignores SIGPIPE for the whole process:
    // a client that hangs up must fail a write, not end the server.
    void start();
    int port() const;
    std::string url() const;  // http://HOST:PORT/
    // Serves this model from now on; `name` is the model's id in the API (the checkpoint's file name).
    void load(Checkpoint checkpoint, std::string name);
    // Ends the requests in flight (a stream gets an error event), stops listening, joins every thread.
    void stop();

private:
    struct State;
    std::unique_ptr<State> state_;
};

// A request refused: its HTTP status, a message that says what to send instead, the field at fault
// ("" for the body as a whole) and OpenAI's error type.
struct RequestRefusal {
    int status = 400;
    std::string message;
    std::string param;
    std::string type = "invalid_request_error";
};

// A /v1/completions body read as docs/serve.md says: what to decode, and how to answer.
struct CompletionCall {
    CompletionRequest request;
    bool stream = false;
    bool with_logprobs = false;
};
// Throws RequestRefusal for anything docs/serve.md does not allow, and nothing else: whatever passes is
// a request the decoder can serve (characters of the vocabulary, values in range, at most
// options.max_tokens characters).
CompletionCall read_completion_request(std::string_view body, const Vocab& vocab, const ServerOptions& options);

struct ScoreCall {
    ScoreRequest request;
    std::size_t unknown_characters = 0;  // left out of the text (skip_unknown)
};
// The same for a /v1/score body.
ScoreCall read_score_request(std::string_view body, const Vocab& vocab, const ModelConfig& config, const ServerOptions& options);

// The page at GET / (src/serve/page.html, built in).
std::string_view serve_page();

// A score as /v1/score answers it (docs/serve.md).
nlohmann::ordered_json score_to_json(const ScoreResult& result, const std::u32string& text);

// The page in report mode: the score's JSON built in, plus {"report": {file, characters_total,
// characters_rendered, whole_file}}, so that the file shows the scored view with no server (charlm
// eval --html); `whole_file` is charlm eval's figures for all of the file.
std::string score_report_html(nlohmann::ordered_json score, const std::string& file_name, std::size_t characters_total,
                              const nlohmann::ordered_json& whole_file = nullptr);

}  // namespace charlm
