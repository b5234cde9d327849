// Cuts a token sequence into T x B windows: B parallel streams, each read left to right, T steps at a time.
#pragma once

#include <cstddef>
#include <functional>
#include <span>
#include <vector>

#include "charlm/tokens.hpp"

namespace charlm {

// Token ids for one window, step-major: index t * batch_size + b is stream b at step t.
// A target of kIgnoreTarget marks padding that the loss skips.
inline constexpr TokenId kIgnoreTarget = -1;

struct Batch {
    int seq_length = 0;
    int batch_size = 0;
    std::vector<TokenId> inputs;
    std::vector<TokenId> targets;
    bool starts_streams = false;  // first window of a pass: the carried state must be reset
};

// The streams one process owns when several share a batch (data parallelism): [first, first + count).
struct StreamBlock {
    int first = 0;
    int count = 0;
};
// Process `rank` of `processes`' block of `batch_size` streams: contiguous, in rank order, sizes
// differing by at most one. Throws UsageError where there are more processes than streams.
StreamBlock stream_block(int batch_size, int rank, int processes);

// Training windows. Stream b owns a contiguous slice of the text; each window continues where
// the last one ended, so the hidden state carries over. After the last full window, all streams
// start again from the beginning of their slices. Of mapped ids (MappedIds), the pages every stream has
// read past are let go a stretch at a time, so that memory holds the windows in use, not the corpus.
class BatchStream {
public:
    BatchStream(TokenSpan ids, int seq_length, int batch_size);
    // Only the streams of `block` (batches of block.count rows), laid out as the whole batch's are:
    // together, the blocks of all processes read exactly the windows of the whole batch.
    BatchStream(TokenSpan ids, int seq_length, int batch_size, StreamBlock block);

    void next(Batch& batch);
    std::size_t windows_per_pass() const { return windows_per_pass_; }
    std::size_t position() const { return position_; }  // index of the next window in the pass
    void set_position(std::size_t position);

private:
    TokenSpan ids_;
    int seq_length_;
    int batch_size_;
    StreamBlock block_;
    std::size_t stream_length_;
    std::size_t windows_per_pass_;
    std::size_t position_ = 0;
    std::size_t released_to_ = 0;  // of each stream's slice, the part whose pages were let go
};

// Which part of an evaluation pass to make. The layout of the streams never changes with it, so that
// figures from different selections of the same text add up, or compare.
struct EvaluationSelection {
    // Each stream is read only for its first ceil(max_characters / B) steps: B stretches spread evenly
    // over the text, the same ones every time. 0, or at least the text's length: every pair.
    std::size_t max_characters = 0;
    // Only streams first_stream .. first_stream + stream_count - 1 of the B (the batch then has
    // stream_count rows): a block of them for one process of a data-parallel evaluation, whose blocks'
    // loss sums add up to the whole pass's. -1: every stream from first_stream on.
    int first_stream = 0;
    int stream_count = -1;
};

// Covers every (input, target) pair of `ids` exactly once, for evaluation: B streams of equal
// length (the last padded with ignored targets), cut into windows of up to T steps, made one at a
// time and handed to `visit`. `selection` narrows that to part of the pairs, as it says. Throws
// Error for a block of streams outside the B. Of mapped ids, the pages read are let go as it goes, as
// BatchStream does.
void for_each_evaluation_window(TokenSpan ids, int seq_length, int batch_size, const std::function<void(const Batch&)>& visit,
                                const EvaluationSelection& selection = {});
// The B of an evaluation pass over `ids`: batch_size, or fewer for a text of fewer pairs.
int evaluation_stream_count(TokenSpan ids, int batch_size);
// The pairs that pass scores (targets that are not padding), counted without making the windows.
std::size_t evaluation_pair_count(TokenSpan ids, int batch_size, const EvaluationSelection& selection = {});

}  // namespace charlm
