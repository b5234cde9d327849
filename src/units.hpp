// Private to the cells: the time loops' elementwise passes over a row's hidden units, in chunks.
#pragma once

#include <type_traits>

#include <Eigen/Core>

namespace charlm {

// Fewer batch rows than this per thread and the packed product stops paying for a second thread. It
// also keeps every share at 4 rows or more, where a row's arithmetic does not depend on its share.
constexpr Eigen::Index kMinRowsPerThread = 8;

// The elementwise passes take the units in chunks of this many: one AVX-512 register of floats.
// Chunks of a fixed size compile to a few SIMD registers each, so that a pass computing several
// values per unit sends nothing back to memory between its operations.
constexpr int kChunkUnits = 16;

// A chunk of units: Size is kChunkUnits, or Eigen::Dynamic for the last few (on the stack all the same).
template <typename Scalar, int Size>
using Chunk = Eigen::Array<Scalar, Size, 1, Eigen::ColMajor, kChunkUnits, 1>;

// body(size, unit, count) over a row's H units in chunks: size is a std::integral_constant holding
// kChunkUnits, or Eigen::Dynamic for the last few.
template <typename Body>
void for_each_chunk(Eigen::Index H, const Body& body) {
    Eigen::Index unit = 0;
    for (; unit + kChunkUnits <= H; unit += kChunkUnits) body(std::integral_constant<int, kChunkUnits>{}, unit, Eigen::Index{kChunkUnits});
    if (unit < H) body(std::integral_constant<int, Eigen::Dynamic>{}, unit, H - unit);
}

// The chunk of `count` units at `unit` of a row, writable or read-only.
template <typename Scalar, int Size>
Eigen::Map<Chunk<Scalar, Size>> units_of(Scalar* row, Eigen::Index unit, Eigen::Index count) {
    return Eigen::Map<Chunk<Scalar, Size>>(row + unit, count);
}
template <typename Scalar, int Size>
Eigen::Map<const Chunk<Scalar, Size>> units_of(const Scalar* row, Eigen::Index unit, Eigen::Index count) {
    return Eigen::Map<const Chunk<Scalar, Size>>(row + unit, count);
}

}  // namespace charlm
