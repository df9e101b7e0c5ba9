"""The scoring networks as ONNX files, and ONNX Runtime sessions that stand in for them.

`export_network` writes one network's method (forward, FlowNet2-SD's forward_lowres,
DeepLabv3's stride8_logits) as ONNX with the TorchScript exporter, a dynamic batch axis, and
mama's custom ops traced through their plain-PyTorch definitions (mama.ops.reference_faces), so
the file holds standard ONNX operators only. Export the networks as trained, not their CPU
inference copies (mama.models.inference): ONNX Runtime folds BatchNorm itself, and the
Winograd op is a CPU kernel of mama's own.

`OrtNetwork` runs such a file: called (or through the method it was exported from) with torch
tensors like the network, it returns torch tensors, so the scoring pipeline does not change;
`OrtGenerator` gives the generator's GeneratorOutput. onnxruntime is an optional extra
(`pip install "mama[onnx]"`), imported only here and only when a session is made.
"""
from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from mama import ops
from mama.errors import MamaError
from mama.models.generator import GeneratorOutput

OPSET = 17
GENERATOR_INPUTS = ("frames", "flows", "labels")
GENERATOR_OUTPUTS = GeneratorOutput._fields  # pred, x4, y4, x_y, z4, x_z
INSTALL_HINT = 'pip install "mama[onnx]"'
# ONNX Runtime's graph optimisation levels by the names the command line takes.
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def _extra(module: str, what: str):
    """A module of the onnx extra, or a MamaError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MamaError(f"{what} needs the onnx extra ({module} is not installed): {INSTALL_HINT}") from None


def onnxruntime():
    """The onnxruntime module, or a MamaError saying how to install it."""
    return _extra("onnxruntime", "the onnxruntime engine")


class _Method(nn.Module):
    """A network's method as a module's forward (what the exporter traces); tuple outputs flat,
    without the Nones of a generator that has no label branch."""

    def __init__(self, net: nn.Module, method: str):
        super().__init__()
        self.net, self.method = net, method

    def forward(self, *inputs: Tensor):
        out = getattr(self.net, self.method)(*inputs)
        return tuple(t for t in out if t is not None) if isinstance(out, tuple) else out


def export_network(net: nn.Module, inputs: tuple[Tensor, ...], path: Path, input_names: list[str],
                   output_names: list[str], method: str = "forward") -> None:
    """Write `net.<method>(*inputs)` to `path` as ONNX (batch axis dynamic)."""
    _extra("onnx", "mama export")  # the exporter writes through it
    # The wrapper in eval mode too: the exporter restores its mode, and with it the network's.
    wrapper = _Method(net.eval(), method).eval()
    dynamic = {name: {0: "batch"} for name in (*input_names, *output_names)}
    with ops.reference_faces(), torch.no_grad(), warnings.catch_warnings():
        # The shape checks and the decoder's padding branch on sizes, constant in a graph made
        # for one frame size (only the batch axis varies): the tracer's warnings say nothing here.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # The TorchScript exporter on purpose (deprecated in favour of torch.export's, which did not
        # take FlowNet2's correlation either): it traces these plain networks with a dynamic batch.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(wrapper, inputs, str(path), input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)


def generator_io(generator: nn.Module) -> tuple[list[str], list[str]]:
    """The generator's ONNX input and output names (no labels, no label outputs without a label branch)."""
    if generator.has_labels:
        return list(GENERATOR_INPUTS), list(GENERATOR_OUTPUTS)
    return list(GENERATOR_INPUTS[:2]), [n for n in GENERATOR_OUTPUTS if n not in ("z4", "x_z")]


def session_options(threads: int | None = None, optimization: str = "all"):
    """ONNX Runtime session options: intra-op threads (None: its default, one per core) and
    the graph optimisation level (OPTIMIZATION_LEVELS)."""
    ort = onnxruntime()
    if optimization not in OPTIMIZATION_LEVELS:
        raise MamaError(f"ONNX Runtime optimisation {optimization!r}: choose one of {', '.join(OPTIMIZATION_LEVELS)}")
    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    if threads is not None:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3  # warnings about unused initialisers etc. are not the user's concern
    return so


class OrtNetwork:
    """An exported network run by ONNX Runtime on the CPU, called like the network: torch
    tensors in (None for an absent input), a tensor (or a tuple, for several outputs) out.
    It answers to the method it was exported from too (e.g. `forward_lowres`)."""

    def __init__(self, path: Path, method: str = "forward", threads: int | None = None, optimization: str = "all"):
        ort = onnxruntime()
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), session_options(threads, optimization),
                                            providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        if method != "forward":
            setattr(self, method, self.__call__)

    def run(self, *inputs: Tensor | None) -> list[Tensor]:
        feeds = {name: np.ascontiguousarray(t.detach().float().cpu().numpy())
                 for name, t in zip(self.input_names, (t for t in inputs if t is not None))}
        return [torch.from_numpy(o) for o in self.session.run(None, feeds)]

    def __call__(self, *inputs: Tensor | None):
        out = self.run(*inputs)
        return out[0] if len(out) == 1 else tuple(out)

    # The scorer moves and switches networks as torch modules; a session is already both.
    def eval(self) -> "OrtNetwork":
        return self

    def to(self, *args, **kwargs) -> "OrtNetwork":
        return self


class OrtGenerator(OrtNetwork):
    """The exported generator: returns a GeneratorOutput as the F2LM generator does."""

    def __call__(self, frames: Tensor, flows: Tensor, labels: Tensor | None = None) -> GeneratorOutput:
        names = [o.name for o in self.session.get_outputs()]
        out = dict(zip(names, self.run(frames, flows, labels)))
        return GeneratorOutput(*(out.get(n) for n in GENERATOR_OUTPUTS))
