"""Expected checkpoint layouts of the flownet2-pytorch models (test data).

Written from the published architecture (networks/FlowNetC.py, FlowNetS.py, FlowNetSD.py,
FlowNetFusion.py, models.py of NVIDIA/flownet2-pytorch, batchNorm=False), not from a
downloaded file: each entry is a state-dict key and its shape. Conv weights are
(out, in, k, k), transposed-conv weights (in, out, k, k).

PUBLISHED_PARAMETER_COUNTS are the numbers the project itself prints: FlowNet2's in its
training log ("Number of parameters: 162518834"), the others in the header strings of
networks/FlowNetC.py, FlowNetSD.py and FlowNetFusion.py.
"""

from __future__ import annotations

Shapes = dict[str, tuple[int, ...]]


def _conv(name: str, cin: int, cout: int, k: int = 3) -> Shapes:
    """conv() / i_conv() of submodules.py: Sequential(Conv2d(bias=True), ...) -> '<name>.0.*'."""
    return {f"{name}.0.weight": (cout, cin, k, k), f"{name}.0.bias": (cout,)}


def _deconv(name: str, cin: int, cout: int) -> Shapes:
    """deconv(): Sequential(ConvTranspose2d(k4, s2, bias=True), LeakyReLU)."""
    return {f"{name}.0.weight": (cin, cout, 4, 4), f"{name}.0.bias": (cout,)}


def _predict(name: str, cin: int) -> Shapes:
    """predict_flow(): a bare Conv2d(cin, 2, 3) with bias."""
    return {f"{name}.weight": (2, cin, 3, 3), f"{name}.bias": (2,)}


def _upsample(name: str, bias: bool) -> Shapes:
    """nn.ConvTranspose2d(2, 2, 4, 2, 1): bias=False in FlowNetS, True elsewhere."""
    shapes = {f"{name}.weight": (2, 2, 4, 4)}
    if bias:
        shapes[f"{name}.bias"] = (2,)
    return shapes


def _merge(*parts: Shapes) -> Shapes:
    merged: Shapes = {}
    for part in parts:
        merged.update(part)
    return merged


def _prefixed(prefix: str, shapes: Shapes) -> Shapes:
    return {f"{prefix}.{k}": v for k, v in shapes.items()}


def _flow_decoder(predict_in: tuple[int, int, int, int, int], upsample_bias: bool) -> Shapes:
    """deconv5..2, predict_flow6..2 (given input channels), upsampled_flow6_to_5..3_to_2."""
    return _merge(
        _deconv("deconv5", 1024, 512),
        _deconv("deconv4", 1026, 256),
        _deconv("deconv3", 770, 128),
        _deconv("deconv2", 386, 64),
        *(_predict(f"predict_flow{level}", c) for level, c in zip((6, 5, 4, 3, 2), predict_in)),
        *(_upsample(f"upsampled_flow{n}_to_{n - 1}", upsample_bias) for n in (6, 5, 4, 3)),
    )


FLOWNETC = _merge(
    _conv("conv1", 3, 64, 7),
    _conv("conv2", 64, 128, 5),
    _conv("conv3", 128, 256, 5),
    _conv("conv_redir", 256, 32, 1),
    _conv("conv3_1", 473, 256),
    _conv("conv4", 256, 512),
    _conv("conv4_1", 512, 512),
    _conv("conv5", 512, 512),
    _conv("conv5_1", 512, 512),
    _conv("conv6", 512, 1024),
    _conv("conv6_1", 1024, 1024),
    _flow_decoder((1024, 1026, 770, 386, 194), upsample_bias=True),
)


def flownets(input_channels: int) -> Shapes:
    return _merge(
        _conv("conv1", input_channels, 64, 7),
        _conv("conv2", 64, 128, 5),
        _conv("conv3", 128, 256, 5),
        _conv("conv3_1", 256, 256),
        _conv("conv4", 256, 512),
        _conv("conv4_1", 512, 512),
        _conv("conv5", 512, 512),
        _conv("conv5_1", 512, 512),
        _conv("conv6", 512, 1024),
        _conv("conv6_1", 1024, 1024),
        _flow_decoder((1024, 1026, 770, 386, 194), upsample_bias=False),
    )


FLOWNETSD = _merge(
    _conv("conv0", 6, 64),
    _conv("conv1", 64, 64),
    _conv("conv1_1", 64, 128),
    _conv("conv2", 128, 128),
    _conv("conv2_1", 128, 128),
    _conv("conv3", 128, 256),
    _conv("conv3_1", 256, 256),
    _conv("conv4", 256, 512),
    _conv("conv4_1", 512, 512),
    _conv("conv5", 512, 512),
    _conv("conv5_1", 512, 512),
    _conv("conv6", 512, 1024),
    _conv("conv6_1", 1024, 1024),
    _flow_decoder((1024, 512, 256, 128, 64), upsample_bias=True),
    _conv("inter_conv5", 1026, 512),
    _conv("inter_conv4", 770, 256),
    _conv("inter_conv3", 386, 128),
    _conv("inter_conv2", 194, 64),
)

FLOWNETFUSION = _merge(
    _conv("conv0", 11, 64),
    _conv("conv1", 64, 64),
    _conv("conv1_1", 64, 128),
    _conv("conv2", 128, 128),
    _conv("conv2_1", 128, 128),
    _deconv("deconv1", 128, 32),
    _deconv("deconv0", 162, 16),
    _conv("inter_conv1", 162, 32),
    _conv("inter_conv0", 82, 16),
    _predict("predict_flow2", 128),
    _predict("predict_flow1", 32),
    _predict("predict_flow0", 16),
    _upsample("upsampled_flow2_to_1", bias=True),
    _upsample("upsampled_flow1_to_0", bias=True),
)

# Model name -> expected state dict layout. FlowNet2C/S/SD subclass the bare networks, so
# their keys carry no prefix; the stacks hold them as flownetc, flownets_1, ... .
EXPECTED: dict[str, Shapes] = {
    "FlowNetC": FLOWNETC,
    "FlowNetS": flownets(12),
    "FlowNetSD": FLOWNETSD,
    "FlowNetFusion": FLOWNETFUSION,
    "FlowNet2C": FLOWNETC,
    "FlowNet2S": flownets(6),
    "FlowNet2SD": FLOWNETSD,
    "FlowNet2CS": _merge(_prefixed("flownetc", FLOWNETC), _prefixed("flownets_1", flownets(12))),
    "FlowNet2CSS": _merge(
        _prefixed("flownetc", FLOWNETC),
        _prefixed("flownets_1", flownets(12)),
        _prefixed("flownets_2", flownets(12)),
    ),
    "FlowNet2": _merge(
        _prefixed("flownetc", FLOWNETC),
        _prefixed("flownets_1", flownets(12)),
        _prefixed("flownets_2", flownets(12)),
        _prefixed("flownets_d", FLOWNETSD),
        _prefixed("flownetfusion", FLOWNETFUSION),
    ),
}

PUBLISHED_PARAMETER_COUNTS = {
    "FlowNet2": 162_518_834,
    "FlowNetC": 39_175_298,
    "FlowNetSD": 45_371_666,
    "FlowNetFusion": 581_226,
}
