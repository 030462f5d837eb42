// Sparrow: compress neural networks, store them compactly, and run them fast on CPUs.
// Umbrella header for the public C++ API.
#pragma once

#include "sparrow/compress.h"
#include "sparrow/dataset.h"
#include "sparrow/executor.h"
#include "sparrow/format.h"
#include "sparrow/model.h"
#include "sparrow/onnx.h"
#include "sparrow/status.h"
#include "sparrow/tensor.h"
#include "sparrow/version.h"
