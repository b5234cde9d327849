// Cuts a token sequence into T x B windows: B parallel streams, each read left to right, T steps at a time.
#pragma once

#include <cstddef>
#include <functional>
#include <span>
#include <vector>

#include "charlm/text.hpp"

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

// Training windows. Stream b owns a contiguous slice of the text; each window continues where
// the last one ended, so the hidden state carries over. After the last full window, all streams
// start again from the beginning of their slices. Of mapped ids (MappedIds), the pages every stream has
// read past are let go a stretch at a time, so that memory holds the windows in use, not the corpus.
class BatchStream {
public:
    BatchStream(TokenSpan ids, int seq_length, int batch_size);

    void next(Batch& batch);
    std::size_t windows_per_pass() const { return windows_per_pass_; }
    std::size_t position() const { return position_; }  // index of the next window in the pass
    void set_position(std::size_t position);

private:
    TokenSpan ids_;
    int seq_length_;
    int batch_size_;
    std::size_t stream_length_;
    std::size_t windows_per_pass_;
    std::size_t position_ = 0;
    std::size_t released_to_ = 0;  // of each stream's slice, the part whose pages were let go
};

// Covers every (input, target) pair of `ids` exactly once, for evaluation: B streams of equal
// length (the last padded with ignored targets), cut into windows of up to T steps, made one at a
// time and handed to `visit`. Of mapped ids, the pages read are let go as it goes, as BatchStream does.
void for_each_evaluation_window(TokenSpan ids, int seq_length, int batch_size, const std::function<void(const Batch&)>& visit);

}  // namespace charlm
