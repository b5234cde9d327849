// A completion's choice and a score as rows of the decoder's batch (see slots.hpp).
#include "serve/slots.hpp"

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
    if (fed_ < prompt_.size()) return;  // still reading the prompt
    drawn_ = drawer_.draw(logits, drawing_, uniform_draw(rng_));
    DrawnCharacter character;
    character.character = vocab.code_point_of(drawn_);
    const double partition = log_partition(logits);
    character.logprob = static_cast<float>(logits[static_cast<std::size_t>(drawn_)] - partition);
    if (request_->alternatives > 0) character.top = most_likely(logits, partition, request_->alternatives, vocab, order_);
    held_.push_back(std::move(character));
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

void CompletionSlot::release(std::size_t count) {
    for (std::size_t i = 0; i < count; ++i) mailbox_->post(choice_, std::move(held_[i]));
    held_.erase(held_.begin(), held_.begin() + static_cast<std::ptrdiff_t>(count));
}

void CompletionSlot::finish(FinishReason reason) {
    finished_ = true;
    mailbox_->finish(choice_, reason);
}

void ScoreSlot::after_step(std::span<const float> logits, const ModelState<float>& state, Eigen::Index row) {
    scorer_.after_step(logits, state, row);
    if (!scorer_.finished()) return;
    finished_ = true;
    mailbox_->finish_score(std::move(scorer_.result()));
}

}  // namespace charlm
