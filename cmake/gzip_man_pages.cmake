# CPack's step between staging the package's files and packing them (CPACK_PRE_BUILD_SCRIPTS): the man pages
# gzipped as Debian's policy has them (lintian warns of an uncompressed one), where cmake --install leaves them
# as written, as make install does. -9n: the smallest, with no file name or time stamp in the header, so that
# the same page makes the same package.
# Only inside CPack's own staging folder: never a glob from / where the variable is missing.
if(NOT CPACK_TEMPORARY_DIRECTORY MATCHES "/_CPack_Packages/")
  message(FATAL_ERROR "gzip_man_pages.cmake: not CPack's staging folder: '${CPACK_TEMPORARY_DIRECTORY}'")
endif()
file(GLOB_RECURSE charlm_man_pages LIST_DIRECTORIES false "${CPACK_TEMPORARY_DIRECTORY}/*")
list(FILTER charlm_man_pages INCLUDE REGEX "/share/man/man[1-9]/[^/]+\\.[1-9]$")
if(NOT charlm_man_pages)
  message(FATAL_ERROR "gzip_man_pages.cmake: no man page under ${CPACK_TEMPORARY_DIRECTORY}")
endif()
foreach(page IN LISTS charlm_man_pages)
  execute_process(COMMAND gzip -9nf "${page}" RESULT_VARIABLE gzip_status)
  if(NOT gzip_status EQUAL 0)
    message(FATAL_ERROR "gzip_man_pages.cmake: gzip -9n ${page} failed")
  endif()
endforeach()
