// charlm serve's routes (http.cpp): what each method and path answers, with the key checked where the
// API asks for one. No sockets here: connection.cpp reads the requests and sends the answers.
#pragma once

#include <memory>
#include <string>

#include "charlm/checkpoint.hpp"
#include "charlm/server.hpp"
#include "serve/exchange.hpp"
#include "serve/metrics.hpp"

namespace charlm {

struct RequestRefusal;

// A refusal as an answer: OpenAI's JSON error, with Retry-After on a 503.
HttpAnswer refusal_answer(const RequestRefusal& refusal);

class Routes {
public:
    Routes(const ServerOptions& options, ServerMetrics& metrics);
    ~Routes();
    Routes(const Routes&) = delete;
    Routes& operator=(const Routes&) = delete;

    // Never throws: whatever goes wrong is an answer (a 4xx for the request's fault, a 500 for ours).
    RouteOutcome answer(const HttpRequest& request);
    // The next of options.models models (ServedModels::load).
    void load(Checkpoint checkpoint, std::string name);
    // Every decoder's requests in flight fail now (a stream gets an error event, a whole answer a 503).
    void stop();

    struct Served;

private:
    std::unique_ptr<Served> served_;
};

}  // namespace charlm
