// What the routes (http.cpp) and the connections (connection.cpp) hand each other: a request read off
// a connection, and its answer, either whole at once or one the decoder has yet to make.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "charlm/decode.hpp"

namespace charlm {

struct HttpRequest {
    std::string method;         // as sent: GET, POST, ...
    std::string path;           // the target without its query
    std::string authorization;  // the Authorization header's value; "" where there is none
    std::string body;
    int version = 11;           // 10 for HTTP/1.0, 11 for HTTP/1.1
    bool keep_alive = true;     // the client may send another request on the connection
};

struct HttpAnswer {
    int status = 200;
    std::string content_type = "application/json";
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;  // beyond Content-Type, Content-Length and Connection
    void set_header(std::string name, std::string value) { headers.emplace_back(std::move(name), std::move(value)); }
};

// An answer the decoder makes: the connection waits for the mailbox without blocking (wake_on_news),
// then asks for what to send. A whole answer is asked for once the request has ended; a stream's
// events each time there is news, until `done`. Neither blocks, and neither throws.
struct PendingAnswer {
    std::shared_ptr<RequestMailbox> mailbox;
    bool stream = false;
    std::function<HttpAnswer()> whole;
    std::function<std::string(bool& done)> events;  // server-sent events since the last call; done after [DONE]
};

using RouteOutcome = std::variant<HttpAnswer, PendingAnswer>;

}  // namespace charlm
