// A request's mailbox: the decoder posts characters and results, the request's one reader waits for them (see decode.hpp).
#include "charlm/decode.hpp"

#include <algorithm>
#include <utility>

namespace charlm {

namespace {

// What a character waiting for its reader holds in memory: what bound_news() counts.
std::size_t footprint(const DrawnCharacter& character) { return sizeof character + character.top.size() * sizeof(CharacterLogprob); }

}  // namespace

RequestMailbox::RequestMailbox(int choices, bool scoring) : pending_(scoring ? 1 : static_cast<std::size_t>(choices)) {}

void RequestMailbox::throw_if_failed() const {
    if (failure_.empty()) return;
    if (unavailable_) throw DecoderBusy(failure_);
    throw DecodeFailed(failure_);
}

bool RequestMailbox::has_ended() const { return !failure_.empty() || choices_finished_ == pending_.size(); }

bool RequestMailbox::has_news() const {
    return has_ended() || std::any_of(pending_.begin(), pending_.end(), [](const ChoiceNews& c) { return !c.characters.empty() || c.finished; });
}

std::function<void()> RequestMailbox::take_wake(bool at_the_end) {
    if (!wake_ || (wake_only_at_the_end_ && !at_the_end)) return {};
    return std::exchange(wake_, nullptr);
}

void RequestMailbox::wake_on_news(std::function<void()> wake, bool only_the_end) {
    std::unique_lock lock(mutex_);
    wake_ = std::move(wake);
    wake_only_at_the_end_ = only_the_end;
    if (!wake_ || !(only_the_end ? has_ended() : has_news())) return;
    const auto now = std::exchange(wake_, nullptr);
    lock.unlock();
    now();
}

bool RequestMailbox::wait_for_news(std::chrono::milliseconds timeout, std::vector<ChoiceNews>& news, std::chrono::milliseconds gather) {
    std::unique_lock lock(mutex_);
    // Gathering, only the end wakes the reader (finish() always notifies, post() only a reader waiting for news).
    if (gather.count() > 0)
        changed_.wait_for(lock, gather, [&] { return !failure_.empty() || choices_finished_ == pending_.size(); });
    reader_waits_for_news_ = true;
    changed_.wait_for(lock, timeout, [&] { return has_news(); });
    reader_waits_for_news_ = false;
    throw_if_failed();
    news.assign(pending_.size(), {});
    for (std::size_t i = 0; i < pending_.size(); ++i) {
        news[i].characters = std::move(pending_[i].characters);
        pending_[i].characters.clear();
        news[i].finished = pending_[i].finished;
        news[i].reason = pending_[i].reason;
    }
    news_bytes_ = 0;
    return choices_finished_ == pending_.size();
}

void RequestMailbox::wait_until_finished() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return !failure_.empty() || choices_finished_ == pending_.size(); });
    throw_if_failed();
}

void RequestMailbox::fail(const std::string& message, bool unavailable) {
    std::unique_lock lock(mutex_);
    if (failure_.empty()) {
        failure_ = message;
        unavailable_ = unavailable;
    }
    changed_.notify_all();
    const auto wake = take_wake(true);
    lock.unlock();
    if (wake) wake();
}

void RequestMailbox::post(std::size_t choice, DrawnCharacter character) {
    std::unique_lock lock(mutex_);
    news_bytes_ += footprint(character);
    pending_[choice].characters.push_back(std::move(character));
    // Only a reader waiting for news is woken: one that waits for the end, or paces its reads, would
    // otherwise be woken for every character of every step.
    if (reader_waits_for_news_) changed_.notify_all();
    const auto wake = take_wake(false);
    lock.unlock();
    if (wake) wake();
}

void RequestMailbox::post_all(std::size_t choice, std::vector<DrawnCharacter> characters) {
    std::lock_guard lock(mutex_);
    auto& pending = pending_[choice].characters;
    for (const DrawnCharacter& character : characters) news_bytes_ += footprint(character);
    pending.insert(pending.end(), std::make_move_iterator(characters.begin()), std::make_move_iterator(characters.end()));
    if (reader_waits_for_news_) changed_.notify_all();
}

void RequestMailbox::finish(std::size_t choice, FinishReason reason) {
    std::unique_lock lock(mutex_);
    if (pending_[choice].finished) return;
    pending_[choice].finished = true;
    pending_[choice].reason = reason;
    ++choices_finished_;
    changed_.notify_all();
    const auto wake = take_wake(has_ended());
    lock.unlock();
    if (wake) wake();
}

void RequestMailbox::finish_score(ScoreResult result) {
    std::unique_lock lock(mutex_);
    score_ = std::move(result);
    pending_[0].finished = true;
    choices_finished_ = 1;
    changed_.notify_all();
    const auto wake = take_wake(true);
    lock.unlock();
    if (wake) wake();
}

}  // namespace charlm
