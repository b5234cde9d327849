// Training and evaluation windows over a token sequence.
#include "charlm/batches.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "charlm/error.hpp"

namespace charlm {

StreamBlock stream_block(int batch_size, int rank, int processes) {
    if (processes > batch_size)
        throw UsageError(fmt::format("{} processes share --batch {}, and each needs at least one stream; give --batch {} or more, "
                                     "or start fewer processes",
                                     processes, batch_size, processes));
    const int base = batch_size / processes, extra = batch_size % processes;
    return {rank * base + std::min(rank, extra), base + (rank < extra ? 1 : 0)};
}

BatchStream::BatchStream(TokenSpan ids, int seq_length, int batch_size) : BatchStream(ids, seq_length, batch_size, {0, batch_size}) {}

BatchStream::BatchStream(TokenSpan ids, int seq_length, int batch_size, StreamBlock block)
    : ids_(ids), seq_length_(seq_length), batch_size_(batch_size), block_(block) {
    if (seq_length <= 0 || batch_size <= 0) throw Error("sequence length and batch size must be positive");
    if (block.first < 0 || block.count <= 0 || block.first + block.count > batch_size)
        throw Error("the block of streams lies outside the batch");
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
}

void BatchStream::next(Batch& batch) {
    const std::size_t T = static_cast<std::size_t>(seq_length_), B = static_cast<std::size_t>(block_.count);
    batch.seq_length = seq_length_;
    batch.batch_size = block_.count;
    batch.inputs.resize(T * B);
    batch.targets.resize(T * B);
    batch.starts_streams = position_ == 0;
    for (std::size_t b = 0; b < B; ++b) {
        const std::size_t first = (static_cast<std::size_t>(block_.first) + b) * stream_length_ + position_ * T;
        for (std::size_t t = 0; t < T; ++t) {
            batch.inputs[t * B + b] = ids_[first + t];
            batch.targets[t * B + b] = ids_[first + t + 1];
        }
    }
    position_ = (position_ + 1) % windows_per_pass_;
}

void for_each_evaluation_window(TokenSpan ids, int seq_length, int batch_size, const std::function<void(const Batch&)>& visit) {
    if (ids.size() < 2) return;
    const std::size_t pairs = ids.size() - 1;
    const std::size_t B = std::min<std::size_t>(static_cast<std::size_t>(batch_size), pairs);
    const std::size_t stream_length = (pairs + B - 1) / B;
    Batch batch;
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
    }
}

}  // namespace charlm
