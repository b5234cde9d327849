// The array types every module shares: row-major Eigen matrices and named parameters with gradients.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <Eigen/Core>

namespace charlm {

// A batch of B rows is a B x features block; row-major so that a time step's rows are contiguous.
template <typename Scalar>
using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename Scalar>
using RowVector = Eigen::Matrix<Scalar, 1, Eigen::Dynamic>;

// A trainable tensor. Vectors are 1 x N matrices whose shape has one dimension.
template <typename Scalar>
struct Parameter {
    std::string name;               // PyTorch's name, e.g. "rnn.weight_ih_l0"
    std::vector<std::int64_t> shape;
    Matrix<Scalar> value;
    Matrix<Scalar> gradient;
};

// One recurrent layer's weights in PyTorch's layout, G gates of H units each (LSTM: G = 4).
template <typename Scalar>
struct CellWeights {
    const Matrix<Scalar>& weight_ih;  // G*H x I
    const Matrix<Scalar>& weight_hh;  // G*H x H
    const Matrix<Scalar>& bias_ih;    // 1 x G*H
    const Matrix<Scalar>& bias_hh;    // 1 x G*H
    // Changes whenever the weights may have: a cell keeps what it derives from them (packed copies) for
    // as long as it stays the same. 0 means unknown, derive afresh.
    std::uint64_t version = 0;
};

template <typename Scalar>
struct CellGradients {
    Matrix<Scalar>& weight_ih;
    Matrix<Scalar>& weight_hh;
    Matrix<Scalar>& bias_ih;
    Matrix<Scalar>& bias_hh;
};

}  // namespace charlm
