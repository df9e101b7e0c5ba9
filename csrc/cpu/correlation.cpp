// CPU kernels of mama::correlation (schema in csrc/ops.cpp).
#include <torch/library.h>
