"""Build mama's packages and its C++ extension mama._C (custom ops, CPU kernels) with ninja.
The metadata (name, version, dependencies, the `mama` command) is in pyproject.toml.

The extension is compiled against the torch that is already installed, so build with
`pip install --no-build-isolation -e .` (the Makefile does this) or `pip wheel
--no-build-isolation --no-deps .` for a wheel.
"""
import glob
import os

from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

HERE = os.path.dirname(os.path.abspath(__file__))
sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))

extra_compile_args = {"cxx": ["-O3", "-std=c++20", "-fopenmp"]}
if os.environ.get("MAMA_DEBUG_BUILD"):
    extra_compile_args = {"cxx": ["-O0", "-g", "-std=c++20", "-fopenmp"]}

setup(
    # Found, not listed; two packages live outside mama/ (the Triton kernels and the CLI).
    packages=find_packages(include=["mama", "mama.*"]) + ["mama.kernels", "mama.cli"],
    package_dir={"mama.kernels": "kernels", "mama.cli": "cli"},
    ext_modules=[
        CppExtension(
            "mama._C",
            sources,
            include_dirs=[os.path.join(HERE, "csrc")],
            extra_compile_args=extra_compile_args,
            extra_link_args=["-fopenmp"],
        )
    ],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
