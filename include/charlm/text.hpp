// An umbrella, kept so that the files that include it need not change: text's headers are utf8.hpp, tokens.hpp,
// vocab.hpp, ids_file.hpp, file_identity.hpp and display.hpp; new code includes the one it needs.
#pragma once

#include "charlm/display.hpp"
#include "charlm/file_identity.hpp"
#include "charlm/ids_file.hpp"
#include "charlm/tokens.hpp"
#include "charlm/utf8.hpp"
#include "charlm/vocab.hpp"
