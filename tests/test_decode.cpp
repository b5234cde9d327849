// Checks decode.cpp: batched completions are charlm sample's text to the character whatever else is in
// the batch, stop texts, log-probabilities, scores against a step-by-step reference, slots and the queue.
#include <gtest/gtest.h>

#include <cmath>
#include <thread>

#include "charlm/decode.hpp"
#include "charlm/sample.hpp"
#include "charlm/score.hpp"
#include "text_helpers.hpp"

namespace charlm {
namespace {

using namespace std::chrono_literals;

std::string describe(const Neuron& neuron) {  // "layer 1 cell 37"
    return "layer " + std::to_string(neuron.layer) + (neuron.cell ? " cell " : " hidden ") + std::to_string(neuron.unit);
}

struct Fixture {
    Vocab vocab = testing::vocab_of_text(U"abcdefgh ijklmnop\nqrstuvwxyz.,;'ABC");
    Model<float> model;
    explicit Fixture(CellType cell = CellType::lstm) : model(config(vocab, cell)) {
        std::mt19937_64 rng(11);
        model.initialize(rng);
    }
    static ModelConfig config(const Vocab& vocab, CellType cell) {
        ModelConfig config;
        config.cell = cell;
        config.vocab_size = static_cast<int>(vocab.size());
        config.embed_size = 8;
        config.hidden_size = 24;
        config.layers = 2;
        return config;
    }
    std::u32string sample(const std::u32string& prompt, const SampleOptions& options, std::uint64_t seed, std::size_t length) {
        std::u32string text;
        generate(model, vocab, prompt, length, options, seed, [&](char32_t c) { text += c; });
        return text;
    }
};

struct Completed {
    std::vector<std::u32string> texts;
    std::vector<std::vector<DrawnCharacter>> characters;
    std::vector<FinishReason> reasons;
};

Completed read_all(RequestMailbox& request) {
    Completed completed;
    std::vector<ChoiceNews> news;
    for (bool done = false; !done;) {
        done = request.wait_for_news(1000ms, news);
        completed.texts.resize(news.size());
        completed.characters.resize(news.size());
        completed.reasons.resize(news.size());
        for (std::size_t i = 0; i < news.size(); ++i) {
            for (auto& c : news[i].characters) {
                completed.texts[i] += c.character;
                completed.characters[i].push_back(c);
            }
            if (news[i].finished) completed.reasons[i] = news[i].reason;
        }
    }
    return completed;
}

TEST(Decode, CompletionsDecodedTogetherAreEachCharlmSamplesText) {
    for (CellType cell : {CellType::lstm, CellType::gru, CellType::rnn}) {
        SCOPED_TRACE(to_string(cell));
        Fixture fixture(cell);
        std::vector<CompletionRequest> requests;
        const std::vector<std::u32string> prompts{U"", U"a", U"abc def", U"ghij\nklm", U"Abe quick", U"x"};
        for (std::size_t i = 0; i < prompts.size(); ++i) {
            CompletionRequest request;
            request.prompt = prompts[i];
            request.max_characters = 60 + 17 * i;  // they leave the batch at different steps
            request.temperature = 0.7 + 0.1 * static_cast<double>(i);
            request.top_k = i == 2 ? 5 : 0;
            request.top_p = i == 3 ? 0.9 : 1.0;
            request.seed = 100 + i;
            request.choices = i == 4 ? 3 : 1;
            requests.push_back(request);
        }
        std::vector<Completed> completed;
        {
            // 8 choices on 5 slots: some wait, and join the batch as others leave it.
            BatchDecoder decoder(fixture.model, fixture.vocab, {.slots = 5, .queued = 8, .threads = 2});
            std::vector<std::shared_ptr<RequestMailbox>> running;
            for (const auto& request : requests) running.push_back(decoder.complete(request));
            for (const auto& request : running) completed.push_back(read_all(*request));
        }
        for (std::size_t i = 0; i < requests.size(); ++i) {
            ASSERT_EQ(completed[i].texts.size(), static_cast<std::size_t>(requests[i].choices));
            const SampleOptions options = requests[i].drawing();
            for (int choice = 0; choice < requests[i].choices; ++choice) {
                const std::u32string expected = fixture.sample(requests[i].prompt, options,
                                                               requests[i].seed + static_cast<std::uint64_t>(choice), requests[i].max_characters);
                EXPECT_EQ(completed[i].texts[static_cast<std::size_t>(choice)], expected) << "request " << i << ", choice " << choice;
                EXPECT_EQ(completed[i].reasons[static_cast<std::size_t>(choice)], FinishReason::length);
            }
        }
    }
}

TEST(Decode, AStopTextEndsTheCompletionAndIsNotReturned) {
    Fixture fixture;
    SampleOptions options;
    const std::u32string full = fixture.sample(U"ab", options, 5, 300);
    const std::u32string stop = full.substr(120, 3);
    const std::u32string expected = full.substr(0, full.find(stop));
    BatchDecoder decoder(fixture.model, fixture.vocab, {.slots = 2, .queued = 2, .threads = 1});
    CompletionRequest request;
    request.prompt = U"ab";
    request.max_characters = 300;
    request.seed = 5;
    request.stops = {U"zzzzzzzz", stop};  // the first never comes
    const Completed completed = read_all(*decoder.complete(request));
    EXPECT_EQ(completed.texts[0], expected);
    EXPECT_EQ(completed.reasons[0], FinishReason::stop);
}

TEST(Decode, LogprobsAreTheModelsOwnDistribution) {
    Fixture fixture;
    BatchDecoder decoder(fixture.model, fixture.vocab, {.slots = 2, .queued = 2, .threads = 1});
    CompletionRequest request;
    request.prompt = U"abc";
    request.max_characters = 40;
    request.temperature = 0.5;  // draws from a sharper distribution than the one reported
    request.alternatives = 4;
    const Completed completed = read_all(*decoder.complete(request));
    ASSERT_EQ(completed.characters[0].size(), 40u);
    for (const DrawnCharacter& c : completed.characters[0]) {
        ASSERT_EQ(c.top.size(), 4u);
        for (std::size_t i = 1; i < c.top.size(); ++i) EXPECT_GE(c.top[i - 1].logprob, c.top[i].logprob);
        EXPECT_LE(c.top[0].logprob, 0.0f);
        bool listed = false;
        for (const auto& alternative : c.top)
            if (alternative.character == c.character) {
                listed = true;
                EXPECT_EQ(alternative.logprob, c.logprob);
            }
        if (!listed) {
            EXPECT_LE(c.logprob, c.top.back().logprob);
        }
    }

    // The values: the log-softmax at temperature 1 of a batch of one reading the prompt and then each drawn
    // character, as charlm sample does; whatever temperature drew them.
    const WeightsFreeze<float> freeze(fixture.model);
    ModelState<float> state = fixture.model.initial_state(1);
    const auto read = [&](char32_t c) {
        const TokenId id = fixture.vocab.id_of(c);
        fixture.model.forward(std::span<const TokenId>(&id, 1), 1, 1, state);
    };
    for (const char32_t c : request.prompt) read(c);
    for (std::size_t i = 0; i < completed.characters[0].size(); ++i) {
        const DrawnCharacter& c = completed.characters[0][i];
        const auto& logits = fixture.model.logits();
        const double partition = std::log((logits.array() - logits.maxCoeff()).exp().cast<double>().sum()) + logits.maxCoeff();
        const auto logprob_of = [&](char32_t character) { return logits(0, fixture.vocab.id_of(character)) - partition; };
        EXPECT_NEAR(c.logprob, logprob_of(c.character), 1e-5) << "character " << i;
        for (const auto& alternative : c.top) EXPECT_NEAR(alternative.logprob, logprob_of(alternative.character), 1e-5) << "character " << i;
        Eigen::Index best = 0;
        logits.row(0).maxCoeff(&best);
        EXPECT_EQ(c.top[0].character, fixture.vocab.code_point_of(static_cast<TokenId>(best))) << "character " << i;
        read(c.character);
    }
}

// A request that does not ask for log-probabilities (the API's default) gets the same text, with no
// log-probability computed: each is NaN, where asking gives finite ones, the same echoed prompt included.
TEST(Decode, WithoutLogprobsTheTextIsTheSameAndNoneAreComputed) {
    Fixture fixture;
    BatchDecoder decoder(fixture.model, fixture.vocab, {.slots = 2, .queued = 2, .threads = 1});
    CompletionRequest request;
    request.prompt = U"abc";
    request.max_characters = 30;
    request.seed = 7;
    request.echo = true;
    const Completed with = read_all(*decoder.complete(request));
    request.logprobs = false;
    const Completed without = read_all(*decoder.complete(request));
    ASSERT_EQ(with.texts[0].size(), 33u);
    EXPECT_EQ(without.texts[0], with.texts[0]);
    for (std::size_t i = 1; i < with.characters[0].size(); ++i) {  // the prompt's first character has no prediction
        EXPECT_TRUE(std::isfinite(with.characters[0][i].logprob)) << "character " << i;
        EXPECT_TRUE(std::isnan(without.characters[0][i].logprob)) << "character " << i << " was scored unasked";
    }
}

TEST(Decode, ScoresMatchAStepByStepReading) {
    Fixture fixture;
    const std::u32string text = U"abc def ghij\nklm abc def. ABC, abc";
    ScoreRequest request;
    request.text = text;
    request.top = 3;
    request.neurons = {{0, 3, false}, {1, 7, true}, {1, 0, false}};
    request.most_varying = 5;
    const ScoreResult result = score_text(fixture.model, fixture.vocab, request, 1);

    // The reference: one character at a time through a batch of one, as charlm sample reads a prompt.
    const WeightsFreeze<float> freeze(fixture.model);
    ModelState<float> state = fixture.model.initial_state(1);
    LossSum loss;
    std::vector<std::vector<double>> every(2 * 2 * 24);  // hidden then cell, layer by layer
    ASSERT_EQ(result.losses.size(), text.size());
    EXPECT_TRUE(std::isnan(result.losses[0]));
    for (std::size_t i = 0; i < text.size(); ++i) {
        const TokenId id = fixture.vocab.id_of(text[i]);
        fixture.model.forward(std::span<const TokenId>(&id, 1), 1, 1, state);
        EXPECT_EQ(result.neurons[0].activations[i], state.hidden[0](0, 3)) << i;
        EXPECT_EQ(result.neurons[1].activations[i], state.cell[1](0, 7)) << i;
        EXPECT_EQ(result.neurons[2].activations[i], state.hidden[1](0, 0)) << i;
        for (int kind = 0; kind < 2; ++kind)
            for (int l = 0; l < 2; ++l)
                for (int u = 0; u < 24; ++u)
                    every[static_cast<std::size_t>((kind * 2 + l) * 24 + u)].push_back((kind ? state.cell : state.hidden)[static_cast<std::size_t>(l)](0, u));
        if (i + 1 == text.size()) break;
        const auto& logits = fixture.model.logits();
        const double partition = std::log((logits.array() - logits.maxCoeff()).exp().cast<double>().sum()) + logits.maxCoeff();
        const double expected = partition - logits(0, fixture.vocab.id_of(text[i + 1]));
        EXPECT_NEAR(result.losses[i + 1], expected, 1e-5) << i;
        loss.total_nats += expected;
        ++loss.count;
        Eigen::Index best = 0;
        logits.row(0).maxCoeff(&best);
        ASSERT_EQ(result.top[i + 1].size(), 3u);
        EXPECT_EQ(result.top[i + 1][0].character, fixture.vocab.code_point_of(static_cast<TokenId>(best)));
    }
    EXPECT_EQ(result.loss.count, text.size() - 1);
    EXPECT_NEAR(result.loss.mean(), loss.mean(), 1e-6);

    // The most varying neurons: the reference's largest standard deviations, hidden and cell in turns.
    std::vector<std::pair<double, std::size_t>> hidden, cell;
    for (std::size_t n = 0; n < every.size(); ++n) {
        double mean = 0, squares = 0;
        for (double x : every[n]) mean += x / static_cast<double>(every[n].size());
        for (double x : every[n]) squares += (x - mean) * (x - mean);
        (n < 48 ? hidden : cell).emplace_back(std::sqrt(squares / static_cast<double>(every[n].size())), n);
    }
    for (auto* kind : {&hidden, &cell}) std::sort(kind->begin(), kind->end(), [](auto a, auto b) { return a.first > b.first; });
    ASSERT_EQ(result.most_varying.size(), 5u);
    for (std::size_t i = 0; i < 5; ++i) {
        const auto& [spread, n] = (i % 2 == 0 ? hidden : cell)[i / 2];
        EXPECT_EQ(result.most_varying[i].neuron, (Neuron{static_cast<int>(n / 24 % 2), static_cast<int>(n % 24), n >= 48})) << i;
        EXPECT_NEAR(result.most_varying[i].standard_deviation, spread, 1e-6);
    }
}

TEST(Decode, RefusesNeuronsTheModelHasNot) {
    Fixture gru(CellType::gru);
    BatchDecoder decoder(gru.model, gru.vocab, {.slots = 1, .queued = 0, .threads = 1});
    ScoreRequest request;
    request.text = U"abc";
    for (const Neuron neuron : {Neuron{2, 0, false}, Neuron{-1, 0, false}, Neuron{0, 24, false}, Neuron{0, 1, true}}) {
        request.neurons = {neuron};
        EXPECT_THROW(decoder.score(request), UsageError) << describe(neuron);
    }
    request.neurons = {};
    request.text = U"a";
    EXPECT_THROW(decoder.score(request), UsageError) << "one character has nothing to predict";
}

// A long completion that holds the only slot, so that others wait.
CompletionRequest long_completion() {
    CompletionRequest request;
    request.prompt = U"a";
    request.max_characters = 1'000'000;
    return request;
}

TEST(Decode, AFullQueueIsBusyAndACancelledRequestFreesItsSlot) {
    Fixture fixture;
    BatchDecoder decoder(fixture.model, fixture.vocab, {.slots = 1, .queued = 1, .threads = 1});
    const auto hog = decoder.complete(long_completion());
    std::vector<ChoiceNews> news;
    hog->wait_for_news(1000ms, news);  // it holds the slot now
    CompletionRequest small;
    small.max_characters = 5;
    const auto waiting = decoder.complete(small);
    EXPECT_THROW(decoder.complete(small), DecoderBusy);
    CompletionRequest two = small;
    two.choices = 2;
    EXPECT_THROW(decoder.complete(two), UsageError) << "more choices than slots can never run";
    EXPECT_FALSE(waiting->wait_for_news(200ms, news)) << "it waits for the slot";
    hog->cancel();
    EXPECT_EQ(read_all(*waiting).texts[0].size(), 5u);
    EXPECT_EQ(decoder.load().slots_busy, 0) << "a request's end is posted once its slot is free";
}

// A request's end is posted only once its slot has left the batch, so a client that has its answer and asks
// /metrics or /health at once finds the slot free (the end used to be posted first, and the slot freed before the
// next step: Connection.MetricsCount... then saw a busy slot now and then). Many short requests in turn, each
// checked the moment it ends: one that found its slot busy would have found it so within a few rounds.
TEST(Decode, ARequestThatHasEndedHasLeftItsSlot) {
    Fixture fixture;
    BatchDecoder decoder(fixture.model, fixture.vocab, {.slots = 4, .queued = 4, .threads = 1});
    for (int round = 0; round < 300; ++round) {
        CompletionRequest one;
        one.max_characters = 1 + round % 3;
        one.choices = 1 + round % 2;
        read_all(*decoder.complete(one));
        ASSERT_EQ(decoder.load().slots_busy, 0) << "round " << round << ": a completion's slot was still busy after its end";
        ScoreRequest score;
        score.text = U"abc";
        decoder.score(score)->wait_until_finished();
        ASSERT_EQ(decoder.load().slots_busy, 0) << "round " << round << ": a score's slot was still busy after its end";
    }
}

TEST(Decode, NothingToGenerateFinishesAtOnceAndStoppingFailsWhatIsLeft) {
    Fixture fixture;
    std::shared_ptr<RequestMailbox> hog, queued;
    {
        BatchDecoder decoder(fixture.model, fixture.vocab, {.slots = 1, .queued = 1, .threads = 1});
        CompletionRequest none;
        none.max_characters = 0;
        const Completed completed = read_all(*decoder.complete(none));
        EXPECT_EQ(completed.texts[0], U"");
        EXPECT_EQ(completed.reasons[0], FinishReason::length);
        hog = decoder.complete(long_completion());
        queued = decoder.complete(long_completion());
    }
    std::vector<ChoiceNews> news;
    EXPECT_THROW(while (!hog->wait_for_news(1000ms, news)) {}, Error);
    EXPECT_THROW(queued->wait_until_finished(), Error);
}

}  // namespace
}  // namespace charlm
