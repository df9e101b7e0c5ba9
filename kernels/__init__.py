"""Triton kernels: the CUDA implementations of mama's custom ops (installed as mama.kernels).

One file per op family; each has private @triton.jit kernels, host launchers whose
signatures match the op schemas in csrc/ops.cpp, and nothing else. mama/ops.py registers the
launchers for the CUDA dispatch key. On CPU they run under TRITON_INTERPRET=1 (tests only).
"""
