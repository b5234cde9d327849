// charlm serve as a user runs it: the URL on stdout, the page and the API behind it, Ctrl-C or SIGTERM
// ending it with exit 0, and the refusals (a bad checkpoint, a taken port, an out-of-range option).
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <regex>
#include <thread>

#include <nlohmann/json.hpp>

#include "charlm/checkpoint.hpp"
#include "charlm/precision.hpp"
#include "child_process.hpp"
#include "test_helpers.hpp"

// After Eigen: httplib.h brings <resolv.h>, whose macro _res renames a parameter of Eigen's products.
#include <httplib.h>

namespace {

namespace fs = std::filesystem;
using charlm::testing::ChildProcess;
using charlm::testing::TemporaryDirectory;
using charlm::testing::Bf16ForChildProcesses;
using nlohmann::json;

// A tiny model to serve, trained for a few steps on a text made here.
fs::path tiny_checkpoint(const TemporaryDirectory& directory) {
    std::mt19937_64 rng(5);
    const std::vector<std::string> words = {"the", "cat", "sat", "on", "a", "mat", "and", "ran", "café"};
    std::string text;
    for (int i = 0; i < 3000; ++i) text += words[rng() % words.size()] + (i % 9 == 8 ? ".\n" : " ");
    const fs::path corpus = directory.write("corpus.txt", text);
    ChildProcess train({"train", corpus.string(), "--out", (directory.path() / "run").string(), "--steps", "20", "--layers", "2",
                        "--hidden", "32", "--embed", "8", "--seq", "16", "--batch", "4", "--threads", "1", "--quiet"},
                       directory.path());
    EXPECT_EQ(train.wait_for_exit(120), 0) << train.err();
    return directory.path() / "run" / "best.safetensors";
}

// Waits for the URL line on the server's stdout; "" if it never comes.
std::string wait_for_url(ChildProcess& server) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline && !server.poll_exit()) {
        const std::string out = server.out();
        if (out.find('\n') != std::string::npos) return out.substr(0, out.find('\n'));
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return "";
}

// The port of the URL a server printed (http://127.0.0.1:PORT/), or 0 where the line is not such a URL.
int port_of(const std::string& url) {
    std::smatch match;
    return std::regex_match(url, match, std::regex(R"(http://127\.0\.0\.1:(\d+)/)")) ? std::stoi(match[1].str()) : 0;
}

void expect_stops_cleanly(int signal_number) {
    TemporaryDirectory directory;
    const fs::path checkpoint = tiny_checkpoint(directory);
    ChildProcess server({"serve", checkpoint.string(), "--port", "0", "--threads", "1"}, directory.path());
    const std::string url = wait_for_url(server);
    const int port = port_of(url);
    ASSERT_NE(port, 0) << url << "\n" << server.err();
    httplib::Client client("127.0.0.1", port);
    const auto health = client.Get("/health");
    ASSERT_TRUE(health);
    EXPECT_EQ(health->status, 200);
    const auto page = client.Get("/");
    ASSERT_TRUE(page);
    EXPECT_NE(page->body.find("<html"), std::string::npos);
    const auto completion = client.Post("/v1/completions", R"({"prompt": "the ", "max_tokens": 20, "seed": 1})", "application/json");
    ASSERT_TRUE(completion);
    ASSERT_EQ(completion->status, 200) << completion->body;
    // The same text as charlm sample's for the seed.
    ChildProcess sample({"sample", checkpoint.string(), "--prompt", "the ", "--length", "20", "--seed", "1"}, directory.path() / "run");
    ASSERT_EQ(sample.wait_for_exit(60), 0);
    EXPECT_EQ("the " + json::parse(completion->body)["choices"][0]["text"].get<std::string>() + "\n", sample.out());

    server.send(signal_number);
    EXPECT_EQ(server.wait_for_exit(10), 0) << server.err();
    EXPECT_NE(server.err().find("stopping"), std::string::npos) << server.err();
    EXPECT_EQ(server.out(), url + "\n") << "stdout holds the URL alone";
}

TEST(ServeCli, ServesTheUrlItPrintsAndCtrlCEndsItWithExitZero) { expect_stops_cleanly(SIGINT); }
TEST(ServeCli, SigtermEndsItWithExitZeroToo) { expect_stops_cleanly(SIGTERM); }

// At bf16 a served completion is still charlm sample's text at bf16, computed beside another client's stream as if
// alone (the batch's rows are summed each on its own, in bf16's kernels as in fp32's).
TEST(ServeCli, AtBf16ACompletionBesideAnotherStreamIsCharlmSamplesTextAtBf16) {
    const Bf16ForChildProcesses bf16;  // the instructions, else their emulation
    TemporaryDirectory directory;
    const fs::path checkpoint = tiny_checkpoint(directory);
    ChildProcess server({"serve", checkpoint.string(), "--port", "0", "--threads", "1", "--precision", "bf16"}, directory.path());
    const std::string url = wait_for_url(server);
    const int port = port_of(url);
    ASSERT_NE(port, 0) << url << "\n" << server.err();
    EXPECT_NE(server.err().find("products in bf16, as --precision bf16 asks"), std::string::npos) << server.err();
    std::thread other([port] {
        httplib::Client client("127.0.0.1", port);
        client.set_read_timeout(60, 0);
        const auto reply = client.Post("/v1/completions", R"({"prompt": "a mat ", "max_tokens": 3000, "seed": 2})", "application/json");
        EXPECT_TRUE(reply && reply->status == 200);
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    httplib::Client client("127.0.0.1", port);
    client.set_read_timeout(60, 0);
    const auto completion = client.Post("/v1/completions", R"({"prompt": "the ", "max_tokens": 300, "seed": 3})", "application/json");
    other.join();
    ASSERT_TRUE(completion);
    ASSERT_EQ(completion->status, 200) << completion->body;
    ChildProcess sample({"sample", checkpoint.string(), "--prompt", "the ", "--length", "300", "--seed", "3", "--precision", "bf16"},
                        directory.path() / "run");
    ASSERT_EQ(sample.wait_for_exit(60), 0) << sample.err();
    EXPECT_EQ("the " + json::parse(completion->body)["choices"][0]["text"].get<std::string>() + "\n", sample.out());
    server.send(SIGINT);
    EXPECT_EQ(server.wait_for_exit(10), 0) << server.err();
}

TEST(ServeCli, RefusesABadCheckpointATakenPortAndAPortOutOfRange) {
    TemporaryDirectory directory;
    const fs::path bad = directory.write("bad.safetensors", "not a checkpoint");
    ChildProcess bad_file({"serve", bad.string(), "--port", "0"}, directory.path());
    EXPECT_EQ(bad_file.wait_for_exit(30), 1);
    EXPECT_EQ(bad_file.err().rfind("charlm: error: ", 0), 0u) << bad_file.err();
    EXPECT_TRUE(bad_file.out().empty()) << "no URL for a server that never served";

    const fs::path checkpoint = tiny_checkpoint(directory);
    ChildProcess first({"serve", checkpoint.string(), "--port", "0", "--threads", "1"}, directory.path() / "run");
    const std::string url = wait_for_url(first);
    ASSERT_FALSE(url.empty()) << first.err();
    const std::string port = url.substr(url.rfind(':') + 1, url.size() - url.rfind(':') - 2);
    fs::create_directories(directory.path() / "second");
    ChildProcess second({"serve", checkpoint.string(), "--port", port}, directory.path() / "second");
    EXPECT_EQ(second.wait_for_exit(30), 1);
    EXPECT_NE(second.err().find("--port"), std::string::npos) << second.err();

    fs::create_directories(directory.path() / "third");
    ChildProcess out_of_range({"serve", checkpoint.string(), "--port", "70000"}, directory.path() / "third");
    EXPECT_EQ(out_of_range.wait_for_exit(30), 2);
    EXPECT_NE(out_of_range.err().find("--port"), std::string::npos) << out_of_range.err();
}

TEST(ServeCli, AKeyFileThatCannotBeReadOrHoldsNoKeyIsAUsageError) {
    TemporaryDirectory directory;
    const fs::path checkpoint = directory.write("unread.safetensors", "never read: the keys are checked first");
    const fs::path empty = directory.write("empty-keys", "\n   \n");
    for (const fs::path& keys : {directory.path() / "missing-keys", empty}) {
        ChildProcess server({"serve", checkpoint.string(), "--port", "0", "--api-key-file", keys.string()}, directory.path());
        EXPECT_EQ(server.wait_for_exit(30), 2) << server.err();
        const std::string err = server.err();
        EXPECT_EQ(err.rfind("charlm: error: --api-key-file " + keys.string(), 0), 0u) << err;
        EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << "one line: " << err;
        EXPECT_TRUE(server.out().empty());
    }
}

// Another address than loopback without a key runs, and says what that risks; with a key it says nothing of it,
// and the key it was given is never written to the log.
TEST(ServeCli, AnyAddressWithoutAKeyIsWarnedAboutAndAKeyIsNeverLogged) {
    TemporaryDirectory directory;
    const fs::path checkpoint = tiny_checkpoint(directory);
    const fs::path keys = directory.write("keys", "secret-one\nsecret-two\n");
    for (const bool with_key : {false, true}) {
        std::vector<std::string> arguments = {"serve", checkpoint.string(), "--port", "0", "--host", "0.0.0.0", "--threads", "1"};
        if (with_key) arguments.insert(arguments.end(), {"--api-key-file", keys.string()});
        ChildProcess server(arguments, directory.path());
        const std::string url = wait_for_url(server);
        ASSERT_FALSE(url.empty()) << server.err();
        httplib::Client client("127.0.0.1", std::stoi(url.substr(url.rfind(':') + 1)));
        const auto models = client.Get("/v1/models", httplib::Headers{{"Authorization", "Bearer secret-two"}});
        ASSERT_TRUE(models);
        EXPECT_EQ(models->status, 200);
        server.send(SIGTERM);
        EXPECT_EQ(server.wait_for_exit(10), 0) << server.err();
        EXPECT_EQ(server.err().find("without --api-key") != std::string::npos, !with_key) << server.err();
        EXPECT_EQ(server.err().find("secret"), std::string::npos) << server.err();
    }
}

}  // namespace

namespace {

// The models' ids as /v1/models lists them.
std::vector<std::string> model_ids(httplib::Client& client) {
    const auto models = client.Get("/v1/models");
    EXPECT_TRUE(models && models->status == 200) << (models ? models->body : httplib::to_string(models.error()));
    std::vector<std::string> ids;
    if (!models || models->status != 200) return ids;
    const json body = json::parse(models->body);
    for (const json& model : body["data"]) ids.push_back(model["id"]);
    return ids;
}

TEST(ServeCli, ServesSeveralModelsByNameAndEchoScoresThePromptAsEvalDoes) {
    TemporaryDirectory directory;
    const fs::path checkpoint = tiny_checkpoint(directory);
    // A bare checkpoint in a run directory takes the directory's name; one elsewhere its stem.
    fs::copy_file(checkpoint, directory.path() / "copy.safetensors");
    ChildProcess server({"serve", "other=" + checkpoint.string(), checkpoint.string(), (directory.path() / "copy.safetensors").string(),
                         "--port", "0", "--threads", "2", "--precision", "fp32"},
                        directory.path());
    const std::string url = wait_for_url(server);
    ASSERT_FALSE(url.empty()) << server.err();
    httplib::Client client("127.0.0.1", std::stoi(url.substr(url.rfind(':') + 1)));
    client.set_read_timeout(30, 0);
    EXPECT_EQ(model_ids(client), (std::vector<std::string>{"other", "run", "copy"}));
    const auto health = client.Get("/health");
    ASSERT_TRUE(health);
    EXPECT_EQ(json::parse(health->body)["models"].size(), 3u);

    // echo with max_tokens 0 gives the prompt's own log-probabilities: their mean is charlm eval's figure.
    const std::string text = "the cat sat on a mat and ran.\nthe café sat on the cat and ran a mat.";
    const auto echo = client.Post("/v1/completions", json{{"model", "run"}, {"prompt", text}, {"echo", true}, {"logprobs", 0}, {"max_tokens", 0}}.dump(),
                                  "application/json");
    ASSERT_TRUE(echo);
    ASSERT_EQ(echo->status, 200) << echo->body;
    const json logprobs = json::parse(echo->body)["choices"][0]["logprobs"]["token_logprobs"];
    ASSERT_GT(logprobs.size(), 2u);
    EXPECT_TRUE(logprobs[0].is_null());
    double total = 0;
    for (std::size_t i = 1; i < logprobs.size(); ++i) total -= logprobs[i].get<double>();
    const fs::path text_file = directory.write("text.txt", text);
    ChildProcess eval({"eval", checkpoint.string(), text_file.string(), "--json", "--precision", "fp32", "--threads", "1"}, directory.path());
    ASSERT_EQ(eval.wait_for_exit(60), 0) << eval.err();
    EXPECT_NEAR(total / static_cast<double>(logprobs.size() - 1), json::parse(eval.out())["nats_per_character"].get<double>(), 1e-5);
    server.send(SIGTERM);
    EXPECT_EQ(server.wait_for_exit(10), 0) << server.err();
}

// --api-key and --api-key-file take one value each: the checkpoints after them are models, not keys.
TEST(ServeCli, KeysGivenBeforeSeveralCheckpointsGuardEachModel) {
    TemporaryDirectory directory;
    const fs::path checkpoint = tiny_checkpoint(directory);
    const fs::path keys = directory.write("keys", "from-file\n");
    ChildProcess server({"serve", "--api-key", "from-option", "--api-key-file", keys.string(), "a=" + checkpoint.string(), "b=" + checkpoint.string(),
                         "--port", "0", "--threads", "2"},
                        directory.path());
    const std::string url = wait_for_url(server);
    ASSERT_FALSE(url.empty()) << server.err();
    httplib::Client client("127.0.0.1", std::stoi(url.substr(url.rfind(':') + 1)));
    const auto without = client.Get("/v1/models");
    ASSERT_TRUE(without);
    EXPECT_EQ(without->status, 401);
    for (const std::string key : {"from-option", "from-file"}) {
        client.set_bearer_token_auth(key.c_str());
        EXPECT_EQ(model_ids(client), (std::vector<std::string>{"a", "b"})) << key;
    }
    server.send(SIGTERM);
    EXPECT_EQ(server.wait_for_exit(10), 0) << server.err();
}

TEST(ServeCli, TwoModelsOfOneNameOrANameNotSafeAreUsageErrors) {
    TemporaryDirectory directory;
    const fs::path checkpoint = tiny_checkpoint(directory);
    ChildProcess twice({"serve", checkpoint.string(), "run=" + checkpoint.string(), "--port", "0"}, directory.path());
    EXPECT_EQ(twice.wait_for_exit(30), 2);
    EXPECT_NE(twice.err().find("two models are named run: " + checkpoint.string() + " and " + checkpoint.string()), std::string::npos)
        << twice.err();
    EXPECT_TRUE(twice.out().empty());
    ChildProcess unsafe({"serve", "a/b=" + checkpoint.string(), "--port", "0"}, directory.path());
    EXPECT_EQ(unsafe.wait_for_exit(30), 2);
    EXPECT_NE(unsafe.err().find("letters, digits"), std::string::npos) << unsafe.err();
}

}  // namespace
