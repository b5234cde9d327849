// Dropout's masks, drawn by a counter-based generator: element i of a mask is a hash of (key, i), so
// that the threads draw their parts in any order and a mask does not depend on how many there are.
// One key per window comes from the run's generator (which checkpoints keep), and a mask's elements
// from it: a mask costs a few multiplications per element, in parallel, where drawing each element
// from std::mt19937_64 in turn cost about 5% of a 3x512 step.
#pragma once

#include <cstdint>

#include "charlm/tensor.hpp"

namespace charlm {

// SplitMix64's finalizer (Steele, Lea and Flood 2014): a bijection of 64-bit words whose outputs for
// consecutive inputs pass BigCrush. mix(key + i * golden) is the i-th output of SplitMix64 seeded by key.
constexpr std::uint64_t mix64(std::uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// The key of one of a window's masks (of a layer, of a kind), from the window's key.
constexpr std::uint64_t mask_key(std::uint64_t window_key, std::uint64_t mask) {
    return mix64(window_key ^ mix64(mask + 0x9e3779b97f4a7c15ull));
}

// Which stream of the whole batch each row of a mask belongs to: the rows are step-major, `streams` of this
// process's a step, and its first is stream `first_stream` of the batch (mpirun -np N: each process holds a
// block of the streams). With it, an element is keyed by (step, stream of the batch, unit), so that a mask's
// rows are the same whichever process draws them; without it (streams 0), by its place in this mask alone.
struct MaskRows {
    Eigen::Index streams = 0;
    std::uint64_t first_stream = 0;
};

// Inverted dropout's mask at `rate`: each element 1/(1 - rate) with probability 1 - rate, else 0, so
// that what survives keeps its expected value and evaluation needs no change.
template <typename Scalar>
void draw_dropout_mask(Matrix<Scalar>& mask, Eigen::Index rows, Eigen::Index cols, double rate, std::uint64_t key,
                       MaskRows rows_are = {});

// out = in ⊙ mask, where the mask's rows repeat down `in` (a window's rows are step-major: a mask of B
// rows, one per stream, is shared by every step, Gal and Ghahramani's "locked" dropout).
template <typename Scalar>
void apply_dropout_mask(const Matrix<Scalar>& in, const Matrix<Scalar>& mask, Matrix<Scalar>& out);

// values ⊙= mask, repeated down as above: a gradient through the mask.
template <typename Scalar>
void apply_dropout_mask_in_place(Matrix<Scalar>& values, const Matrix<Scalar>& mask);

}  // namespace charlm
