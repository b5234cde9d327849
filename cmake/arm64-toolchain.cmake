# Cross-compiling charlm for arm64 (aarch64) with Debian's cross toolchain (crossbuild-essential-arm64) and the
# :arm64 libraries (dpkg --add-architecture arm64): scripts/cross_arm64.sh uses it, docs/building.md says how.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
# oneDNN's arm64 -dev package cannot be installed beside the amd64 one (the two dnnl_config.h differ: amd64's
# has the OpenCL GPU runtime), so scripts/cross_arm64.sh unpacks its .debs into a folder of its own, searched
# before the multiarch folders; the try_compile projects get it too.
set(CHARLM_ARM64_SYSROOT "" CACHE PATH "A folder of arm64 packages unpacked with dpkg -x (scripts/cross_arm64.sh)")
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES CHARLM_ARM64_SYSROOT)
# Libraries and their CMake packages from the arm64 multiarch folders (and the architecture-free headers
# under /usr/include: Eigen, nlohmann-json, utfcpp, CLI11); programs from the build machine.
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu/cmake)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_PREFIX_PATH /usr/lib/aarch64-linux-gnu/cmake /usr/share/cmake /usr/lib/cmake)
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig)
# Run what was built (the test discovery, ctest) under qemu-user, with the arm64 loader and libraries (and
# those of the unpacked folder, which no loader path names).
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/aarch64-linux-gnu)
if(CHARLM_ARM64_SYSROOT)
  list(PREPEND CMAKE_FIND_ROOT_PATH ${CHARLM_ARM64_SYSROOT})
  list(APPEND CMAKE_CROSSCOMPILING_EMULATOR -E LD_LIBRARY_PATH=${CHARLM_ARM64_SYSROOT}/usr/lib/aarch64-linux-gnu)
endif()
# utfcpp is headers alone, but Debian ships its CMake package under the build machine's architecture folder
# (libutfcpp-dev is not Multi-Arch); its files name only /usr/include/utf8cpp, the same for every architecture.
set(utf8cpp_DIR /usr/lib/x86_64-linux-gnu/cmake/utf8cpp CACHE PATH "utfcpp's CMake package (architecture-free headers)")
