// CPU kernels of mama::warp (schema in csrc/ops.cpp).
#include <torch/library.h>
