// Adam (Kingma and Ba, with PyTorch's bias correction) and global-norm clipping.
#include "charlm/optim.hpp"

#include <cmath>

namespace charlm {

double clip_gradient_norm(std::vector<Parameter<float>>& parameters, double max_norm) {
    double squared = 0;
    for (const auto& parameter : parameters) squared += parameter.gradient.template cast<double>().squaredNorm();
    const double norm = std::sqrt(squared);
    if (max_norm > 0 && norm > max_norm) {
        const float scale = static_cast<float>(max_norm / (norm + 1e-6));
        for (auto& parameter : parameters) parameter.gradient *= scale;
    }
    return norm;
}

Adam::Adam(const std::vector<Parameter<float>>& parameters, AdamConfig config) : config_(config) {
    for (const auto& parameter : parameters) {
        first_moments_.push_back(Matrix<float>::Zero(parameter.value.rows(), parameter.value.cols()));
        second_moments_.push_back(Matrix<float>::Zero(parameter.value.rows(), parameter.value.cols()));
    }
}

void Adam::step(std::vector<Parameter<float>>& parameters, double learning_rate) {
    ++step_count_;
    const auto beta1 = static_cast<float>(config_.beta1), beta2 = static_cast<float>(config_.beta2);
    const double correction1 = 1 - std::pow(config_.beta1, static_cast<double>(step_count_));
    const double correction2 = 1 - std::pow(config_.beta2, static_cast<double>(step_count_));
    const auto step_size = static_cast<float>(learning_rate / correction1);
    const auto root_correction2 = static_cast<float>(std::sqrt(correction2));
    const auto epsilon = static_cast<float>(config_.epsilon);
    for (std::size_t i = 0; i < parameters.size(); ++i) {
        auto gradient = parameters[i].gradient.array();
        auto first = first_moments_[i].array();
        auto second = second_moments_[i].array();
        first = beta1 * first + (1 - beta1) * gradient;
        second = beta2 * second + (1 - beta2) * gradient.square();
        parameters[i].value.array() -= step_size * first / (second.sqrt() / root_correction2 + epsilon);
    }
}

}  // namespace charlm
