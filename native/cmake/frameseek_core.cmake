# frameseek_core: the static C++ library (kernels, indexes, aggregation, the one vector search), and
# frameseek_search_request: the front end's SearchByVector request parsing / response encoding.
# Included by native/CMakeLists.txt (the Python module) and native/fuzz/CMakeLists.txt (fuzz targets
# and the sanitizer self-test), so both build the same sources with the same per-file SIMD flags.
include(${CMAKE_CURRENT_LIST_DIR}/hnswlib.cmake)
find_package(ZLIB REQUIRED)  # the snapshots' CRC-32 (zlib's fast crc32 and crc32_combine)
get_filename_component(_fs_native "${CMAKE_CURRENT_LIST_DIR}/.." ABSOLUTE)
set(_fs_src "${_fs_native}/src")

set(FRAMESEEK_CORE_SOURCES
  ${_fs_src}/dispatch.cpp
  ${_fs_src}/distance_scalar.cpp
  ${_fs_src}/flat_index.cpp
  ${_fs_src}/hnsw_index.cpp
  ${_fs_src}/hnsw_snapshot.cpp
  ${_fs_src}/vector_store.cpp
  ${_fs_src}/aggregate.cpp
  ${_fs_src}/parallel.cpp
  ${_fs_src}/search_directory.cpp
  ${_fs_src}/fingerprint/dispatch.cpp
  ${_fs_src}/fingerprint/popcount_scalar.cpp
  ${_fs_src}/fingerprint/index.cpp
)

if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64")
  list(APPEND FRAMESEEK_CORE_SOURCES ${_fs_src}/distance_avx2.cpp ${_fs_src}/distance_avx512.cpp)
  set_source_files_properties(${_fs_src}/distance_avx2.cpp PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
  set_source_files_properties(${_fs_src}/distance_avx512.cpp PROPERTIES
    COMPILE_OPTIONS "-mavx512f;-mavx512bw;-mavx512dq;-mavx512vl;-mfma;-mf16c")
  list(APPEND FRAMESEEK_CORE_SOURCES ${_fs_src}/fingerprint/popcount_avx2.cpp ${_fs_src}/fingerprint/popcount_avx512.cpp)
  set_source_files_properties(${_fs_src}/fingerprint/popcount_avx2.cpp PROPERTIES COMPILE_OPTIONS "-mavx2")
  set_source_files_properties(${_fs_src}/fingerprint/popcount_avx512.cpp PROPERTIES
    COMPILE_OPTIONS "-mavx512f;-mavx512vpopcntdq")
  set(FRAMESEEK_HAVE_X86 1)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64")
  # NEON is baseline on aarch64
  list(APPEND FRAMESEEK_CORE_SOURCES ${_fs_src}/distance_neon.cpp ${_fs_src}/fingerprint/popcount_neon.cpp)
  set(FRAMESEEK_HAVE_NEON 1)
endif()

add_library(frameseek_core STATIC ${FRAMESEEK_CORE_SOURCES})
target_include_directories(frameseek_core PUBLIC ${_fs_native}/include)
target_link_libraries(frameseek_core PUBLIC hnswlib_headers Threads::Threads ZLIB::ZLIB)
target_compile_options(frameseek_core PRIVATE -O3 -Wall -Wextra -fno-math-errno)
target_compile_definitions(frameseek_core PUBLIC
  $<$<BOOL:${FRAMESEEK_HAVE_X86}>:FRAMESEEK_HAVE_X86=1>
  $<$<BOOL:${FRAMESEEK_HAVE_NEON}>:FRAMESEEK_HAVE_NEON=1>)

# The front end's own folder: SearchByVector's request parsing and response encoding (hand-written
# wire format, no libprotobuf, no gRPC: a fuzz harness links this alone) around the core search.
add_library(frameseek_search_request STATIC ${_fs_src}/front_end/search_request.cpp)
target_include_directories(frameseek_search_request PUBLIC ${_fs_src}/front_end)
target_link_libraries(frameseek_search_request PUBLIC frameseek_core)
target_compile_options(frameseek_search_request PRIVATE -O3 -Wall -Wextra)
