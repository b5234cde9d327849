// Text shown to a person: characters escaped so that they can be read, durations and counts as people read them.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace charlm {

// One character as it can be read in a list such as a vocabulary: itself where it prints as a mark of
// its own; \n, \t, \r, \0 and \\ (a backslash, so that "\n" is never ambiguous) as escapes; and
// U+XXXX for every other control, format character (such as a bidirectional override), combining mark
// (such as U+0301, which would fuse with its neighbour), space other than U+0020, separator,
// surrogate or private-use character.
std::string displayable(char32_t character);
// The same for every character of a UTF-8 text (a path, an option); a byte that is not UTF-8 as \xFF.
std::string displayable(std::string_view utf8_text);

// A printable description of a code point for error messages: 'x' (U+0078), '\n' (U+000A), or just U+0301 for a
// control or invisible mark (see displayable()).
std::string describe_code_point(char32_t code_point);

// A time as a person reads it: 42s, 3m07s, 2h05m.
std::string format_duration(double seconds);
// A count as a person reads it, to three digits: 950, 320k, 5.5M, 1.23G.
std::string format_count(std::size_t count);

}  // namespace charlm
