// UTF-8 in and out: text files and strings decoded into code points, code points encoded back; nothing about ids.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

namespace charlm {

// Reads a whole file as UTF-8 and decodes it into code points.
// Throws Error naming the file for a missing, unreadable or empty file, or the byte offset of invalid UTF-8.
std::u32string read_text_file(const std::filesystem::path& path);

// Reads a UTF-8 file a megabyte at a time and hands each decoded piece to `visit` (a byte order mark
// left out), so that memory does not grow with the file. Throws Error as read_text_file() does.
void for_each_text_piece(const std::filesystem::path& path, const std::function<void(std::u32string_view)>& visit);

// Decodes UTF-8 bytes; `source_name` appears in the error for invalid input.
std::u32string decode_utf8(const std::string& bytes, const std::string& source_name);
std::string encode_utf8(const std::u32string& code_points);
std::string encode_utf8(char32_t code_point);

}  // namespace charlm
