// UTF-8 with utfcpp: text files read whole or a piece at a time, strings decoded and encoded; nothing about ids.
#include "charlm/utf8.hpp"

#include <cstddef>
#include <fstream>
#include <iterator>

#include <fmt/format.h>
#include <utf8.h>

#include "charlm/error.hpp"
#include "text/open_text_file.hpp"

namespace charlm {

std::ifstream open_text_file(const std::filesystem::path& path) {
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

}  // namespace charlm
