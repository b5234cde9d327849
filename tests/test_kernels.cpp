// Checks kernels.cpp: which level of the kernels runs, and CHARLM_KERNELS's refusals. The levels' own
// arithmetic is checked by the engine's tests, run once per level with CHARLM_KERNELS (test_kernel_level.sh).
#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "charlm/error.hpp"
#include "charlm/precision.hpp"
#include "nn/kernels.hpp"

namespace charlm {
namespace {

std::string refusal_of(const char* requested, const std::vector<std::string>& cpu_runs) {
    try {
        choose_kernel_level(requested, cpu_runs);
    } catch (const UsageError& error) {
        return error.what();
    }
    return "";
}

TEST(Kernels, TheBestLevelTheCpuRunsIsTakenUnlessOneIsAsked) {
    const std::vector<std::string> built = kernel_levels_built();
    ASSERT_FALSE(built.empty());
    EXPECT_EQ(choose_kernel_level(nullptr, built), built.back());
    EXPECT_EQ(choose_kernel_level("", built), built.back());
    EXPECT_EQ(choose_kernel_level(built.front().c_str(), built), built.front());
}

TEST(Kernels, ALevelTheCpuLacksIsRefusedWithWhatItRuns) {
    const std::vector<std::string> built = kernel_levels_built();
    if (built.size() < 2) GTEST_SKIP() << "this build has one level of kernels (" << built.front() << "): no level to lack";
    // A CPU that runs only the least level: every other is refused, in one line that says what it runs.
    const std::vector<std::string> least = {built.front()};
    for (std::size_t level = 1; level < built.size(); ++level) {
        const std::string refusal = refusal_of(built[level].c_str(), least);
        EXPECT_EQ(refusal, "CHARLM_KERNELS=" + built[level] + " asks for instructions this CPU lacks (it runs " + built.front() +
                               "); unset it to take the best it runs");
    }
}

TEST(Kernels, AnUnknownLevelIsRefusedWithTheLevelsThereAre) {
    const std::string refusal = refusal_of("avx3", kernel_levels_built());
    EXPECT_NE(refusal.find("CHARLM_KERNELS=avx3 is not one of "), std::string::npos) << refusal;
    for (const std::string& level : kernel_levels_built()) EXPECT_NE(refusal.find(level), std::string::npos) << refusal;
    EXPECT_EQ(refusal.find('\n'), std::string::npos) << "one line";
}

// What test_kernel_level.sh runs first, with CHARLM_KERNELS set to the level it checks: the level asked for is
// the one in use (or, where the CPU lacks it, refused, and the rest of that level's run is skipped).
TEST(Kernels, TheLevelInUseIsTheOneAskedOrTheBest) {
    const std::vector<std::string> runs = kernel_levels_this_cpu_runs();
    ASSERT_FALSE(runs.empty());
    const char* requested = std::getenv("CHARLM_KERNELS");
    if (requested && *requested) {
        if (std::find(runs.begin(), runs.end(), requested) == runs.end()) {
            EXPECT_THROW(kernels(), UsageError);
            EXPECT_THROW(kernels(), UsageError) << "refused again on every call";
            GTEST_SKIP() << "this CPU lacks the " << requested << " kernels, and CHARLM_KERNELS=" << requested << " is refused";
        }
        EXPECT_EQ(std::string(kernels().name), requested);
    } else {
        EXPECT_EQ(std::string(kernels().name), runs.back());
    }
    // The bf16 products take the instructions at the avx512bf16 level alone.
    EXPECT_EQ(kernels().bf16_instructions, std::string(kernels().name) == "avx512bf16");
    EXPECT_EQ(cpu_runs_bf16(), kernels().bf16_instructions);
    EXPECT_GT(kernels().float_kernels.panel_width, 0);
    EXPECT_EQ(kernels().float_kernels.panel_width, 2 * kernels().double_kernels.panel_width) << "the same registers, half the doubles";
}

}  // namespace
}  // namespace charlm
