// Checks optim.cpp: Adam's first steps by hand, global-norm clipping, the learning-rate schedule and
// dynamic evaluation's update.
#include <cmath>

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
