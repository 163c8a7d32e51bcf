// PLACEHOLDER: declared by the native-core work (issue 2).
#pragma once
