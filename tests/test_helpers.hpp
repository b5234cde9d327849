// Shared test helpers: temporary directories and finite-difference gradient checks.
#pragma once

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <omp.h>

#include "charlm/precision.hpp"
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

// For the charlm processes a test starts at --precision bf16: where this CPU lacks AVX512_BF16, CHARLM_BF16=emulate,
// so that they run the bf16 products on their emulation (the same roundings, slower) and the bf16 promises are
// checked on every machine; where it has them, nothing, and the instructions are what is checked.
class Bf16ForChildProcesses {
public:
    Bf16ForChildProcesses() {
        if (!charlm::cpu_runs_bf16()) emulation_.emplace("CHARLM_BF16", "emulate");
    }

private:
    std::optional<ScopedEnvironment> emulation_;
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

// The bytes of `path`'s mappings that are in this process's resident memory, from /proc/self/smaps; -1
// where the file is not mapped.
inline long resident_bytes_of_mapping(const std::filesystem::path& path) {
    std::string suffix(" ");
    suffix += path.string();  // a mapping's first line ends with its file
    std::ifstream smaps("/proc/self/smaps");
    long resident_kilobytes = -1;
    bool in_mapping = false;
    for (std::string line; std::getline(smaps, line);) {
        if (line.find('-') < line.find(' ')) {  // "start-end perms offset device inode path"
            in_mapping = line.ends_with(suffix);
            if (in_mapping) resident_kilobytes = std::max(resident_kilobytes, 0L);
        } else if (in_mapping && line.starts_with("Rss:")) {
            resident_kilobytes += std::stol(line.substr(4));
        }
    }
    return resident_kilobytes < 0 ? -1 : resident_kilobytes * 1024;
}

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
// (or about `max_checks` of them, spread evenly), in double precision.
inline void expect_gradient_matches(const std::string& name, Matrix<double>& value, const Matrix<double>& analytic,
                                    const std::function<double()>& loss, Eigen::Index max_checks = 400) {
    const double epsilon = 1e-6;
    Eigen::Index stride = std::max<Eigen::Index>(1, value.size() / max_checks);
    // The storage is row-major: a stride that shares no factor with the column count reaches every column,
    // where a stride of 16 over 40 columns saw only every eighth (and its rows as often as the others).
    while (stride > 1 && std::gcd(stride, value.cols()) != 1) {
        ++stride;
    }
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

}  // namespace charlm::testing
