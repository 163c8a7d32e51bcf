// PLACEHOLDER: implemented by the native-core work (issue 2).
#include "frameseek/hnsw_index.hpp"
