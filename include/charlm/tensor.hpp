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

}  // namespace charlm
