"""The custom ops at the paper's real sizes (batch 4 of 256 x 256 frames): the one table the op
tests, the op benchmarks and the GPU check take them from."""
from __future__ import annotations

BATCH, FRAME = 4, 256

# FlowNetC's conv3 features (256 channels at 1/8 of the frame) and its cost volume settings:
# pad 20, kernel 1, max displacement 20, stride1 1, stride2 2 -> 441 channels.
CORRELATION = (BATCH, 256, FRAME // 8, FRAME // 8)
CORRELATION_ARGS = dict(pad=20, kernel_size=1, max_disp=20, stride1=1, stride2=2)
# FlowNet2's warp of the second RGB frame by the flow.
WARP = (BATCH, 3, FRAME, FRAME)
# Each of the five F2LM bottleneck features x4, y4, x_y, z4, x_z (512 channels at 1/8).
BOTTLENECK = (BATCH, 512, FRAME // 8, FRAME // 8)
# The destroyer step: RGB frames cut into 32 x 32 patches (an 8 x 8 grid).
DESTROY = (BATCH, 3, FRAME, FRAME)
DESTROY_PATCH = 32
