// Checks server.cpp through HTTP on a free port of 127.0.0.1: the API of docs/serve.md, every bad request
// answered with a JSON error while the server keeps serving, slots, the queue, disconnects, 16 clients.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

#include <nlohmann/json.hpp>

#include "charlm/sample.hpp"
#include "charlm/server.hpp"
#include "charlm/text.hpp"
#include "server_fixture.hpp"
#include "text_helpers.hpp"

// After Eigen: httplib.h brings <resolv.h>, whose macro _res renames a parameter of Eigen's products.
#include <httplib.h>

namespace charlm {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

using testing::sample_text;
using testing::small_checkpoint;

struct Reply {
    int status = 0;
    json body;
    std::string raw;
    httplib::Headers headers;
};

// The server on one small model (not yet loaded where `load` is false), asked through cpp-httplib's client.
class Running : public testing::ServerOnSmallModels {
public:
    explicit Running(ServerOptions options = {}, bool load = true) : ServerOnSmallModels(std::move(options), {"small.safetensors"}, load) {}
    httplib::Client client() const {
        httplib::Client client("127.0.0.1", port());
        client.set_read_timeout(30, 0);
        return client;
    }
    Reply get(const std::string& path) const {
        auto client = this->client();
        return reply(client.Get(path.c_str()));
    }
    Reply post(const std::string& path, const std::string& body) const {
        auto client = this->client();
        return reply(client.Post(path.c_str(), body, "application/json"));
    }
    Reply post(const std::string& path, const json& body) const { return post(path, body.dump()); }
    // A streamed completion: the events' data lines, in order.
    std::vector<std::string> stream(const json& body, int* status = nullptr) const {
        auto client = this->client();
        httplib::Request request;
        request.method = "POST";
        request.path = "/v1/completions";
        request.body = body.dump();
        request.set_header("Content-Type", "application/json");
        std::string received;
        request.content_receiver = [&](const char* data, size_t length, uint64_t, uint64_t) {
            received.append(data, length);
            return true;
        };
        const auto result = client.send(request);
        if (status) *status = result ? result->status : 0;
        EXPECT_TRUE(result) << "no answer: " << httplib::to_string(result.error()) << " after " << received.size() << " bytes";
        std::vector<std::string> events;
        for (std::size_t at = 0; at < received.size();) {
            const std::size_t end = received.find("\n\n", at);
            EXPECT_NE(end, std::string::npos) << "an event not ended by a blank line";
            if (end == std::string::npos) break;
            const std::string event = received.substr(at, end - at);
            EXPECT_EQ(event.rfind("data: ", 0), 0u) << event;
            events.push_back(event.substr(6));
            at = end + 2;
        }
        return events;
    }

private:
    static Reply reply(const httplib::Result& result) {
        Reply reply;
        if (!result) {
            reply.raw = "no answer: " + httplib::to_string(result.error());
            return reply;
        }
        reply.status = result->status;
        reply.raw = result->body;
        reply.headers = result->headers;
        reply.body = json::parse(result->body, nullptr, false);
        return reply;
    }
};

std::string text_of_stream(const std::vector<std::string>& events, std::size_t choice = 0) {
    std::string text;
    for (const std::string& event : events) {
        if (event == "[DONE]") continue;
        const json data = json::parse(event);
        for (const json& c : data["choices"])
            if (c["index"] == choice) text += c["text"].get<std::string>();
    }
    return text;
}

TEST(Server, HealthSaysLoadingUntilTheModelIsReady) {
    Running running({}, false);
    const Reply loading = running.get("/health");
    EXPECT_EQ(loading.status, 503);
    EXPECT_EQ(loading.body["status"], "loading");
    EXPECT_EQ(running.post("/v1/completions", json{{"prompt", "a"}}).status, 503);
    running.server().load(small_checkpoint(), "small.safetensors");
    const Reply ready = running.get("/health");
    EXPECT_EQ(ready.status, 200);
    EXPECT_EQ(ready.body["status"], "ok");
    EXPECT_EQ(ready.body["slots_idle"], 32);
}

TEST(Server, ModelsDescribeTheCheckpoint) {
    Running running;
    const Reply reply = running.get("/v1/models");
    ASSERT_EQ(reply.status, 200);
    const json& model = reply.body["data"][0];
    EXPECT_EQ(model["id"], "small.safetensors");
    EXPECT_EQ(model["meta"]["vocab_size"], testing::kServedAlphabet.size());
    EXPECT_EQ(model["meta"]["hidden_size"], 32);
    EXPECT_EQ(model["meta"]["vocabulary"].get<std::string>().size(), testing::kServedAlphabet.size());
}

TEST(Server, TheSamePageIsServedAtTheRoot) {
    Running running;
    auto client = running.client();
    const auto result = client.Get("/");
    ASSERT_TRUE(result);
    EXPECT_EQ(result->status, 200);
    EXPECT_EQ(result->body, std::string(serve_page()));
    EXPECT_NE(result->get_header_value("Content-Type").find("text/html"), std::string::npos);
}

TEST(Server, ACompletionIsCharlmSamplesTextForItsSeed) {
    Running running;
    const Reply reply = running.post("/v1/completions", json{{"prompt", "abc"}, {"max_tokens", 80}, {"seed", 9}, {"temperature", 0.8}});
    ASSERT_EQ(reply.status, 200) << reply.raw;
    EXPECT_EQ(reply.body["choices"][0]["text"], sample_text("abc", 80, 9, 0.8));
    EXPECT_EQ(reply.body["choices"][0]["finish_reason"], "length");
    EXPECT_EQ(reply.body["seed"], 9);
    EXPECT_EQ(reply.body["usage"]["completion_tokens"], 80);
    EXPECT_EQ(reply.body["usage"]["prompt_tokens"], 3);

    const Reply three = running.post("/v1/completions", json{{"prompt", "abc"}, {"max_tokens", 30}, {"seed", 20}, {"n", 3}});
    ASSERT_EQ(three.status, 200) << three.raw;
    for (int i = 0; i < 3; ++i) EXPECT_EQ(three.body["choices"][i]["text"], sample_text("abc", 30, 20 + static_cast<std::uint64_t>(i)));
}

TEST(Server, AStreamIsEventsThatAddUpToTheSameText) {
    Running running;
    int status = 0;
    const auto events = running.stream(json{{"prompt", "ab"}, {"max_tokens", 120}, {"seed", 4}, {"stream", true}, {"logprobs", 3}}, &status);
    EXPECT_EQ(status, 200);
    ASSERT_GE(events.size(), 2u);
    EXPECT_EQ(events.back(), "[DONE]");
    EXPECT_EQ(text_of_stream(events), sample_text("ab", 120, 4));
    std::size_t offset = 2;  // text_offset counts from the prompt's start
    for (std::size_t i = 0; i + 1 < events.size(); ++i) {
        const json data = json::parse(events[i]);
        const json& choice = data["choices"][0];
        const json& logprobs = choice["logprobs"];
        const std::size_t characters = decode_utf8(choice["text"].get<std::string>(), "text").size();
        ASSERT_EQ(logprobs["tokens"].size(), characters);
        for (std::size_t k = 0; k < characters; ++k) {
            EXPECT_EQ(logprobs["text_offset"][k], offset++);
            EXPECT_LE(logprobs["token_logprobs"][k].get<double>(), 0.0);
            EXPECT_EQ(logprobs["top_logprobs"][k].size(), 3u);
        }
        EXPECT_EQ(choice["finish_reason"].is_null(), i + 2 < events.size()) << "only the last event finishes";
    }
}

TEST(Server, AStopTextEndsTheCompletionWithoutBeingReturned) {
    Running running;
    const std::string full = sample_text("ab", 300, 6);
    const std::string stop = full.substr(100, 3);
    const Reply reply = running.post("/v1/completions", json{{"prompt", "ab"}, {"max_tokens", 300}, {"seed", 6}, {"stop", {stop, "zzzz"}}});
    ASSERT_EQ(reply.status, 200) << reply.raw;
    EXPECT_EQ(reply.body["choices"][0]["text"], full.substr(0, full.find(stop)));
    EXPECT_EQ(reply.body["choices"][0]["finish_reason"], "stop");
}

TEST(Server, AScoreGivesEachCharactersLossPredictionsAndNeurons) {
    Running running;
    const std::string text = "abc def ghi\nabc def";
    const Reply reply = running.post("/v1/score", json{{"text", text}, {"top", 3}, {"neurons", {{1, 5}, {0, 2, "cell"}}}, {"most_varying", 4}});
    ASSERT_EQ(reply.status, 200) << reply.raw;
    const json& body = reply.body;
    EXPECT_EQ(body["characters"], text.size());
    EXPECT_EQ(body["characters_scored"], text.size() - 1);
    EXPECT_TRUE(body["loss"][0].is_null());
    EXPECT_TRUE(body["top"][0].is_null());
    double total = 0;
    for (std::size_t i = 1; i < text.size(); ++i) {
        total += body["loss"][i].get<double>();
        EXPECT_EQ(body["top"][i].size(), 3u);
    }
    EXPECT_NEAR(body["nats_per_character"].get<double>(), total / static_cast<double>(text.size() - 1), 1e-4);
    EXPECT_NEAR(body["bits_per_character"].get<double>(), body["nats_per_character"].get<double>() / std::log(2.0), 1e-9);
    ASSERT_EQ(body["neurons"].size(), 2u);
    EXPECT_EQ(body["neurons"][1]["state"], "cell");
    EXPECT_EQ(body["neurons"][0]["activations"].size(), text.size());
    ASSERT_EQ(body["most_varying"].size(), 4u);
    // Hidden and cell states in turns, each kind largest first.
    EXPECT_EQ(body["most_varying"][0]["state"], "hidden");
    EXPECT_EQ(body["most_varying"][1]["state"], "cell");
    EXPECT_GE(body["most_varying"][0]["std"].get<double>(), body["most_varying"][2]["std"].get<double>());
    EXPECT_GE(body["most_varying"][1]["std"].get<double>(), body["most_varying"][3]["std"].get<double>());
}

// Every bad request of the issue: a 4xx JSON error that names the problem, and the server serves on.
TEST(Server, EveryBadRequestIsAJsonErrorAndTheServerServesOn) {
    ServerOptions options;
    options.max_tokens = 1000;
    options.max_score_characters = 500;
    options.max_body_bytes = 64 * 1024;
    Running running(options);
    struct Case {
        std::string what, path, body;
        int status;
        std::string says;  // a piece of the message
    };
    const std::string deep = std::string(20'000, '[') + std::string(20'000, ']');
    const std::vector<Case> cases{
        {"invalid JSON", "/v1/completions", "{\"prompt\": ", 400, "not valid JSON"},
        {"not an object", "/v1/completions", "[1, 2]", 400, "JSON object"},
        {"a number past a double", "/v1/completions", R"({"max_tokens": 1e700})", 400, "not valid JSON"},
        {"invalid UTF-8", "/v1/completions", "{\"prompt\": \"a\xff\"}", 400, "not valid JSON"},
        {"deeply nested JSON", "/v1/completions", "{\"prompt\": " + deep + "}", 400, "nested deeper"},
        {"max_tokens as a string", "/v1/completions", R"({"max_tokens": "10"})", 400, "whole number"},
        {"max_tokens fractional", "/v1/completions", R"({"max_tokens": 2.5})", 400, "whole number"},
        {"max_tokens a float past the limit", "/v1/completions", R"({"max_tokens": 1e12})", 400, "--max-tokens"},
        {"negative max_tokens", "/v1/completions", R"({"max_tokens": -1})", 400, "between 0 and 1000"},
        {"huge max_tokens", "/v1/completions", R"({"max_tokens": 100000000000000000000})", 400, "--max-tokens"},
        {"max_tokens past the limit", "/v1/completions", R"({"max_tokens": 1001})", 400, "--max-tokens"},
        {"temperature zero", "/v1/completions", R"({"temperature": 0})", 400, "top_k"},
        {"temperature far too high", "/v1/completions", R"({"temperature": 1000})", 400, "at most 100, not 1000"},
        {"an empty body", "/v1/score", "", 400, "the body is empty; send a JSON object"},
        {"an empty body to complete", "/v1/completions", "", 400, "the body is empty"},
        {"temperature negative", "/v1/completions", R"({"temperature": -1})", 400, "temperature"},
        {"temperature past 100", "/v1/completions", R"({"temperature": 100.5})", 400, "at most 100, not 100.5"},
        {"temperature a string", "/v1/completions", R"({"temperature": "hot"})", 400, "number"},
        {"top_p zero", "/v1/completions", R"({"top_p": 0})", 400, "top_p"},
        {"top_p above one", "/v1/completions", R"({"top_p": 1.5})", 400, "top_p"},
        {"negative top_k", "/v1/completions", R"({"top_k": -2})", 400, "top_k"},
        {"negative seed", "/v1/completions", R"({"seed": -5})", 400, "seed"},
        {"fractional seed", "/v1/completions", R"({"seed": 1.5})", 400, "seed"},
        {"n zero", "/v1/completions", R"({"n": 0})", 400, "n must be"},
        {"n too many", "/v1/completions", R"({"n": 99})", 400, "n must be"},
        {"logprobs too many", "/v1/completions", R"({"logprobs": 50})", 400, "logprobs"},
        {"stream not a flag", "/v1/completions", R"({"stream": "yes"})", 400, "true or false"},
        {"prompt a number", "/v1/completions", R"({"prompt": 5})", 400, "prompt must be"},
        {"two prompts", "/v1/completions", R"({"prompt": ["a", "b"]})", 400, "one prompt per request"},
        {"unknown characters", "/v1/completions", R"({"prompt": "abc é 你"})", 400, "U+00E9"},
        {"stop not a string", "/v1/completions", R"({"stop": 7})", 400, "stop must be"},
        {"too many stops", "/v1/completions", R"({"stop": ["a","b","c","d","e"]})", 400, "stop must be"},
        {"an empty stop", "/v1/completions", R"({"stop": [""]})", 400, "empty"},
        {"a misspelt field", "/v1/completions", R"({"temprature": 0.5})", 400, "temprature"},
        {"echo not a flag", "/v1/completions", R"({"echo": 1})", 400, "echo must be true or false"},
        {"a model not served", "/v1/completions", R"({"model": "anything"})", 404, "no model \"anything\" here; this server serves small.safetensors"},
        {"a penalty", "/v1/completions", R"({"frequency_penalty": 0.5})", 400, "frequency_penalty"},
        {"a prompt past the limit", "/v1/completions", json{{"prompt", std::string(501, 'a')}}.dump(), 400, "at most 500"},
        {"a body past the limit", "/v1/completions", json{{"prompt", std::string(70'000, 'a')}}.dump(), 413, "larger"},
        {"no text to score", "/v1/score", R"({})", 400, "text must be"},
        {"one character to score", "/v1/score", R"({"text": "a"})", 400, "at least 2"},
        {"a text past the limit", "/v1/score", json{{"text", std::string(501, 'a')}}.dump(), 400, "at most 500"},
        {"a neuron past the layers", "/v1/score", R"({"text": "abc", "neurons": [[2, 0]]})", 400, "no layer 2"},
        {"a neuron past the units", "/v1/score", R"({"text": "abc", "neurons": [[0, 32]]})", 400, "no unit 32"},
        {"a neuron misshapen", "/v1/score", R"({"text": "abc", "neurons": [[0, "x"]]})", 400, "[layer, unit]"},
        {"a neuron of no state", "/v1/score", R"({"text": "abc", "neurons": [[0, 1, "gate"]]})", 400, "[layer, unit]"},
        {"unknown characters to score", "/v1/score", R"({"text": "abc €"})", 400, "U+20AC"},
        {"too many top", "/v1/score", R"({"text": "abc", "top": 11})", 400, "top must be"},
    };
    for (const Case& c : cases) {
        SCOPED_TRACE(c.what);
        const Reply reply = running.post(c.path, c.body);
        EXPECT_EQ(reply.status, c.status) << reply.raw;
        ASSERT_TRUE(reply.body.is_object() && reply.body.contains("error")) << reply.raw;
        EXPECT_NE(reply.body["error"]["message"].get<std::string>().find(c.says), std::string::npos) << reply.raw;
        EXPECT_EQ(reply.body["error"]["code"], c.status);
    }
    // top_k 1 is the way to the most likely character, not to a temperature that is too high.
    EXPECT_EQ(running.post("/v1/completions", std::string(R"({"temperature": 1000})")).raw.find("top_k"), std::string::npos);
    // The wrong method or path.
    EXPECT_EQ(running.get("/v1/completions").status, 405);
    auto options_client = running.client();
    const auto options_answer = options_client.Options("/v1/completions");
    ASSERT_TRUE(options_answer);
    EXPECT_EQ(options_answer->status, 405);
    EXPECT_EQ(running.post("/health", std::string("{}")).status, 405);
    const Reply missing = running.get("/v2/nothing");
    EXPECT_EQ(missing.status, 404);
    EXPECT_NE(missing.body["error"]["message"].get<std::string>().find("/v2/nothing"), std::string::npos);
    // What is refused above is taken where asked for.
    EXPECT_EQ(running.post("/v1/completions", json{{"prompt", "abc é"}, {"skip_unknown", true}, {"max_tokens", 3}}).status, 200);
    EXPECT_EQ(running.post("/v1/completions", json{{"model", "small.safetensors"}, {"max_tokens", 0}, {"echo", true}, {"logprobs", nullptr}}).status, 200);
    EXPECT_EQ(running.post("/v1/completions", json{{"prompt", "a"}, {"temperature", 100}, {"top_p", 1}, {"max_tokens", 3}}).status, 200)
        << "the bounds themselves are allowed";
    const Reply defaulted = running.post("/v1/completions", json{{"prompt", "a"}});
    EXPECT_EQ(defaulted.body["usage"]["completion_tokens"], 200) << "the default max_tokens";
    EXPECT_EQ(running.get("/health").status, 200) << "the server serves on";
}

TEST(Server, ABodySentAsAFormIsReadAsJsonWhateverItsLength) {
    // curl -d and urllib send application/x-www-form-urlencoded, which httplib alone capped at 8 KB.
    Running running;
    auto client = running.client();
    std::string text;
    for (int i = 0; i < 2000; ++i) text += "abc def ";
    const auto result = client.Post("/v1/score", json{{"text", text}, {"top", 0}, {"most_varying", 0}}.dump(), "application/x-www-form-urlencoded");
    ASSERT_TRUE(result);
    EXPECT_EQ(result->status, 200) << result->body.substr(0, 300);
}

TEST(Server, TheDefaultLengthStaysWithinTheServersLimit) {
    ServerOptions options;
    options.max_tokens = 50;
    Running running(options);
    const Reply reply = running.post("/v1/completions", json{{"prompt", "a"}});
    ASSERT_EQ(reply.status, 200) << reply.raw;
    EXPECT_EQ(reply.body["usage"]["completion_tokens"], 50);
}

// Asks /health until `field` shows `value`: whether it did. The limit only catches a server that never gets there.
bool wait_for_health(const Running& running, const std::string& field, int value) {
    const auto give_up = std::chrono::steady_clock::now() + 120s;
    while (running.get("/health").body[field] != value)
        if (std::chrono::steady_clock::now() > give_up) return false;
        else std::this_thread::sleep_for(1ms);
    return true;
}

// A raw connection to the server, for clients that misbehave below HTTP.
int connect_to(int port) {
    const int socket = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    ::inet_pton(AF_INET, "127.0.0.1", &address.sin_addr);
    EXPECT_EQ(::connect(socket, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    return socket;
}

TEST(Server, AStalledClientIsDroppedAndOthersAreServedMeanwhile) {
    ServerOptions options;
    options.timeout_seconds = 1;
    Running running(options);
    const int stalled = connect_to(running.port());
    const std::string partial = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt\":";
    ASSERT_EQ(::send(stalled, partial.data(), partial.size(), MSG_NOSIGNAL), static_cast<ssize_t>(partial.size()));
    EXPECT_EQ(running.get("/health").status, 200) << "served while another client stalls";
    // The event is the server closing the connection (recv returns 0). The receive timeout only catches a
    // server that never closes it: at 60 s it is far beyond the server's 1 s, however slow the machine.
    timeval wait{60, 0};
    ::setsockopt(stalled, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
    char buffer[256];
    ssize_t received = 0;
    while ((received = ::recv(stalled, buffer, sizeof buffer, 0)) > 0) {
    }
    const int error = errno;
    EXPECT_EQ(received, 0) << "the server never closed the stalled connection (" << std::strerror(error) << ")";
    ::close(stalled);
}

TEST(Server, PastTheSlotsAndTheQueueIsBusyAndADisconnectFreesItsSlot) {
    ServerOptions options;
    options.slots = 1;
    options.queued = 1;
    options.max_tokens = 1'000'000;
    Running running(options);
    std::atomic<bool> started{false};
    std::atomic<bool> hang_up{false};
    std::thread holder([&] {
        auto client = running.client();
        httplib::Request request;
        request.method = "POST";
        request.path = "/v1/completions";
        request.body = json{{"prompt", "a"}, {"max_tokens", 1'000'000}, {"stream", true}}.dump();
        request.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
            started = true;
            while (!hang_up) std::this_thread::sleep_for(1ms);  // a slow reader: the server's writes back up
            return false;                                     // then hang up
        };
        client.send(request);
    });
    while (!started) std::this_thread::sleep_for(1ms);
    Reply waiting;
    std::thread queued([&] { waiting = running.post("/v1/completions", json{{"prompt", "b"}, {"max_tokens", 5}}); });
    ASSERT_TRUE(wait_for_health(running, "requests_queued", 1)) << "the second request was never queued";
    const Reply busy = running.post("/v1/completions", json{{"prompt", "c"}, {"max_tokens", 5}});
    EXPECT_EQ(busy.status, 503) << busy.raw;
    EXPECT_EQ(busy.body["error"]["type"], "unavailable_error");
    bool has_retry_after = false;
    for (const auto& [name, value] : busy.headers) has_retry_after = has_retry_after || name == "Retry-After";
    EXPECT_TRUE(has_retry_after);
    hang_up = true;
    holder.join();
    queued.join();
    EXPECT_EQ(waiting.status, 200) << "the queued request gets the slot the disconnect freed";
    EXPECT_TRUE(wait_for_health(running, "slots_processing", 0)) << "the slots never went idle";
}

TEST(Server, SixteenClientsAtOnceEachGetTheirSeedsText) {
    Running running;
    constexpr int kClients = 16;
    std::vector<std::string> texts(kClients);
    std::vector<int> statuses(kClients);
    std::vector<std::thread> clients;
    for (int i = 0; i < kClients; ++i)
        clients.emplace_back([&, i] {
            const json body = {{"prompt", i % 2 ? "abc" : "q"}, {"max_tokens", 150 + 10 * i}, {"seed", 1000 + i}, {"stream", i % 3 != 0}};
            if (i % 3 != 0) {
                texts[static_cast<std::size_t>(i)] = text_of_stream(running.stream(body, &statuses[static_cast<std::size_t>(i)]));
            } else {
                const Reply reply = running.post("/v1/completions", body);
                statuses[static_cast<std::size_t>(i)] = reply.status;
                EXPECT_EQ(reply.status, 200) << reply.raw;
                if (reply.status == 200) texts[static_cast<std::size_t>(i)] = reply.body["choices"][0]["text"];
            }
        });
    for (auto& client : clients) client.join();
    for (int i = 0; i < kClients; ++i) {
        EXPECT_EQ(statuses[static_cast<std::size_t>(i)], 200) << i;
        EXPECT_EQ(texts[static_cast<std::size_t>(i)], sample_text(i % 2 ? "abc" : "q", static_cast<std::size_t>(150 + 10 * i), static_cast<std::uint64_t>(1000 + i)))
            << "client " << i;
    }
}

TEST(Server, StoppingEndsAStreamWithAnErrorEventAndARequestWith503) {
    ServerOptions options;
    options.max_tokens = 100'000'000;
    auto running = std::make_unique<Running>(options);
    std::vector<std::string> events;
    Reply plain;
    std::thread client([&] { events = running->stream(json{{"prompt", "a"}, {"max_tokens", 100'000'000}, {"stream", true}}); });
    std::thread other([&] { plain = running->post("/v1/completions", json{{"prompt", "a"}, {"max_tokens", 100'000'000}}); });
    ASSERT_TRUE(wait_for_health(*running, "slots_processing", 2)) << "the two requests never both decoded";
    running->server().stop();
    client.join();
    other.join();
    EXPECT_EQ(plain.status, 503) << plain.raw;
    EXPECT_NE(plain.raw.find("shutting down"), std::string::npos) << plain.raw;
    ASSERT_GE(events.size(), 2u);
    EXPECT_EQ(events.back(), "[DONE]");
    EXPECT_NE(events[events.size() - 2].find("shutting down"), std::string::npos) << events[events.size() - 2];
}

TEST(Server, APortInUseIsAClearError) {
    Running first;
    ServerOptions options;
    options.port = first.port();
    Server second(options);
    try {
        second.start();
        FAIL() << "a taken port must be refused";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("--port"), std::string::npos) << error.what();
    }
}

TEST(Server, AReportIsThePageWithTheScoreBuiltIn) {
    json score = {{"characters", 2}, {"text", {"<", "/"}}, {"note", "</script><script>alert(1)</script>"}};
    const std::string page = score_report_html(score, "notes.txt", 10);
    EXPECT_EQ(page.find("</script><script>alert"), std::string::npos) << "no '<' of the data reaches the HTML";
    EXPECT_NE(page.find("\\u003c/script>"), std::string::npos);
    EXPECT_NE(page.find("\"characters_total\":10"), std::string::npos);
    EXPECT_EQ(page.find(R"(<script id="charlm-report" type="application/json">null</script>)"), std::string::npos);
}

}  // namespace
}  // namespace charlm
