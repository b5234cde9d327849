// Training and evaluation windows over a token sequence.
#include "charlm/batches.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "charlm/error.hpp"

namespace charlm {

namespace {

// The ids each stream reads before the pages behind them go (TokenSpan::release): of a mapped corpus,
// about B times this much stays resident, however long the corpus, for a madvise call per stream now and then.
constexpr std::size_t kIdsReadBeforeRelease = std::size_t{1} << 16;

// Lets go of the pages of what each of `batch_size` streams of `stream_length` ids read from `from` to `to`.
void release_read(TokenSpan ids, std::size_t batch_size, std::size_t stream_length, std::size_t from, std::size_t to) {
    for (std::size_t b = 0; b < batch_size; ++b) ids.release(b * stream_length + from, to - from);
}

}  // namespace

BatchStream::BatchStream(TokenSpan ids, int seq_length, int batch_size)
    : ids_(ids), seq_length_(seq_length), batch_size_(batch_size) {
    if (seq_length <= 0 || batch_size <= 0) throw Error("sequence length and batch size must be positive");
    std::size_t pairs = ids.size() > 0 ? ids.size() - 1 : 0;
    stream_length_ = pairs / static_cast<std::size_t>(batch_size);
    windows_per_pass_ = stream_length_ / static_cast<std::size_t>(seq_length);
    if (windows_per_pass_ == 0)
        throw Error(fmt::format("the training text has {} characters, fewer than one window of {} steps x {} streams "
                                "needs ({}); use a longer text or a smaller --seq or --batch",
                                ids.size(), seq_length, batch_size,
                                static_cast<std::size_t>(seq_length) * static_cast<std::size_t>(batch_size) + 1));
}

void BatchStream::set_position(std::size_t position) {
    if (position >= windows_per_pass_) throw Error("data position is beyond the end of the text");
    position_ = position;
    released_to_ = position * static_cast<std::size_t>(seq_length_);
}

void BatchStream::next(Batch& batch) {
    const std::size_t T = static_cast<std::size_t>(seq_length_), B = static_cast<std::size_t>(batch_size_);
    batch.seq_length = seq_length_;
    batch.batch_size = batch_size_;
    batch.inputs.resize(T * B);
    batch.targets.resize(T * B);
    batch.starts_streams = position_ == 0;
    for (std::size_t b = 0; b < B; ++b) {
        const std::size_t first = b * stream_length_ + position_ * T;
        for (std::size_t t = 0; t < T; ++t) {
            batch.inputs[t * B + b] = ids_[first + t];
            batch.targets[t * B + b] = ids_[first + t + 1];
        }
    }
    position_ = (position_ + 1) % windows_per_pass_;
    // Each stream reads on from `read_to` of its slice: the end of it once the pass is over.
    const std::size_t read_to = position_ == 0 ? stream_length_ : position_ * T;
    if (position_ == 0 || read_to - released_to_ >= kIdsReadBeforeRelease) {
        release_read(ids_, B, stream_length_, released_to_, read_to);
        released_to_ = position_ * T;
    }
}

void for_each_evaluation_window(TokenSpan ids, int seq_length, int batch_size, const std::function<void(const Batch&)>& visit) {
    if (ids.size() < 2) return;
    const std::size_t pairs = ids.size() - 1;
    const std::size_t B = std::min<std::size_t>(static_cast<std::size_t>(batch_size), pairs);
    const std::size_t stream_length = (pairs + B - 1) / B;
    Batch batch;
    std::size_t released_to = 0;
    for (std::size_t start = 0; start < stream_length; start += static_cast<std::size_t>(seq_length)) {
        const std::size_t T = std::min<std::size_t>(static_cast<std::size_t>(seq_length), stream_length - start);
        batch.seq_length = static_cast<int>(T);
        batch.batch_size = static_cast<int>(B);
        batch.inputs.assign(T * B, 0);
        batch.targets.assign(T * B, kIgnoreTarget);
        batch.starts_streams = start == 0;
        for (std::size_t b = 0; b < B; ++b) {
            for (std::size_t t = 0; t < T; ++t) {
                std::size_t pair = b * stream_length + start + t;
                if (pair >= pairs) break;
                batch.inputs[t * B + b] = ids[pair];
                batch.targets[t * B + b] = ids[pair + 1];
            }
        }
        visit(batch);
        if (start + T == stream_length || start + T - released_to >= kIdsReadBeforeRelease) {
            release_read(ids, B, stream_length, released_to, start + T);
            released_to = start + T;
        }
    }
}

}  // namespace charlm
