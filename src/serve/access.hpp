// Who may use the API: the keys of --api-key and --api-key-file, which a request shows as
// `Authorization: Bearer KEY`. Compared in constant time, so that timing tells nothing of a key.
#pragma once

#include <array>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace charlm {

class ApiKeys {
public:
    // Throws UsageError for an empty key or one with spaces or control characters (no Bearer token has them).
    explicit ApiKeys(const std::vector<std::string>& keys);
    bool empty() const { return digests_.empty(); }
    // Whether an Authorization header's value is "Bearer " and one of the keys. Each key is compared,
    // whichever matches, and by SHA-256 digest: the time taken depends on neither the key nor its length.
    bool admit(std::string_view authorization) const;
    // Whether an Authorization header's value starts with the Bearer scheme (any case), as admit() needs.
    static bool names_bearer(std::string_view authorization);

private:
    std::vector<std::array<unsigned char, 32>> digests_;
};

// The keys of a file, one a line (blank lines and surrounding spaces left out). Throws UsageError
// naming the file where it cannot be read or holds no key.
std::vector<std::string> read_api_key_file(const std::filesystem::path& path);

}  // namespace charlm
