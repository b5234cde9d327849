// SHA-256 through OpenSSL, fed a piece at a time: private to src/text (file fingerprints, the vocabulary's and the ids' checksums).
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include <fmt/format.h>
#include <openssl/evp.h>

#include "charlm/error.hpp"

namespace charlm {

class Sha256 {
public:
    Sha256() : context_(EVP_MD_CTX_new(), EVP_MD_CTX_free) {
        if (!context_ || EVP_DigestInit_ex(context_.get(), EVP_sha256(), nullptr) != 1) throw Error("SHA-256 is not available");
    }
    void add(const void* data, std::size_t size) { EVP_DigestUpdate(context_.get(), data, size); }
    std::string hex() {  // 64 lowercase hex digits
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned int length = 0;
        EVP_DigestFinal_ex(context_.get(), digest, &length);
        std::string text;
        for (unsigned int i = 0; i < length; ++i) text += fmt::format("{:02x}", digest[i]);
        return text;
    }

private:
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> context_;
};

}  // namespace charlm
