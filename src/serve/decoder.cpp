// Batched decoding: a thread that steps every admitted request's slots as one batch, and the queue
// that admits them (see decode.hpp; the slots themselves are slots.hpp's).
#include "charlm/decode.hpp"

#include <algorithm>

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
    return {slots_busy_, options_.slots - slots_busy_, static_cast<int>(queue_.size())};
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

// Between two steps: finished and cancelled slots leave, the queue's first requests join while there
// are slots for all their choices, and the stayers' rows of the state are carried into the new batch
// (newcomers start from zeros). Called with mutex_ held.
void BatchDecoder::admit_and_release(std::vector<std::unique_ptr<Slot>>& active, ModelState<float>& state) {
    std::vector<std::unique_ptr<Slot>> kept;
    std::vector<Eigen::Index> rows;  // each kept slot's row in the old state; -1 for a newcomer
    for (std::size_t i = 0; i < active.size(); ++i) {
        if (!active[i]->finished() && !active[i]->mailbox().cancelled()) {
            rows.push_back(static_cast<Eigen::Index>(i));
            kept.push_back(std::move(active[i]));
        } else {
            --slots_busy_;
        }
    }
    while (!queue_.empty() && slots_busy_ + static_cast<int>(queue_.front().slots.size()) <= options_.slots) {
        Pending pending = std::move(queue_.front());
        queue_.pop_front();
        slots_queued_ -= static_cast<int>(pending.slots.size());
        if (pending.mailbox->cancelled()) continue;
        for (auto& slot : pending.slots) {
            rows.push_back(-1);
            kept.push_back(std::move(slot));
            ++slots_busy_;
        }
    }
    const auto batch = static_cast<Eigen::Index>(kept.size());
    ModelState<float> next = model_.initial_state(static_cast<int>(batch));
    for (Eigen::Index r = 0; r < batch; ++r) {
        const Eigen::Index from = rows[static_cast<std::size_t>(r)];
        if (from < 0) continue;
        for (std::size_t l = 0; l < next.hidden.size(); ++l) next.hidden[l].row(r) = state.hidden[l].row(from);
        for (std::size_t l = 0; l < next.cell.size(); ++l) next.cell[l].row(r) = state.cell[l].row(from);
    }
    state = std::move(next);
    active = std::move(kept);
}

void BatchDecoder::run() {
    set_thread_count(options_.threads);  // OpenMP's thread count is each thread's own setting
    const WeightsFreeze<float> freeze(model_);
    model_.set_rows_as_if_alone(true);
    std::vector<std::unique_ptr<Slot>> active;
    ModelState<float> state = model_.initial_state(0);
    std::vector<TokenId> inputs;
    for (;;) {
        {
            std::unique_lock lock(mutex_);
            work_.wait(lock, [&] { return stopping_ || !queue_.empty() || !active.empty(); });
            if (stopping_) break;
            // Most steps nobody leaves or joins: then there is nothing to rebuild.
            const bool leaving = std::any_of(active.begin(), active.end(), [](const auto& s) { return s->finished() || s->mailbox().cancelled(); });
            const bool joining = !queue_.empty() && slots_busy_ + static_cast<int>(queue_.front().slots.size()) <= options_.slots;
            if (leaving || joining) admit_and_release(active, state);
        }
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
    for (auto& slot : active)
        if (!slot->finished()) slot->mailbox().fail("the server is shutting down", true);
    std::lock_guard lock(mutex_);
    for (auto& pending : queue_) pending.mailbox->fail("the server is shutting down", true);
    queue_.clear();
    slots_queued_ = 0;
    model_.set_rows_as_if_alone(false);
}

}  // namespace charlm
