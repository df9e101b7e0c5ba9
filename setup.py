"""Build mama and its C++ extension mama._C (custom ops, CPU kernels) with ninja.

The extension is compiled against the torch that is already installed, so install with
`pip install --no-build-isolation -e .` (the Makefile does this).
"""
import glob
import os

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

HERE = os.path.dirname(os.path.abspath(__file__))
sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))

extra_compile_args = {"cxx": ["-O3", "-std=c++20", "-fopenmp"]}
if os.environ.get("MAMA_DEBUG_BUILD"):
    extra_compile_args = {"cxx": ["-O0", "-g", "-std=c++20", "-fopenmp"]}

setup(
    name="mama",
    version="0.1.0",
    description="Video anomaly detection: F2LM generator + Destroyer, with fast custom ops",
    python_requires=">=3.10",
    packages=[
        "mama",
        "mama.data",
        "mama.models",
        "mama.train",
        "mama.evaluate",
        "mama.kernels",
        "mama.cli",
    ],
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
    entry_points={"console_scripts": ["mama = mama.cli.app:cli"]},
)
