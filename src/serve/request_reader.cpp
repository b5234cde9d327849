// RequestReader: Boost.Beast's request parser fed from a buffer of the connection's bytes.
#include "serve/request_reader.hpp"

#include <optional>
#include <string>

#include <boost/asio/buffer.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

namespace charlm {

namespace http = boost::beast::http;

struct RequestReader::Parsing {
    std::string buffer;         // bytes not yet parsed
    std::optional<http::request_parser<http::string_body>> parser;
    bool header_reported = false;
};

RequestReader::RequestReader(RequestLimits limits) : limits_(limits), parsing_(std::make_unique<Parsing>()) {}
RequestReader::~RequestReader() = default;

void RequestReader::append(std::string_view bytes) { parsing_->buffer.append(bytes); }

std::size_t RequestReader::buffered() const { return parsing_->buffer.size(); }

RequestReader::Progress RequestReader::advance() {
    Parsing& p = *parsing_;
    if (!p.parser) {
        if (p.buffer.empty()) return Progress::need_more;
        p.parser.emplace();
        p.parser->eager(true);
        p.parser->body_limit(limits_.max_body_bytes);
        p.parser->header_limit(static_cast<std::uint32_t>(limits_.max_header_bytes));
        p.header_reported = false;
    }
    // Beast reads a header only whole: until it is, put() takes nothing and asks for more.
    while (!p.parser->is_done() && !p.buffer.empty()) {
        boost::beast::error_code error;
        const std::size_t used = p.parser->put(boost::asio::buffer(p.buffer.data(), p.buffer.size()), error);
        p.buffer.erase(0, used);
        if (error == http::error::need_more) break;
        if (error == http::error::body_limit) return Progress::too_large;
        if (error == http::error::header_limit) return Progress::header_too_large;
        if (error) return Progress::malformed;
        if (used == 0) break;
    }
    if (p.parser->is_done()) return Progress::complete;
    if (p.parser->is_header_done() && !p.header_reported) {
        p.header_reported = true;
        return Progress::header_done;
    }
    return Progress::need_more;
}

HttpRequest RequestReader::take_request() {
    auto& message = parsing_->parser->get();
    HttpRequest request;
    request.method.assign(message.method_string().data(), message.method_string().size());
    const std::string_view target(message.target().data(), message.target().size());
    request.path = std::string(target.substr(0, target.find('?')));
    const auto authorization = message[http::field::authorization];
    request.authorization.assign(authorization.data(), authorization.size());
    request.version = message.version() == 10 ? 10 : 11;
    request.keep_alive = message.keep_alive();
    request.body = std::move(message.body());
    parsing_->parser.reset();
    return request;
}

bool RequestReader::expects_continue() const {
    if (!parsing_->parser || !parsing_->parser->is_header_done()) return false;
    const auto& message = parsing_->parser->get();
    return message.version() >= 11 && boost::beast::iequals(message[http::field::expect], "100-continue");
}

}  // namespace charlm
