// The code-point vocabulary: which characters a model knows and the id of each; not how ids are stored.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "charlm/tokens.hpp"

namespace charlm {

// The distinct code points of a text, each with its id: its place in the list. A text's vocabulary is
// sorted (a code point's id is its rank); one extended for fine-tuning (extended_by) keeps the ids it
// had and gives the new characters the next ones.
class Vocab {
public:
    Vocab() = default;
    // Streams them (see for_each_text_piece); `character_counts`, given, gets each file's count of characters.
    static Vocab from_files(const std::vector<std::filesystem::path>& paths, std::vector<std::size_t>* character_counts = nullptr);
    static Vocab from_code_points(std::vector<char32_t> code_points);  // in id order; validates: Unicode scalars, distinct
    // This vocabulary's code points at their ids, then those of `other` that it lacks, in code-point
    // order: a model trained further on a new text (--init-from) keeps every id it knew.
    Vocab extended_by(const Vocab& other) const;

    std::size_t size() const { return code_points_.size(); }
    bool contains(char32_t code_point) const;
    TokenId id_of(char32_t code_point) const;  // throws Error for an unknown code point
    char32_t code_point_of(TokenId id) const { return code_points_.at(static_cast<std::size_t>(id)); }
    const std::vector<char32_t>& code_points() const { return code_points_; }

    std::vector<TokenId> encode(const std::u32string& text) const;  // throws Error on unknown code points
    std::u32string decode(const std::vector<TokenId>& ids) const;
    // SHA-256 of the code points (4 bytes each, little-endian), in 64 hex digits: the vocabulary's identity.
    std::string sha256() const;

    // Keeps the known code points and counts the others, for evaluating text the model never saw.
    std::vector<TokenId> encode_known(const std::u32string& text, std::size_t& unknown_count) const;

private:
    void index();                          // builds by_code_point_ from code_points_
    TokenId find(char32_t code_point) const;  // its id, or -1 where it is not here

    std::vector<char32_t> code_points_;                       // in id order
    std::vector<std::pair<char32_t, TokenId>> by_code_point_;  // the same, sorted by code point, for lookups
};

}  // namespace charlm
