// Checks charlm serve with several models (the request's "model" picks one; /health and /v1/models
// report each) and OpenAI's echo (the prompt's own log-probabilities, as /v1/score gives them), through
// HTTP on a free port of 127.0.0.1.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <regex>
#include <set>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "charlm/sample.hpp"
#include "charlm/server.hpp"
#include "charlm/text.hpp"
#include "serve/served_models.hpp"
#include "server_fixture.hpp"
#include "text_helpers.hpp"

// After Eigen: httplib.h brings <resolv.h>, whose macro _res renames a parameter of Eigen's products.
#include <httplib.h>

namespace charlm {
namespace {

using nlohmann::json;

// charlm sample's text for these, from small_checkpoint(weights): the server's first model has weights 3, its second 4.
std::string sample_of(std::uint64_t weights, const std::string& prompt, std::size_t length, std::uint64_t seed) {
    return testing::sample_text(prompt, length, seed, 1.0, weights);
}

struct Reply {
    int status = 0;
    json body;
};

// A server for `names.size()` models of 8 slots each (see ServerOnSmallModels), asked through cpp-httplib's client.
class Served : public testing::ServerOnSmallModels {
public:
    explicit Served(std::vector<std::string> names, bool load = true) : ServerOnSmallModels(eight_slots(), std::move(names), load) {}
    Reply get(const std::string& path) const {
        httplib::Client client("127.0.0.1", port());
        return reply(client.Get(path.c_str()));
    }
    Reply post(const std::string& path, const json& body) const {
        httplib::Client client("127.0.0.1", port());
        client.set_read_timeout(30, 0);
        return reply(client.Post(path.c_str(), body.dump(), "application/json"));
    }
    // A streamed completion's events' data, in order ("[DONE]" last).
    std::vector<std::string> stream(const json& body) const {
        httplib::Client client("127.0.0.1", port());
        client.set_read_timeout(30, 0);
        const auto result = client.Post("/v1/completions", body.dump(), "application/json");
        EXPECT_TRUE(result && result->status == 200);
        const std::string received = result ? result->body : "";
        std::vector<std::string> events;
        for (std::size_t at = 0; at < received.size();) {
            const std::size_t end = received.find("\n\n", at);
            if (end == std::string::npos) break;
            events.push_back(received.substr(at + 6, end - at - 6));  // after "data: "
            at = end + 2;
        }
        return events;
    }

private:
    static ServerOptions eight_slots() {
        ServerOptions options;
        options.slots = 8;
        return options;
    }
    static Reply reply(const httplib::Result& result) {
        if (!result) return {};
        return {result->status, json::parse(result->body, nullptr, false)};
    }
};

std::string error_of(const Reply& reply) { return reply.body.is_object() ? reply.body["error"].value("message", "") : ""; }

// ---- several models -----------------------------------------------------------------------------------

TEST(ServeModels, ModelsListsEachAndTheRequestsModelPicksWhichAnswers) {
    const Served served({"shakespeare", "bible"});
    const Reply models = served.get("/v1/models");
    ASSERT_EQ(models.status, 200);
    ASSERT_EQ(models.body["data"].size(), 2u);
    EXPECT_EQ(models.body["data"][0]["id"], "shakespeare");
    EXPECT_EQ(models.body["data"][1]["id"], "bible");
    EXPECT_EQ(models.body["data"][1]["meta"]["slots"], 8) << "slots are each model's";

    for (const auto& [name, weights] : std::vector<std::pair<std::string, std::uint64_t>>{{"shakespeare", 3}, {"bible", 4}}) {
        SCOPED_TRACE(name);
        const Reply completion = served.post("/v1/completions", {{"model", name}, {"prompt", "abc"}, {"max_tokens", 60}, {"seed", 7}});
        ASSERT_EQ(completion.status, 200) << completion.body;
        EXPECT_EQ(completion.body["model"], name);
        EXPECT_EQ(completion.body["choices"][0]["text"], sample_of(weights, "abc", 60, 7));
        const Reply score = served.post("/v1/score", {{"model", name}, {"text", "abc def"}});
        ASSERT_EQ(score.status, 200) << score.body;
        EXPECT_EQ(score.body["model"], name);
    }
    EXPECT_NE(sample_of(3, "abc", 60, 7), sample_of(4, "abc", 60, 7)) << "the two models must differ for the test to tell them apart";
    const Reply bible = served.post("/v1/score", {{"model", "bible"}, {"text", "abc def"}});
    const Reply shakespeare = served.post("/v1/score", {{"model", "shakespeare"}, {"text", "abc def"}});
    EXPECT_NE(bible.body["nats_per_character"], shakespeare.body["nats_per_character"]);
}

TEST(ServeModels, CompletionIdsAreUniqueAcrossTheModelsAndTheServersRuns) {
    // As OpenAI's: a client that keys answers by id must not meet one twice, from another model or a restart.
    std::set<std::string> ids;
    for (int run = 0; run < 2; ++run) {
        const Served served({"shakespeare", "bible"});
        for (const char* name : {"shakespeare", "bible", "shakespeare"}) {
            const Reply completion = served.post("/v1/completions", {{"model", name}, {"prompt", "abc"}, {"max_tokens", 2}});
            ASSERT_EQ(completion.status, 200) << completion.body;
            const std::string id = completion.body["id"];
            EXPECT_TRUE(std::regex_match(id, std::regex("cmpl-[0-9a-f]{12}-[0-9]+"))) << id;
            EXPECT_TRUE(ids.insert(id).second) << id << " came twice";
        }
    }
}

TEST(ServeModels, AnUnknownModelIs404AndNoneWithSeveralIs400BothNamingTheChoices) {
    const Served served({"one", "two"});
    for (const std::string path : {"/v1/completions", "/v1/score"}) {
        SCOPED_TRACE(path);
        const Reply unknown = served.post(path, {{"model", "three"}, {"prompt", "a"}, {"text", "ab"}});
        EXPECT_EQ(unknown.status, 404);
        EXPECT_EQ(unknown.body["error"]["param"], "model");
        EXPECT_NE(error_of(unknown).find("no model \"three\" here; this server serves one, two"), std::string::npos) << unknown.body;
        const Reply missing = served.post(path, {{"prompt", "a"}, {"text", "ab"}});
        EXPECT_EQ(missing.status, 400);
        EXPECT_NE(error_of(missing).find("model is required: this server serves one, two"), std::string::npos) << missing.body;
    }
    const Reply not_a_name = served.post("/v1/completions", {{"model", 5}});
    EXPECT_EQ(not_a_name.status, 400);
    EXPECT_NE(error_of(not_a_name).find("model must be a string"), std::string::npos);
}

TEST(ServeModels, OneModelMayBeLeftOutButNotMisnamed) {
    const Served served({"only"});
    EXPECT_EQ(served.post("/v1/completions", {{"prompt", "a"}, {"max_tokens", 3}}).status, 200);
    EXPECT_EQ(served.post("/v1/completions", {{"model", "only"}, {"prompt", "a"}, {"max_tokens", 3}}).status, 200);
    const Reply unknown = served.post("/v1/completions", {{"model", "gpt-3.5-turbo-instruct"}, {"max_tokens", 3}});
    EXPECT_EQ(unknown.status, 404);
    EXPECT_NE(error_of(unknown).find("this server serves only"), std::string::npos) << unknown.body;
}

TEST(ServeModels, HealthIsLoadingUntilEveryModelIsLoadedThenReportsEach) {
    Served served({"first", "second"}, false);
    EXPECT_EQ(served.get("/health").status, 503);
    served.load_next();
    const Reply half = served.get("/health");
    EXPECT_EQ(half.status, 503);
    EXPECT_EQ(half.body["status"], "loading");
    ASSERT_EQ(half.body["models"].size(), 1u);
    EXPECT_EQ(half.body["models"][0]["id"], "first");
    EXPECT_EQ(served.post("/v1/completions", {{"model", "first"}, {"prompt", "a"}}).status, 503) << "nothing is served until all are loaded";
    EXPECT_EQ(served.get("/v1/models").status, 503);
    served.load_next();
    const Reply ready = served.get("/health");
    EXPECT_EQ(ready.status, 200);
    EXPECT_EQ(ready.body["status"], "ok");
    ASSERT_EQ(ready.body["models"].size(), 2u);
    for (const json& model : ready.body["models"]) {
        EXPECT_EQ(model["status"], "ok");
        EXPECT_EQ(model["slots_idle"], 8);
    }
    EXPECT_EQ(ready.body["slots_idle"], 16) << "the total over the models";
    EXPECT_THROW(served.server().load(testing::small_checkpoint(9), "third"), Error) << "one more than the server was set up for";
}

TEST(ServeModels, TwoModelsDecodingAtOnceEachGiveTheirOwnText) {
    const Served served({"a", "b"});
    std::vector<std::string> texts(4);
    std::vector<std::thread> clients;
    for (std::size_t i = 0; i < texts.size(); ++i)
        clients.emplace_back([&, i] {
            const json body = {{"model", i % 2 ? "b" : "a"}, {"prompt", "ab"}, {"max_tokens", 300}, {"seed", 11 + i}};
            texts[i] = served.post("/v1/completions", body).body["choices"][0].value("text", "");
        });
    for (auto& client : clients) client.join();
    for (std::size_t i = 0; i < texts.size(); ++i) EXPECT_EQ(texts[i], sample_of(i % 2 ? 4 : 3, "ab", 300, 11 + i)) << i;
}

TEST(ServeModels, TheThreadsAreSplitEvenlyAmongTheModels) {
    EXPECT_EQ(ServedModels::threads_of(2, 0, 2), 1);
    EXPECT_EQ(ServedModels::threads_of(2, 1, 2), 1);
    EXPECT_EQ(ServedModels::threads_of(5, 0, 2), 3) << "the first take what does not divide";
    EXPECT_EQ(ServedModels::threads_of(5, 1, 2), 2);
    EXPECT_EQ(ServedModels::threads_of(2, 2, 3), 1) << "at least one each";
    EXPECT_EQ(ServedModels::threads_of(16, 3, 4), 4);
}

// ---- echo ---------------------------------------------------------------------------------------------

TEST(ServeEcho, EchoWithNoTokensScoresThePromptAsScoreDoes) {
    const Served served({"m"});
    const std::string prompt = "abc def ghi\njkl mno, pqr.";
    const Reply echo = served.post("/v1/completions", {{"prompt", prompt}, {"echo", true}, {"logprobs", 2}, {"max_tokens", 0}});
    ASSERT_EQ(echo.status, 200) << echo.body;
    const json& choice = echo.body["choices"][0];
    EXPECT_EQ(choice["text"], prompt);
    EXPECT_EQ(choice["finish_reason"], "length");
    EXPECT_EQ(echo.body["usage"]["prompt_tokens"], prompt.size());
    EXPECT_EQ(echo.body["usage"]["completion_tokens"], 0);
    const json& logprobs = choice["logprobs"];
    ASSERT_EQ(logprobs["tokens"].size(), prompt.size());
    EXPECT_TRUE(logprobs["token_logprobs"][0].is_null()) << "the first character is read from nothing: no prediction";
    EXPECT_TRUE(logprobs["top_logprobs"][0].is_null());

    const Reply score = served.post("/v1/score", {{"text", prompt}, {"top", 2}});
    ASSERT_EQ(score.status, 200);
    for (std::size_t i = 0; i < prompt.size(); ++i) {
        EXPECT_EQ(logprobs["tokens"][i], prompt.substr(i, 1));
        EXPECT_EQ(logprobs["text_offset"][i], i);
        if (i == 0) continue;
        EXPECT_NEAR(logprobs["token_logprobs"][i].get<double>(), -score.body["loss"][i].get<double>(), 1e-5) << i;
        ASSERT_EQ(logprobs["top_logprobs"][i].size(), 2u);
        // The top alternatives are /v1/score's, as log-probabilities rather than probabilities.
        const json& expected = score.body["top"][i][0];
        EXPECT_NEAR(logprobs["top_logprobs"][i][expected[0].get<std::string>()].get<double>(), std::log(expected[1].get<double>()), 1e-5);
    }
}

TEST(ServeEcho, EchoPrependsThePromptToEachChoicesText) {
    const Served served({"m"});
    const Reply echo = served.post("/v1/completions", {{"prompt", "abc"}, {"echo", true}, {"logprobs", 0}, {"max_tokens", 40}, {"seed", 5}, {"n", 2}});
    ASSERT_EQ(echo.status, 200) << echo.body;
    for (std::size_t i = 0; i < 2; ++i) {
        const json& choice = echo.body["choices"][i];
        EXPECT_EQ(choice["text"], "abc" + sample_of(3, "abc", 40, 5 + i));
        ASSERT_EQ(choice["logprobs"]["tokens"].size(), 43u);
        EXPECT_EQ(choice["logprobs"]["text_offset"][42], 42);
        EXPECT_TRUE(choice["logprobs"]["token_logprobs"][0].is_null());
        EXPECT_TRUE(choice["logprobs"]["token_logprobs"][3].is_number()) << "the first generated character";
    }
    EXPECT_EQ(echo.body["usage"]["completion_tokens"], 80) << "the echoed prompt is not generated";
    // Without echo, the same request gives the same text without the prompt.
    const Reply plain = served.post("/v1/completions", {{"prompt", "abc"}, {"max_tokens", 40}, {"seed", 5}});
    EXPECT_EQ(plain.body["choices"][0]["text"], sample_of(3, "abc", 40, 5));
    // An empty prompt has nothing to echo.
    const Reply empty = served.post("/v1/completions", {{"prompt", ""}, {"echo", true}, {"max_tokens", 10}, {"seed", 5}});
    EXPECT_EQ(empty.body["choices"][0]["text"], sample_of(3, "", 10, 5));
}

TEST(ServeEcho, NoTokensWithoutEchoIsStillAnEmptyAnswer) {
    const Served served({"m"});
    const Reply reply = served.post("/v1/completions", {{"prompt", "abc"}, {"max_tokens", 0}, {"logprobs", 1}});
    ASSERT_EQ(reply.status, 200);
    EXPECT_EQ(reply.body["choices"][0]["text"], "");
    EXPECT_EQ(reply.body["choices"][0]["logprobs"]["tokens"].size(), 0u);
    EXPECT_EQ(reply.body["usage"]["completion_tokens"], 0);
    EXPECT_EQ(served.post("/v1/completions", {{"echo", "yes"}}).status, 400);
}

TEST(ServeEcho, AStreamSendsTheEchoedPromptFirstAsAnEventOfItsOwn) {
    const Served served({"m"});
    const std::string prompt = "abc def ghi jkl";
    const auto events = served.stream({{"prompt", prompt}, {"echo", true}, {"logprobs", 1}, {"max_tokens", 200}, {"seed", 8}, {"stream", true}});
    ASSERT_GE(events.size(), 3u);
    EXPECT_EQ(events.back(), "[DONE]");
    const json first = json::parse(events[0]);
    EXPECT_EQ(first["choices"][0]["text"], prompt);
    EXPECT_TRUE(first.contains("seed"));
    EXPECT_TRUE(first["choices"][0]["logprobs"]["token_logprobs"][0].is_null());
    EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
    std::string text;
    std::size_t offset = 0;
    for (std::size_t i = 0; i + 1 < events.size(); ++i) {
        const json event = json::parse(events[i]);
        const json& choice = event["choices"][0];
        text += choice["text"].get<std::string>();
        for (const json& at : choice["logprobs"]["text_offset"]) EXPECT_EQ(at, offset++);
    }
    EXPECT_EQ(text, prompt + sample_of(3, prompt, 200, 8));

    // Scoring only: the prompt, then its end (in the same event, or an empty one after it).
    const auto scored = served.stream({{"prompt", prompt}, {"echo", true}, {"max_tokens", 0}, {"stream", true}});
    ASSERT_GE(scored.size(), 2u);
    ASSERT_LE(scored.size(), 3u);
    EXPECT_EQ(json::parse(scored[0])["choices"][0]["text"], prompt);
    EXPECT_EQ(json::parse(scored[scored.size() - 2])["choices"][0]["finish_reason"], "length");
}

}  // namespace
}  // namespace charlm
