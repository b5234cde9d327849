// libFuzzer target: any bytes as what a client sends down one connection, cut into reads at places the
// input's first bytes choose. The request reader reads them as pipelined requests (or refuses them), and
// each request goes through the routes of a server whose model is still loading, with an API key: every
// answer must be a status in range, and a JSON body where the answer is JSON. A crash, a request past the
// limits, or an answer of neither shape is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include <nlohmann/json.hpp>

#include "charlm/server.hpp"
#include "serve/access.hpp"
#include "serve/request_reader.hpp"
#include "serve/routes.hpp"

namespace {

constexpr std::size_t kMaxBody = 2048;

void check(bool condition) {
    if (!condition) std::abort();
}

charlm::Routes& routes() {
    static const charlm::ServerOptions options = [] {
        charlm::ServerOptions o;
        o.api_keys = {"fuzz-key", "other-key"};
        o.max_body_bytes = kMaxBody;
        return o;
    }();
    static charlm::ServerMetrics metrics;
    static charlm::Routes routes(options, metrics);  // no model loaded: the API answers 503 past the key
    return routes;
}

void check_answer(const charlm::HttpAnswer& answer) {
    check(answer.status >= 200 && answer.status < 600);
    if (answer.content_type == "application/json") check(nlohmann::json::accept(answer.body));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    // The first byte: how many bytes each read brings (1 to 256); then the connection's bytes.
    const std::size_t read_size = static_cast<std::size_t>(data[0]) + 1;
    const std::string_view bytes(reinterpret_cast<const char*>(data + 1), size - 1);
    charlm::RequestReader reader(charlm::RequestLimits{.max_body_bytes = kMaxBody, .max_header_bytes = 4096});
    for (std::size_t at = 0; at < bytes.size(); at += read_size) {
        reader.append(bytes.substr(at, read_size));
        for (;;) {
            const auto progress = reader.advance();
            if (progress == charlm::RequestReader::Progress::header_done) {
                (void)reader.expects_continue();
                continue;
            }
            if (progress == charlm::RequestReader::Progress::need_more) break;
            if (progress != charlm::RequestReader::Progress::complete) return 0;  // refused: the connection ends
            const charlm::HttpRequest request = reader.take_request();
            check(request.body.size() <= kMaxBody);
            check(request.version == 10 || request.version == 11);
            check(request.path.find('?') == std::string::npos);
            const auto outcome = routes().answer(request);
            const auto* answer = std::get_if<charlm::HttpAnswer>(&outcome);
            check(answer != nullptr);  // nothing reaches a decoder: none is loaded
            check_answer(*answer);
            // Past the key only with the key: the page and /health are open, everything else answers 401 without it.
            const bool open = request.path == "/" || request.path == "/health";
            const bool has_key = charlm::ApiKeys({"fuzz-key", "other-key"}).admit(request.authorization);
            if (!open && !has_key) check(answer->status == 401);
            if (has_key || open) check(answer->status != 401);
        }
    }
    return 0;
}
