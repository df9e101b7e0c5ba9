// CPU kernels of mama::bottleneck_sim (schema in csrc/ops.cpp).
#include <torch/library.h>
