// ApiKeys: bearer keys kept as SHA-256 digests and compared with OpenSSL's constant-time comparison.
#include "serve/access.hpp"

#include <cctype>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "charlm/error.hpp"

namespace charlm {

namespace {

std::array<unsigned char, 32> digest_of(std::string_view text) {
    std::array<unsigned char, 32> digest{};
    unsigned int length = 0;
    if (EVP_Digest(text.data(), text.size(), digest.data(), &length, EVP_sha256(), nullptr) != 1 || length != digest.size())
        throw Error("SHA-256 is not available");
    return digest;
}

bool is_token_character(unsigned char c) { return c > 0x20 && c < 0x7f; }

}  // namespace

ApiKeys::ApiKeys(const std::vector<std::string>& keys) {
    for (const std::string& key : keys) {
        if (key.empty()) throw UsageError("--api-key needs a key that is not empty");
        for (const char c : key)
            if (!is_token_character(static_cast<unsigned char>(c)))
                throw UsageError("an API key may hold printable ASCII characters only, without spaces (clients send it as `Authorization: Bearer KEY`)");
        digests_.push_back(digest_of(key));
    }
}

namespace {
constexpr std::string_view kBearer = "Bearer ";
}  // namespace

bool ApiKeys::names_bearer(std::string_view authorization) {
    // The scheme is case-insensitive (RFC 9110).
    if (authorization.size() < kBearer.size()) return false;
    for (std::size_t i = 0; i < kBearer.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(authorization[i])) != std::tolower(static_cast<unsigned char>(kBearer[i]))) return false;
    return true;
}

bool ApiKeys::admit(std::string_view authorization) const {
    // What follows the scheme is the key, compared whole.
    if (!names_bearer(authorization)) return false;
    const auto presented = digest_of(authorization.substr(kBearer.size()));
    int matches = 0;
    for (const auto& digest : digests_) matches |= CRYPTO_memcmp(digest.data(), presented.data(), digest.size()) == 0 ? 1 : 0;
    return matches != 0;
}

std::vector<std::string> read_api_key_file(const std::filesystem::path& path) {
    std::error_code error;
    std::ifstream file(path);
    std::stringstream contents;
    if (file && !std::filesystem::is_directory(path, error)) contents << file.rdbuf();
    if (!file || file.bad() || std::filesystem::is_directory(path, error))
        throw UsageError(fmt::format("--api-key-file {}: cannot be read; give a file with one key a line", path.string()));
    std::vector<std::string> keys;
    for (std::string line; std::getline(contents, line);) {
        const auto first = line.find_first_not_of(" \t\r");
        if (first == std::string::npos) continue;
        const auto last = line.find_last_not_of(" \t\r");
        keys.push_back(line.substr(first, last - first + 1));
    }
    if (keys.empty()) throw UsageError(fmt::format("--api-key-file {}: holds no key; give one key a line", path.string()));
    return keys;
}

}  // namespace charlm
