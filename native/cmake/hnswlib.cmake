# hnswlib >= 0.8 is header-only. Debian ships 0.6.2 (no filters, no replace_deleted), so the
# headers come from the hnswlib sdist on PyPI, fetched by pip at configure time and cached in the
# build tree. Pass -DHNSWLIB_INCLUDE_DIR=... to use a copy you already have.
set(HNSWLIB_VERSION "0.8.0" CACHE STRING "hnswlib version whose headers are fetched")
set(HNSWLIB_INCLUDE_DIR "" CACHE PATH "directory that contains hnswlib/hnswlib.h")

if(NOT HNSWLIB_INCLUDE_DIR)
  set(_hnsw_root "${CMAKE_BINARY_DIR}/_deps/hnswlib")
  set(_hnsw_src "${_hnsw_root}/hnswlib-${HNSWLIB_VERSION}")
  if(NOT EXISTS "${_hnsw_src}/hnswlib/hnswlib.h")
    message(STATUS "Fetching hnswlib ${HNSWLIB_VERSION} headers with pip")
    execute_process(
      COMMAND "${Python_EXECUTABLE}" -m pip download --quiet --no-deps
              --no-binary hnswlib "hnswlib==${HNSWLIB_VERSION}" -d "${_hnsw_root}"
      RESULT_VARIABLE _rc)
    if(NOT _rc EQUAL 0)
      message(FATAL_ERROR "pip could not download the hnswlib ${HNSWLIB_VERSION} sdist; "
                          "set HNSWLIB_INCLUDE_DIR to a directory with hnswlib/hnswlib.h")
    endif()
    file(ARCHIVE_EXTRACT INPUT "${_hnsw_root}/hnswlib-${HNSWLIB_VERSION}.tar.gz"
         DESTINATION "${_hnsw_root}")
  endif()
  set(HNSWLIB_INCLUDE_DIR "${_hnsw_src}")
endif()

if(NOT EXISTS "${HNSWLIB_INCLUDE_DIR}/hnswlib/hnswlib.h")
  message(FATAL_ERROR "hnswlib/hnswlib.h not found under ${HNSWLIB_INCLUDE_DIR}")
endif()
add_library(hnswlib_headers INTERFACE)
target_include_directories(hnswlib_headers SYSTEM INTERFACE "${HNSWLIB_INCLUDE_DIR}")
