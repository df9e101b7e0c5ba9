"""The synthetic scene model: a fixed camera's background, pedestrians and anomalies, rendered.

Pure computation, no files: `make_scene` draws the static background of a seed, `render_video`
draws one video's frames and its pixel-exact anomaly masks, `anomaly_plan` says which anomaly
kinds each test video gets. `mama.data.synth` writes them as a dataset (its docstring describes
the scene and the layout). A seed fixes everything, byte for byte.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

import cv2
import numpy as np

DEFAULT_SIZE = 128
SUPERSAMPLE = 2  # frames are drawn at SUPERSAMPLE x size, then area-downsampled
NOISE_SIGMA = 2.0  # sensor noise, grey levels
ANOMALY_KINDS = ("cyclist", "runner", "cart", "erratic", "thrown", "skater")

_SHIFT = 4  # sub-pixel bits for OpenCV drawing, so slow motion stays smooth
_FIX = 1 << _SHIFT
_SPLIT_CODE = {"training": 0, "testing": 1}

# Scene geometry as fractions of the frame (y grows downward).
_WALL_END, _HEDGE_END, _LAWN_END, _WALKWAY_END = 0.14, 0.24, 0.47, 0.95
_LANE = (0.53, 0.92)  # where walkers' feet are: on the walkway
_ERRATIC_RANGE = (0.30, 0.97)  # the erratic walker crosses the far lawn
_WALK_SPEED = 0.07  # body heights per frame (about 1.3 m/s at 10 fps)
_ENTER_RATE, _MAX_WALKERS = 0.08, 9  # chance per frame that a pedestrian enters; crowd cap
_NOISE_BANK = 8  # sensor noise: fields drawn once per video, randomly shifted per frame


def _person_height(y: float, r: int) -> float:
    """Body height in render pixels of a person standing at row y (perspective: nearer is bigger)."""
    return r * max(0.06, 0.13 + 0.11 * (y / r - 0.5) / 0.45)


# ---------------------------------------------------------------------------------------------
# Drawing primitives: colour into the frame and ownership into the anomaly mask, in one call.
# ---------------------------------------------------------------------------------------------
def _fix(p) -> tuple[int, int]:
    """A point in OpenCV's fixed-point pixel units."""
    return (math.floor(float(p[0]) * _FIX + 0.5), math.floor(float(p[1]) * _FIX + 0.5))


class _Painter:
    """Draws one frame at render size; every primitive also paints `owner` into the mask.

    `owner` is 255 while an anomaly is drawn and 0 otherwise, so whatever is drawn in front of
    an anomaly clears its mask: the mask is the visible part only.
    """

    def __init__(self, image: np.ndarray, mask: np.ndarray):
        self.image, self.mask, self.owner = image, mask, 0
        self._mask_on = False  # until an anomaly is drawn there is nothing in the mask to clear

    def begin(self, anomalous: bool) -> None:
        """Start drawing the next object (objects come far to near)."""
        self.owner = 255 if anomalous else 0
        self._mask_on = self._mask_on or anomalous

    def line(self, p, q, color, width: float) -> None:
        w = max(1, int(round(width)))
        a, b = _fix(p), _fix(q)
        cv2.line(self.image, a, b, color, w, cv2.LINE_8, _SHIFT)
        if self._mask_on:
            cv2.line(self.mask, a, b, self.owner, w, cv2.LINE_8, _SHIFT)

    def polygon(self, pts, color) -> None:
        arr = [np.round(np.asarray(pts, np.float64) * _FIX).astype(np.int32)]
        cv2.fillPoly(self.image, arr, color, cv2.LINE_8, _SHIFT)
        if self._mask_on:
            cv2.fillPoly(self.mask, arr, self.owner, cv2.LINE_8, _SHIFT)

    def circle(self, c, radius: float, color, width: int = -1) -> None:
        rad, c = max(_FIX, int(round(radius * _FIX))), _fix(c)
        cv2.circle(self.image, c, rad, color, width, cv2.LINE_8, _SHIFT)
        if self._mask_on:
            cv2.circle(self.mask, c, rad, self.owner, width, cv2.LINE_8, _SHIFT)

    def ellipse(self, c, axes, angle: float, color) -> None:
        ax = (max(_FIX, int(round(axes[0] * _FIX))), max(_FIX, int(round(axes[1] * _FIX))))
        c = _fix(c)
        cv2.ellipse(self.image, c, ax, angle, 0, 360, color, -1, cv2.LINE_8, _SHIFT)
        if self._mask_on:
            cv2.ellipse(self.mask, c, ax, angle, 0, 360, self.owner, -1, cv2.LINE_8, _SHIFT)


def _shade(color, k: float) -> tuple[int, int, int]:
    return tuple(int(min(255, c * k)) for c in color)


def _shadow(layer: np.ndarray, c, axes, strength: float = 1.0) -> None:
    ax = (max(_FIX, int(axes[0] * _FIX)), max(_FIX, int(axes[1] * _FIX)))
    cv2.ellipse(layer, _fix(c), ax, 0, 0, 360, int(255 * strength), -1, cv2.LINE_AA, _SHIFT)


# ---------------------------------------------------------------------------------------------
# Figures. Limb angles are measured from straight down, positive = toward the facing side.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Gait:
    stride: float  # thigh swing amplitude (rad)
    knee: float  # extra knee flexion while the leg swings forward (rad)
    arm: float  # upper-arm swing amplitude (rad)
    elbow: float  # forearm bend (rad)
    lean: float  # forward torso lean (rad)
    cycle: float  # distance per gait cycle (two steps), in body heights


_WALK = _Gait(stride=0.38, knee=0.6, arm=0.4, elbow=0.25, lean=0.05, cycle=0.95)
_RUN = _Gait(stride=0.75, knee=1.5, arm=0.9, elbow=1.6, lean=0.25, cycle=1.9)

_SHIRTS = [(150, 60, 30), (40, 40, 170), (225, 225, 225), (120, 120, 120), (60, 120, 50),
           (40, 170, 210), (35, 35, 35), (50, 80, 120), (150, 110, 160), (180, 150, 90),
           (110, 40, 90), (40, 100, 200), (210, 200, 150), (70, 70, 110)]
_TROUSERS = [(110, 60, 30), (30, 30, 30), (120, 160, 185), (90, 90, 90), (60, 50, 45)]
_SKIN = [(150, 180, 225), (120, 155, 200), (80, 110, 150), (60, 80, 110)]
_HAIR = [(20, 20, 25), (30, 50, 80), (60, 100, 150), (140, 140, 140)]


@dataclass(frozen=True)
class _Look:
    shirt: tuple
    trousers: tuple
    skin: tuple
    hair: tuple
    bag: tuple | None  # backpack colour, or None
    scale: float  # body height relative to the perspective norm

    # Far-side limbs are in the body's own shade.
    @property
    def far_shirt(self):
        return _shade(self.shirt, 0.7)

    @property
    def far_trousers(self):
        return _shade(self.trousers, 0.7)

    @property
    def far_skin(self):
        return _shade(self.skin, 0.8)


def _random_look(rng: np.random.Generator) -> _Look:
    def pick(options):
        return options[int(rng.integers(len(options)))]

    bag = pick(_SHIRTS[:8]) if rng.random() < 0.35 else None
    return _Look(pick(_SHIRTS), pick(_TROUSERS), pick(_SKIN), pick(_HAIR), bag,
                 float(rng.uniform(0.9, 1.1)))


def _at(point, dist: float, angle: float, facing: int) -> tuple[float, float]:
    """The point `dist` away from `point` at `angle` (0 = straight down, positive = toward facing)."""
    return (point[0] + facing * dist * math.sin(angle), point[1] + dist * math.cos(angle))


def _off(point, dx: float, dy: float) -> tuple[float, float]:
    return (point[0] + dx, point[1] + dy)


def _limb(p: _Painter, root, angles, lengths, width, color, facing) -> tuple[float, float]:
    """Two-segment limb from `root`; returns the end point."""
    mid = _at(root, lengths[0], angles[0], facing)
    end = _at(mid, lengths[1], angles[1], facing)
    p.line(root, mid, color, width)
    p.line(mid, end, color, width * 0.9)
    return end


def _walk_pose(gait: _Gait, phase: float):
    legs, arms = [], []
    for side in (0, 1):  # 0 = far side, 1 = near side (half a cycle apart)
        ph = phase + math.pi * side
        thigh = gait.stride * math.sin(ph)
        legs.append((thigh, thigh - gait.knee * max(0.0, math.cos(ph))))
        upper = -gait.arm * math.sin(ph)
        arms.append((upper, upper + gait.elbow))
    return legs, arms, gait.lean


def _skate_pose(phase: float):
    sway = 0.15 * math.sin(phase)
    legs = [(-0.28, -0.05), (0.25, 0.05)]
    arms = [(-0.9 + sway, -0.6), (1.1 - sway, 1.4)]
    return legs, arms, 0.15


def _torso_and_head(p: _Painter, hip, shoulder, h, facing, look: _Look, lean: float) -> None:
    if look.bag is not None:  # backpack on the back (away from the facing side)
        back = -facing * 0.09 * h
        p.polygon([_off(shoulder, back * 0.6, 0.04 * h), _off(shoulder, back * 1.9, 0.06 * h),
                   _off(hip, back * 1.7, -0.12 * h), _off(hip, back * 0.6, -0.08 * h)], look.bag)
    half_sh, half_hip = 0.085 * h, 0.07 * h
    p.polygon([_off(shoulder, -half_sh, 0), _off(shoulder, half_sh, 0),
               _off(hip, half_hip, 0), _off(hip, -half_hip, 0)], look.shirt)
    head = _at(shoulder, 0.095 * h, math.pi - lean, facing)
    p.circle(head, 0.068 * h, look.skin)
    p.ellipse(_off(head, -facing * 0.012 * h, -0.02 * h), (0.062 * h, 0.045 * h), 0, look.hair)


def _draw_person(p: _Painter, x, y, h, facing, pose, look: _Look) -> None:
    legs, arms, lean = pose
    seg = 0.26 * h
    # The hip sits so that the lower foot touches the ground (this gives the walking bob).
    drop = max(seg * (math.cos(t) + math.cos(s)) for t, s in legs)
    hip = (x, y - drop - 0.02 * h)
    shoulder = _at(hip, 0.33 * h, math.pi - lean, facing)
    hand = _limb(p, shoulder, arms[0], (0.16 * h, 0.15 * h), 0.05 * h, look.far_shirt, facing)
    p.circle(hand, 0.025 * h, look.far_skin)
    for side, colour in ((0, look.far_trousers), (1, look.trousers)):
        foot = _limb(p, hip, legs[side], (seg, seg), 0.075 * h, colour, facing)
        p.line(foot, _off(foot, facing * 0.05 * h, 0), (25, 25, 25), 0.045 * h)
    _torso_and_head(p, hip, shoulder, h, facing, look, lean)
    hand = _limb(p, shoulder, arms[1], (0.16 * h, 0.15 * h), 0.055 * h, look.shirt, facing)
    p.circle(hand, 0.027 * h, look.skin)


def _knee(hip, foot, length, facing) -> tuple[float, float]:
    """Two-link inverse kinematics: the knee of a leg from hip to foot, bent forward."""
    dx, dy = foot[0] - hip[0], foot[1] - hip[1]
    dist = max(1e-6, min(math.hypot(dx, dy), 2 * length * 0.999))
    nx, ny = -dy / dist, dx / dist
    if nx * facing < 0:
        nx, ny = -nx, -ny
    bend = math.sqrt(length**2 - (dist / 2) ** 2)
    return ((hip[0] + foot[0]) / 2 + bend * nx, (hip[1] + foot[1]) / 2 + bend * ny)


def _draw_cyclist(p: _Painter, x, y, h, facing, phase, look: _Look, frame_colour) -> None:
    f, r = facing, 0.16 * h
    rear, front, crank = (x - f * 0.33 * h, y - r), (x + f * 0.33 * h, y - r), (x, y - r)
    seat, head_tube = (x - f * 0.08 * h, y - 0.55 * h), (x + f * 0.25 * h, y - 0.5 * h)
    bar = (x + f * 0.23 * h, y - 0.62 * h)
    hip = _off(seat, 0, -0.03 * h)
    shoulder = _at(hip, 0.33 * h, math.pi - 0.9, f)
    seg = 0.27 * h
    pedals = [_off(crank, 0.09 * h * math.cos(a), 0.09 * h * math.sin(a)) for a in (phase + math.pi, phase)]
    # far leg, wheels, frame, near leg, body, arm: back to front
    knee = _knee(hip, pedals[0], seg, f)
    p.line(hip, knee, look.far_trousers, 0.075 * h)
    p.line(knee, pedals[0], look.far_trousers, 0.065 * h)
    for hub in (rear, front):
        p.circle(hub, r, (30, 30, 30), max(1, int(round(0.035 * h))))
        p.circle(hub, 0.02 * h, (120, 120, 120))
    for a, b in ((rear, seat), (seat, crank), (crank, rear), (seat, head_tube), (crank, head_tube),
                 (head_tube, front), (head_tube, bar)):
        p.line(a, b, frame_colour, 0.03 * h)
    knee = _knee(hip, pedals[1], seg, f)
    p.line(hip, knee, look.trousers, 0.08 * h)
    p.line(knee, pedals[1], look.trousers, 0.07 * h)
    _torso_and_head(p, hip, shoulder, h, f, look, 0.9)
    p.line(shoulder, bar, look.shirt, 0.055 * h)
    p.circle(bar, 0.027 * h, look.skin)


def _draw_skater(p: _Painter, x, y, h, facing, phase, look: _Look) -> None:
    board_y = y - 0.05 * h
    for dx in (-0.17, 0.17):
        p.circle((x + dx * h, y - 0.025 * h), 0.028 * h, (200, 200, 200))
    p.line((x - 0.26 * h, board_y), (x + 0.26 * h, board_y), (40, 60, 90), 0.04 * h)
    _draw_person(p, x, board_y - 0.01 * h, h, facing, _skate_pose(phase), look)


def _draw_cart(p: _Painter, x, y, h, facing, colour) -> None:
    """A small utility vehicle seen obliquely: u forward, v up, d depth (away from the camera)."""
    def at(u, v, d=0.0):
        return (x + facing * u * h, y - v * h - 0.45 * d * h)

    def quad(u0, u1, v, d0, d1):  # horizontal face at height v
        return [at(u0, v, d0), at(u1, v, d0), at(u1, v, d1), at(u0, v, d1)]

    dark, light = _shade(colour, 0.55), _shade(colour, 1.15)
    for u in (-0.45, 0.45):  # far wheels
        p.circle(at(u, 0.13, 0.55), 0.13 * h, (25, 25, 25))
    p.polygon(quad(-0.7, 0.7, 0.42, 0.0, 0.55), light)  # deck
    p.polygon([at(-0.66, 0.42, 0.1), at(-0.36, 0.42, 0.1), at(-0.36, 0.62, 0.35), at(-0.66, 0.62, 0.35)],
              (60, 110, 150))  # cargo box on the bed
    p.circle(at(0.02, 0.78, 0.3), 0.07 * h, (120, 155, 200))  # driver's head
    p.polygon([at(-0.08, 0.42, 0.3), at(0.1, 0.42, 0.3), at(0.08, 0.7, 0.3), at(-0.06, 0.7, 0.3)],
              (150, 60, 30))  # driver's body
    for u in (-0.28, 0.46):  # far roof posts
        p.line(at(u, 0.42, 0.55), at(u - 0.03, 0.95, 0.55), dark, 0.03 * h)
    p.polygon(quad(-0.32, 0.5, 0.95, 0.0, 0.55), _shade(colour, 0.8))  # roof
    p.polygon([at(-0.7, 0.12), at(0.7, 0.12), at(0.72, 0.3), at(0.62, 0.42), at(-0.7, 0.42)], colour)
    p.line(at(-0.7, 0.27), at(0.7, 0.27), dark, 0.02 * h)  # side trim
    for u in (-0.28, 0.46):  # near roof posts
        p.line(at(u, 0.42), at(u - 0.03, 0.95), dark, 0.03 * h)
    for u in (-0.45, 0.45):  # near wheels
        p.circle(at(u, 0.13), 0.13 * h, (25, 25, 25))
        p.circle(at(u, 0.13), 0.05 * h, (150, 150, 150))


def _draw_box(p: _Painter, centre, side, angle, colour) -> None:
    c, s = math.cos(angle), math.sin(angle)
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * (side / 2)
    pts = corners @ np.array([[c, s], [-s, c]]) + centre
    p.polygon(pts, colour)
    p.line((pts[0] + pts[1]) / 2, (pts[2] + pts[3]) / 2, _shade(colour, 0.6), side * 0.15)  # tape


# ---------------------------------------------------------------------------------------------
# Movers: everything that moves over the ground, one class for all kinds.
# ---------------------------------------------------------------------------------------------
@dataclass
class _Mover:
    kind: str  # "walker" (normal) or one of ANOMALY_KINDS
    x: float  # ground contact point, render pixels
    y: float
    speed: float  # body heights per frame
    heading: float  # radians, 0 = +x, pi/2 = down (toward the camera)
    look: _Look
    phase: float = 0.0
    facing: int = 1
    state: dict = field(default_factory=dict)  # per-kind extras (height in the air, turns, ...)

    @property
    def anomalous(self) -> bool:
        return self.kind != "walker"

    def height(self, r: int) -> float:
        return _person_height(self.y, r) * self.look.scale

    def step(self, t: int, r: int, rng: np.random.Generator) -> None:
        h = self.height(r)
        st = self.state
        if self.kind == "erratic" and t >= st["next_turn"]:
            # Zig-zag about a diagonal course over the lawn: alternately steep and shallow legs.
            st["next_turn"] = t + int(rng.integers(5, 12))
            st["zig"] *= -1
            slant = 0.75 + st["zig"] * rng.uniform(0.35, 0.6)  # radians off the horizontal
            self.heading = math.atan2(st["course"] * math.sin(slant), self.facing * math.cos(slant))
        dist = self.speed * h
        self.x += dist * math.cos(self.heading)
        self.y += dist * math.sin(self.heading)
        lo, hi = _ERRATIC_RANGE if self.kind == "erratic" else _LANE
        if not lo * r <= self.y <= hi * r:  # stay on the walkway (or the lawn): reflect
            self.y = min(max(self.y, lo * r), hi * r)
            self.heading = -self.heading
            if self.kind == "erratic":
                st["course"] *= -1
        if self.kind == "thrown" and (st["z"] > 0 or st["vz"] > 0):  # in the air: ballistic, tumbling
            st["z"] += st["vz"]
            st["vz"] -= st["g"]
            st["angle"] += st["spin"]
            if st["z"] <= 0:  # lands: bounces back up, or settles and skids on out of the frame
                bounce = -st["vz"] * 0.45
                st["z"], st["vz"] = 0.0, (bounce if bounce > 2 * st["g"] else 0.0)
                st["spin"] *= 0.5
                self.speed *= 0.8
        cycle = {"runner": _RUN.cycle, "cyclist": 2.4, "skater": 3.0}.get(self.kind, _WALK.cycle)
        self.phase += 2 * math.pi * self.speed / cycle

    def gone(self, r: int) -> bool:
        """Out of the frame and moving away from it."""
        margin = 1.2 * self.height(r)
        moving_right = math.cos(self.heading) > 0
        return (self.x > r + margin and moving_right) or (self.x < -margin and not moving_right)

    def draw_shadow(self, shadows: np.ndarray, r: int) -> None:
        h, x, y = self.height(r), self.x, self.y
        if self.kind == "cart":
            _shadow(shadows, (x + 0.05 * h, y - 0.1 * h), (0.8 * h, 0.16 * h))
        elif self.kind == "cyclist":
            _shadow(shadows, (x + 0.05 * h, y), (0.5 * h, 0.05 * h))
        elif self.kind == "skater":
            _shadow(shadows, (x + 0.05 * h, y), (0.3 * h, 0.05 * h))
        elif self.kind == "thrown":  # fainter the higher it flies
            side = 0.22 * h
            _shadow(shadows, (x, y), (0.6 * side, 0.2 * side), 1.0 / (1.0 + self.state["z"] / h))
        else:
            _shadow(shadows, (x + 0.05 * h, y), (0.17 * h, 0.045 * h))

    def draw(self, p: _Painter, r: int) -> None:
        h, x, y, f = self.height(r), self.x, self.y, self.facing
        p.begin(self.anomalous)
        if self.kind == "cart":
            _draw_cart(p, x, y, h, f, self.state["colour"])
        elif self.kind == "cyclist":
            _draw_cyclist(p, x, y, h, f, self.phase, self.look, self.state["colour"])
        elif self.kind == "skater":
            _draw_skater(p, x, y, h, f, self.phase, self.look)
        elif self.kind == "thrown":
            side = 0.22 * h
            _draw_box(p, np.array([x, y - self.state["z"] - side / 2]), side, self.state["angle"],
                      self.state["colour"])
        else:
            gait = _RUN if self.kind == "runner" else _WALK
            _draw_person(p, x, y, h, f, _walk_pose(gait, self.phase), self.look)


def _new_walker(rng: np.random.Generator, r: int, x: float | None = None) -> _Mover:
    """A normal pedestrian on the walkway: entering from a side, or already in view when x is given."""
    right = bool(rng.random() < 0.5)
    y = rng.uniform(*_LANE) * r
    if x is None:
        x = -0.15 * _person_height(y, r) if right else r + 0.15 * _person_height(y, r)
    drift = rng.uniform(-0.08, 0.08)  # slight slant across the walkway
    heading = drift if right else math.pi - drift
    return _Mover("walker", x, y, _WALK_SPEED * rng.uniform(0.8, 1.2), heading, _random_look(rng),
                  phase=rng.uniform(0, 2 * math.pi), facing=1 if right else -1)


def _new_anomaly(kind: str, rng: np.random.Generator, r: int) -> _Mover:
    """An anomaly entering the frame from a side (so it is visible at once)."""
    right = bool(rng.random() < 0.5)
    f = 1 if right else -1
    lane = _LANE if kind != "cart" else (0.62, 0.85)
    y = rng.uniform(*lane) * r
    h = _person_height(y, r)
    reach = {"cart": 0.6, "cyclist": 0.35, "skater": 0.15, "thrown": 0.0}.get(kind, 0.1)
    x = (-reach * h) if right else (r + reach * h)  # the leading edge is just inside the frame
    heading = 0.0 if right else math.pi
    speed = _WALK_SPEED * {"cyclist": 3.5, "skater": 3.0, "runner": 2.7, "cart": 1.5,
                           "erratic": 1.0, "thrown": 3.5}[kind]
    m = _Mover(kind, x, y, speed, heading, _random_look(rng), facing=f)
    if kind == "cart":
        m.state["colour"] = [(215, 225, 230), (60, 180, 220), (200, 170, 120)][int(rng.integers(3))]
        m.look = replace(m.look, bag=None, scale=1.0)
    elif kind == "cyclist":
        m.state["colour"] = [(30, 30, 200), (200, 120, 30), (40, 40, 40)][int(rng.integers(3))]
    elif kind == "erratic":
        m.state.update(next_turn=0, zig=1, course=-1)  # course -1: up the frame, toward the far lawn
    elif kind == "thrown":
        m.state.update(z=0.35 * h, vz=0.12 * h, g=0.02 * h, angle=0.0, spin=f * 0.35,
                       colour=(70, 120, 170))
    return m


# ---------------------------------------------------------------------------------------------
# The scene: one static background per seed, shared by every video (a fixed camera).
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scene:
    """The fixed camera's view: output size and the background at render size (BGR uint8)."""

    size: int
    background: np.ndarray

    @property
    def render_size(self) -> int:
        return self.size * SUPERSAMPLE


def _smooth_noise(rng: np.random.Generator, r: int, cells: int) -> np.ndarray:
    """Smooth random field in about [-1, 1] at r x r (a coarse grid, bicubic upsampled)."""
    coarse = rng.uniform(-1, 1, (cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (r, r), interpolation=cv2.INTER_CUBIC)


def _band(r: int, v0: float, v1: float) -> slice:
    """The rows between fractions v0 and v1 of the frame's height."""
    return slice(int(v0 * r), int(v1 * r))


def _draw_building(img: np.ndarray, r: int, texture: np.ndarray) -> None:
    """Building front: concrete panels with a row of windows."""
    wall = _band(r, 0, _WALL_END)
    img[wall] = (168, 172, 176)
    img[wall] += 6 * texture[wall]
    for i in range(7):
        x0 = (0.04 + i * 0.14) * r
        cv2.rectangle(img, (int(x0), int(0.03 * r)), (int(x0 + 0.08 * r), int(0.09 * r)), (70, 66, 60), -1)
        cv2.rectangle(img, (int(x0), int(0.03 * r)), (int(x0 + 0.08 * r), int(0.09 * r)), (120, 120, 122),
                      max(1, r // 128))
    img[_band(r, _WALL_END - 0.012, _WALL_END)] = (95, 98, 100)  # shadowed base of the wall


def _draw_hedge(img: np.ndarray, r: int, rng: np.random.Generator) -> None:
    """Hedge: dark leafy blobs."""
    img[_band(r, _WALL_END, _HEDGE_END)] = (40, 78, 48)
    for _ in range(int(3.5 * r)):
        c = (int(rng.uniform(0, r)), int(rng.uniform(_WALL_END - 0.01, _HEDGE_END) * r))
        g = rng.uniform(0.6, 1.3)
        cv2.circle(img, c, max(1, int(rng.uniform(0.006, 0.015) * r)), (30 * g, 75 * g, 42 * g), -1)


def _draw_lawns(img: np.ndarray, r: int, rng: np.random.Generator, texture: np.ndarray, yy: np.ndarray) -> None:
    """Lawns (far, and a strip in front) with grass strokes."""
    for v0, v1 in ((_HEDGE_END, _LAWN_END), (_WALKWAY_END, 1.0)):
        img[_band(r, v0, v1)] = (70, 128, 92)
        for _ in range(int(6 * r * (v1 - v0))):
            x, y = rng.uniform(0, r), rng.uniform(v0, v1) * r
            k = rng.uniform(0.75, 1.25)
            cv2.line(img, (int(x), int(y)), (int(x + rng.uniform(-2, 2)), int(y - rng.uniform(1, 4))),
                     (70 * k, 128 * k, 92 * k), 1)
    lawn = (yy < _LAWN_END) & (yy >= _HEDGE_END) | (yy >= _WALKWAY_END)
    img += (lawn * 14)[..., None] * texture


def _draw_walkway(img: np.ndarray, r: int, rng: np.random.Generator, texture: np.ndarray, yy: np.ndarray) -> None:
    """Walkway: concrete slabs, joints converging to a vanishing point above the frame; stains, kerbs."""
    top, bottom = int(_LAWN_END * r), int(_WALKWAY_END * r)
    img[top:bottom] = (176, 178, 178)
    rows = [top]
    while rows[-1] < bottom:
        rows.append(rows[-1] + int((0.07 + 0.1 * (rows[-1] / r - _LAWN_END)) * r))
    vanish_x, vanish_y = 0.5 * r, -1.2 * r

    def on_joint(u, row):  # the point at `row` of the joint that meets the bottom edge at u * r
        return (vanish_x + (u * r - vanish_x) * (row - vanish_y) / (r - vanish_y), row)

    for y0, y1 in zip(rows[:-1], rows[1:]):
        y1 = min(y1, bottom)
        for u in np.arange(-1.0, 2.0, 0.16):  # slab columns, wider toward the camera
            quad = np.int32([on_joint(u, y0), on_joint(u + 0.16, y0),
                             on_joint(u + 0.16, y1), on_joint(u, y1)])
            tone = rng.uniform(0.93, 1.05)
            cv2.fillPoly(img, [quad], (176 * tone, 178 * tone, 178 * tone))
            cv2.polylines(img, [quad], True, (120, 122, 124), max(1, r // 200))
    walk = (yy >= _LAWN_END) & (yy < _WALKWAY_END)
    img += (walk * 8)[..., None] * (texture + _smooth_noise(rng, r, 60)[..., None])
    for _ in range(6):  # a few stains
        c = (int(rng.uniform(0, r)), int(rng.uniform(_LAWN_END + 0.05, _WALKWAY_END - 0.03) * r))
        cv2.ellipse(img, c, (int(rng.uniform(0.02, 0.05) * r), int(rng.uniform(0.008, 0.02) * r)), 0, 0, 360,
                    (150, 152, 154), -1)
    for v, colour in ((_LAWN_END, (200, 202, 202)), (_WALKWAY_END, (190, 192, 192))):  # kerbs
        img[_band(r, v - 0.006, v + 0.004)] = colour


def _draw_furniture(img: np.ndarray, r: int) -> None:
    """Street furniture on the far lawn: lamp posts, a bench, a bin (all behind the walkway)."""
    for u in (0.2, 0.52, 0.84):
        base, head = (int(u * r), int((_LAWN_END - 0.02) * r)), (int(u * r), int(0.07 * r))
        cv2.line(img, (base[0] + r // 50, base[1]), (base[0] + r // 12, base[1] - r // 30), (55, 100, 70),
                 max(1, r // 90))  # its shadow on the grass
        cv2.line(img, base, head, (55, 55, 58), max(2, r // 110))
        cv2.ellipse(img, head, (max(2, r // 60), max(1, r // 110)), 0, 0, 360, (40, 40, 42), -1)
    bx, by = 0.62 * r, 0.4 * r  # bench: seat, back rest, legs
    cv2.rectangle(img, (int(bx), int(by - 0.035 * r)), (int(bx + 0.14 * r), int(by - 0.022 * r)),
                  (50, 80, 110), -1)
    cv2.rectangle(img, (int(bx), int(by - 0.012 * r)), (int(bx + 0.14 * r), int(by)), (60, 95, 130), -1)
    for dx in (0.01, 0.125):
        cv2.line(img, (int(bx + dx * r), int(by)), (int(bx + dx * r), int(by + 0.02 * r)), (40, 40, 40),
                 max(1, r // 150))
    cv2.rectangle(img, (int(0.33 * r), int(0.415 * r)), (int(0.35 * r), int(0.45 * r)), (50, 70, 50), -1)  # bin


def make_scene(size: int = DEFAULT_SIZE, seed: int = 0) -> Scene:
    """Draw the static background: building, hedge, lawn with lamp posts, bench, bin, walkway.

    The parts are drawn far to near, in this order, from one random stream: the order of the
    calls is the order of the draws, so it fixes the picture of a seed.
    """
    rng = np.random.default_rng([seed, 99])
    r = size * SUPERSAMPLE
    img = np.zeros((r, r, 3), np.float32)
    yy = np.arange(r, dtype=np.float32)[:, None] / r
    texture = _smooth_noise(rng, r, 24)[..., None]
    fine = rng.normal(0, 1, (r, r, 1)).astype(np.float32)
    _draw_building(img, r, texture)
    _draw_hedge(img, r, rng)
    _draw_lawns(img, r, rng, texture, yy)
    _draw_walkway(img, r, rng, texture, yy)
    _draw_furniture(img, r)
    img += fine * 3
    img = cv2.GaussianBlur(img, (3, 3), 0)
    return Scene(size, np.clip(img, 0, 255).astype(np.uint8))


# ---------------------------------------------------------------------------------------------
# Videos
# ---------------------------------------------------------------------------------------------
def anomaly_plan(n_test: int) -> list[tuple[str, ...]]:
    """Anomaly kinds per test video: every kind appears somewhere, every video gets at least one."""
    plan: list[list[str]] = [[] for _ in range(n_test)]
    for j, kind in enumerate(ANOMALY_KINDS):
        plan[j % n_test].append(kind)
    for i in range(len(ANOMALY_KINDS), n_test):
        plan[i].append(ANOMALY_KINDS[i % len(ANOMALY_KINDS)])
    return [tuple(kinds) for kinds in plan]


def render_video(scene: Scene, split: str, index: int, n_frames: int, anomalies: Sequence[str] = (),
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Render one video: (frames (T, H, W, 3) BGR uint8, masks (T, H, W) uint8 in {0, 1}).

    Deterministic for (seed, split, index). `anomalies` lists the kinds (ANOMALY_KINDS) that enter
    during the video, one after another; a training video has none, so its masks stay zero.
    """
    rng = np.random.default_rng([seed, _SPLIT_CODE[split], index])
    r, s = scene.render_size, scene.size
    movers = [_new_walker(rng, r, x=rng.uniform(0.05, 0.95) * r) for _ in range(int(rng.integers(3, 7)))]
    starts = {}  # frame -> kinds entering then; each in its own slice of [0.1, 0.6] of the video
    for k, kind in enumerate(anomalies):
        lo = int(n_frames * (0.1 + 0.5 * k / len(anomalies)))
        hi = max(lo + 1, int(n_frames * (0.1 + 0.5 * (k + 1) / len(anomalies))))
        starts.setdefault(int(rng.integers(lo, hi)), []).append(kind)
    # Slow global lighting drift: a sine over a few hundred frames.
    gain_amp, gain_period = rng.uniform(0.03, 0.07), rng.uniform(150, 300)
    gain_phase = rng.uniform(0, 2 * math.pi)
    frames = np.empty((n_frames, s, s, 3), np.uint8)
    masks = np.empty((n_frames, s, s), np.uint8)
    mask, shadows = np.empty((r, r), np.uint8), np.empty((r, r), np.uint8)
    # Fresh Gaussian draws every frame cost more than the drawing; shifted fields look the same.
    noise_bank = rng.standard_normal((_NOISE_BANK, s, s, 3), dtype=np.float32) * NOISE_SIGMA
    for t in range(n_frames):
        movers += [_new_anomaly(kind, rng, r) for kind in starts.get(t, [])]
        if rng.random() < _ENTER_RATE and sum(not m.anomalous for m in movers) < _MAX_WALKERS:
            movers.append(_new_walker(rng, r))
        # Soft shadows darken the ground, then every mover is drawn in depth order (far first).
        shadows[:] = 0
        mask[:] = 0
        order = sorted(movers, key=lambda m: m.y)
        for m in order:
            m.draw_shadow(shadows, r)
        light = 255 - cv2.GaussianBlur(shadows, (0, 0), max(1.0, r / 200)) // 2  # a shadow halves the light
        canvas = cv2.multiply(scene.background, cv2.cvtColor(light, cv2.COLOR_GRAY2BGR), scale=1 / 255)
        painter = _Painter(canvas, mask)
        for m in order:
            m.draw(painter, r)
        # Down to output size; global lighting drift and sensor noise.
        small = cv2.resize(canvas, (s, s), interpolation=cv2.INTER_AREA).astype(np.float32)
        gain = 1.0 + gain_amp * math.sin(2 * math.pi * t / gain_period + gain_phase)
        noise = np.roll(noise_bank[rng.integers(_NOISE_BANK)], tuple(rng.integers(0, s, 2)), axis=(0, 1))
        small = small * gain + noise
        frames[t] = np.clip(small + 0.5, 0, 255).astype(np.uint8)
        # An output pixel is abnormal when any of its render pixels is (area mean > 0).
        masks[t] = cv2.resize(mask, (s, s), interpolation=cv2.INTER_AREA) > 0
        for m in movers:
            m.step(t, r, rng)
            if abs(math.cos(m.heading)) > 0.2:
                m.facing = 1 if math.cos(m.heading) > 0 else -1
        movers = [m for m in movers if not m.gone(r)]
    return frames, masks
