// Checks the server's connections (connection.cpp, event_loop.cpp, request_reader.cpp) and what rides on
// them (access.cpp, metrics.cpp) through sockets on 127.0.0.1: idle connections that stall no one,
// pipelining, HTTP/1.0, clients that leave or read nothing, the connection cap, API keys and /metrics.
// Every wait is bounded by a deadline far beyond what it needs; none asserts a speed.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <regex>
#include <thread>

#include <nlohmann/json.hpp>

#include "charlm/sample.hpp"
#include "charlm/server.hpp"
#include "charlm/text.hpp"
#include "serve/access.hpp"
#include "serve/api.hpp"
#include "serve/request_reader.hpp"
#include "server_fixture.hpp"
#include "test_helpers.hpp"
#include "text_helpers.hpp"

namespace charlm {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

using testing::sample_text;

// The server on small models, asked through raw sockets.
using Running = testing::ServerOnSmallModels;

// An answer read off a raw connection.
struct RawAnswer {
    int status = 0;
    std::map<std::string, std::string> headers;  // names in lower case
    std::string body;                            // de-chunked
    bool complete = false;
    std::string header(const std::string& name) const {
        const auto found = headers.find(name);
        return found == headers.end() ? "" : found->second;
    }
};

// A client below HTTP's libraries: it writes exactly the bytes given and reads answers one at a time.
class RawConnection {
public:
    explicit RawConnection(int port, int receive_buffer_bytes = 0) : socket_(::socket(AF_INET, SOCK_STREAM, 0)) {
        if (receive_buffer_bytes > 0) ::setsockopt(socket_, SOL_SOCKET, SO_RCVBUF, &receive_buffer_bytes, sizeof receive_buffer_bytes);
        sockaddr_in address{};
        address.sin_family = AF_INET;
        address.sin_port = htons(static_cast<std::uint16_t>(port));
        ::inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
        connected_ = ::connect(socket_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
        // Only catches a server that never answers: far beyond any wait here, however slow the machine.
        timeval wait{60, 0};
        ::setsockopt(socket_, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
    }
    ~RawConnection() { close(); }
    RawConnection(const RawConnection&) = delete;
    RawConnection& operator=(const RawConnection&) = delete;
    bool connected() const { return connected_; }
    void close() {
        if (socket_ >= 0) ::close(socket_);
        socket_ = -1;
    }
    bool send(const std::string& bytes) { return ::send(socket_, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()); }

    // Reads one answer: by Content-Length, by chunks, or (neither) to the connection's end.
    RawAnswer read_answer() {
        RawAnswer answer;
        std::size_t header_end;
        while ((header_end = buffer_.find("\r\n\r\n")) == std::string::npos)
            if (!receive()) return answer;
        const std::string head = buffer_.substr(0, header_end);
        buffer_.erase(0, header_end + 4);
        std::smatch match;
        if (!std::regex_search(head, match, std::regex(R"(^HTTP/1\.\d (\d{3}))"))) return answer;
        answer.status = std::stoi(match[1].str());
        for (std::size_t at = head.find("\r\n"); at != std::string::npos;) {
            const std::size_t next = head.find("\r\n", at + 2);
            const std::string line = head.substr(at + 2, next == std::string::npos ? std::string::npos : next - at - 2);
            const std::size_t colon = line.find(':');
            if (colon != std::string::npos) {
                std::string name = line.substr(0, colon);
                for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
                answer.headers[name] = line.substr(line.find_first_not_of(' ', colon + 1));
            }
            at = next;
        }
        if (answer.status == 100) {
            answer.complete = true;
            return answer;
        }
        if (answer.headers.count("content-length")) {
            const std::size_t length = std::stoul(answer.header("content-length"));
            while (buffer_.size() < length)
                if (!receive()) return answer;
            answer.body = buffer_.substr(0, length);
            buffer_.erase(0, length);
        } else if (answer.header("transfer-encoding") == "chunked") {
            for (;;) {
                std::size_t line_end;
                while ((line_end = buffer_.find("\r\n")) == std::string::npos)
                    if (!receive()) return answer;
                const std::size_t size = std::stoul(buffer_.substr(0, line_end), nullptr, 16);
                while (buffer_.size() < line_end + 2 + size + 2)
                    if (!receive()) return answer;
                answer.body += buffer_.substr(line_end + 2, size);
                buffer_.erase(0, line_end + 2 + size + 2);
                if (size == 0) break;
            }
        } else {
            while (receive()) {
            }
            answer.body = std::move(buffer_);
            buffer_.clear();
            if (!closed_) return answer;  // a timeout, not the end
        }
        answer.complete = true;
        return answer;
    }
    // Whether the server closed the connection (rather than the wait running out).
    bool closed_by_server() {
        while (receive()) {
        }
        return closed_;
    }

private:
    bool receive() {
        char chunk[16384];
        const ssize_t received = ::recv(socket_, chunk, sizeof chunk, 0);
        if (received == 0) closed_ = true;
        if (received <= 0) return false;
        buffer_.append(chunk, static_cast<std::size_t>(received));
        return true;
    }
    int socket_;
    bool connected_ = false;
    bool closed_ = false;
    std::string buffer_;
};

std::string post_request(const std::string& path, const json& body, const std::string& extra_headers = "", const std::string& version = "1.1") {
    const std::string text = body.dump();
    return "POST " + path + " HTTP/" + version + "\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(text.size()) +
           "\r\n" + extra_headers + "\r\n" + text;
}

std::string get_request(const std::string& path, const std::string& extra_headers = "") {
    return "GET " + path + " HTTP/1.1\r\nHost: x\r\n" + extra_headers + "\r\n";
}

// One request on a connection of its own.
RawAnswer ask(int port, const std::string& request) {
    RawConnection connection(port);
    connection.send(request);
    return connection.read_answer();
}

json health(int port) { return json::parse(ask(port, get_request("/health")).body, nullptr, false); }

// Asks /health until `field` shows `value`: whether it did. The limit only catches a server that never gets there.
bool wait_for_health(int port, const std::string& field, int value) {
    const auto give_up = std::chrono::steady_clock::now() + 120s;
    while (health(port)[field] != value)
        if (std::chrono::steady_clock::now() > give_up) return false;
        else std::this_thread::sleep_for(2ms);
    return true;
}

// Each connection is a descriptor, here and in the server (the same process): 1,000 of each pass the usual soft limit.
void allow_descriptors(rlim_t count) {
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    if (limit.rlim_cur < count && limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = std::min(count, limit.rlim_max);
        ::setrlimit(RLIMIT_NOFILE, &limit);
    }
}

TEST(Connection, AThousandIdleAndHalfSentConnectionsStallNoCompletion) {
    allow_descriptors(4096);
    rlimit limit{};
    ::getrlimit(RLIMIT_NOFILE, &limit);
    if (limit.rlim_cur < 2100) GTEST_SKIP() << "this process may open " << limit.rlim_cur << " files; the test needs 2,100";
    Running running;
    std::vector<std::unique_ptr<RawConnection>> idle;
    for (int i = 0; i < 1000; ++i) {
        idle.push_back(std::make_unique<RawConnection>(running.port()));
        ASSERT_TRUE(idle.back()->connected()) << "connection " << i;
        if (i % 2) idle.back()->send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\":");
    }
    const RawAnswer answer = ask(running.port(), post_request("/v1/completions", json{{"prompt", "abc"}, {"max_tokens", 100}, {"seed", 5}}));
    ASSERT_EQ(answer.status, 200) << answer.body;
    EXPECT_EQ(json::parse(answer.body)["choices"][0]["text"], sample_text("abc", 100, 5));
    EXPECT_EQ(health(running.port())["status"], "ok");
    const RawAnswer metrics = ask(running.port(), get_request("/metrics"));
    std::smatch open;
    ASSERT_TRUE(std::regex_search(metrics.body, open, std::regex(R"(\ncharlm_open_connections (\d+)\n)"))) << metrics.body;
    EXPECT_GE(std::stoi(open[1].str()), 1000) << "the idle connections are all held, not dropped to make room";
}

TEST(Connection, PipelinedRequestsAreAnsweredInOrder) {
    Running running;
    RawConnection connection(running.port());
    connection.send(post_request("/v1/completions", json{{"prompt", "ab"}, {"max_tokens", 40}, {"seed", 8}}) + get_request("/health") +
                    post_request("/v1/completions", json{{"prompt", "q"}, {"max_tokens", 20}, {"seed", 9}, {"stream", true}}) +
                    get_request("/v1/models", "Connection: close\r\n"));
    const RawAnswer first = connection.read_answer();
    ASSERT_EQ(first.status, 200) << first.body;
    EXPECT_EQ(json::parse(first.body)["choices"][0]["text"], sample_text("ab", 40, 8));
    const RawAnswer second = connection.read_answer();
    ASSERT_EQ(second.status, 200);
    EXPECT_EQ(json::parse(second.body)["status"], "ok");
    const RawAnswer third = connection.read_answer();
    ASSERT_EQ(third.status, 200);
    EXPECT_EQ(third.header("content-type"), "text/event-stream");
    EXPECT_NE(third.body.find("data: [DONE]"), std::string::npos) << third.body;
    const RawAnswer fourth = connection.read_answer();
    ASSERT_EQ(fourth.status, 200);
    EXPECT_EQ(json::parse(fourth.body)["data"][0]["id"], "small.safetensors");
    EXPECT_EQ(fourth.header("connection"), "close");
    EXPECT_TRUE(connection.closed_by_server());
}

TEST(Connection, AnHttp10ClientGetsAPlainBodyAndTheConnectionEnds) {
    Running running;
    RawConnection whole(running.port());
    whole.send(post_request("/v1/completions", json{{"prompt", "ab"}, {"max_tokens", 30}, {"seed", 2}}, "", "1.0"));
    const RawAnswer answer = whole.read_answer();
    ASSERT_EQ(answer.status, 200);
    EXPECT_EQ(answer.headers.count("transfer-encoding"), 0u);
    EXPECT_EQ(json::parse(answer.body)["choices"][0]["text"], sample_text("ab", 30, 2));
    EXPECT_TRUE(whole.closed_by_server());

    RawConnection streamed(running.port());
    streamed.send(post_request("/v1/completions", json{{"prompt", "ab"}, {"max_tokens", 30}, {"seed", 2}, {"stream", true}}, "", "1.0"));
    const RawAnswer events = streamed.read_answer();  // to the connection's end: no length, no chunks
    ASSERT_TRUE(events.complete);
    EXPECT_EQ(events.status, 200);
    EXPECT_EQ(events.headers.count("transfer-encoding"), 0u);
    EXPECT_EQ(events.body.rfind("data: ", 0), 0u) << events.body.substr(0, 100);
    EXPECT_EQ(events.body.substr(events.body.size() - 14), "data: [DONE]\n\n");
}

TEST(Connection, AClientThatLeavesAWholeRequestFreesItsSlotAtOnce) {
    ServerOptions options;
    options.slots = 1;
    options.max_tokens = 100'000'000;  // hours of decoding: only the disconnect can free the slot in time
    Running running(options);
    {
        RawConnection leaving(running.port());
        leaving.send(post_request("/v1/completions", json{{"prompt", "a"}, {"max_tokens", 100'000'000}}));
        ASSERT_TRUE(wait_for_health(running.port(), "slots_processing", 1)) << "the request never decoded";
    }
    EXPECT_TRUE(wait_for_health(running.port(), "slots_processing", 0)) << "the slot was not freed when its client left";
    const RawAnswer next = ask(running.port(), post_request("/v1/completions", json{{"prompt", "a"}, {"max_tokens", 5}}));
    EXPECT_EQ(next.status, 200) << next.body;
}

TEST(Connection, AStreamWhoseClientReadsNothingIsCancelledAndHoldsNoOne) {
    ServerOptions options;
    options.slots = 2;
    options.timeout_seconds = 1;
    options.max_tokens = 100'000'000;
    Running running(options);
    RawConnection sleeper(running.port(), 4096);  // never reads: the server's writes back up
    sleeper.send(post_request("/v1/completions", json{{"prompt", "a"}, {"max_tokens", 100'000'000}, {"stream", true}, {"logprobs", 5}}));
    ASSERT_TRUE(wait_for_health(running.port(), "slots_processing", 1)) << "the stream never decoded";
    // Meanwhile the decoder serves another.
    const RawAnswer other = ask(running.port(), post_request("/v1/completions", json{{"prompt", "b"}, {"max_tokens", 50}, {"seed", 1}}));
    EXPECT_EQ(other.status, 200) << other.body;
    EXPECT_EQ(json::parse(other.body)["choices"][0]["text"], sample_text("b", 50, 1));
    // The stream's write waits past --timeout: cancelled, its slot freed, while its client still holds the socket.
    EXPECT_TRUE(wait_for_health(running.port(), "slots_processing", 0)) << "a client that reads nothing kept its slot";
}

TEST(Connection, PastMaxConnectionsAConnectionGets503AndIsClosed) {
    ServerOptions options;
    options.max_connections = 3;
    Running running(options);
    std::vector<std::unique_ptr<RawConnection>> held;
    for (int i = 0; i < 3; ++i) held.push_back(std::make_unique<RawConnection>(running.port()));
    RawConnection refused(running.port());
    const RawAnswer answer = refused.read_answer();  // answered without a request
    EXPECT_EQ(answer.status, 503);
    const json body = json::parse(answer.body, nullptr, false);
    ASSERT_TRUE(body.contains("error")) << answer.body;
    EXPECT_NE(body["error"]["message"].get<std::string>().find("--max-connections"), std::string::npos) << answer.body;
    EXPECT_EQ(answer.header("retry-after"), "1");
    EXPECT_TRUE(refused.closed_by_server());
    // A connection closed makes room.
    held.pop_back();
    const auto give_up = std::chrono::steady_clock::now() + 60s;
    int status = 0;
    while ((status = ask(running.port(), get_request("/health")).status) != 200 && std::chrono::steady_clock::now() < give_up)
        std::this_thread::sleep_for(5ms);
    EXPECT_EQ(status, 200);
}

TEST(Connection, ABodyIsSentAfter100ContinueAndAHalfSentBodyIsDroppedAtTheDeadline) {
    ServerOptions options;
    options.timeout_seconds = 1;
    Running running(options);
    RawConnection careful(running.port());
    const std::string body = json{{"prompt", "a"}, {"max_tokens", 5}}.dump();
    careful.send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n");
    EXPECT_EQ(careful.read_answer().status, 100);
    careful.send(body);
    EXPECT_EQ(careful.read_answer().status, 200);

    RawConnection halfway(running.port());
    halfway.send("POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\": \"a\"");
    EXPECT_TRUE(halfway.closed_by_server()) << "the body's deadline never closed the connection";
}

TEST(Connection, ApiKeysGuardEverythingButThePageAndHealth) {
    ServerOptions options;
    options.api_keys = {"first-key", "second-key"};
    Running running(options);
    EXPECT_EQ(ask(running.port(), get_request("/health")).status, 200);
    EXPECT_EQ(ask(running.port(), get_request("/")).status, 200);
    for (const std::string& header : {std::string(), std::string("Authorization: Bearer wrong\r\n"), std::string("Authorization: Bearer first-ke\r\n"),
                                      std::string("Authorization: Bearer first-key2\r\n"), std::string("Authorization: Basic Zmlyc3Qta2V5\r\n")}) {
        SCOPED_TRACE(header);
        for (const std::string path : {"/v1/models", "/metrics", "/nowhere"}) {
            const RawAnswer refused = ask(running.port(), get_request(path, header));
            EXPECT_EQ(refused.status, 401) << path;
            EXPECT_EQ(refused.header("www-authenticate"), "Bearer");
            const json body = json::parse(refused.body, nullptr, false);
            ASSERT_TRUE(body.contains("error")) << refused.body;
            EXPECT_EQ(body["error"]["type"], "authentication_error");
            EXPECT_EQ(body["error"]["code"], 401);
        }
        EXPECT_EQ(ask(running.port(), post_request("/v1/completions", json{{"prompt", "a"}, {"max_tokens", 3}}, header)).status, 401);
    }
    // A right key without the scheme is told what is missing, not that the key is wrong.
    const json no_scheme = json::parse(ask(running.port(), get_request("/v1/models", "Authorization: first-key\r\n")).body);
    EXPECT_NE(no_scheme["error"]["message"].get<std::string>().find("no Bearer scheme"), std::string::npos) << no_scheme;
    const json wrong_key = json::parse(ask(running.port(), get_request("/v1/models", "Authorization: Bearer wrong\r\n")).body);
    EXPECT_NE(wrong_key["error"]["message"].get<std::string>().find("not one this server takes"), std::string::npos) << wrong_key;
    EXPECT_EQ(ask(running.port(), get_request("/v1/models", "Authorization: Bearer second-key\r\n")).status, 200);
    EXPECT_EQ(ask(running.port(), get_request("/metrics", "authorization: bearer first-key\r\n")).status, 200) << "the scheme's case is free";
    const RawAnswer completion = ask(running.port(), post_request("/v1/completions", json{{"prompt", "a"}, {"max_tokens", 3}}, "Authorization: Bearer first-key\r\n"));
    EXPECT_EQ(completion.status, 200) << completion.body;
}

TEST(Connection, KeysComeFromAFileOneALineAndABadKeyOrFileIsAUsageError) {
    testing::TemporaryDirectory directory;
    const auto file = directory.write("keys", "  alpha \n\nbeta\r\n\t\n");
    EXPECT_EQ(read_api_key_file(file), (std::vector<std::string>{"alpha", "beta"}));
    EXPECT_THROW(read_api_key_file(directory.write("empty", "\n  \n")), UsageError);
    EXPECT_THROW(read_api_key_file(directory.path() / "missing"), UsageError);
    EXPECT_THROW(read_api_key_file(directory.path()), UsageError);
    ServerOptions options;
    options.api_keys = {"two words"};
    EXPECT_THROW(Server{options}, UsageError);
    options.api_keys = {""};
    EXPECT_THROW(Server{options}, UsageError);
    const ApiKeys keys({"alpha"});
    EXPECT_TRUE(keys.admit("Bearer alpha"));
    EXPECT_FALSE(keys.admit("Bearer alph"));
    EXPECT_FALSE(keys.admit("Bearer alpha "));
    EXPECT_FALSE(keys.admit("alpha"));
    EXPECT_FALSE(keys.admit(""));
}

// A completion's characters are scored (a softmax over the vocabulary each) only where the client asks
// "logprobs", as OpenAI's API has it: without, the answer's logprobs are null and the decoder spares the work.
TEST(Connection, ACompletionIsScoredOnlyWhereTheClientAsksLogprobs) {
    const Vocab vocab = testing::vocab_of_text(U"abc\n");
    const ServerOptions options;
    const CompletionCall plain = read_completion_request(std::string_view(R"({"prompt": "ab"})"), vocab, options);
    EXPECT_FALSE(plain.with_logprobs);
    EXPECT_FALSE(plain.request.logprobs);
    for (const char* body : {R"({"prompt": "ab", "logprobs": 0})", R"({"prompt": "ab", "logprobs": 2})"}) {
        const CompletionCall asked = read_completion_request(std::string_view(body), vocab, options);
        EXPECT_TRUE(asked.with_logprobs) << body;
        EXPECT_TRUE(asked.request.logprobs) << body;
    }
}

// The exposition parsed as Prometheus reads it: every sample a name starting charlm_, optional labels, a number.
std::map<std::string, double> parse_metrics(const std::string& text) {
    std::map<std::string, double> samples;
    const std::regex sample(R"(^(charlm_[a-z_]+(\{[^}]*\})?) (-?[0-9.e+-]+|\+Inf)$)");
    const std::regex comment(R"(^# (HELP|TYPE) charlm_[a-z_]+ .+$)");
    std::size_t at = 0;
    while (at < text.size()) {
        const std::size_t end = text.find('\n', at);
        EXPECT_NE(end, std::string::npos) << "the last line ends with a line break";
        const std::string line = text.substr(at, end - at);
        at = end == std::string::npos ? text.size() : end + 1;
        std::smatch match;
        if (std::regex_match(line, comment)) continue;
        EXPECT_TRUE(std::regex_match(line, match, sample)) << line;
        if (!match.empty()) samples[match[1].str()] = std::stod(match[3].str());
    }
    return samples;
}

TEST(Connection, MetricsCountRequestsCharactersAndTimesInPrometheusFormat) {
    Running running;
    const RawAnswer completion = ask(running.port(), post_request("/v1/completions", json{{"prompt", "ab"}, {"max_tokens", 70}, {"n", 2}}));
    ASSERT_EQ(completion.status, 200);
    RawConnection streamed(running.port());
    streamed.send(post_request("/v1/completions", json{{"prompt", "ab"}, {"max_tokens", 30}, {"stream", true}}));
    ASSERT_EQ(streamed.read_answer().status, 200);
    ASSERT_EQ(ask(running.port(), post_request("/v1/score", json{{"text", "abc def"}})).status, 200);
    ASSERT_EQ(ask(running.port(), post_request("/v1/score", json{{"text", 5}})).status, 400);
    ASSERT_EQ(ask(running.port(), get_request("/nowhere")).status, 404);
    const RawAnswer answer = ask(running.port(), get_request("/metrics"));
    ASSERT_EQ(answer.status, 200);
    EXPECT_EQ(answer.header("content-type").rfind("text/plain; version=0.0.4", 0), 0u);
    auto samples = parse_metrics(answer.body);
    EXPECT_EQ(samples[R"(charlm_requests_total{route="/v1/completions",status="200"})"], 2);
    EXPECT_EQ(samples[R"(charlm_requests_total{route="/v1/score",status="200"})"], 1);
    EXPECT_EQ(samples[R"(charlm_requests_total{route="/v1/score",status="400"})"], 1);
    EXPECT_EQ(samples[R"(charlm_requests_total{route="other",status="404"})"], 1);
    EXPECT_EQ(samples[R"(charlm_generated_characters_total{model="small.safetensors"})"], 2 * 70 + 30);
    EXPECT_EQ(samples[R"(charlm_scored_characters_total{model="small.safetensors"})"], 7);
    EXPECT_EQ(samples[R"(charlm_slots_busy{model="small.safetensors"})"], 0);
    EXPECT_EQ(samples[R"(charlm_slots{model="small.safetensors"})"], 32);
    EXPECT_EQ(samples[R"(charlm_queue_length{model="small.safetensors"})"], 0);
    EXPECT_GE(samples["charlm_open_connections"], 1);
    EXPECT_EQ(samples["charlm_time_to_first_character_seconds_count"], 1) << "one stream";
    EXPECT_EQ(samples[R"(charlm_time_to_first_character_seconds_bucket{le="+Inf"})"], 1);
    EXPECT_EQ(samples["charlm_request_duration_seconds_count"], 5);
    // Buckets are cumulative.
    double previous = 0;
    for (const auto& [name, value] : samples)
        if (name.rfind("charlm_request_duration_seconds_bucket", 0) == 0 && name.find("+Inf") == std::string::npos) previous = std::max(previous, value);
    EXPECT_LE(previous, samples[R"(charlm_request_duration_seconds_bucket{le="+Inf"})"]);
    for (const std::string name : {"charlm_requests_total", "charlm_generated_characters_total", "charlm_open_connections",
                                   "charlm_time_to_first_character_seconds", "charlm_request_duration_seconds"})
        EXPECT_NE(answer.body.find("# TYPE " + name + " "), std::string::npos) << name;
}

TEST(Connection, MetricsCountEachModelApartAndAnEchoedPromptAsScored) {
    Running running({}, {"first", "second"});
    ASSERT_EQ(ask(running.port(), post_request("/v1/completions", json{{"model", "first"}, {"prompt", "ab"}, {"max_tokens", 20}})).status, 200);
    // echo: the prompt's 4 characters come back scored, and 6 are generated after them, whole and streamed.
    const json echoed{{"model", "second"}, {"prompt", "abcd"}, {"max_tokens", 6}, {"echo", true}, {"logprobs", 1}};
    ASSERT_EQ(ask(running.port(), post_request("/v1/completions", echoed)).status, 200);
    json streamed = echoed;
    streamed["stream"] = true;
    const RawAnswer stream = ask(running.port(), post_request("/v1/completions", streamed));
    ASSERT_EQ(stream.status, 200);
    ASSERT_NE(stream.body.find("[DONE]"), std::string::npos) << stream.body;
    ASSERT_EQ(ask(running.port(), post_request("/v1/score", json{{"model", "second"}, {"text", "abc"}})).status, 200);
    ASSERT_EQ(ask(running.port(), post_request("/v1/score", json{{"model", "third"}, {"text", "abc"}})).status, 404);
    auto samples = parse_metrics(ask(running.port(), get_request("/metrics")).body);
    EXPECT_EQ(samples[R"(charlm_generated_characters_total{model="first"})"], 20);
    EXPECT_EQ(samples[R"(charlm_scored_characters_total{model="first"})"], 0) << "a model that scored nothing is listed at 0";
    EXPECT_EQ(samples[R"(charlm_generated_characters_total{model="second"})"], 2 * 6);
    EXPECT_EQ(samples[R"(charlm_scored_characters_total{model="second"})"], 2 * 4 + 3);
    for (const std::string model : {"first", "second"}) {
        EXPECT_EQ(samples[R"(charlm_slots{model=")" + model + R"("})"], 32) << model;
        EXPECT_EQ(samples.count(R"(charlm_slots_busy{model=")" + model + R"("})"), 1u) << model;
        EXPECT_EQ(samples.count(R"(charlm_queue_length{model=")" + model + R"("})"), 1u) << model;
    }
    EXPECT_EQ(samples.count(R"(charlm_slots{model="third"})"), 0u) << "no series for a model not served";
    EXPECT_EQ(samples[R"(charlm_requests_total{route="/v1/score",status="404"})"], 1);
}

TEST(Connection, TheKeyIsAskedBeforeTheModelAndHoldsForEveryModel) {
    ServerOptions options;
    options.api_keys = {"the-key"};
    Running running(options, {"first", "second"});
    const std::string key = "Authorization: Bearer the-key\r\n";
    // Without the key, nothing tells a caller which models there are, not even a refusal naming them.
    const RawAnswer unknown = ask(running.port(), post_request("/v1/completions", json{{"model", "nowhere"}, {"prompt", "a"}}));
    EXPECT_EQ(unknown.status, 401);
    EXPECT_EQ(unknown.body.find("first"), std::string::npos) << unknown.body;
    EXPECT_EQ(ask(running.port(), post_request("/v1/completions", json{{"model", "first"}, {"prompt", "a"}, {"max_tokens", 3}})).status, 401);
    EXPECT_EQ(ask(running.port(), post_request("/v1/completions", json{{"model", "nowhere"}, {"prompt", "a"}}, key)).status, 404);
    EXPECT_EQ(ask(running.port(), post_request("/v1/completions", json{{"prompt", "a"}}, key)).status, 400) << "two models: model is required";
    for (const std::string model : {"first", "second"}) {
        const RawAnswer answer = ask(running.port(), post_request("/v1/completions", json{{"model", model}, {"prompt", "a"}, {"max_tokens", 3}}, key));
        ASSERT_EQ(answer.status, 200) << answer.body;
        EXPECT_EQ(json::parse(answer.body)["model"], model);
    }
    const RawAnswer listed = ask(running.port(), get_request("/v1/models", key));
    ASSERT_EQ(listed.status, 200);
    EXPECT_EQ(json::parse(listed.body)["data"].size(), 2u);
    const RawAnswer health = ask(running.port(), get_request("/health"));
    EXPECT_EQ(health.status, 200) << "/health stays open with several models";
}

// ---- a client that reads slowly, a server at fault --------------------------------------------------------

// One sample of /metrics; -1 where it is missing.
double metric(int port, const std::string& sample) {
    const auto samples = parse_metrics(ask(port, get_request("/metrics")).body);
    const auto found = samples.find(sample);
    return found == samples.end() ? -1 : found->second;
}

// Asks /metrics until `sample` shows `value`: whether it did. The limit only catches a server that never gets there.
bool wait_for_metric(int port, const std::string& sample, double value) {
    const auto give_up = std::chrono::steady_clock::now() + 120s;
    while (metric(port, sample) != value)
        if (std::chrono::steady_clock::now() > give_up) return false;
        else std::this_thread::sleep_for(5ms);
    return true;
}

// The text of choice 0 in a stream's events.
std::string text_of_events(const std::string& body) {
    std::string text;
    for (std::size_t at = 0; at < body.size();) {
        const std::size_t end = body.find("\n\n", at);
        if (end == std::string::npos) break;
        const std::string data = body.substr(at + 6, end - at - 6);  // after "data: "
        at = end + 2;
        if (data == "[DONE]") continue;
        const json event = json::parse(data);
        for (const json& choice : event["choices"])
            if (choice["index"] == 0) text += choice["text"].get<std::string>();
    }
    return text;
}

TEST(Connection, AStreamWhoseClientDoesNotReadPausesAtItsBoundAndLosesNothing) {
    ServerOptions options;
    options.slots = 2;
    options.max_tokens = 200'000;  // ~20 MB of events with logprobs: far more than the socket buffers hold
    options.stream_backlog_bytes = 16 * 1024;
    options.timeout_seconds = 600;  // the client reads late on purpose: only the bound may hold the stream back
    Running running(options);
    RawConnection sleeper(running.port(), 4096);
    sleeper.send(post_request("/v1/completions", json{{"prompt", "a"}, {"max_tokens", 200'000}, {"seed", 12}, {"stream", true}, {"logprobs", 5}}));
    const std::string paused = R"(charlm_slots_paused{model="small.safetensors"})";
    ASSERT_TRUE(wait_for_metric(running.port(), paused, 1)) << "the stream never paused: the server went on making what its client did not read";
    // The decoder serves another meanwhile, and the paused one is paused still, or again: a slot resumes only
    // when its socket takes bytes, and the kernel may take a few more from a client that reads nothing (its
    // receive queue compacted to a smaller size, a window opened by that much: seen once in a run of .ci/run),
    // after which the slot makes up to its bound and pauses again.
    const RawAnswer other = ask(running.port(), post_request("/v1/completions", json{{"prompt", "b"}, {"max_tokens", 50}, {"seed", 1}}));
    ASSERT_EQ(other.status, 200) << other.body;
    EXPECT_EQ(json::parse(other.body)["choices"][0]["text"], sample_text("b", 50, 1));
    EXPECT_TRUE(wait_for_metric(running.port(), paused, 1)) << "the stream did not pause again at its bound";
    EXPECT_EQ(metric(running.port(), R"(charlm_slots_busy{model="small.safetensors"})"), 1) << "a paused stream keeps its slot";
    // Read at last, the stream is whole: the pause lost and changed no character.
    const RawAnswer stream = sleeper.read_answer();
    ASSERT_TRUE(stream.complete);
    EXPECT_EQ(stream.status, 200);
    EXPECT_EQ(text_of_events(stream.body), sample_text("a", 200'000, 12));
    EXPECT_TRUE(wait_for_metric(running.port(), paused, 0));
}

// A model that draws among 35 characters of which its vocabulary knows 2: a draw past them fails the
// decoding, the server's fault and not the request's.
Checkpoint failing_checkpoint() {
    Checkpoint checkpoint = testing::small_checkpoint();
    checkpoint.vocab = testing::vocab_of_text(U"a\n");
    return checkpoint;
}

TEST(Connection, AnAnswerThatIsTheServersFaultIsLoggedWithItsMessage) {
    std::mutex mutex;
    std::vector<std::pair<ServerLogLevel, std::string>> lines;
    ServerOptions options;
    options.log = [&](ServerLogLevel level, const std::string& message) {
        std::lock_guard lock(mutex);
        lines.emplace_back(level, message);
    };
    Running running(options, {"broken"}, false);
    running.server().load(failing_checkpoint(), "broken");
    const RawAnswer refused = ask(running.port(), post_request("/v1/completions", json{{"prompt", "b"}}));
    ASSERT_EQ(refused.status, 400) << "a character not in the vocabulary: " << refused.body;
    const RawAnswer whole = ask(running.port(), post_request("/v1/completions", json{{"prompt", "a"}, {"max_tokens", 50}, {"seed", 1}}));
    ASSERT_EQ(whole.status, 500) << whole.body;
    const std::string message = json::parse(whole.body)["error"]["message"].get<std::string>();
    EXPECT_EQ(message.rfind("decoding failed: ", 0), 0u) << message;
    const RawAnswer streamed =
        ask(running.port(), post_request("/v1/completions", json{{"prompt", "a"}, {"max_tokens", 50}, {"seed", 1}, {"stream", true}}));
    ASSERT_EQ(streamed.status, 200) << "the stream's head went out before the failure";
    EXPECT_NE(streamed.body.find("decoding failed: "), std::string::npos) << streamed.body;
    // Each is told to the log by the time its answer is sent; the client's fault (400) is no error.
    std::lock_guard lock(mutex);
    std::vector<std::string> errors, answered;
    for (const auto& [level, line] : lines) (level == ServerLogLevel::error ? errors : answered).push_back(line);
    ASSERT_EQ(errors.size(), 2u);
    EXPECT_EQ(errors[0], "/v1/completions answered 500: " + message);
    EXPECT_EQ(errors[1].rfind("/v1/completions answered 500: decoding failed: ", 0), 0u) << errors[1];
    EXPECT_NE(std::find(answered.begin(), answered.end(), "POST /v1/completions 500"), answered.end());
    EXPECT_NE(std::find(answered.begin(), answered.end(), "POST /v1/completions 400"), answered.end());
}

// ---- the request reader alone -----------------------------------------------------------------------------

TEST(RequestReader, PipelinedRequestsSplitAnywhereReadTheSame) {
    const std::string bytes = "GET /health?x=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n\r\n"
                              "POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                              "POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                              "GET / HTTP/1.0\r\n\r\n";
    for (std::size_t cut = 0; cut <= bytes.size(); ++cut) {
        SCOPED_TRACE(cut);
        RequestReader reader(RequestLimits{});
        std::vector<HttpRequest> requests;
        for (const std::string_view piece : {std::string_view(bytes).substr(0, cut), std::string_view(bytes).substr(cut)}) {
            reader.append(piece);
            for (;;) {
                const auto progress = reader.advance();
                if (progress == RequestReader::Progress::complete) requests.push_back(reader.take_request());
                else if (progress != RequestReader::Progress::header_done) break;
            }
        }
        ASSERT_EQ(requests.size(), 4u);
        EXPECT_EQ(requests[0].path, "/health");
        EXPECT_EQ(requests[0].authorization, "Bearer k");
        EXPECT_EQ(requests[1].body, "hello");
        EXPECT_EQ(requests[2].body, "abc");
        EXPECT_EQ(requests[3].version, 10);
        EXPECT_FALSE(requests[3].keep_alive);
        EXPECT_EQ(reader.buffered(), 0u);
    }
}

TEST(RequestReader, RefusesWhatIsNotHttpAndWhatIsTooLarge) {
    auto progress_of = [](const std::string& bytes, RequestLimits limits = {}) {
        RequestReader reader(limits);
        reader.append(bytes);
        auto progress = reader.advance();
        if (progress == RequestReader::Progress::header_done) progress = reader.advance();
        return progress;
    };
    EXPECT_EQ(progress_of("HELLO\r\n\r\n"), RequestReader::Progress::malformed);
    EXPECT_EQ(progress_of("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), RequestReader::Progress::malformed);
    EXPECT_EQ(progress_of("POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", RequestLimits{.max_body_bytes = 10}), RequestReader::Progress::too_large);
    EXPECT_EQ(progress_of("GET / HTTP/1.1\r\nX: " + std::string(20'000, 'a') + "\r\n\r\n"), RequestReader::Progress::header_too_large);
    EXPECT_EQ(progress_of("GET / HTTP/1.1\r\nHost: x\r\n"), RequestReader::Progress::need_more);
}

}  // namespace
}  // namespace charlm
