// PLACEHOLDER: implemented by the native-core work (issue 2).
#include "frameseek/flat_index.hpp"
