// CPU kernels of mama::patch_destroy_loss (schema in csrc/ops.cpp).
#include <torch/library.h>
