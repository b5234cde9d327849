// charlm::Error is header-only; this unit keeps the module list uniform.
#include "charlm/error.hpp"
