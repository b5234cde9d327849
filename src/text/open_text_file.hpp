// Opening a text file with the refusal a user reads (missing, a directory, unreadable): private to src/text.
#pragma once

#include <filesystem>
#include <fstream>

namespace charlm {

// Opens a text file for reading, or throws Error saying what is wrong with the path. Defined in utf8.cpp.
std::ifstream open_text_file(const std::filesystem::path& path);

}  // namespace charlm
