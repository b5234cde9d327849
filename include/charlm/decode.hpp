// Batched decoding for serving: requests, each with its own recurrent state, advance together one
// character a step as the rows of one batch, and join and leave it between steps.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "charlm/error.hpp"
#include "charlm/model.hpp"
#include "charlm/sample.hpp"
#include "charlm/score.hpp"
#include "charlm/text.hpp"

namespace charlm {

// One character of a completion: its log-probability under the model's own distribution
// (temperature 1, nothing cut), whatever drew it, and the most likely characters there. An echoed
// prompt's characters are told the same way; its first, read with nothing before it, has no
// prediction: a NaN log-probability and no alternatives.
struct DrawnCharacter {
    char32_t character = 0;
    float logprob = 0;
    std::vector<CharacterLogprob> top;  // most likely first; empty unless asked for
};

enum class FinishReason { length, stop };

struct CompletionRequest {
    std::u32string prompt;              // characters of the vocabulary only; empty starts after a line break (priming_ids)
    std::size_t max_characters = 200;
    double temperature = 1.0;           // how to draw, as SampleOptions says; top_k 1 is greedy
    int top_k = 0;
    double top_p = 1.0;
    std::vector<std::u32string> stops;  // a choice ends before the first of these it generates, which it does not return
    std::uint64_t seed = 0;             // choice i draws with seed + i: choice 0 is charlm sample's text for the seed
    int choices = 1;
    int alternatives = 0;               // most likely characters reported beside each drawn one
    // Each character's log-probability (DrawnCharacter::logprob); false leaves it NaN and spares the softmax
    // over the vocabulary that each character's would cost (the API asks it only where the client does).
    bool logprobs = true;
    // Each choice's characters begin with the prompt's own, scored as it is read, all posted at once
    // when it has been read; with max_characters 0 the prompt is only scored.
    bool echo = false;

    SampleOptions drawing() const;      // temperature, top_k and top_p as the drawer takes them
};

// What a choice of a completion has released since the reader last asked: characters that can no
// longer turn out to begin a stop text.
struct ChoiceNews {
    std::vector<DrawnCharacter> characters;
    bool finished = false;  // this is the choice's last news
    FinishReason reason = FinishReason::length;
};

// A request's mailbox, shared by the decoder (which posts) and the one thread that serves the request
// (which reads): a completion's choices post their characters, a score its result.
class RequestMailbox {
public:
    RequestMailbox(int choices, bool scoring);

    // Waits until there is news or `timeout` passes, then moves every choice's news since the last call
    // into `news` (one entry a choice). Returns true once every choice has finished. With `gather`, it
    // first lets news gather for that long, unless every choice finishes meanwhile (a stream that sends
    // a piece per interval, and its last piece at once).
    bool wait_for_news(std::chrono::milliseconds timeout, std::vector<ChoiceNews>& news,
                       std::chrono::milliseconds gather = std::chrono::milliseconds(0));
    // Waits until the request has finished (a score, or a completion read all at once).
    void wait_until_finished();
    // For a reader that must not block (the server's event loop): `wake` is called once, at once here
    // or later on the decoder's thread, when the request has news (with `only_the_end`: when it has
    // finished or failed); the reader then takes the news with a wait_for_news of no timeout. A later
    // call replaces the earlier wake; an empty one clears it.
    void wake_on_news(std::function<void()> wake, bool only_the_end = false);
    // After the score request has finished.
    const ScoreResult& score() const { return score_; }
    // The client went away: the decoder frees the request's slots before its next step.
    void cancel() { cancelled_ = true; }
    bool cancelled() const { return cancelled_; }
    // A stream's reader takes news only as fast as its client reads: past `bytes` of news not yet taken,
    // the decoder sets the request's choices aside (their state kept, no thread held) until the reader
    // takes it. 0, the default, bounds nothing: a whole answer takes its news once, at the end.
    void bound_news(std::size_t bytes) { news_bound_ = bytes; }
    bool backlogged() const {
        const std::size_t bound = news_bound_;
        return bound > 0 && news_bytes_ > bound;
    }
    // Set by the decoder where the request failed: the reader's next wait throws DecoderBusy where
    // the decoder stopped (`unavailable`: ask again later), else DecodeFailed.
    void fail(const std::string& message, bool unavailable = false);

    // The decoder's side.
    void post(std::size_t choice, DrawnCharacter character);
    void post_all(std::size_t choice, std::vector<DrawnCharacter> characters);  // at once: a reader sees all or none
    void finish(std::size_t choice, FinishReason reason);
    void finish_score(ScoreResult result);

private:
    void throw_if_failed() const;
    bool has_news() const;   // under mutex_
    bool has_ended() const;  // under mutex_
    std::function<void()> take_wake(bool at_the_end);  // under mutex_: the wake to call once unlocked

    mutable std::mutex mutex_;
    std::condition_variable changed_;
    std::vector<ChoiceNews> pending_;
    std::size_t choices_finished_ = 0;
    bool reader_waits_for_news_ = false;
    std::function<void()> wake_;
    bool wake_only_at_the_end_ = false;
    ScoreResult score_;
    std::string failure_;
    bool unavailable_ = false;
    std::atomic<bool> cancelled_{false};
    std::atomic<std::size_t> news_bound_{0};
    std::atomic<std::size_t> news_bytes_{0};  // the memory the news not yet taken holds
};

// Every slot is taken and the queue is full, or the decoder is stopping: come back later (HTTP 503).
class DecoderBusy : public Error {
public:
    using Error::Error;
};

// The model failed while decoding a request (HTTP 500): the server's fault, never the request's.
class DecodeFailed : public Error {
public:
    using Error::Error;
};

struct DecoderOptions {
    int slots = 32;          // rows of the batch: choices decoded at once
    int queued = 64;         // choices that may wait for slots; past that, DecoderBusy
    int threads = 0;         // the decoding thread's compute threads; 0: one per core
};

struct DecoderLoad {
    int slots_busy = 0;
    int slots_idle = 0;
    int requests_queued = 0;
    int slots_paused = 0;  // of the busy ones: set aside until their client reads (RequestMailbox::bound_news)
};

// Runs a thread that advances every admitted request one character a step, as the rows of one batch
// (Model::set_rows_as_if_alone: a request's characters do not depend on the others). A request waits
// in a bounded queue until it has a slot for each of its choices, and leaves when it finishes or is
// cancelled.
class BatchDecoder {
public:
    BatchDecoder(Model<float>& model, const Vocab& vocab, DecoderOptions options);
    ~BatchDecoder();  // stops: requests still running or queued fail with a message
    BatchDecoder(const BatchDecoder&) = delete;
    BatchDecoder& operator=(const BatchDecoder&) = delete;

    // Throw DecoderBusy where the queue is full, UsageError for a request the model cannot serve.
    std::shared_ptr<RequestMailbox> complete(const CompletionRequest& request);
    std::shared_ptr<RequestMailbox> score(const ScoreRequest& request);
    DecoderLoad load() const;
    void stop();

    struct Slot;  // one row of the batch, a completion's choice or a score: src/serve/slots.hpp

private:
    struct Pending {
        std::shared_ptr<RequestMailbox> mailbox;
        std::vector<std::unique_ptr<Slot>> slots;
    };
    void submit(Pending pending);
    bool admissible() const;  // under mutex_: the queue's first request has slots for all its choices
    // Moves the slots that leave into `left`, whose finishes the caller posts once mutex_ is released.
    void admit_and_release(std::vector<std::unique_ptr<Slot>>& active, std::vector<std::unique_ptr<Slot>>& paused, ModelState<float>& state,
                           std::vector<std::unique_ptr<Slot>>& left);
    void run();

    Model<float>& model_;
    const Vocab& vocab_;
    DecoderOptions options_;
    mutable std::mutex mutex_;
    std::condition_variable work_;
    std::deque<Pending> queue_;
    int slots_busy_ = 0;
    int slots_queued_ = 0;  // the queue's requests' choices
    int slots_paused_ = 0;  // busy, but set aside until their readers take their news
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace charlm
