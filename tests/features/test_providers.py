"""Motion / label providers, their registry, and the one assembly of the generator's inputs
(mama.features)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models.segmentation import deeplabv3_resnet101

from mama.data.datasets import video_background
from mama.errors import MamaError
from mama.features.base import LabelProvider, MotionProvider
from mama.features.extractor import FeatureExtractor
from mama.features.labels import DeepLabLabels, ForegroundLabels, NoLabels
from mama.features.motion import DISFlow, FarnebackFlow, FlowNetFlow, flownet2sd_reference_flow
from mama.features.registry import build_extractor, build_label_provider, build_motion_provider
from mama.features.store import FeatureStore, TensorSource
from mama.models import flownet2
from mama.models.deeplab import build_deeplabv3, upsample_logits
from mama.weights import resolve_weights

DEEPLAB_FILE = "deeplabv3_resnet101_coco-586e9e4e.pth"


def read_frames(ped2_root, video: str, indices, size: int) -> torch.Tensor:
    """Real Ped2 frames as (N, 3, size, size) float32 BGR in [-1, 1]."""
    folder = ped2_root / "ped2" / "training" / "frames" / video
    frames = [cv2.resize(cv2.imread(str(folder / f"{i:03d}.jpg")), (size, size)) for i in indices]
    return torch.from_numpy(np.stack(frames).astype(np.float32) / 127.5 - 1).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(autouse=True)
def one_torch_thread():
    """On the shared, oversubscribed CI cores, torch's 2-thread OpenMP spins make ResNet-101
    ~10x slower than one thread; the results do not depend on it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def no_weights_anywhere(tmp_path, monkeypatch):
    """Empty weights dir and torch hub cache, so no test sees a real user's files."""
    monkeypatch.setenv("MAMA_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


# ---- motion ------------------------------------------------------------------------------

def translated_pair(rng, size: int, dx: float, dy: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth random texture and the same texture moved by (dx, dy) pixels, as frames."""
    big = size + 32
    texture = cv2.resize(rng.random((big // 4, big // 4)).astype(np.float32), (big, big), interpolation=cv2.INTER_CUBIC)
    texture = cv2.GaussianBlur(texture, (0, 0), 1.0)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    shift = np.float32([[1, 0, dx], [0, 1, dy]])  # moved(x) = texture(x - d): content moves by +d
    moved = cv2.warpAffine(texture, shift, (big, big), flags=cv2.INTER_LINEAR)
    crop = lambda img: img[16 : 16 + size, 16 : 16 + size]
    as_frame = lambda g: torch.from_numpy(np.repeat(g[None, None] * 2 - 1, 3, axis=1)).float()
    return as_frame(crop(texture)), as_frame(crop(moved))


@pytest.mark.parametrize("provider_cls", [DISFlow, FarnebackFlow])
def test_opencv_flow_recovers_a_known_translation(provider_cls):
    rng = np.random.default_rng(11)
    dx, dy = rng.uniform(-4, 4, size=2)
    prev, nxt = translated_pair(rng, 128, dx, dy)
    flow = provider_cls()(prev, nxt)
    assert flow.shape == (1, 2, 128, 128) and flow.dtype == torch.float32
    interior = flow[0, :, 16:-16, 16:-16].reshape(2, -1)
    median = interior.median(dim=1).values
    assert abs(median[0].item() - dx) < 1.0, (median, dx, dy)  # channel 0 = x
    assert abs(median[1].item() - dy) < 1.0, (median, dx, dy)


@pytest.mark.parametrize("provider_cls", [DISFlow, FarnebackFlow])
def test_opencv_flow_on_real_frames(ped2_root, provider_cls):
    frames = read_frames(ped2_root, "01", range(5), 128)
    flow = provider_cls()(frames[:-1], frames[1:])
    assert flow.shape == (4, 2, 128, 128) and flow.dtype == torch.float32
    assert torch.isfinite(flow).all()
    # pedestrians move a few pixels per frame; the static scene barely at all
    assert flow.abs().amax() < 20
    assert flow.abs().median() < 0.5
    # a frame against itself does not move (flat regions may wobble a little)
    still = provider_cls()(frames[:1], frames[:1]).abs()
    assert still.median() < 0.01 and still.amax() < 1


def test_flownet_provider_wraps_the_reference_scaling():
    torch.manual_seed(0)
    net = flownet2.FlowNet2SD().eval().requires_grad_(False)
    provider = FlowNetFlow("flownet2sd", net)
    prev, nxt = torch.rand(2, 2, 3, 64, 64).mul(2).sub(1).unbind(0)
    coarse = provider.coarse(prev, nxt)
    assert coarse.shape == (2, 2, 16, 16)  # cached before the x4 upsampling
    flow = provider(prev, nxt)
    assert flow.shape == (2, 2, 64, 64)
    # pixels here; divided by 255 (the extractor's flow_scale) it is the reference's flow
    torch.testing.assert_close(flow / 255, flownet2sd_reference_flow(net, prev, nxt), rtol=1e-5, atol=1e-7)


# ---- labels ------------------------------------------------------------------------------

def test_deeplab_random_weights_logits_and_stride8_cache(ped2_root):
    torch.manual_seed(0)
    model = build_deeplabv3()  # random weights, no file
    provider = DeepLabLabels(model)
    frames = read_frames(ped2_root, "02", [0, 7], 128)
    logits = provider(frames)
    assert provider.channels == 21
    assert logits.shape == (2, 21, 128, 128) and logits.dtype == torch.float32
    coarse = provider.coarse(frames)
    assert coarse.shape == (2, 21, 16, 16)
    # the cache point is exact: torchvision's own forward 'out' == upsampled stride-8 logits
    with torch.no_grad():
        torchvision_out = model.net(frames)["out"]
    torch.testing.assert_close(upsample_logits(coarse, (128, 128)), torchvision_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits, torchvision_out, rtol=1e-5, atol=1e-5)


def test_deeplab_loads_a_torchvision_state_dict_from_a_file_and_the_hub_cache(tmp_path, ped2_root):
    torch.manual_seed(3)
    # a torchvision-layout file: the COCO weights carry the aux head (dropped on load)
    source = deeplabv3_resnet101(weights=None, weights_backbone=None, num_classes=21, aux_loss=True).eval()
    path = tmp_path / "local" / DEEPLAB_FILE
    path.parent.mkdir()
    torch.save(source.state_dict(), path)
    frames = read_frames(ped2_root, "03", [5], 128)
    with torch.no_grad():
        expected = source(frames)["out"]

    provider = build_label_provider("deeplabv3", weights=path)
    torch.testing.assert_close(provider(frames), expected, rtol=1e-5, atol=1e-5)

    # found without a path in the torch hub cache ($TORCH_HOME/hub/checkpoints)
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / DEEPLAB_FILE).symlink_to(path)
    assert resolve_weights("deeplabv3_resnet101") == hub / DEEPLAB_FILE
    # ... after the weights dir, which wins
    installed = tmp_path / "weights" / DEEPLAB_FILE
    installed.parent.mkdir()
    installed.symlink_to(path)
    assert resolve_weights("deeplabv3_resnet101") == installed


def test_deeplab_rejects_a_file_of_another_architecture(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save(torch.nn.Linear(3, 4).state_dict(), path)
    with pytest.raises(MamaError, match=r"wrong\.pth is not a deeplabv3_resnet101 state dict"):
        build_label_provider("deeplabv3", weights=path)
    partial = tmp_path / "partial.pth"  # DeepLab-like keys, but most are missing
    torch.save({"backbone.conv1.weight": torch.zeros(64, 3, 7, 7)}, partial)
    with pytest.raises(MamaError, match=r"partial\.pth is not a deeplabv3_resnet101 state dict \(\d+ missing keys \(backbone\.bn1\.weight, "):
        build_label_provider("deeplabv3", weights=partial)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(MamaError, match=r"junk\.pth: corrupt or not a torch checkpoint .*deeplabv3_resnet101_coco-586e9e4e\.pth"):
        build_label_provider("deeplabv3", weights=junk)


def test_missing_weights_say_which_file_where_and_how(tmp_path):
    with pytest.raises(MamaError, match=rf"{DEEPLAB_FILE} is in neither .*weights.*pytorch\.org.*mama weights import FILE") as info:
        build_label_provider("deeplabv3")
    assert "\n" not in str(info.value)
    with pytest.raises(MamaError, match=r"FlowNet2-SD_checkpoint\.pth\.tar is in neither .*flownet2-pytorch.*mama weights import FILE"):
        build_motion_provider("flownet2sd")
    with pytest.raises(MamaError, match=r"FlowNet2_checkpoint\.pth\.tar is in neither"):
        build_motion_provider("flownet2")
    with pytest.raises(MamaError, match=r"weights file .*nowhere\.pth does not exist"):
        build_label_provider("deeplabv3", weights=tmp_path / "nowhere.pth")


def test_unknown_provider_names_list_the_choices():
    with pytest.raises(MamaError, match=r"unknown motion provider 'raft'; choose one of: flownet2sd, flownet2, dis, farneback"):
        build_motion_provider("raft")
    with pytest.raises(MamaError, match=r"unknown label provider 'sam'; choose one of: deeplabv3, foreground, none"):
        build_label_provider("sam")


def test_weights_for_a_weight_free_provider_are_refused(tmp_path):
    with pytest.raises(MamaError, match=r"--motion-weights .*x\.pth: the motion provider 'dis' uses no weights; drop --motion-weights"):
        build_extractor("dis", "none", motion_weights=tmp_path / "x.pth")
    with pytest.raises(MamaError, match=r"--label-weights .*: the label provider 'foreground' uses no weights"):
        build_extractor("dis", "foreground", label_weights=tmp_path / "y.pth")


def test_foreground_is_zero_on_the_background_and_high_on_a_pasted_object(ped2_root):
    frames = read_frames(ped2_root, "04", range(0, 120, 4), 128)
    background = torch.from_numpy(video_background(frames.numpy()))
    provider = build_label_provider("foreground")
    assert provider.channels == 1

    rng = np.random.default_rng(5)
    y, x = rng.integers(20, 88, size=2)
    scene = background.clone()
    # an object whose colour is far from the background under it
    scene[:, y : y + 24, x : x + 24] = torch.where(background[:, y : y + 24, x : x + 24] > 0, -1.0, 1.0)
    maps = provider(torch.stack([background, scene]), background)
    assert maps.shape == (2, 1, 128, 128) and maps.dtype == torch.float32
    assert maps[0].abs().max() == 0  # the background itself
    assert maps[1, 0, y + 3 : y + 21, x + 3 : x + 21].min() > 0.95  # the object's interior
    away = torch.ones(128, 128, dtype=torch.bool)
    away[max(0, y - 6) : y + 30, max(0, x - 6) : x + 30] = False
    assert maps[1, 0][away].max() == 0  # nothing far from the object

    real = provider(frames, background)
    assert real.shape == (30, 1, 128, 128)
    assert real.min() >= 0 and real.max() <= 1
    assert real.mean() < 0.1  # mostly background ...
    assert real.amax(dim=(1, 2, 3)).max() > 0.9  # ... with pedestrians somewhere


def test_foreground_needs_a_background():
    with pytest.raises(ValueError, match="background"):
        ForegroundLabels()(torch.zeros(1, 3, 8, 8))


def test_none_labels_have_zero_channels(ped2_root):
    frames = read_frames(ped2_root, "01", [0, 1], 128)
    out = NoLabels()(frames)
    assert out.shape == (2, 0, 128, 128)


# ---- feature extraction ------------------------------------------------------------------

class CountingMotion(MotionProvider):
    """A cheap deterministic 'flow' with a coarse/expand split; records every pair it sees."""

    name = "counting"

    def __init__(self):
        self.calls, self.seen = 0, []

    def coarse(self, prev, nxt):
        self.calls += 1
        self.seen.append(torch.cat([prev, nxt], dim=1).flatten(1))
        return F.avg_pool2d((nxt - prev)[:, :2] * 7 + prev[:, 1:], 2)

    def expand(self, coarse, size):
        return F.interpolate(coarse, size=tuple(size), mode="bilinear", align_corners=False)


class CountingLabels(LabelProvider):
    """Labels from a fixed random 1x1 conv at stride 2 (+ the background if it uses one)."""

    name = "counting"
    channels = 5

    def __init__(self, uses_background: bool):
        self.uses_background = uses_background
        self.weight = torch.randn(5, 3, 1, 1, generator=torch.Generator().manual_seed(9))
        self.calls, self.seen = 0, []

    def coarse(self, frames, background=None):
        self.calls += 1
        key = frames if background is None else torch.cat([frames, background], dim=1)
        self.seen.append(key.flatten(1))
        x = frames if background is None else frames - 0.5 * background
        return F.conv2d(F.avg_pool2d(x, 2), self.weight)

    def expand(self, coarse, size):
        return F.interpolate(coarse, size=tuple(size), mode="bilinear", align_corners=False)


def naive_clip_inputs(motion, labels, clips, backgrounds, flow_scale):
    """The reference's way: every clip on its own, every frame and pair recomputed."""
    frames, flows, label_maps = [], [], []
    for b, clip in enumerate(clips):
        frames.append(clip[:4].reshape(12, *clip.shape[-2:]))
        flows.append(torch.cat([motion(clip[i : i + 1], clip[i + 1 : i + 2])[0] * flow_scale for i in range(3)]))
        bg = None if backgrounds is None else backgrounds[b : b + 1]
        label_maps.append(torch.cat([labels(clip[i : i + 1], bg)[0] for i in range(4)]))
    return torch.stack(frames), torch.stack(flows), torch.stack(label_maps), clips[:, 4]


def windows(video, targets):
    return torch.stack([video[t - 4 : t + 1] for t in targets])


def assert_each_row_once(seen: list[torch.Tensor], expected: int) -> None:
    rows = torch.cat(seen)
    assert len(rows) == expected
    assert len(torch.unique(rows, dim=0)) == expected


@pytest.mark.parametrize("uses_background", [False, True])
def test_a_batch_computes_each_frame_and_pair_once_in_canonical_chunks(uses_background):
    gen = torch.Generator().manual_seed(1)
    video_a = torch.rand(9, 3, 16, 20, generator=gen) * 2 - 1
    video_b = torch.rand(7, 3, 16, 20, generator=gen) * 2 - 1
    bg_a, bg_b = torch.rand(2, 3, 16, 20, generator=gen) * 2 - 1
    # overlapping windows of video a (targets 4..8), one repeated, and two of video b
    targets = [6, 4, 8, 5, 7, 6, 4, 6]
    videos = [0] * 6 + [1] * 2
    clips = torch.cat([windows(video_a, targets[:6]), windows(video_b, targets[6:])])
    backgrounds = torch.stack([bg_a] * 6 + [bg_b] * 2) if uses_background else None
    source = TensorSource({0: video_a, 1: video_b}, {0: bg_a, 1: bg_b} if uses_background else {})

    motion, labels = CountingMotion(), CountingLabels(uses_background)
    # chunks of 4: the inputs need video a's frames 0-7 (chunks 0-3, 4-7; frame 8 is only a
    # target) and video b's 0-5 (chunks 0-3, 4-6); keep nothing
    store = FeatureStore(FeatureExtractor(motion, labels, flow_scale=0.25, chunk=4), source, max_bytes=0)
    frames, flows, label_maps, target = store.clip_inputs(clips, videos, targets)

    # one call per network and chunk; each frame and pair of those chunks once
    assert motion.calls == 4 and labels.calls == 4
    assert_each_row_once(motion.seen, 8 + 6)  # pairs a: 0-7, b: 0-5
    assert_each_row_once(labels.seen, 8 + 7)  # frames a: 0-7, b: 0-6

    ref_motion, ref_labels = CountingMotion(), CountingLabels(uses_background)
    expected = naive_clip_inputs(ref_motion, ref_labels, clips, backgrounds, 0.25)
    assert ref_labels.calls == 4 * len(clips)  # what the de-duplication saves
    for got, want in zip((frames, flows, label_maps, target), expected):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert flows.shape == (8, 6, 16, 20) and label_maps.shape == (8, 20, 16, 20)
    # Nothing was kept, so the same batch again computes again, the same bits.
    again = store.clip_inputs(clips, videos, targets)
    assert motion.calls == 8 and len(store) == 0
    for a, b in zip(again, (frames, flows, label_maps, target)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_an_entry_has_the_same_bits_whichever_batch_needed_it_first():
    # Computed in canonical chunks, a frame's features do not depend on the batch that asked.
    gen = torch.Generator().manual_seed(3)
    video = torch.rand(21, 3, 16, 16, generator=gen) * 2 - 1
    bg = video.median(dim=0).values
    extractor = FeatureExtractor(DISFlow(), ForegroundLabels(), chunk=8)
    one, two = (FeatureStore(extractor, TensorSource({0: video}, {0: bg})) for _ in range(2))
    one.clip_inputs(windows(video, [12, 20, 6]), [0] * 3, [12, 20, 6])
    two.clip_inputs(windows(video, [7]), [0], [7])
    two.clip_inputs(windows(video, [15, 18, 4, 9]), [0] * 4, [15, 18, 4, 9])
    for key in set(one.labels) & set(two.labels):
        assert torch.equal(one.labels[key], two.labels[key]), key
    for key in set(one.flows) & set(two.flows):
        assert torch.equal(one.flows[key], two.flows[key]), key
    filled = FeatureStore(extractor)
    filled.fill_video(0, video, bg)  # scoring computes the same chunks
    assert all(torch.equal(filled.labels[k], one.labels[k]) for k in one.labels)


def test_assembled_channel_order_is_frame_major():
    gen = torch.Generator().manual_seed(2)
    clips = torch.rand(3, 5, 3, 8, 8, generator=gen) * 2 - 1
    motion, labels = CountingMotion(), CountingLabels(False)
    source = TensorSource({b: clips[b] for b in range(3)})
    frames, flows, label_maps, target = FeatureStore(FeatureExtractor(motion, labels), source).clip_inputs(clips, [0, 1, 2], [4] * 3)
    for b in range(3):
        for i in range(4):
            torch.testing.assert_close(frames[b, 3 * i : 3 * i + 3], clips[b, i], rtol=0, atol=0)
            torch.testing.assert_close(label_maps[b, 5 * i : 5 * i + 5], labels(clips[b, i : i + 1])[0])
        for i in range(3):
            flow = motion(clips[b, i : i + 1], clips[b, i + 1 : i + 2])[0] / 255  # default flow_scale
            torch.testing.assert_close(flows[b, 2 * i : 2 * i + 2], flow)
    torch.testing.assert_close(target, clips[:, 4], rtol=0, atol=0)


@pytest.mark.parametrize("uses_background", [False, True])
def test_a_filled_video_computes_each_frame_and_pair_once(uses_background):
    gen = torch.Generator().manual_seed(4)
    video = torch.rand(11, 3, 12, 16, generator=gen) * 2 - 1
    background = torch.rand(3, 12, 16, generator=gen) * 2 - 1
    bg = background if uses_background else None
    motion, labels = CountingMotion(), CountingLabels(uses_background)
    store = FeatureStore(FeatureExtractor(motion, labels, flow_scale=0.5, chunk=4))
    store.fill_video(3, video, bg)
    assert motion.calls == 3 and labels.calls == 3  # ceil(10 / 4) pair chunks, ceil(11 / 4) frame chunks
    assert_each_row_once(motion.seen, 10)
    assert_each_row_once(labels.seen, 11)
    assert len(store.flows) == 10 and len(store.labels) == 11

    targets = list(range(4, 11))
    got = store.video_clip_inputs(3, video, targets)
    assert motion.calls == 3 and labels.calls == 3  # assembling clips recomputes nothing
    clips = windows(video, targets)
    backgrounds = background.expand(len(targets), -1, -1, -1) if uses_background else None
    expected = naive_clip_inputs(CountingMotion(), CountingLabels(uses_background), clips, backgrounds, 0.5)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="targets must be in 4..10"):
        store.video_clip_inputs(3, video, [3])
    store.drop(3)
    assert len(store) == 0


def test_real_providers_through_the_store_match_the_naive_loop(ped2_root):
    video = read_frames(ped2_root, "05", range(8), 64)
    background = torch.from_numpy(video_background(video.numpy()))
    extractor = FeatureExtractor(DISFlow(), ForegroundLabels(), chunk=3)
    clips = windows(video, [4, 5, 6, 7])
    backgrounds = background.expand(4, -1, -1, -1)
    from_clips = FeatureStore(extractor, TensorSource({0: video}, {0: background})).clip_inputs(clips, [0] * 4, [4, 5, 6, 7])
    filled = FeatureStore(extractor)
    filled.fill_video(0, video, background)
    from_video = filled.video_clip_inputs(0, video, [4, 5, 6, 7])
    expected = naive_clip_inputs(DISFlow(), ForegroundLabels(), clips, backgrounds, 1 / 255)
    for a, b, e in zip(from_clips, from_video, expected):
        torch.testing.assert_close(a, e, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(b, e, rtol=1e-6, atol=1e-6)


def test_no_labels_give_none():
    clips = torch.rand(2, 5, 3, 8, 8) * 2 - 1
    out = FeatureStore(FeatureExtractor(CountingMotion(), NoLabels()), TensorSource({0: clips[0]})).clip_inputs(clips[:1].expand(2, -1, -1, -1, -1), [0, 0], [4, 4])
    assert out.labels is None and out.flows.shape == (2, 6, 8, 8)
    store = FeatureStore(FeatureExtractor(CountingMotion(), None))
    store.fill_video(0, clips[0])
    assert store.labels == {} and store.video_clip_inputs(0, clips[0], [4]).labels is None
