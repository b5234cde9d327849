// charlm serve: an HTTP server (an event loop on Boost.Asio, requests read by Boost.Beast) for completions, scores and the page that shows
// them, over a BatchDecoder for each model served. docs/serve.md is its API; src/serve/api.hpp reads its requests.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "charlm/checkpoint.hpp"
#include "charlm/decode.hpp"
#include "charlm/report.hpp"  // the page and the score's JSON, which charlm eval --html shares with the server

namespace charlm {

// What the server tells a log: each answer that is the server's fault (error: the route, then "answered
// 500: " and the message the client gets) and each request answered (debug). The library writes
// nothing itself; the CLI's sink hands these to its logger.
enum class ServerLogLevel { debug, error };
using ServerLog = std::function<void(ServerLogLevel level, const std::string& message)>;

struct ServerOptions {
    std::string host = "127.0.0.1";
    int port = 8080;                              // 0: any free port (port() says which)
    std::size_t models = 1;                       // load() calls before the server is ready (/health 200)
    int threads = 0;                              // compute threads, shared among the models; 0: one per core
    int slots = 32;                               // choices each model decodes at once, as one batch
    int queued = 64;                              // choices that may wait for a slot of a model; past that, 503
    std::size_t max_tokens = 4096;                // the most characters one completion may ask for
    std::size_t max_score_characters = 20000;     // the longest text /v1/score takes
    std::size_t max_body_bytes = std::size_t{1} << 20;
    int timeout_seconds = 10;                     // a client that sends or takes nothing for this long is dropped
    int max_connections = 2048;                   // open at once; past that, a connection gets 503 and is closed
    // The news a stream's client has not read that the server holds (characters, in bytes of memory);
    // past it the request's choices pause until the client reads. Beyond it: one piece being written.
    std::size_t stream_backlog_bytes = std::size_t{1} << 20;
    std::vector<std::string> api_keys;            // none: the API is open; else `Authorization: Bearer KEY` with one of them
    ServerLog log;                                // none: nothing is logged
};

// Whether `host` is an address that means every address of this machine (0.0.0.0, ::): listened on, never
// asked for by a client.
bool is_wildcard_host(const std::string& host);

class Server {
public:
    // Throws UsageError for options out of range and for a malformed API key.
    explicit Server(ServerOptions options);
    ~Server();  // stop()
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    // Binds and listens on a thread of its own; until load(), /health answers 503. Throws Error where
    // the address cannot be had (in use, not this machine's). Ignores SIGPIPE for the whole process
    // (a client that hangs up must fail a write, not end the server) and raises the process's soft
    // limit of open files to its hard limit (each connection is one).
    void start();
    int port() const;
    std::string url() const;  // http://HOST:PORT/, this machine's loopback address where HOST is_wildcard_host()
    // Serves this model from now on, beside those loaded before; `name` is the model's id in the API,
    // which a request's "model" names. The server is ready once options.models are loaded; each
    // model decodes on its own share of options.threads. Throws Error past options.models.
    void load(Checkpoint checkpoint, std::string name);
    // Ends the requests in flight (a stream gets an error event), stops listening, joins every thread.
    void stop();

private:
    struct State;
    std::unique_ptr<State> state_;
};

}  // namespace charlm
