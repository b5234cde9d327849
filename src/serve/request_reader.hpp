// HTTP/1.x requests read off a connection's bytes as they arrive (Boost.Beast's parser), one after the
// other: the bytes of a pipelined request wait in the buffer until the one before it is answered.
#pragma once

#include <cstddef>
#include <memory>
#include <string_view>

#include "serve/exchange.hpp"

namespace charlm {

struct RequestLimits {
    std::size_t max_body_bytes = std::size_t{1} << 20;
    std::size_t max_header_bytes = 16 * 1024;
};

class RequestReader {
public:
    explicit RequestReader(RequestLimits limits);
    ~RequestReader();
    RequestReader(const RequestReader&) = delete;
    RequestReader& operator=(const RequestReader&) = delete;

    void append(std::string_view bytes);
    std::size_t buffered() const;  // bytes received and not yet read into a request

    enum class Progress {
        need_more,     // the request so far is incomplete (or none has begun: buffered() says)
        header_done,   // the header is read, the body is yet to come (said once per request)
        complete,      // take_request() has it
        malformed,     // not HTTP: answer 400 and close, the rest of the bytes cannot be read
        too_large,     // the body is past max_body_bytes: 413, and close
        header_too_large,  // 431, and close
    };
    Progress advance();
    // After `complete`: the request, and the reader moves on to the next one.
    HttpRequest take_request();
    // After `header_done`: the client waits for "100 Continue" before it sends the body.
    bool expects_continue() const;

private:
    struct Parsing;
    RequestLimits limits_;
    std::unique_ptr<Parsing> parsing_;
};

}  // namespace charlm
