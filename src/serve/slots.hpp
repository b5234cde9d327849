// The rows of the decoder's batch: a completion's choice (CompletionSlot) or a text being scored
// (ScoreSlot). Each feeds its next input and reads its row of a step's output; the batching is decoder.cpp's.
#pragma once

#include <memory>
#include <optional>
#include <random>
#include <span>
#include <variant>
#include <vector>

#include "charlm/decode.hpp"
#include "charlm/sample.hpp"
#include "nn/text_scorer.hpp"

namespace charlm {

// One choice of a completion: reads the prompt (scoring it, with echo), then draws as Sampler::next
// does (the same uniform draw from the same generator, so the same text), and posts what can no
// longer begin a stop text.
class CompletionSlot {
public:
    CompletionSlot(std::shared_ptr<RequestMailbox> mailbox, std::size_t choice, std::shared_ptr<const CompletionRequest> request,
                   std::vector<TokenId> prompt);

    TokenId next_input() { return fed_ < prompt_.size() ? prompt_[fed_++] : drawn_; }
    void after_step(std::span<const float> logits, const Vocab& vocab);
    // Finished: its characters are posted; the end itself is posted by post_finish(), which the decoder
    // calls once the slot has left the batch, so that a client told its request ended finds its slot free.
    bool finished() const { return finished_; }
    void post_finish() { mailbox_->finish(choice_, reason_); }
    RequestMailbox& mailbox() { return *mailbox_; }

private:
    void release(std::size_t count);  // posts the first `count` held characters
    DrawnCharacter scored(TokenId id, std::span<const float> logits, const Vocab& vocab);
    // With echo: the prompt character the step's logits predict, scored; the whole prompt posted once read.
    void echo_prompt(std::span<const float> logits, const Vocab& vocab);
    void finish(FinishReason reason);

    std::shared_ptr<RequestMailbox> mailbox_;
    std::size_t choice_ = 0;
    std::shared_ptr<const CompletionRequest> request_;  // shared by the request's choices
    SampleOptions drawing_;                             // the request's temperature, top-k and top-p
    std::vector<TokenId> prompt_;                       // priming_ids
    std::size_t fed_ = 0;                               // how many of prompt_ have been fed
    TokenId drawn_ = 0;                                 // the last character drawn, fed next
    bool finished_ = false;
    FinishReason reason_ = FinishReason::length;  // once finished
    std::mt19937_64 rng_;
    TokenDrawer drawer_;
    StopDetector stops_;
    std::size_t generated_ = 0;
    std::vector<DrawnCharacter> held_;  // drawn, but perhaps the beginning of a stop text
    std::vector<TokenId> order_;        // scratch for most_likely()
    std::vector<DrawnCharacter> echoed_;  // the prompt's characters scored so far (echo)
};

// A text being scored: TextScorer's figures, posted whole once the text is read.
class ScoreSlot {
public:
    ScoreSlot(std::shared_ptr<RequestMailbox> mailbox, TextScorer scorer) : mailbox_(std::move(mailbox)), scorer_(std::move(scorer)) {}

    TokenId next_input() { return scorer_.next_input(); }
    void after_step(std::span<const float> logits, const ModelState<float>& state, Eigen::Index row);
    bool finished() const { return finished_; }  // and its result waits for post_finish(), as a completion's end does
    void post_finish() { mailbox_->finish_score(std::move(scorer_.result())); }
    RequestMailbox& mailbox() { return *mailbox_; }

private:
    std::shared_ptr<RequestMailbox> mailbox_;
    TextScorer scorer_;
    bool finished_ = false;
};

struct BatchDecoder::Slot {
    std::variant<CompletionSlot, ScoreSlot> job;
    // Set where the decoding failed, so that the slot leaves the batch.
    bool failed = false;
    // While the slot is paused (its reader is behind): its row of the recurrent state, to carry on from.
    std::optional<ModelState<float>> set_aside{};

    TokenId next_input() {
        return std::visit([](auto& slot) { return slot.next_input(); }, job);
    }
    bool finished() const {
        return failed || std::visit([](const auto& slot) { return slot.finished(); }, job);
    }
    RequestMailbox& mailbox() {
        return std::visit([](auto& slot) -> RequestMailbox& { return slot.mailbox(); }, job);
    }
    // Posts the end of a finished job (a failed one's mailbox was told already).
    void post_finish() {
        if (failed) return;
        std::visit([](auto& slot) {
            if (slot.finished()) slot.post_finish();
        }, job);
    }
    void after_step(std::span<const float> logits, const ModelState<float>& state, Eigen::Index row, const Vocab& vocab) {
        if (auto* completion = std::get_if<CompletionSlot>(&job)) completion->after_step(logits, vocab);
        else std::get<ScoreSlot>(job).after_step(logits, state, row);
    }
};

}  // namespace charlm
