// UTF-8 decoding with utfcpp, the code-point vocabulary and the validation split.
#include "charlm/text.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>

#include <sys/stat.h>

#include <fmt/format.h>
#include <openssl/evp.h>
#include <utf8.h>

#include "charlm/atomic_file.hpp"
#include "charlm/error.hpp"
#include "charlm/terminal.hpp"

namespace charlm {

// Opens a text file for reading, or throws Error saying what is wrong with the path.
static std::ifstream open_text_file(const std::filesystem::path& path) {
    std::error_code error;
    if (!std::filesystem::exists(path, error))
        throw Error(fmt::format("{}: no such file; check the path", path.string()));
    if (std::filesystem::is_directory(path, error))
        throw Error(fmt::format("{}: is a directory; give a text file", path.string()));
    std::ifstream file(path, std::ios::binary);
    if (!file) throw Error(fmt::format("{}: cannot open for reading; check its permissions", path.string()));
    return file;
}

static Error invalid_utf8(const std::string& source_name, std::size_t offset, unsigned char byte) {
    return Error(fmt::format("{}: invalid UTF-8 at byte offset {} (byte 0x{:02x}); give UTF-8 text", source_name, offset, byte));
}

std::u32string read_text_file(const std::filesystem::path& path) {
    std::u32string text;
    for_each_text_piece(path, [&](std::u32string_view piece) { text += piece; });
    return text;
}

void for_each_text_piece(const std::filesystem::path& path, const std::function<void(std::u32string_view)>& visit) {
    std::ifstream file = open_text_file(path);
    constexpr std::size_t kPieceBytes = std::size_t{1} << 20;
    std::string bytes;         // the unread tail of the last piece (an unfinished sequence), then the new piece
    std::u32string decoded;
    std::size_t offset = 0;    // of bytes[0] in the file
    bool first = true, any = false;
    while (true) {
        const std::size_t kept = bytes.size();
        bytes.resize(kept + kPieceBytes);
        file.read(bytes.data() + kept, static_cast<std::streamsize>(kPieceBytes));
        bytes.resize(kept + static_cast<std::size_t>(file.gcount()));
        if (file.bad()) throw Error(fmt::format("{}: read failed", path.string()));
        const bool at_end = file.eof();
        any = any || !bytes.empty();
        auto begin = bytes.begin();
        if (first && utf8::starts_with_bom(begin, bytes.end())) begin += 3;
        first = false;
        // A sequence cut by the piece's end waits for the next piece (at the file's end it is invalid).
        auto end = bytes.end();
        if (!at_end) {
            for (int back = 1; back <= 3 && end - begin >= back; ++back) {
                const auto lead = static_cast<unsigned char>(*(bytes.end() - back));
                if ((lead & 0xC0) == 0x80) continue;  // a continuation byte: look further back
                const int length = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
                if (length > back) end = bytes.end() - back;
                break;
            }
        }
        auto invalid = utf8::find_invalid(begin, end);
        if (invalid != end)
            throw invalid_utf8(path.string(), offset + static_cast<std::size_t>(invalid - bytes.begin()), static_cast<unsigned char>(*invalid));
        decoded.clear();
        utf8::unchecked::utf8to32(begin, end, std::back_inserter(decoded));
        if (!decoded.empty()) visit(decoded);
        if (at_end) break;
        offset += static_cast<std::size_t>(end - bytes.begin());
        bytes.erase(bytes.begin(), end);
    }
    if (!any) throw Error(fmt::format("{}: the file is empty; give a UTF-8 text", path.string()));
}

FileFingerprint fingerprint_file(const std::filesystem::path& path) {
    std::ifstream file = open_text_file(path);
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> context(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    if (!context || EVP_DigestInit_ex(context.get(), EVP_sha256(), nullptr) != 1) throw Error("SHA-256 is not available");
    FileFingerprint fingerprint;
    std::string buffer(std::size_t{1} << 20, '\0');
    while (file) {
        file.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
        const auto count = static_cast<std::size_t>(file.gcount());
        EVP_DigestUpdate(context.get(), buffer.data(), count);
        fingerprint.size_bytes += count;
    }
    if (file.bad()) throw Error(fmt::format("{}: read failed", path.string()));
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    EVP_DigestFinal_ex(context.get(), digest, &length);
    for (unsigned int i = 0; i < length; ++i) fingerprint.sha256 += fmt::format("{:02x}", digest[i]);
    return fingerprint;
}

bool can_be_read_only_once(const std::filesystem::path& path) {
    if (path == "-") return true;
    struct stat status {};
    if (::stat(path.c_str(), &status) != 0 || S_ISDIR(status.st_mode)) return false;  // the reader says what is wrong
    // /dev/stdin and /dev/fd/N name whatever the process was handed, which the next process is not:
    // a regular file behind one is copied all the same, so that a resume finds it.
    const std::string absolute = std::filesystem::absolute(path).lexically_normal().string();
    return !S_ISREG(status.st_mode) || absolute.starts_with("/dev/") || absolute.starts_with("/proc/");
}

void spool_to_file(const std::filesystem::path& source, AtomicFile& out) {
    std::ifstream file;
    std::istream* in = &std::cin;
    if (source != "-") {
        file = open_text_file(source);
        in = &file;
    }
    std::string buffer(std::size_t{1} << 20, '\0');
    while (*in) {
        in->read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
        out.write(std::string_view(buffer.data(), static_cast<std::size_t>(in->gcount())));
    }
    if (in->bad()) throw Error(fmt::format("{}: read failed", source == "-" ? std::string("standard input") : source.string()));
}

std::u32string decode_utf8(const std::string& bytes, const std::string& source_name) {
    auto begin = bytes.begin();
    if (utf8::starts_with_bom(begin, bytes.end())) begin += 3;
    auto invalid = utf8::find_invalid(begin, bytes.end());
    if (invalid != bytes.end())
        throw invalid_utf8(source_name, static_cast<std::size_t>(invalid - bytes.begin()), static_cast<unsigned char>(*invalid));
    std::u32string code_points;
    code_points.reserve(static_cast<std::size_t>(bytes.end() - begin));
    utf8::unchecked::utf8to32(begin, bytes.end(), std::back_inserter(code_points));
    return code_points;
}

std::string encode_utf8(const std::u32string& code_points) {
    std::string bytes;
    bytes.reserve(code_points.size());
    utf8::unchecked::utf32to8(code_points.begin(), code_points.end(), std::back_inserter(bytes));
    return bytes;
}

std::string encode_utf8(char32_t code_point) { return encode_utf8(std::u32string(1, code_point)); }

std::string describe_code_point(char32_t code_point) {
    const std::string shown = displayable(code_point);
    if (shown.starts_with("U+")) return shown;  // a control or an invisible mark: its number says it all
    return fmt::format("'{}' (U+{:04X})", shown, static_cast<std::uint32_t>(code_point));
}

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

Vocab Vocab::from_text(const std::u32string& text) {
    CodePointSet set;
    set.add(text);
    Vocab vocab;
    vocab.code_points_ = set.sorted();
    return vocab;
}

Vocab Vocab::from_files(const std::vector<std::filesystem::path>& paths) {
    CodePointSet set;
    for (const auto& path : paths) for_each_text_piece(path, [&](std::u32string_view piece) { set.add(piece); });
    Vocab vocab;
    vocab.code_points_ = set.sorted();
    return vocab;
}

Vocab Vocab::from_code_points(std::vector<char32_t> code_points) {
    for (std::size_t i = 0; i < code_points.size(); ++i) {
        if (code_points[i] > 0x10FFFF || (code_points[i] >= 0xD800 && code_points[i] <= 0xDFFF))
            throw Error(fmt::format("vocabulary entry {} is not a Unicode scalar value", i));
        if (i > 0 && code_points[i] <= code_points[i - 1])
            throw Error("vocabulary is not sorted and distinct");
    }
    Vocab vocab;
    vocab.code_points_ = std::move(code_points);
    return vocab;
}

bool Vocab::contains(char32_t code_point) const {
    return std::binary_search(code_points_.begin(), code_points_.end(), code_point);
}

TokenId Vocab::id_of(char32_t code_point) const {
    auto found = std::lower_bound(code_points_.begin(), code_points_.end(), code_point);
    if (found == code_points_.end() || *found != code_point)
        throw Error(fmt::format("character {} is not in the model's vocabulary", describe_code_point(code_point)));
    return static_cast<TokenId>(found - code_points_.begin());
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

std::vector<TokenId> Vocab::encode_known(const std::u32string& text, std::size_t& unknown_count) const {
    std::vector<TokenId> ids;
    ids.reserve(text.size());
    unknown_count = 0;
    for (char32_t c : text) {
        auto found = std::lower_bound(code_points_.begin(), code_points_.end(), c);
        if (found == code_points_.end() || *found != c) ++unknown_count;
        else ids.push_back(static_cast<TokenId>(found - code_points_.begin()));
    }
    return ids;
}

std::vector<TokenId> TokenSpan::to_vector() const {
    std::vector<TokenId> ids(size_);
    for (std::size_t i = 0; i < size_; ++i) ids[i] = (*this)[i];
    return ids;
}

CompactIds::CompactIds(std::size_t vocab_size) : width_(vocab_size <= 256 ? 1 : vocab_size <= 65536 ? 2 : 4) {}

CompactIds CompactIds::encode_file(const std::filesystem::path& path, const Vocab& vocab, std::size_t* unknown_count) {
    CompactIds ids(vocab.size());
    std::error_code error;
    const auto file_size = std::filesystem::file_size(path, error);
    if (!error) ids.bytes_.reserve(static_cast<std::size_t>(file_size) * static_cast<std::size_t>(ids.width_));  // chars <= bytes
    // A table from code point to id: constant time per character over a gigabyte.
    std::vector<TokenId> id_of(0x110000, -1);
    for (std::size_t id = 0; id < vocab.size(); ++id) id_of[vocab.code_point_of(static_cast<TokenId>(id))] = static_cast<TokenId>(id);
    for_each_text_piece(path, [&](std::u32string_view piece) {
        const std::size_t first = ids.bytes_.size();
        ids.bytes_.resize(first + piece.size() * static_cast<std::size_t>(ids.width_));
        std::uint8_t* out = ids.bytes_.data() + first;
        for (char32_t c : piece) {
            const TokenId id = id_of[c];
            if (id < 0) {
                if (!unknown_count) vocab.id_of(c);  // throws, naming the character
                else ++*unknown_count;
                continue;
            }
            std::memcpy(out, &id, static_cast<std::size_t>(ids.width_));  // little-endian: the low bytes
            out += ids.width_;
        }
        ids.bytes_.resize(static_cast<std::size_t>(out - ids.bytes_.data()));  // less any left out
    });
    return ids;
}

std::size_t validation_size(std::size_t count, double validation_fraction) {
    if (!(validation_fraction >= 0.0 && validation_fraction < 1.0))
        throw Error("validation fraction must be in [0, 1)");
    return static_cast<std::size_t>(std::llround(validation_fraction * static_cast<double>(count)));
}

Split split_for_validation(const std::vector<TokenId>& ids, double validation_fraction) {
    const auto held_out = static_cast<std::ptrdiff_t>(validation_size(ids.size(), validation_fraction));
    Split split;
    split.train.assign(ids.begin(), ids.end() - held_out);
    split.validation.assign(ids.end() - held_out, ids.end());
    return split;
}

}  // namespace charlm
