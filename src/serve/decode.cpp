// Batched decoding: a thread that steps every admitted request's state as one batch (see decode.hpp).
#include "charlm/decode.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include <fmt/format.h>

#include "charlm/threads.hpp"
#include "nn/row_shares.hpp"

namespace charlm {

std::string describe(const Neuron& neuron) {
    return fmt::format("layer {} {} {}", neuron.layer, neuron.cell ? "cell" : "hidden", neuron.unit);
}

void check_neuron(const ModelConfig& config, const Neuron& neuron) {
    if (neuron.layer < 0 || neuron.layer >= config.layers)
        throw UsageError(fmt::format("no layer {}: the model has layers 0 to {}", neuron.layer, config.layers - 1));
    if (neuron.unit < 0 || neuron.unit >= config.hidden_size)
        throw UsageError(fmt::format("no unit {}: a layer has units 0 to {}", neuron.unit, config.hidden_size - 1));
    if (neuron.cell && !config.has_cell_state())
        throw UsageError(fmt::format("a {} has no cell state; ask for \"hidden\"", to_string(config.cell)));
}

// ---- a request's mailbox ----------------------------------------------------------------------------

DecodeRequest::DecodeRequest(int choices, bool scoring) : pending_(scoring ? 1 : static_cast<std::size_t>(choices)) {}

void DecodeRequest::throw_if_failed() const {
    if (failure_.empty()) return;
    if (unavailable_) throw DecoderBusy(failure_);
    throw DecodeFailed(failure_);
}

bool DecodeRequest::wait_for_news(std::chrono::milliseconds timeout, std::vector<ChoiceNews>& news, std::chrono::milliseconds gather) {
    std::unique_lock lock(mutex_);
    // Gathering, only the end wakes the reader (finish() always notifies, post() only a reader waiting for news).
    if (gather.count() > 0)
        changed_.wait_for(lock, gather, [&] { return !failure_.empty() || choices_finished_ == pending_.size(); });
    auto has_news = [&] {
        if (!failure_.empty() || choices_finished_ == pending_.size()) return true;
        return std::any_of(pending_.begin(), pending_.end(), [](const ChoiceNews& c) { return !c.characters.empty() || c.finished; });
    };
    reader_waits_for_news_ = true;
    changed_.wait_for(lock, timeout, has_news);
    reader_waits_for_news_ = false;
    throw_if_failed();
    news.assign(pending_.size(), {});
    for (std::size_t i = 0; i < pending_.size(); ++i) {
        news[i].characters = std::move(pending_[i].characters);
        pending_[i].characters.clear();
        news[i].finished = pending_[i].finished;
        news[i].reason = pending_[i].reason;
    }
    return choices_finished_ == pending_.size();
}

void DecodeRequest::wait_until_finished() {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return !failure_.empty() || choices_finished_ == pending_.size(); });
    throw_if_failed();
}

void DecodeRequest::fail(const std::string& message, bool unavailable) {
    std::lock_guard lock(mutex_);
    if (failure_.empty()) {
        failure_ = message;
        unavailable_ = unavailable;
    }
    changed_.notify_all();
}

void DecodeRequest::post(std::size_t choice, DrawnCharacter character) {
    std::lock_guard lock(mutex_);
    pending_[choice].characters.push_back(std::move(character));
    // Only a reader waiting for news is woken: one that waits for the end, or paces its reads, would
    // otherwise be woken for every character of every step.
    if (reader_waits_for_news_) changed_.notify_all();
}

void DecodeRequest::finish(std::size_t choice, FinishReason reason) {
    std::lock_guard lock(mutex_);
    if (pending_[choice].finished) return;
    pending_[choice].finished = true;
    pending_[choice].reason = reason;
    ++choices_finished_;
    changed_.notify_all();
}

void DecodeRequest::finish_score(ScoreResult result) {
    std::lock_guard lock(mutex_);
    score_ = std::move(result);
    pending_[0].finished = true;
    choices_finished_ = 1;
    changed_.notify_all();
}

// ---- a slot: one row of the batch -------------------------------------------------------------------

namespace {

// ln of the softmax's denominator over a row of logits, in double: ln p(id) = logit[id] - this.
double log_partition(std::span<const float> logits) {
    const float most = *std::max_element(logits.begin(), logits.end());
    double sum = 0;
    for (float logit : logits) sum += std::exp(static_cast<double>(logit - most));
    return static_cast<double>(most) + std::log(sum);
}

// The `count` most likely ids of a row, most likely first (ties by id), with their log-probabilities.
std::vector<CharacterLogprob> most_likely(std::span<const float> logits, double partition, int count, const Vocab& vocab,
                                          std::vector<TokenId>& order) {
    const std::size_t kept = std::min(static_cast<std::size_t>(std::max(count, 0)), logits.size());
    order.resize(logits.size());
    std::iota(order.begin(), order.end(), TokenId{0});
    std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(kept), order.end(), [&](TokenId a, TokenId b) {
        return logits[static_cast<std::size_t>(a)] != logits[static_cast<std::size_t>(b)]
                   ? logits[static_cast<std::size_t>(a)] > logits[static_cast<std::size_t>(b)]
                   : a < b;
    });
    std::vector<CharacterLogprob> top(kept);
    for (std::size_t i = 0; i < kept; ++i)
        top[i] = {vocab.code_point_of(order[i]), static_cast<float>(logits[static_cast<std::size_t>(order[i])] - partition)};
    return top;
}

}  // namespace

// Rows of a step's draws a thread takes at least: a handful keeps a region worth its start.
constexpr Eigen::Index kRowsPerShareOfDraws = 4;

struct BatchDecoder::Slot {
    std::shared_ptr<DecodeRequest> request;
    std::size_t choice = 0;
    std::vector<TokenId> forced;  // fed before anything is drawn: the prompt, or the text scored
    std::size_t fed = 0;          // how many of `forced` have been fed
    TokenId drawn = 0;            // the last character drawn, fed next
    bool finished = false;
    std::vector<TokenId> order;   // scratch for most_likely()

    // A completion's choice.
    const CompletionRequest* completion = nullptr;  // owned by the request's Pending (kept in `owner`)
    std::shared_ptr<const CompletionRequest> owner;
    std::mt19937_64 rng;
    TokenDrawer drawer;
    std::size_t generated = 0;
    std::vector<DrawnCharacter> held;  // drawn, but perhaps the beginning of a stop text

    // A score.
    std::shared_ptr<const ScoreRequest> scoring;
    ScoreResult result;
    std::vector<double> means, spreads;  // Welford's running mean and sum of squared deviations, per neuron

    TokenId next_input() { return fed < forced.size() ? forced[fed++] : drawn; }

    void after_step(std::span<const float> logits, const ModelState<float>& state, Eigen::Index row, const Vocab& vocab) {
        if (scoring) return after_scored_step(logits, state, row, vocab);
        if (fed < forced.size()) return;  // still reading the prompt
        // As Sampler::next: the same uniform draw from the same generator, so the same text.
        const double uniform = uniform_draw(rng);
        drawn = drawer.draw(logits, completion->options, uniform);
        DrawnCharacter character;
        character.character = vocab.code_point_of(drawn);
        const double partition = log_partition(logits);
        character.logprob = static_cast<float>(logits[static_cast<std::size_t>(drawn)] - partition);
        if (completion->alternatives > 0) character.top = most_likely(logits, partition, completion->alternatives, vocab, order);
        held.push_back(std::move(character));
        ++generated;
        release_or_stop();
    }

    // Posts the held characters that can no longer begin a stop text; finishes at a stop or the length.
    void release_or_stop() {
        for (const std::u32string& stop : completion->stops) {
            if (stop.empty() || held.size() < stop.size()) continue;
            const std::size_t start = held.size() - stop.size();
            bool matches = true;
            for (std::size_t i = 0; i < stop.size() && matches; ++i) matches = held[start + i].character == stop[i];
            if (matches) {
                held.resize(start);
                release(held.size());
                return finish(FinishReason::stop);
            }
        }
        if (generated >= completion->max_characters) {
            release(held.size());
            return finish(FinishReason::length);
        }
        // Keep the longest tail of `held` that some stop text begins with.
        std::size_t keep = 0;
        for (const std::u32string& stop : completion->stops)
            for (std::size_t length = std::min(stop.size() - 1, held.size()); length > keep; --length) {
                bool begins = true;
                for (std::size_t i = 0; i < length && begins; ++i) begins = held[held.size() - length + i].character == stop[i];
                if (begins) {
                    keep = length;
                    break;
                }
            }
        release(held.size() - keep);
    }

    void release(std::size_t count) {
        for (std::size_t i = 0; i < count; ++i) request->post(choice, std::move(held[i]));
        held.erase(held.begin(), held.begin() + static_cast<std::ptrdiff_t>(count));
    }

    void finish(FinishReason reason) {
        finished = true;
        request->finish(choice, reason);
    }

    void after_scored_step(std::span<const float> logits, const ModelState<float>& state, Eigen::Index row, const Vocab& vocab) {
        // The state now holds what the model made of character fed - 1.
        const std::size_t layers = state.hidden.size();
        const auto units = state.hidden.front().cols();
        auto value = [&](const Neuron& n) {
            const auto& matrix = n.cell ? state.cell[static_cast<std::size_t>(n.layer)] : state.hidden[static_cast<std::size_t>(n.layer)];
            return matrix(row, n.unit);
        };
        for (NeuronTrace& trace : result.neurons) trace.activations.push_back(value(trace.neuron));
        const double seen = static_cast<double>(fed);
        std::size_t index = 0;
        for (int kind = 0; kind < (state.cell.empty() ? 1 : 2); ++kind)
            for (std::size_t l = 0; l < layers; ++l)
                for (Eigen::Index u = 0; u < units; ++u, ++index) {
                    const double x = (kind ? state.cell[l] : state.hidden[l])(row, u);
                    const double delta = x - means[index];
                    means[index] += delta / seen;
                    spreads[index] += delta * (x - means[index]);
                }
        if (fed < forced.size()) {  // the logits predict the next character
            const double partition = log_partition(logits);
            const TokenId target = forced[fed];
            const double loss = partition - static_cast<double>(logits[static_cast<std::size_t>(target)]);
            result.loss.total_nats += loss;
            ++result.loss.count;
            result.losses.push_back(static_cast<float>(loss));
            result.top.push_back(most_likely(logits, partition, scoring->top, vocab, order));
            return;
        }
        // The text is read: rank the neurons by how much they varied, hidden and cell states apart (a
        // cell state is unbounded and would fill the list), and list them in turns, the larger first.
        const std::size_t per_kind = layers * static_cast<std::size_t>(units);
        const std::size_t kinds = state.cell.empty() ? 1 : 2;
        const auto wanted = static_cast<std::size_t>(std::max(scoring->most_varying, 0));
        std::vector<std::vector<std::size_t>> ranked(kinds);
        for (std::size_t kind = 0; kind < kinds; ++kind) {
            std::vector<std::size_t>& order = ranked[kind];
            order.resize(per_kind);
            std::iota(order.begin(), order.end(), kind * per_kind);
            const std::size_t listed = std::min(per_kind, (wanted + kinds - 1 - kind) / kinds);  // hidden gets the odd one
            std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(listed), order.end(),
                              [&](std::size_t a, std::size_t b) { return spreads[a] != spreads[b] ? spreads[a] > spreads[b] : a < b; });
            order.resize(listed);
        }
        for (std::size_t rank = 0; result.most_varying.size() < std::min(wanted, kinds * per_kind); ++rank)
            for (std::size_t kind = 0; kind < kinds; ++kind) {
                if (rank >= ranked[kind].size()) continue;
                const std::size_t n = ranked[kind][rank];
                const Neuron neuron{static_cast<int>((n % per_kind) / static_cast<std::size_t>(units)),
                                    static_cast<int>(n % static_cast<std::size_t>(units)), n >= per_kind};
                result.most_varying.push_back({neuron, std::sqrt(spreads[n] / seen)});
            }
        finished = true;
        request->finish_score(std::move(result));
    }
};

// ---- the decoder --------------------------------------------------------------------------------------

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

std::shared_ptr<DecodeRequest> BatchDecoder::complete(const CompletionRequest& request) {
    if (request.choices < 1 || request.choices > options_.slots)
        throw UsageError(fmt::format("n must be between 1 and {} (this server's slots)", options_.slots));
    validate(request.options);
    auto shared_request = std::make_shared<const CompletionRequest>(request);
    auto mailbox = std::make_shared<DecodeRequest>(request.choices, false);
    if (request.max_characters == 0) {  // nothing to generate: not even the prompt needs reading
        for (int i = 0; i < request.choices; ++i) mailbox->finish(static_cast<std::size_t>(i), FinishReason::length);
        return mailbox;
    }
    std::vector<TokenId> prompt = request.prompt.empty()
                                      ? std::vector<TokenId>{vocab_.contains(U'\n') ? vocab_.id_of(U'\n') : TokenId{0}}  // as Sampler::prime
                                      : vocab_.encode(request.prompt);
    Pending pending{mailbox, {}};
    for (int i = 0; i < request.choices; ++i) {
        auto slot = std::make_unique<Slot>();
        slot->request = mailbox;
        slot->choice = static_cast<std::size_t>(i);
        slot->forced = prompt;
        slot->owner = shared_request;
        slot->completion = shared_request.get();
        slot->rng.seed(request.seed + static_cast<std::uint64_t>(i));
        pending.slots.push_back(std::move(slot));
    }
    submit(std::move(pending));
    return mailbox;
}

std::shared_ptr<DecodeRequest> BatchDecoder::score(const ScoreRequest& request) {
    if (request.text.size() < 2) throw UsageError("a text to score needs at least 2 characters");
    for (const Neuron& neuron : request.neurons) check_neuron(model_.config(), neuron);
    auto slot = std::make_unique<Slot>();
    slot->scoring = std::make_shared<const ScoreRequest>(request);
    slot->forced = vocab_.encode(request.text);
    const ModelConfig& config = model_.config();
    const std::size_t neurons = static_cast<std::size_t>(config.layers) * static_cast<std::size_t>(config.hidden_size) *
                                (config.has_cell_state() ? 2 : 1);
    slot->means.assign(neurons, 0.0);
    slot->spreads.assign(neurons, 0.0);
    slot->result.losses.reserve(request.text.size());
    slot->result.losses.push_back(std::numeric_limits<float>::quiet_NaN());
    slot->result.top.emplace_back();
    for (const Neuron& neuron : request.neurons) {
        slot->result.neurons.push_back({neuron, {}});
        slot->result.neurons.back().activations.reserve(request.text.size());
    }
    auto mailbox = std::make_shared<DecodeRequest>(1, true);
    slot->request = mailbox;
    Pending pending{mailbox, {}};
    pending.slots.push_back(std::move(slot));
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
        if (!active[i]->finished && !active[i]->request->cancelled()) {
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
        if (pending.request->cancelled()) continue;
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
            const bool leaving = std::any_of(active.begin(), active.end(), [](const auto& s) { return s->finished || s->request->cancelled(); });
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
                slot->request->fail(fmt::format("decoding failed: {}", error.what()));
                slot->finished = true;
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
                    slot.request->fail(fmt::format("decoding failed: {}", error.what()));
                    slot.finished = true;
                }
            }
        });
    }
    for (auto& slot : active)
        if (!slot->finished) slot->request->fail("the server is shutting down", true);
    std::lock_guard lock(mutex_);
    for (auto& pending : queue_) pending.request->fail("the server is shutting down", true);
    queue_.clear();
    slots_queued_ = 0;
    model_.set_rows_as_if_alone(false);
}

ScoreResult score_text(Model<float>& model, const Vocab& vocab, const ScoreRequest& request, int threads) {
    BatchDecoder decoder(model, vocab, {.slots = 1, .queued = 1, .threads = threads});
    const auto mailbox = decoder.score(request);
    mailbox->wait_until_finished();
    return mailbox->score();
}

}  // namespace charlm
