// Colour or not for the log, and characters escaped for display by their Unicode category.
#include "charlm/terminal.hpp"

#include <algorithm>
#include <iterator>

#include <fmt/format.h>
#include <utf8.h>

#include "charlm/text.hpp"

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

spdlog::color_mode log_color_mode(const char* no_color, bool stderr_is_terminal) {
    if (no_color != nullptr && no_color[0] != '\0') return spdlog::color_mode::never;
    return stderr_is_terminal ? spdlog::color_mode::automatic : spdlog::color_mode::never;
}

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

}  // namespace charlm
