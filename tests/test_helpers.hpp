// Shared test helpers: temporary directories and finite-difference gradient checks.
#pragma once

#include <filesystem>
#include <fstream>
#include <cstdlib>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <omp.h>

#include "charlm/tensor.hpp"

namespace charlm::testing {

// Sets an environment variable for one test and puts the old value back afterwards; the processes a
// test starts inherit it, and whatever the library looks up at each call (gnuplot on PATH, TMPDIR) sees it.
class ScopedEnvironment {
public:
    ScopedEnvironment(const char* name, const std::string& value) : name_(name) {
        if (const char* old = std::getenv(name)) old_ = old;
        ::setenv(name, value.c_str(), 1);
    }
    ~ScopedEnvironment() {
        if (old_) ::setenv(name_, old_->c_str(), 1);
        else ::unsetenv(name_);
    }
    ScopedEnvironment(const ScopedEnvironment&) = delete;
    ScopedEnvironment& operator=(const ScopedEnvironment&) = delete;

private:
    const char* name_;
    std::optional<std::string> old_;
};

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
    CellTestData(int gates, std::uint64_t seed, bool with_cell = false, int batch_rows = 3, int hidden_units = 6)
        : batch(batch_rows), hidden_size(hidden_units) {
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

using CellBackward = std::function<void(const CellGradients<double>&, Matrix<double>&)>;

// Runs `backward(gradients, d_input)` into zeroed gradients: weight_ih, weight_hh, bias_ih, bias_hh, input.
inline std::vector<Matrix<double>> cell_gradients(const CellTestData& data, const CellBackward& backward) {
    auto zeros = [](const Matrix<double>& like) { return Matrix<double>::Zero(like.rows(), like.cols()).eval(); };
    std::vector<Matrix<double>> gradients{zeros(data.weight_ih), zeros(data.weight_hh), zeros(data.bias_ih), zeros(data.bias_hh),
                                          Matrix<double>()};
    backward(CellGradients<double>{gradients[0], gradients[1], gradients[2], gradients[3]}, gradients[4]);
    return gradients;
}

inline const std::vector<std::string> kCellGradientNames{"weight_ih", "weight_hh", "bias_ih", "bias_hh", "input"};

// Runs `backward` with the projection as the output gradient (after `loss` has run the forward pass),
// then checks every weight's and the input's gradient against finite differences.
inline void expect_cell_gradients_match(CellTestData& data, const std::function<double()>& loss, const CellBackward& backward) {
    loss();
    const std::vector<Matrix<double>> gradients = cell_gradients(data, backward);
    std::vector<Matrix<double>*> values{&data.weight_ih, &data.weight_hh, &data.bias_ih, &data.bias_hh, &data.input};
    for (std::size_t i = 0; i < values.size(); ++i) expect_gradient_matches(kCellGradientNames[i], *values[i], gradients[i], loss);
}

// Runs the forward and backward passes at one thread and at two, which split the batch between them,
// and expects the same loss and gradients.
inline void expect_batch_split_changes_nothing(CellTestData& data, const std::function<double()>& loss,
                                               const CellBackward& backward) {
    auto pass = [&](int threads) {
        Threads scope(threads);
        const double value = loss();
        return std::pair{value, cell_gradients(data, backward)};
    };
    const auto [one_loss, one] = pass(1);
    const auto [two_loss, two] = pass(2);
    EXPECT_NEAR(two_loss, one_loss, 1e-12 * std::max(1.0, std::abs(one_loss)));
    for (std::size_t i = 0; i < one.size(); ++i) expect_near<double>(two[i], one[i], 1e-12, kCellGradientNames[i]);
}

}  // namespace charlm::testing
