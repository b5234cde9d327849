// How the engine hands a cell its work: one chunk of units of one row of one step at a time, each
// array of the row seen through a view of that chunk (Units), so that a cell's code is its equations.
//
// Compiled into each level's kernels (kernel_level.cpp, kernels.hpp): everything here lives in an inline
// namespace named after the level (CHARLM_KERNEL_NAMESPACE), so that the AVX-512 build of these inline
// functions is never the one the linker keeps for the baseline's callers.
#pragma once

#include <type_traits>

#include <Eigen/Core>

#include "kernels.hpp"

#ifndef CHARLM_KERNEL_NAMESPACE
#define CHARLM_KERNEL_NAMESPACE kernels_baseline
#endif

namespace charlm {
inline namespace CHARLM_KERNEL_NAMESPACE {

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

// The chunk of units `unit` .. `unit + count - 1` of a row's arrays, as a cell sees them: each accessor
// is an Eigen map of that chunk of one array (of gate k's part of it), writable where the array is.
// A trap for a new cell: `(u.h() > 0).select(x, 0)` gave wrong values in full chunks (Eigen 3.4, GCC
// 12, AVX-512) while the last, shorter chunk was right; `x * (u.h() > 0).template cast<Scalar>()` is
// right in both. The engine's tests (bits across splits, finite differences at full chunks) catch it.
template <typename Scalar, int Size>
struct Units {
    using Values = Chunk<Scalar, Size>;

    const RowArrays<Scalar>& row;
    Eigen::Index unit, count;

    auto gate(int k) const { return of(row.gates + k * row.hidden_size); }
    auto hidden_gate(int k) const { return of(row.hidden_gates + k * row.hidden_size); }
    auto bias_of(int k) const { return of(row.bias + k * row.hidden_size); }
    auto bias_ih_of(int k) const { return of(row.bias_ih + k * row.hidden_size); }
    auto bias_hh_of(int k) const { return of(row.bias_hh + k * row.hidden_size); }
    auto h() const { return of(row.hidden); }
    auto h_prev() const { return of(row.hidden_prev); }
    auto c() const { return of(row.cell); }
    auto c_prev() const { return of(row.cell_prev); }
    auto dh_output() const { return of(row.d_output); }
    auto dh_next() const { return of(row.d_hidden_next); }
    auto dc() const { return of(row.d_cell); }

private:
    Eigen::Map<Chunk<Scalar, Size>> of(Scalar* array) const { return Eigen::Map<Chunk<Scalar, Size>>(array + unit, count); }
    Eigen::Map<const Chunk<Scalar, Size>> of(const Scalar* array) const {
        return Eigen::Map<const Chunk<Scalar, Size>>(array + unit, count);
    }
};

// cell_step(units) for each chunk of a row's units.
template <typename Scalar, typename CellStep>
void for_each_chunk_of(const RowArrays<Scalar>& row, const CellStep& cell_step) {
    for_each_chunk(row.hidden_size, [&](auto size, Eigen::Index unit, Eigen::Index count) {
        cell_step(Units<Scalar, decltype(size)::value>{row, unit, count});
    });
}

}  // inline namespace CHARLM_KERNEL_NAMESPACE
}  // namespace charlm
