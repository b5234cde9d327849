// Limits checked on a JSON text before nlohmann parses it: not a parser, and no opinion on what the JSON holds.
#pragma once

#include <string_view>

namespace charlm {

// Whether no array or object of `text` is nested more than `most` deep, counted without parsing
// (strings skipped). nlohmann::json parses recursively: a checkpoint header or a request body nested
// a million deep would exhaust the stack before it could be refused.
inline bool json_nesting_within(std::string_view text, int most) {
    int depth = 0;
    bool in_string = false, escaped = false;
    for (char c : text) {
        if (in_string) {
            if (escaped) escaped = false;
            else if (c == '\\') escaped = true;
            else if (c == '"') in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > most) return false;
        } else if (c == ']' || c == '}') {
            --depth;
        }
    }
    return true;
}

}  // namespace charlm
