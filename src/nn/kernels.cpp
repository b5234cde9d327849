// The choice of kernels at run time (kernels.hpp): the levels this build has, those this CPU runs, and CHARLM_KERNELS.
#include "kernels.hpp"

#include <algorithm>
#include <cstdlib>
#include <string_view>

#include <fmt/format.h>
#include <fmt/ranges.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "charlm/error.hpp"
#include "charlm/precision.hpp"

namespace charlm {

// Each level's kernels, compiled from kernel_level.cpp with its flags (CMakeLists.txt).
#if defined(__x86_64__)
namespace kernels_sse2 { extern const KernelSet kernel_set; }
namespace kernels_avx2 { extern const KernelSet kernel_set; }
namespace kernels_avx512 { extern const KernelSet kernel_set; }
#else
namespace kernels_generic { extern const KernelSet kernel_set; }
#endif

namespace {

struct Level {
    KernelSet kernels;
    bool (*cpu_runs)();
};

#if defined(__x86_64__)
// AVX-512's registers need the operating system's support, which __builtin_cpu_supports checks.
bool cpu_runs_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }
bool cpu_runs_avx512() {
    return cpu_runs_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512cd");
}
// AVX512_BF16 is leaf 7, subleaf 1, EAX bit 5. CHARLM_BF16=0 or emulate answers as a CPU without it would.
bool cpu_runs_avx512bf16() {
    if (bf16_setting() != Bf16Setting::instructions) return false;
    if (!cpu_runs_avx512()) return false;
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx)) return false;
    return (eax >> 5) & 1u;
}
KernelSet with_bf16_instructions(KernelSet kernels) {
    kernels.name = "avx512bf16";
    kernels.bf16_instructions = true;
    return kernels;
}
#endif

// From the least to the best.
const std::vector<Level>& levels() {
    static const std::vector<Level> all = {
#if defined(__x86_64__)
        {kernels_sse2::kernel_set, [] { return true; }},  // every x86-64 has SSE2
        {kernels_avx2::kernel_set, cpu_runs_avx2},
        {kernels_avx512::kernel_set, cpu_runs_avx512},
        {with_bf16_instructions(kernels_avx512::kernel_set), cpu_runs_avx512bf16},
#else
        {kernels_generic::kernel_set, [] { return true; }},
#endif
    };
    return all;
}

}  // namespace

std::vector<std::string> kernel_levels_built() {
    std::vector<std::string> names;
    for (const Level& level : levels()) names.emplace_back(level.kernels.name);
    return names;
}

std::vector<std::string> kernel_levels_this_cpu_runs() {
    std::vector<std::string> names;
    for (const Level& level : levels())
        if (level.cpu_runs()) names.emplace_back(level.kernels.name);
    return names;
}

std::string choose_kernel_level(const char* requested, const std::vector<std::string>& levels_the_cpu_runs) {
    if (requested == nullptr || *requested == '\0') {
        if (levels_the_cpu_runs.empty()) throw Error("this CPU runs none of the kernels this charlm was built with");
        return levels_the_cpu_runs.back();
    }
    const std::vector<std::string> built = kernel_levels_built();
    if (std::find(built.begin(), built.end(), requested) == built.end())
        throw UsageError(fmt::format("CHARLM_KERNELS={} is not one of {}; unset it to take the best this CPU runs", requested,
                                     fmt::join(built, ", ")));
    if (std::find(levels_the_cpu_runs.begin(), levels_the_cpu_runs.end(), requested) == levels_the_cpu_runs.end())
        throw UsageError(fmt::format("CHARLM_KERNELS={} asks for instructions this CPU lacks (it runs {}); unset it to take the best it runs",
                                     requested, fmt::join(levels_the_cpu_runs, ", ")));
    return requested;
}

Bf16Setting bf16_setting() {
    const char* setting = std::getenv("CHARLM_BF16");
    if (setting == nullptr || *setting == '\0') return Bf16Setting::instructions;
    if (std::string_view(setting) == "0") return Bf16Setting::none;
    if (std::string_view(setting) == "emulate") return Bf16Setting::emulate;
    throw UsageError(fmt::format("CHARLM_BF16={} is not 0 (answer as a CPU without AVX512_BF16) or emulate (run --precision bf16 "
                                 "on the products' emulation); unset it to use this CPU's instructions",
                                 setting));
}

const KernelSet& kernels() {
    // Chosen once; a refusal is thrown again on every call, so that no caller goes on without kernels.
    static const Level* chosen = nullptr;
    static const std::string refusal = [] {
        try {
            bf16_setting();  // refused, where it names neither, before the levels are asked
            const std::string name = choose_kernel_level(std::getenv("CHARLM_KERNELS"), kernel_levels_this_cpu_runs());
            for (const Level& level : levels())
                if (name == level.kernels.name) chosen = &level;
            return std::string();
        } catch (const UsageError& error) {
            return std::string(error.what());
        }
    }();
    if (chosen == nullptr) throw UsageError(refusal);
    return chosen->kernels;
}

std::string kernels_in_use() { return kernels().name; }

namespace {
std::string bf16_note() {
    switch (bf16_setting()) {
        case Bf16Setting::none: return "; CHARLM_BF16=0 answers as a CPU without AVX512_BF16";
        case Bf16Setting::emulate: return "; bf16 products on their emulation, as CHARLM_BF16=emulate asks";
        default: return "";
    }
}
}  // namespace

std::string kernels_in_use_and_why() {
    const std::string name = kernels_in_use();
    const std::vector<std::string> runs = kernel_levels_this_cpu_runs();
    if (const char* requested = std::getenv("CHARLM_KERNELS"); requested && *requested)
        return fmt::format("{}, as CHARLM_KERNELS asks (this CPU runs {}){}", name, fmt::join(runs, ", "), bf16_note());
    return fmt::format("{}, the best this CPU runs (of {}){}", name, fmt::join(kernel_levels_built(), ", "), bf16_note());
}

}  // namespace charlm
