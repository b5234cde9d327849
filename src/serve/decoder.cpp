// Batched decoding: a thread that steps every admitted request's slots as one batch, and the queue
// that admits them (see decode.hpp; the slots themselves are slots.hpp's).
#include "charlm/decode.hpp"

#include <algorithm>
#include <chrono>
#include <utility>

#include <fmt/format.h>

#include "charlm/threads.hpp"
#include "nn/row_shares.hpp"
#include "serve/slots.hpp"

namespace charlm {

SampleOptions CompletionRequest::drawing() const {
    SampleOptions options;
    options.temperature = temperature;
    options.top_k = top_k;
    options.top_p = top_p;
    return options;
}

// Rows of a step's draws a thread takes at least: a handful keeps a region worth its start.
constexpr Eigen::Index kRowsPerShareOfDraws = 4;

BatchDecoder::BatchDecoder(Model<float>& model, const Vocab& vocab, DecoderOptions options)
    : model_(model), vocab_(vocab), options_(options) {
    if (options_.slots < 1) throw UsageError("a decoder needs at least one slot");
    if (options_.queued < 0) throw UsageError("a decoder's queue cannot be negative");
    thread_ = std::thread([this] { run(); });
}

BatchDecoder::~BatchDecoder() { stop(); }

void BatchDecoder::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    work_.notify_all();
    if (thread_.joinable()) thread_.join();
}

DecoderLoad BatchDecoder::load() const {
    std::lock_guard lock(mutex_);
    return {slots_busy_, options_.slots - slots_busy_, static_cast<int>(queue_.size()), slots_paused_};
}

bool BatchDecoder::admissible() const {
    return !queue_.empty() && slots_busy_ + static_cast<int>(queue_.front().slots.size()) <= options_.slots;
}

void BatchDecoder::submit(Pending pending) {
    {
        std::lock_guard lock(mutex_);
        if (stopping_) throw DecoderBusy("the server is shutting down");
        // Up to `slots` choices decode and `queued` more wait; the queue holds those not yet admitted.
        const int wanted = static_cast<int>(pending.slots.size());
        if (slots_busy_ + slots_queued_ + wanted > options_.slots + options_.queued)
            throw DecoderBusy(fmt::format("all {} slots are busy and {} requests are waiting; try again shortly", options_.slots, queue_.size()));
        slots_queued_ += wanted;
        queue_.push_back(std::move(pending));
    }
    work_.notify_all();
}

std::shared_ptr<RequestMailbox> BatchDecoder::complete(const CompletionRequest& request) {
    if (request.choices < 1 || request.choices > options_.slots)
        throw UsageError(fmt::format("n must be between 1 and {} (this server's slots)", options_.slots));
    validate(request.drawing());
    auto shared_request = std::make_shared<const CompletionRequest>(request);
    auto mailbox = std::make_shared<RequestMailbox>(request.choices, false);
    if (request.max_characters == 0 && !(request.echo && !request.prompt.empty())) {  // nothing to generate or score: not even the prompt needs reading
        for (int i = 0; i < request.choices; ++i) mailbox->finish(static_cast<std::size_t>(i), FinishReason::length);
        return mailbox;
    }
    const std::vector<TokenId> prompt = priming_ids(vocab_, request.prompt);
    Pending pending{mailbox, {}};
    for (int i = 0; i < request.choices; ++i)
        pending.slots.push_back(std::make_unique<Slot>(Slot{CompletionSlot(mailbox, static_cast<std::size_t>(i), shared_request, prompt)}));
    submit(std::move(pending));
    return mailbox;
}

std::shared_ptr<RequestMailbox> BatchDecoder::score(const ScoreRequest& request) {
    TextScorer scorer(model_.config(), vocab_, request);
    auto mailbox = std::make_shared<RequestMailbox>(1, true);
    Pending pending{mailbox, {}};
    pending.slots.push_back(std::make_unique<Slot>(Slot{ScoreSlot(mailbox, std::move(scorer))}));
    submit(std::move(pending));
    return mailbox;
}

namespace {

// How often the decoder looks again at paused slots when nothing else is to do: a reader that takes its
// news does not tell the decoder, which learns it at its next step or at this poll.
constexpr std::chrono::milliseconds kPausedPoll{10};

void copy_row(const ModelState<float>& from, Eigen::Index from_row, ModelState<float>& to, Eigen::Index to_row) {
    for (std::size_t l = 0; l < to.hidden.size(); ++l) to.hidden[l].row(to_row) = from.hidden[l].row(from_row);
    for (std::size_t l = 0; l < to.cell.size(); ++l) to.cell[l].row(to_row) = from.cell[l].row(from_row);
}

}  // namespace

// Between two steps: finished and cancelled slots leave; those whose reader is behind (backlogged) are
// set aside with their row of the state, and come back with it once the reader has taken its news; the
// queue's first requests join while there are slots for all their choices. Paused slots keep their
// slots: a client that reads nothing holds them until --timeout ends its connection. The stayers' rows
// are carried into the new batch (newcomers start from zeros). Called with mutex_ held.
void BatchDecoder::admit_and_release(std::vector<std::unique_ptr<Slot>>& active, std::vector<std::unique_ptr<Slot>>& paused,
                                     ModelState<float>& state, std::vector<std::unique_ptr<Slot>>& left) {
    std::vector<std::unique_ptr<Slot>> kept, still_paused;
    // Where each kept slot's row comes from: the old state's row, its own set-aside row (row 0), or zeros (null).
    std::vector<std::pair<const ModelState<float>*, Eigen::Index>> sources;
    for (std::size_t i = 0; i < active.size(); ++i) {
        Slot& slot = *active[i];
        const auto row = static_cast<Eigen::Index>(i);
        if (slot.finished() || slot.mailbox().cancelled()) {
            --slots_busy_;
            left.push_back(std::move(active[i]));
        } else if (slot.mailbox().backlogged()) {
            slot.set_aside = model_.initial_state(1);
            copy_row(state, row, *slot.set_aside, 0);
            ++slots_paused_;
            still_paused.push_back(std::move(active[i]));
        } else {
            sources.emplace_back(&state, row);
            kept.push_back(std::move(active[i]));
        }
    }
    for (auto& slot : paused) {
        if (!slot->mailbox().cancelled() && slot->mailbox().backlogged()) {
            still_paused.push_back(std::move(slot));
            continue;
        }
        --slots_paused_;
        if (slot->mailbox().cancelled()) {
            --slots_busy_;
            continue;
        }
        sources.emplace_back(&*slot->set_aside, 0);
        kept.push_back(std::move(slot));
    }
    while (admissible()) {
        Pending pending = std::move(queue_.front());
        queue_.pop_front();
        slots_queued_ -= static_cast<int>(pending.slots.size());
        if (pending.mailbox->cancelled()) continue;
        for (auto& slot : pending.slots) {
            sources.emplace_back(nullptr, 0);
            kept.push_back(std::move(slot));
            ++slots_busy_;
        }
    }
    const auto batch = static_cast<Eigen::Index>(kept.size());
    ModelState<float> next = model_.initial_state(static_cast<int>(batch));
    for (Eigen::Index r = 0; r < batch; ++r) {
        const auto [from, from_row] = sources[static_cast<std::size_t>(r)];
        if (from) copy_row(*from, from_row, next, r);
    }
    for (auto& slot : kept) slot->set_aside.reset();
    state = std::move(next);
    active = std::move(kept);
    paused = std::move(still_paused);
}

void BatchDecoder::run() {
    set_thread_count(options_.threads);  // OpenMP's thread count is each thread's own setting
    const WeightsFreeze<float> freeze(model_);
    model_.set_rows_as_if_alone(true);
    std::vector<std::unique_ptr<Slot>> active, paused;
    ModelState<float> state = model_.initial_state(0);
    std::vector<TokenId> inputs;
    std::vector<std::unique_ptr<Slot>> left;  // out of the batch, their ends to post
    const auto resuming = [&] {
        return std::any_of(paused.begin(), paused.end(), [](const auto& s) { return s->mailbox().cancelled() || !s->mailbox().backlogged(); });
    };
    for (;;) {
        {
            std::unique_lock lock(mutex_);
            const auto work = [&] { return stopping_ || !active.empty() || admissible() || resuming(); };
            if (paused.empty()) work_.wait(lock, work);
            else if (!work_.wait_for(lock, kPausedPoll, work)) continue;
            if (stopping_) break;
            // Most steps nobody leaves, pauses or joins: then there is nothing to rebuild.
            const bool leaving = std::any_of(active.begin(), active.end(), [](const auto& s) {
                return s->finished() || s->mailbox().cancelled() || s->mailbox().backlogged();
            });
            if (leaving || admissible() || resuming()) admit_and_release(active, paused, state, left);
        }
        // The ends are posted once the slots are counted free (load(), /metrics, /health): a client that has
        // its whole answer and asks at once finds them so.
        for (auto& slot : left) slot->post_finish();
        left.clear();
        if (active.empty()) continue;
        const auto batch = static_cast<int>(active.size());
        inputs.resize(active.size());
        for (std::size_t i = 0; i < active.size(); ++i) inputs[i] = active[i]->next_input();
        try {
            model_.forward(inputs, 1, batch, state);
        } catch (const std::exception& error) {
            for (auto& slot : active) {
                slot->mailbox().fail(fmt::format("decoding failed: {}", error.what()));
                slot->failed = true;
            }
            continue;
        }
        // Each row's draw, log-probabilities and posting are its own slot's: shared among the threads,
        // they take a few microseconds a row that would otherwise leave the other threads idle.
        const Matrix<float>& logits = model_.logits();
        for_each_row_share(batch, kRowsPerShareOfDraws, [&](Eigen::Index first, Eigen::Index rows) {
            for (Eigen::Index i = first; i < first + rows; ++i) {
                Slot& slot = *active[static_cast<std::size_t>(i)];
                try {
                    slot.after_step(std::span<const float>(logits.row(i).data(), static_cast<std::size_t>(logits.cols())), state, i, vocab_);
                } catch (const std::exception& error) {  // nothing may leave a parallel region
                    slot.mailbox().fail(fmt::format("decoding failed: {}", error.what()));
                    slot.failed = true;
                }
            }
        });
    }
    for (auto* slots : {&active, &paused})
        for (auto& slot : *slots)
            if (slot->finished()) slot->post_finish();  // finished at the last step: its whole answer is posted
            else slot->mailbox().fail("the server is shutting down", true);
    std::lock_guard lock(mutex_);
    for (auto& pending : queue_) pending.mailbox->fail("the server is shutting down", true);
    queue_.clear();
    slots_queued_ = 0;
    model_.set_rows_as_if_alone(false);
}

}  // namespace charlm
