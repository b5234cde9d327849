// Text shown to a person: characters escaped by their Unicode category, durations and counts as people read them.
#include "charlm/display.hpp"

#include <algorithm>
#include <cstdint>
#include <iterator>

#include <fmt/format.h>
#include <utf8.h>

#include "charlm/utf8.hpp"

namespace charlm {

namespace {

struct CodePointRange {
    char32_t first, last;
};

// Combining marks, format characters, separators, spaces but U+0020, controls, surrogates and
// private use, in ascending order: see scripts/unicode_invisible.py.
constexpr CodePointRange kInvisible[] = {
#include "unicode_invisible.inc"
};

bool invisible(char32_t character) {
    const auto* after = std::upper_bound(std::begin(kInvisible), std::end(kInvisible), character,
                                         [](char32_t value, const CodePointRange& range) { return value < range.first; });
    return after != std::begin(kInvisible) && character <= std::prev(after)->last;
}

}  // namespace

std::string displayable(char32_t character) {
    switch (character) {
        case U'\n': return "\\n";
        case U'\t': return "\\t";
        case U'\r': return "\\r";
        case U'\0': return "\\0";
        case U'\\': return "\\\\";
        default: break;
    }
    if (character > 0x10FFFF || invisible(character)) return fmt::format("U+{:04X}", static_cast<std::uint32_t>(character));
    return encode_utf8(character);
}

std::string displayable(std::string_view utf8_text) {
    std::string shown;
    auto position = utf8_text.begin();
    while (position != utf8_text.end()) {
        const auto start = position;
        try {
            shown += displayable(static_cast<char32_t>(utf8::next(position, utf8_text.end())));
        } catch (const utf8::exception&) {
            shown += fmt::format("\\x{:02X}", static_cast<unsigned char>(*start));
            position = start + 1;
        }
    }
    return shown;
}

std::string describe_code_point(char32_t code_point) {
    const std::string shown = displayable(code_point);
    if (shown.starts_with("U+")) return shown;  // a control or an invisible mark: its number says it all
    return fmt::format("'{}' (U+{:04X})", shown, static_cast<std::uint32_t>(code_point));
}

std::string format_duration(double seconds) {
    const auto total = static_cast<long long>(seconds + 0.5);
    if (total >= 3600) return fmt::format("{}h{:02}m", total / 3600, total % 3600 / 60);
    if (total >= 60) return fmt::format("{}m{:02}s", total / 60, total % 60);
    return fmt::format("{}s", total);
}

std::string format_count(std::size_t count) {
    double value = static_cast<double>(count);
    const char* unit = "";
    for (const char* larger : {"k", "M", "G", "T"}) {
        if (value < 999.5) break;  // 999.7 would round to "1e+03"
        value /= 1000;
        unit = larger;
    }
    return fmt::format("{:.3g}{}", value, unit);
}

}  // namespace charlm
