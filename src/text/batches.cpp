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

// Lets go of the pages of what streams first .. first + count - 1, of `stream_length` ids each, read
// from `from` to `to`.
void release_read(TokenSpan ids, std::size_t first, std::size_t count, std::size_t stream_length, std::size_t from, std::size_t to) {
    for (std::size_t b = first; b < first + count; ++b) ids.release(b * stream_length + from, to - from);
}

}  // namespace

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
    // Each stream reads on from `read_to` of its slice: the end of it once the pass is over.
    const std::size_t read_to = position_ == 0 ? stream_length_ : position_ * T;
    if (position_ == 0 || read_to - released_to_ >= kIdsReadBeforeRelease) {
        release_read(ids_, static_cast<std::size_t>(block_.first), B, stream_length_, released_to_, read_to);
        released_to_ = position_ * T;
    }
}

namespace {

// An evaluation pass's streams, and the part of them that a selection reads.
struct EvaluationLayout {
    std::size_t pairs = 0;
    std::size_t streams = 0;        // B
    std::size_t stream_length = 0;  // steps in each stream, the last one padded
    std::size_t steps = 0;          // the first steps of each stream that are read
    std::size_t first_stream = 0, stream_count = 0;
};

EvaluationLayout evaluation_layout(TokenSpan ids, int seq_length, int batch_size, const EvaluationSelection& selection) {
    if (seq_length <= 0 || batch_size <= 0) throw Error("sequence length and batch size must be positive");
    EvaluationLayout layout;
    layout.pairs = ids.size() > 0 ? ids.size() - 1 : 0;
    layout.streams = std::min<std::size_t>(static_cast<std::size_t>(batch_size), layout.pairs);
    if (layout.streams > 0) layout.stream_length = (layout.pairs + layout.streams - 1) / layout.streams;
    layout.steps = layout.stream_length;
    if (selection.max_characters > 0)
        layout.steps = std::min(layout.steps, (selection.max_characters + layout.streams - 1) / std::max<std::size_t>(layout.streams, 1));
    const long long streams = static_cast<long long>(layout.streams);
    const long long first = selection.first_stream;
    const long long count = selection.stream_count < 0 ? streams - first : selection.stream_count;
    if (first < 0 || first > streams || selection.stream_count < -1 || first + count > streams)
        throw Error(fmt::format("streams {} to {} are not all among the {} of the evaluation pass; give a block within 0 to {}",
                                first, first + count - 1, streams, streams - 1));
    layout.first_stream = static_cast<std::size_t>(first);
    layout.stream_count = static_cast<std::size_t>(count);
    return layout;
}

}  // namespace

void for_each_evaluation_window(TokenSpan ids, int seq_length, int batch_size, const std::function<void(const Batch&)>& visit,
                                const EvaluationSelection& selection) {
    const EvaluationLayout layout = evaluation_layout(ids, seq_length, batch_size, selection);
    const std::size_t B = layout.stream_count;
    if (layout.pairs == 0 || B == 0) return;
    Batch batch;
    std::size_t released_to = 0;
    for (std::size_t start = 0; start < layout.steps; start += static_cast<std::size_t>(seq_length)) {
        const std::size_t T = std::min<std::size_t>(static_cast<std::size_t>(seq_length), layout.steps - start);
        batch.seq_length = static_cast<int>(T);
        batch.batch_size = static_cast<int>(B);
        batch.inputs.assign(T * B, 0);
        batch.targets.assign(T * B, kIgnoreTarget);
        batch.starts_streams = start == 0;
        for (std::size_t b = 0; b < B; ++b) {
            for (std::size_t t = 0; t < T; ++t) {
                std::size_t pair = (layout.first_stream + b) * layout.stream_length + start + t;
                if (pair >= layout.pairs) break;
                batch.inputs[t * B + b] = ids[pair];
                batch.targets[t * B + b] = ids[pair + 1];
            }
        }
        visit(batch);
        if (start + T == layout.steps || start + T - released_to >= kIdsReadBeforeRelease) {
            release_read(ids, layout.first_stream, B, layout.stream_length, released_to, start + T);
            released_to = start + T;
        }
    }
}

int evaluation_stream_count(TokenSpan ids, int batch_size) {
    return static_cast<int>(evaluation_layout(ids, 1, batch_size, {}).streams);
}

std::size_t evaluation_pair_count(TokenSpan ids, int batch_size, const EvaluationSelection& selection) {
    const EvaluationLayout layout = evaluation_layout(ids, 1, batch_size, selection);
    std::size_t count = 0;
    for (std::size_t b = layout.first_stream; b < layout.first_stream + layout.stream_count; ++b) {
        const std::size_t begin = b * layout.stream_length;
        if (begin < layout.pairs) count += std::min(layout.steps, layout.pairs - begin);
    }
    return count;
}

}  // namespace charlm
