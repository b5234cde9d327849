// A completion's choice and a score as rows of the decoder's batch (see slots.hpp).
#include "serve/slots.hpp"

#include <limits>

namespace charlm {

CompletionSlot::CompletionSlot(std::shared_ptr<RequestMailbox> mailbox, std::size_t choice,
                               std::shared_ptr<const CompletionRequest> request, std::vector<TokenId> prompt)
    : mailbox_(std::move(mailbox)),
      choice_(choice),
      request_(std::move(request)),
      drawing_(request_->drawing()),
      prompt_(std::move(prompt)),
      rng_(request_->seed + static_cast<std::uint64_t>(choice)),
      stops_(request_->stops) {}

void CompletionSlot::after_step(std::span<const float> logits, const Vocab& vocab) {
    // An empty prompt is a line break fed to start from, not the client's text: nothing to echo.
    if (request_->echo && !request_->prompt.empty()) echo_prompt(logits, vocab);
    if (fed_ < prompt_.size()) return;  // still reading the prompt
    if (request_->max_characters == 0) return finish(FinishReason::length);  // echo: the prompt scored, nothing drawn
    drawn_ = drawer_.draw(logits, drawing_, uniform_draw(rng_));
    held_.push_back(scored(drawn_, logits, vocab));
    ++generated_;
    // A stop text ends the choice without itself; else the length may; else what can no longer begin a stop goes out.
    if (const std::size_t stop_length = stops_.push(held_.back().character)) {
        held_.resize(held_.size() - stop_length);
        release(held_.size());
        return finish(FinishReason::stop);
    }
    if (generated_ >= request_->max_characters) {
        release(held_.size());
        return finish(FinishReason::length);
    }
    release(held_.size() - stops_.undecided());
}

// The prompt is fed from a zero state, as charlm eval and /v1/score read a text: its first character
// has no prediction, and each step's logits predict the character fed next.
void CompletionSlot::echo_prompt(std::span<const float> logits, const Vocab& vocab) {
    if (echoed_.size() == prompt_.size()) return;  // posted already
    if (echoed_.empty()) echoed_.push_back({vocab.code_point_of(prompt_[0]), std::numeric_limits<float>::quiet_NaN(), {}});
    if (fed_ < prompt_.size()) echoed_.push_back(scored(prompt_[fed_], logits, vocab));
    if (echoed_.size() == prompt_.size()) mailbox_->post_all(choice_, echoed_);
}

// `id` as the step's logits predict it: its log-probability and the most likely alternatives, where asked.
DrawnCharacter CompletionSlot::scored(TokenId id, std::span<const float> logits, const Vocab& vocab) {
    DrawnCharacter character;
    character.character = vocab.code_point_of(id);
    if (!request_->logprobs) {
        character.logprob = std::numeric_limits<float>::quiet_NaN();
        return character;
    }
    const double partition = log_partition(logits);
    character.logprob = static_cast<float>(logits[static_cast<std::size_t>(id)] - partition);
    if (request_->alternatives > 0) character.top = most_likely(logits, partition, request_->alternatives, vocab, order_);
    return character;
}

void CompletionSlot::release(std::size_t count) {
    for (std::size_t i = 0; i < count; ++i) mailbox_->post(choice_, std::move(held_[i]));
    held_.erase(held_.begin(), held_.begin() + static_cast<std::ptrdiff_t>(count));
}

void CompletionSlot::finish(FinishReason reason) {
    finished_ = true;
    reason_ = reason;
}

void ScoreSlot::after_step(std::span<const float> logits, const ModelState<float>& state, Eigen::Index row) {
    scorer_.after_step(logits, state, row);
    if (!scorer_.finished()) return;
    finished_ = true;
}

}  // namespace charlm
