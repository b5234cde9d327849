// Shared test helpers: temporary directories and finite-difference gradient checks.
#pragma once

#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>

#include <gtest/gtest.h>
#include <omp.h>

#include "charlm/tensor.hpp"

namespace charlm::testing {

// A fresh directory under the system's temporary folder, removed when the test ends.
class TemporaryDirectory {
public:
    TemporaryDirectory() {
        std::random_device device;
        path_ = std::filesystem::temp_directory_path() / ("charlm-test-" + std::to_string(device()) + std::to_string(device()));
        std::filesystem::create_directories(path_);
    }
    ~TemporaryDirectory() {
        std::error_code error;
        std::filesystem::remove_all(path_, error);
    }
    const std::filesystem::path& path() const { return path_; }
    std::filesystem::path write(const std::string& name, const std::string& bytes) const {
        auto file = path_ / name;
        std::ofstream(file, std::ios::binary) << bytes;
        return file;
    }

private:
    std::filesystem::path path_;
};

inline std::string read_bytes(const std::filesystem::path& path) {
    std::ifstream file(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
}

template <typename Scalar>
void fill_random(Matrix<Scalar>& matrix, std::mt19937_64& rng, double scale = 0.5) {
    std::uniform_real_distribution<double> uniform(-scale, scale);
    for (Eigen::Index i = 0; i < matrix.size(); ++i) matrix.data()[i] = static_cast<Scalar>(uniform(rng));
}

template <typename Scalar>
Matrix<Scalar> random_matrix(Eigen::Index rows, Eigen::Index cols, std::mt19937_64& rng) {
    Matrix<Scalar> matrix(rows, cols);
    fill_random(matrix, rng, 1.0);
    return matrix;
}

// Sets the thread count for one test and puts the previous one back.
class Threads {
public:
    explicit Threads(int count) : previous_(omp_get_max_threads()) { omp_set_num_threads(count); }
    ~Threads() { omp_set_num_threads(previous_); }

private:
    int previous_;
};

template <typename Scalar>
void expect_near(const Matrix<Scalar>& actual, const Matrix<Scalar>& expected, double tolerance, const std::string& what) {
    ASSERT_EQ(actual.rows(), expected.rows()) << what;
    ASSERT_EQ(actual.cols(), expected.cols()) << what;
    const double scale = std::max(1.0, static_cast<double>(expected.cwiseAbs().maxCoeff()));
    EXPECT_LE(static_cast<double>((actual - expected).cwiseAbs().maxCoeff()), tolerance * scale) << what;
}

// Compares `analytic` with central differences of `loss` in every element of `value`
// (or `max_checks` of them, spread evenly), in double precision.
inline void expect_gradient_matches(const std::string& name, Matrix<double>& value, const Matrix<double>& analytic,
                                    const std::function<double()>& loss, Eigen::Index max_checks = 400) {
    const double epsilon = 1e-6;
    const Eigen::Index stride = std::max<Eigen::Index>(1, value.size() / max_checks);
    double worst = 0;
    for (Eigen::Index i = 0; i < value.size(); i += stride) {
        const double saved = value.data()[i];
        value.data()[i] = saved + epsilon;
        const double plus = loss();
        value.data()[i] = saved - epsilon;
        const double minus = loss();
        value.data()[i] = saved;
        const double numeric = (plus - minus) / (2 * epsilon);
        const double error = std::abs(numeric - analytic.data()[i]) / std::max(1.0, std::abs(numeric) + std::abs(analytic.data()[i]));
        worst = std::max(worst, error);
        ASSERT_LT(error, 1e-6) << name << " element " << i << ": numeric " << numeric << ", analytic " << analytic.data()[i];
    }
    EXPECT_LT(worst, 1e-6) << name;
}

// One recurrent layer's inputs, weights (G gates of H units, PyTorch's layout) and a projection of its
// outputs to a scalar loss, in double: what each cell's gradient and carried-state tests start from.
struct CellTestData {
    int steps = 5, batch = 3, input_size = 4, hidden_size = 6;
    Matrix<double> input, weight_ih, weight_hh, bias_ih, bias_hh, initial_hidden, initial_cell, projection;

    // `with_cell`: an LSTM's initial cell state too.
    CellTestData(int gates, std::uint64_t seed, bool with_cell = false) {
        std::mt19937_64 rng(seed);
        const int G = gates * hidden_size;
        input.resize(steps * batch, input_size);
        weight_ih.resize(G, input_size);
        weight_hh.resize(G, hidden_size);
        bias_ih.resize(1, G);
        bias_hh.resize(1, G);
        initial_hidden.resize(batch, hidden_size);
        if (with_cell) initial_cell.resize(batch, hidden_size);
        projection.resize(steps * batch, hidden_size);
        for (auto* matrix : {&input, &weight_ih, &weight_hh, &bias_ih, &bias_hh, &initial_hidden, &initial_cell, &projection})
            if (matrix->size() > 0) fill_random(*matrix, rng, 0.8);
    }
    CellWeights<double> weights() const { return {weight_ih, weight_hh, bias_ih, bias_hh}; }
};

// Runs `backward(gradients, d_input)` with the projection as the output gradient (after `loss` has run
// the forward pass), then checks every weight's and the input's gradient against finite differences.
inline void expect_cell_gradients_match(
    CellTestData& data, const std::function<double()>& loss,
    const std::function<void(const CellGradients<double>&, Matrix<double>&)>& backward) {
    loss();
    Matrix<double> d_weight_ih = Matrix<double>::Zero(data.weight_ih.rows(), data.weight_ih.cols());
    Matrix<double> d_weight_hh = Matrix<double>::Zero(data.weight_hh.rows(), data.weight_hh.cols());
    Matrix<double> d_bias_ih = Matrix<double>::Zero(1, data.bias_ih.cols());
    Matrix<double> d_bias_hh = Matrix<double>::Zero(1, data.bias_hh.cols());
    Matrix<double> d_input;
    backward(CellGradients<double>{d_weight_ih, d_weight_hh, d_bias_ih, d_bias_hh}, d_input);
    expect_gradient_matches("weight_ih", data.weight_ih, d_weight_ih, loss);
    expect_gradient_matches("weight_hh", data.weight_hh, d_weight_hh, loss);
    expect_gradient_matches("bias_ih", data.bias_ih, d_bias_ih, loss);
    expect_gradient_matches("bias_hh", data.bias_hh, d_bias_hh, loss);
    expect_gradient_matches("input", data.input, d_input, loss);
}

}  // namespace charlm::testing
