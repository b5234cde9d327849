// Checks optim.cpp: Adam's first steps by hand and five steps against PyTorch, global-norm clipping, the
// learning-rate schedule and dynamic evaluation's update.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "charlm/error.hpp"
#include "charlm/optim.hpp"

namespace charlm {
namespace {

std::vector<Parameter<float>> two_parameters() {
    std::vector<Parameter<float>> parameters(2);
    parameters[0].value = Matrix<float>::Constant(1, 2, 1.0f);
    parameters[0].gradient.resize(1, 2);
    parameters[0].gradient << 3.0f, 0.0f;
    parameters[1].value = Matrix<float>::Constant(2, 1, -1.0f);
    parameters[1].gradient.resize(2, 1);
    parameters[1].gradient << 0.0f, 4.0f;
    return parameters;
}

TEST(Optim, ClippingScalesToTheGlobalNorm) {
    auto parameters = two_parameters();
    EXPECT_NEAR(clip_gradient_norm(parameters, 10.0), 5.0, 1e-6);  // below the bound: unchanged
    EXPECT_FLOAT_EQ(parameters[0].gradient(0, 0), 3.0f);
    EXPECT_NEAR(clip_gradient_norm(parameters, 1.0), 5.0, 1e-6);
    EXPECT_NEAR(parameters[0].gradient(0, 0), 0.6f, 1e-5);
    EXPECT_NEAR(parameters[1].gradient(1, 0), 0.8f, 1e-5);
    EXPECT_NEAR(clip_gradient_norm(parameters, 0.0), 1.0, 1e-5);  // 0 turns clipping off
}

TEST(Optim, AdamFirstStepMovesEachWeightByTheLearningRate) {
    auto parameters = two_parameters();
    Adam adam(parameters);
    ASSERT_TRUE(adam.step(parameters, 0.1));
    // After bias correction the first update is lr * g / (|g| + eps): -0.1 where g > 0, none where g = 0.
    EXPECT_NEAR(parameters[0].value(0, 0), 0.9f, 1e-6);
    EXPECT_NEAR(parameters[0].value(0, 1), 1.0f, 1e-6);
    EXPECT_NEAR(parameters[1].value(1, 0), -1.1f, 1e-6);
    EXPECT_EQ(adam.step_count(), 1);
    // Second step with the same gradient: m = g (corrected), v = g^2 (corrected), again lr.
    ASSERT_TRUE(adam.step(parameters, 0.1));
    EXPECT_NEAR(parameters[0].value(0, 0), 0.8f, 1e-5);
}

// Adam's betas, epsilon, bias corrections and learning rate per step, against PyTorch's own: five steps of
// gradients that change sign and size (a constant gradient moves every weight by lr x sign(g) whatever the
// betas), with betas and epsilon not the defaults. The values come from torch.optim.Adam in float64, made
// and printed by tests/interop/adam_reference.py; this float32 Adam agrees to a few parts in a million.
TEST(Optim, AdamFollowsPyTorchOverStepsOfVariedGradients) {
    // Made by tests/interop/adam_reference.py (torch 1.13.0a0)
    const std::vector<std::vector<float>> kStart = {{0.5, 0.25, 0, -0.25, -0.5, -0.75}, {0.5, 0.25, 0, -0.25}};
    const std::vector<double> kRates = {0.1, 0.05, 0.2, 0.1, 0.03};
    // [step][parameter]: the gradient of that step, then the values after it
    const std::vector<std::vector<std::vector<float>>> kGradients = {
        {{0, 0.991665, -2.555411, -0.925815, 4.941134, 0.079849}, {0.084147, 0.42738, -9.516021, -0.018216}},
        {{0.745705, -7.568025, -0.055069, 8.987081, 0.03191, -0.980936}, {-0.157746, -9.589243, 0.040485, 0.854599}},
        {{-9.93691, 0.001681, 0.989358, -0.027176, -0.919329, 5.086615}, {-6.312666, 0.085044, 0.412118, -9.56635}},
        {{0.057844, 0.734397, -7.676858, -0.536573, 9.059547, 0.030312}, {0.099894, -0.174327, -9.540192, 0.042017}},
        {{0.22289, -9.954363, 0.003362, 9.86772, -0.02879, -0.912582}, {-0.699875, -6.181371, 0.085916, 0.396741}},
    };
    const std::vector<std::vector<std::vector<double>>> kValues = {
        {{0.5, 0.150000101, 0.0999999609, -0.150000108, -0.59999998, -0.849998748}, {0.400001188, 0.150000234, 0.0999999895, -0.150005489}},
        {{0.461210517, 0.184443691, 0.132687378, -0.185414823, -0.632094073, -0.813848844}, {0.419729989, 0.1873715, 0.131668165, -0.188125309}},
        {{0.590989954, 0.285308584, 0.169125973, -0.288727908, -0.697748447, -0.930267751}, {0.559700963, 0.295580847, 0.218033693, -0.0598984383}},
        {{0.640805125, 0.317551595, 0.235485478, -0.324544149, -0.76738603, -0.975695168}, {0.612782305, 0.338680721, 0.288623303, -0.0105877566}},
        {{0.652250418, 0.337476546, 0.2513235, -0.344549453, -0.783959824, -0.982897169}, {0.627571637, 0.357967738, 0.305350367, 0.000351341248}},
    };
    const std::vector<std::vector<double>> kFirstMoments = {{-1.14173125, -2.56688248, -1.31596539, 2.72864812, 1.73414069, 0.379513624}, {-0.941273076, -2.2002084, -2.23190319, -1.0524032}};
    const std::vector<std::vector<double>> kSecondMoments = {{4.4822221, 7.47544287, 3.1096137, 8.37961813, 4.93110489, 1.25074198}, {1.82454041, 5.86161097, 8.01919509, 4.16889302}};
    const std::vector<std::pair<int, int>> shapes = {{2, 3}, {4, 1}};
    std::vector<Parameter<float>> parameters(shapes.size());
    const auto set = [&](Matrix<float>& matrix, std::size_t index, const std::vector<float>& flat) {
        matrix.resize(shapes[index].first, shapes[index].second);
        for (int r = 0; r < shapes[index].first; ++r)
            for (int c = 0; c < shapes[index].second; ++c) matrix(r, c) = flat[static_cast<std::size_t>(r * shapes[index].second + c)];
    };
    const auto expect_near = [&](const Matrix<float>& matrix, std::size_t index, const std::vector<double>& flat, const std::string& what) {
        for (int r = 0; r < shapes[index].first; ++r)
            for (int c = 0; c < shapes[index].second; ++c) {
                const double expected = flat[static_cast<std::size_t>(r * shapes[index].second + c)];
                EXPECT_NEAR(matrix(r, c), expected, 5e-6 * std::max(1.0, std::abs(expected))) << what << " of parameter " << index << " at (" << r << ", " << c << ")";
            }
    };
    for (std::size_t i = 0; i < parameters.size(); ++i) set(parameters[i].value, i, kStart[i]);
    Adam adam(parameters, AdamConfig{.beta1 = 0.8, .beta2 = 0.95, .epsilon = 1e-6});
    for (std::size_t step = 0; step < kRates.size(); ++step) {
        for (std::size_t i = 0; i < parameters.size(); ++i) set(parameters[i].gradient, i, kGradients[step][i]);
        ASSERT_TRUE(adam.step(parameters, kRates[step]));
        for (std::size_t i = 0; i < parameters.size(); ++i) expect_near(parameters[i].value, i, kValues[step][i], "step " + std::to_string(step + 1));
    }
    for (std::size_t i = 0; i < parameters.size(); ++i) {
        expect_near(adam.first_moments()[i], i, kFirstMoments[i], "first moment");
        expect_near(adam.second_moments()[i], i, kSecondMoments[i], "second moment");
    }
}

TEST(Optim, AdamSaysWhenAStepLeftAWeightOrMomentThatIsNotFinite) {
    auto parameters = two_parameters();
    Adam adam(parameters);
    EXPECT_FALSE(adam.step(parameters, 1e38));  // each weight moves by about the rate: past float's range
    auto overflowing = two_parameters();
    overflowing[0].gradient(0, 0) = 1e20f;  // its square overflows the second moment
    Adam second(overflowing);
    EXPECT_FALSE(second.step(overflowing, 1e-3));
    auto fine = two_parameters();
    Adam third(fine);
    EXPECT_TRUE(third.step(fine, 1e-3));
}

TEST(Optim, TheAverageOfTheParametersFollowsThemWithAWarmingDecay) {
    auto parameters = two_parameters();
    ParameterAverage average(parameters, 0.9);
    EXPECT_EQ(average.values()[0], parameters[0].value) << "it starts at the values";
    parameters[0].value.setConstant(3.0f);
    average.update(parameters, 1);  // decay min(0.9, 2/11): mostly the new value
    const float early = 2.0f / 11.0f;
    EXPECT_FLOAT_EQ(average.values()[0](0, 0), early * 1.0f + (1 - early) * 3.0f);
    const float before = average.values()[0](0, 0);
    average.update(parameters, 1000);  // the decay itself once warm
    EXPECT_FLOAT_EQ(average.values()[0](0, 0), 0.9f * before + 0.1f * 3.0f);
    EXPECT_FLOAT_EQ(average.values()[1](1, 0), -1.0f) << "an unchanged parameter stays";

    const Matrix<float> averaged = average.values()[0], current = parameters[0].value;
    average.swap_with(parameters);
    EXPECT_EQ(parameters[0].value, averaged);
    average.swap_with(parameters);
    EXPECT_EQ(parameters[0].value, current);
    EXPECT_EQ(average.values()[0], averaged);
}

TEST(Optim, AdaptationStepsByNormalisedGradientsThenDecaysTowardTheTrainedWeights) {
    const auto trained = two_parameters();
    auto parameters = two_parameters();
    parameters[0].value(0, 1) = 3.0f;  // 2 away from the trained 1
    WeightAdaptation adaptation(trained);
    ASSERT_TRUE(adaptation.step(parameters, 0.1, 0.25));
    // w0 + (1 - decay) (w - lr g / rms(g) - w0), where rms of one step is |g|: a step of lr against its sign.
    EXPECT_NEAR(parameters[0].value(0, 0), 1 + 0.75 * -0.1, 1e-6);
    EXPECT_NEAR(parameters[0].value(0, 1), 1 + 0.75 * 2, 1e-6) << "no gradient: only the decay moves it";
    EXPECT_FLOAT_EQ(parameters[1].value(0, 0), -1.0f) << "no gradient, no distance: it stays";
    EXPECT_NEAR(parameters[1].value(1, 0), -1 + 0.75 * -0.1, 1e-6);
    // The mean square is over every step so far: after gradients 3 and 1, (9 + 1) / 2.
    parameters[0].gradient(0, 0) = 1.0f;
    const float before = parameters[0].value(0, 0);
    ASSERT_TRUE(adaptation.step(parameters, 0.1, 0.0));
    EXPECT_NEAR(parameters[0].value(0, 0), before - 0.1 / std::sqrt(5.0), 1e-6);
    EXPECT_EQ(adaptation.step_count(), 2);
    // Decay 1 is the trained weights, exactly; learning rate 0 from the trained weights stays there, exactly.
    ASSERT_TRUE(adaptation.step(parameters, 0.1, 1.0));
    for (std::size_t i = 0; i < parameters.size(); ++i) EXPECT_TRUE(parameters[i].value == trained[i].value) << i;
    ASSERT_TRUE(adaptation.step(parameters, 0.0, 0.5));
    for (std::size_t i = 0; i < parameters.size(); ++i) EXPECT_TRUE(parameters[i].value == trained[i].value) << i;
    // A step past float's range is reported, as Adam's is.
    EXPECT_FALSE(adaptation.step(parameters, 1e39, 0.0));
    std::vector<Parameter<float>> none;
    EXPECT_THROW((void)adaptation.step(none, 0.1, 0.0), Error);
}

TEST(Optim, ScheduleWarmsUpThenDecays) {
    LearningRateSchedule schedule;
    schedule.peak_learning_rate = 1.0;
    schedule.warmup_steps = 10;
    EXPECT_DOUBLE_EQ(schedule.at(1, 0), 0.1);
    EXPECT_DOUBLE_EQ(schedule.at(10, 0), 1.0);
    EXPECT_DOUBLE_EQ(schedule.at(500, 0), 1.0);  // constant
    schedule.kind = LearningRateSchedule::Kind::cosine;
    EXPECT_DOUBLE_EQ(schedule.at(10, 110), 1.0);
    EXPECT_NEAR(schedule.at(60, 110), 0.55, 1e-12);  // halfway: midway between 1 and 0.1
    EXPECT_NEAR(schedule.at(110, 110), 0.1, 1e-12);
    EXPECT_NEAR(schedule.at(60, 210), 1 - 0.9 * 0.5 * (1 - std::cos(M_PI / 4)), 1e-12) << "a longer run decays later";
    schedule.kind = LearningRateSchedule::Kind::step;
    schedule.warmup_steps = 0;
    schedule.decay_every_steps = 100;
    EXPECT_DOUBLE_EQ(schedule.at(100, 0), 1.0);
    EXPECT_DOUBLE_EQ(schedule.at(101, 0), 0.5);
    EXPECT_DOUBLE_EQ(schedule.at(250, 0), 0.25);
}

TEST(Optim, ScheduleNamesRoundTripAndAnUnknownOneIsAUsageErrorListingThem) {
    for (const auto kind : {LearningRateSchedule::Kind::constant, LearningRateSchedule::Kind::cosine, LearningRateSchedule::Kind::step})
        EXPECT_EQ(LearningRateSchedule::parse(LearningRateSchedule::name(kind)), kind);
    try {
        LearningRateSchedule::parse("linear");
        ADD_FAILURE() << "linear was accepted";
    } catch (const UsageError& error) {
        EXPECT_STREQ(error.what(), "unknown learning-rate schedule 'linear'; use constant, cosine or step");
    }
}

}  // namespace
}  // namespace charlm
