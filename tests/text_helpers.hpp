// Text code only tests and fuzzers use: a text's vocabulary in one call, ids as a vector. No GoogleTest, so fuzzers include it.
#pragma once

#include <algorithm>
#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "charlm/tokens.hpp"
#include "charlm/vocab.hpp"

namespace charlm::testing {

// The vocabulary of a text as training builds it from files: its distinct code points, sorted.
inline Vocab vocab_of_text(const std::u32string& text) {
    std::vector<char32_t> code_points(text.begin(), text.end());
    std::sort(code_points.begin(), code_points.end());
    code_points.erase(std::unique(code_points.begin(), code_points.end()), code_points.end());
    return Vocab::from_code_points(std::move(code_points));
}

inline std::vector<TokenId> to_vector(TokenSpan ids) {
    std::vector<TokenId> vector(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) vector[i] = ids[i];
    return vector;
}

}  // namespace charlm::testing
