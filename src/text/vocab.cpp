// The code-point vocabulary: built from texts or a checkpoint's list, extended for fine-tuning, and its ids; not how ids are stored.
#include "charlm/vocab.hpp"

#include <algorithm>
#include <cstdint>
#include <string_view>

#include <fmt/format.h>

#include "charlm/display.hpp"
#include "charlm/error.hpp"
#include "charlm/utf8.hpp"
#include "text/sha256.hpp"

namespace charlm {

namespace {

// Which code points a text holds: the vocabulary in the making, sorted by construction. The table
// grows only as far as the largest code point seen, so that a short ASCII text costs 128 bits.
class CodePointSet {
public:
    void add(std::u32string_view text) {
        for (char32_t c : text) {
            if (c >= seen_.size()) seen_.resize(c + 1, false);
            seen_[c] = true;
        }
    }
    std::vector<char32_t> sorted() const {
        std::vector<char32_t> code_points;
        for (char32_t c = 0; c < seen_.size(); ++c)
            if (seen_[c]) code_points.push_back(c);
        return code_points;
    }

private:
    std::vector<bool> seen_;
};

}  // namespace

Vocab Vocab::from_files(const std::vector<std::filesystem::path>& paths, std::vector<std::size_t>* character_counts) {
    CodePointSet set;
    if (character_counts) character_counts->assign(paths.size(), 0);
    for (std::size_t i = 0; i < paths.size(); ++i)
        for_each_text_piece(paths[i], [&](std::u32string_view piece) {
            set.add(piece);
            if (character_counts) (*character_counts)[i] += piece.size();
        });
    Vocab vocab;
    vocab.code_points_ = set.sorted();
    vocab.index();
    return vocab;
}

Vocab Vocab::from_code_points(std::vector<char32_t> code_points) {
    for (std::size_t i = 0; i < code_points.size(); ++i)
        if (code_points[i] > 0x10FFFF || (code_points[i] >= 0xD800 && code_points[i] <= 0xDFFF))
            throw Error(fmt::format("vocabulary entry {} is not a Unicode scalar value", i));
    Vocab vocab;
    vocab.code_points_ = std::move(code_points);
    vocab.index();
    for (std::size_t i = 1; i < vocab.by_code_point_.size(); ++i)
        if (vocab.by_code_point_[i].first == vocab.by_code_point_[i - 1].first)
            throw Error(fmt::format("vocabulary holds {} twice", describe_code_point(vocab.by_code_point_[i].first)));
    return vocab;
}

Vocab Vocab::extended_by(const Vocab& other) const {
    Vocab vocab = *this;
    for (char32_t c : other.code_points_)  // other's, in code-point order where it is a text's
        if (!contains(c)) vocab.code_points_.push_back(c);
    std::sort(vocab.code_points_.begin() + static_cast<std::ptrdiff_t>(size()), vocab.code_points_.end());
    vocab.index();
    return vocab;
}

void Vocab::index() {
    by_code_point_.clear();
    by_code_point_.reserve(code_points_.size());
    for (std::size_t id = 0; id < code_points_.size(); ++id) by_code_point_.emplace_back(code_points_[id], static_cast<TokenId>(id));
    std::sort(by_code_point_.begin(), by_code_point_.end());
}

TokenId Vocab::find(char32_t code_point) const {
    auto found = std::lower_bound(by_code_point_.begin(), by_code_point_.end(), std::pair<char32_t, TokenId>(code_point, 0));
    return found != by_code_point_.end() && found->first == code_point ? found->second : -1;
}

bool Vocab::contains(char32_t code_point) const {
    return find(code_point) >= 0;
}

TokenId Vocab::id_of(char32_t code_point) const {
    const TokenId id = find(code_point);
    if (id < 0) throw Error(fmt::format("character {} is not in the model's vocabulary", describe_code_point(code_point)));
    return id;
}

std::vector<TokenId> Vocab::encode(const std::u32string& text) const {
    std::vector<TokenId> ids;
    ids.reserve(text.size());
    for (char32_t c : text) ids.push_back(id_of(c));
    return ids;
}

std::u32string Vocab::decode(const std::vector<TokenId>& ids) const {
    std::u32string text;
    text.reserve(ids.size());
    for (TokenId id : ids) text.push_back(code_point_of(id));
    return text;
}

std::string Vocab::sha256() const {
    Sha256 sha256;
    for (char32_t c : code_points_) {
        const auto value = static_cast<std::uint32_t>(c);
        const unsigned char bytes[4] = {static_cast<unsigned char>(value), static_cast<unsigned char>(value >> 8),
                                        static_cast<unsigned char>(value >> 16), static_cast<unsigned char>(value >> 24)};
        sha256.add(bytes, sizeof bytes);
    }
    return sha256.hex();
}

std::vector<TokenId> Vocab::encode_known(const std::u32string& text, std::size_t& unknown_count) const {
    std::vector<TokenId> ids;
    ids.reserve(text.size());
    unknown_count = 0;
    for (char32_t c : text) {
        const TokenId id = find(c);
        if (id >= 0) ids.push_back(id);
        else ++unknown_count;
    }
    return ids;
}

}  // namespace charlm
