"""Synthetic people as camera images a real pose detector can look at.

The data engine's samples are meshes, cameras and occluders; :class:`PeopleRenderer` turns one
of them into an RGB image: a full-resolution Anny body with skin (light to dark), hair,
eyes, brows and lips, clothes by body region (a top with short, long or no sleeves, long
or short trousers, shoes), flat Lambert shading with an ambient term and a random light,
in front of a random background (:func:`background`: gradients, value noise, stripes,
checkers, blurred blobs, a room, or terrain and object pictures shipped with matplotlib
where it is installed), the engine's occluder drawn in front, then camera effects (blur,
noise, exposure, JPEG). ``hmdiff data prior-study`` runs MediaPipe on these images.

Regions come from the bank's skinning (each vertex's dominant bone) and, for the face and
hair, from the mean rest body (canonical frame: metres, y up, facing +z): they are fixed per
vertex, so they follow every shape and pose.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from typing import Dict, List, Tuple

import cv2
import numpy as np

from hmdiff_ros.data.shapes import ShapeBank
from hmdiff_ros.render import rasterize

# Body regions, each coloured per sample (see :meth:`PeopleRenderer.appearance`).
REGIONS: Tuple[str, ...] = (
    "skin",  # face, neck, hands
    "hair",  # the scalp (skin when bald)
    "hair_long",  # nape and back of the neck (hair when long, else skin)
    "brow",
    "lips",
    "sclera",
    "iris",
    "torso",  # the top
    "upper_arm",  # sleeves (skin when sleeveless)
    "lower_arm",  # long sleeves (else skin)
    "hips",  # trousers
    "thigh",
    "shin",  # long trousers (else skin)
    "foot",  # shoes
)
REGION = {name: i for i, name in enumerate(REGIONS)}

# Skin tones from light to dark (RGB); a sample interpolates at ``skin_tone`` in [0, 1].
SKIN_TONES = np.array(
    [(255, 226, 204), (241, 194, 160), (224, 172, 130), (198, 134, 96), (150, 96, 62), (104, 64, 42), (66, 42, 30)],
    dtype=np.float64,
)
HAIR_COLOURS = np.array(
    [(20, 16, 14), (45, 30, 22), (80, 55, 35), (120, 85, 50), (190, 160, 110), (140, 60, 30), (170, 170, 165)],
    dtype=np.float64,
)
BACKGROUNDS: Tuple[str, ...] = ("gradient", "noise", "stripes", "checkers", "blobs", "room", "photo")

# the bones of each region, by name prefix (first match wins; face and hair come from geometry)
_BONES = (
    ("sclera", ("eye",)),
    ("skin", ("head", "neck")),
    ("upper_arm", ("upperarm",)),
    ("lower_arm", ("lowerarm",)),
    ("skin", ("wrist", "finger", "metacarpal")),
    ("torso", ("spine", "clavicle", "shoulder")),
    ("hips", ("root",)),
    ("hips", ("pelvis", "upperleg01")),
    ("thigh", ("upperleg02",)),
    ("shin", ("lowerleg",)),
    ("foot", ("foot", "toe")),
)


@dataclass(frozen=True)
class PeopleRenderConfig:
    ambient: Tuple[float, float] = (0.25, 0.55)  # share of ambient light; the rest is Lambert
    exposure: Tuple[float, float] = (0.75, 1.15)  # gain on the whole image
    blur_px: Tuple[float, float] = (0.0, 0.9)  # Gaussian blur std (focus, motion), pixels
    noise: Tuple[float, float] = (0.0, 6.0)  # sensor noise std, grey levels
    jpeg_prob: float = 0.5  # chance of JPEG compression (streamed cameras) ...
    jpeg_quality: Tuple[int, int] = (60, 95)  # ... at a quality in this range
    bald_prob: float = 0.1
    long_hair_prob: float = 0.35
    photo_prob: float = 0.15  # backgrounds from pictures shipped with installed packages (if any)

    def __post_init__(self) -> None:
        for name in ("jpeg_prob", "bald_prob", "long_hair_prob", "photo_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("ambient", "exposure", "blur_px", "noise", "jpeg_quality"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be (min, max) with 0 <= min <= max, got {getattr(self, name)}")
        if self.ambient[1] > 1 or not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ValueError("ambient must lie in [0, 1] and jpeg_quality in 1..100")


@dataclass
class RenderedPerson:
    """One rendered sample: the image and what is known about it."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    silhouette: np.ndarray  # (H, W) bool: the person's pixels left visible by the occluder
    depth: np.ndarray  # (H, W) float32 metres to the person's surface, inf elsewhere (occluder ignored)
    skin_tone: float  # 0 light .. 1 dark (SKIN_TONES)
    background: int  # index into BACKGROUNDS
    light: np.ndarray  # (3,) unit direction towards the light, camera frame
    ambient: float


def _smooth(region: np.ndarray, faces: np.ndarray, rounds: int = 4) -> np.ndarray:
    """Majority vote of each vertex and its mesh neighbours, ``rounds`` times: straightens the
    ragged borders that skinning weights draw between regions."""
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.concatenate([edges, edges[:, ::-1]])
    for _ in range(rounds):
        votes = np.zeros((len(region), len(REGIONS)), np.int32)
        np.add.at(votes, (edges[:, 0], region[edges[:, 1]]), 1)
        votes[np.arange(len(region)), region] += 1
        region = votes.argmax(1)
    return region


def face_regions(bank: ShapeBank, faces: np.ndarray) -> np.ndarray:
    """``(F,)`` region index (``REGIONS``) of every face of the full mesh ``faces (F, 3)``
    (vertices in mesh order); needs a full-resolution bank (``BankConfig(full=True)``).

    Each vertex takes the region of its dominant bone (smoothed over the mesh), each face
    the region most of its vertices have; clothing edges, hair, brows, lips and irises are
    then cut by the position of the face's centre on the mean rest body."""
    order = np.argsort(bank.vertex_ids)  # bank order -> mesh vertex order
    if len(order) != bank.rest_vertices.shape[1] or not bank.num_coarse < len(order):
        raise ValueError("face_regions needs a full-resolution shape bank (BankConfig(full=True))")
    skin_index, skin_weight = bank.skin_index[order], bank.skin_weight[order]
    dominant = skin_index[np.arange(len(order)), skin_weight.argmax(1)]  # (V,) bone per vertex
    names = [str(label).partition(".")[0] for label in bank.bone_labels]
    bone_region = np.array([REGION[next(r for r, pre in _BONES if n.startswith(pre))] for n in names])
    label = bone_region[dominant]
    on_head = np.array([n.startswith(("head", "neck")) for n in names])[dominant]
    body = ~on_head & (label != REGION["sclera"])
    label[body] = _smooth(label, faces)[body]
    corner = label[faces]  # (F, 3)
    region = np.where(corner[:, 1] == corner[:, 2], corner[:, 1], corner[:, 0])  # the majority (else the first)
    head = on_head[faces].sum(1) >= 2
    neck = np.array([n.startswith("neck") for n in names])[dominant]
    rest = bank.rest_vertices.mean(0)[order].astype(np.float64)  # (V, 3) mean body, canonical frame
    x, y, z = rest[faces].mean(1).T  # (F,) face centres
    # straight cuts where clothes end: a crew neck just above the neck's base, a waistband at
    # the top of the pelvis bones' reach (skinning alone draws both ragged)
    neckline = rest[neck, 1].min() + 0.02
    region[(region == REGION["torso"]) & (y > neckline)] = REGION["skin"]
    region[neck[faces].any(1) & (region == REGION["skin"]) & (y <= neckline)] = REGION["torso"]
    waist = rest[bone_region[dominant] == REGION["hips"], 1].max()
    region[(region == REGION["torso"]) & (y < waist)] = REGION["hips"]
    region[(region == REGION["hips"]) & (y >= waist)] = REGION["torso"]
    eye = region == REGION["sclera"]
    ex, ey, ez = x[eye].mean(), y[eye].mean(), z[eye].mean()  # between the eyes
    for side in (x > ex, x < ex):  # the iris: the front third of each eyeball
        ball = eye & side
        front_z, back_z = z[ball].max(), z[ball].min()
        region[ball & (z > front_z - 0.3 * (front_z - back_z))] = REGION["iris"]
    # the hairline: 6 cm above the eyes at the front, falling to 4 cm below them at the back
    back = np.clip((ez - 0.03 - z) / 0.10, 0.0, 1.0)
    skin = head & (region == REGION["skin"])
    region[skin & (y > ey + 0.06 - 0.10 * back)] = REGION["hair"]
    region[skin & (back > 0.6) & (y > ey - 0.14) & (y <= ey + 0.06 - 0.10 * back)] = REGION["hair_long"]
    front = skin & (z > ez - 0.005) & (back == 0)
    side = np.abs(x - ex)
    region[front & (y > ey + 0.017) & (y < ey + 0.03) & (side > 0.012) & (side < 0.05)] = REGION["brow"]
    region[front & (y > ey - 0.084) & (y < ey - 0.07) & (side < 0.022)] = REGION["lips"]
    return region


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    hsv = np.uint8([[[int(h * 179) % 180, int(s * 255), int(v * 255)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float64)


def _cloth(rng: np.random.Generator) -> np.ndarray:
    """A clothing colour: often dark, grey or white; else any hue."""
    kind = rng.random()
    if kind < 0.3:
        return np.full(3, rng.uniform(15, 235)) + rng.normal(0, 6, 3)
    if kind < 0.45:  # denim and navy
        return _hsv(rng.uniform(0.57, 0.65), rng.uniform(0.3, 0.8), rng.uniform(0.2, 0.7))
    return _hsv(rng.random(), rng.uniform(0.15, 0.9), rng.uniform(0.2, 0.95))


class PeopleRenderer:
    """Renders full-resolution bodies of a bank (see the module docstring).

    ``faces``: ``(F, 3)`` full-mesh triangles (``Topology.full_faces``), whose vertices are
    in mesh order, as the engine's ``full`` meshes are.
    """

    def __init__(self, bank: ShapeBank, faces: np.ndarray, cfg: PeopleRenderConfig = PeopleRenderConfig()) -> None:
        self.cfg = cfg
        self.faces = np.asarray(faces)
        self.face_region = face_regions(bank, self.faces)  # (F,)
        rest = bank.rest_vertices.mean(0)[np.argsort(bank.vertex_ids)]
        self.face_height = rest[self.faces, 1].mean(1)  # (F,) rest height, for stripes

    def appearance(self, rng: np.random.Generator) -> Tuple[np.ndarray, float]:
        """``(F, 3)`` RGB albedo per face in [0, 1] and the skin tone in [0, 1]."""
        tone = float(rng.random())
        at = tone * (len(SKIN_TONES) - 1)
        i = min(int(at), len(SKIN_TONES) - 2)
        skin = SKIN_TONES[i] + (at - i) * (SKIN_TONES[i + 1] - SKIN_TONES[i]) + rng.normal(0, 4, 3)
        colours = np.zeros((len(REGIONS), 3))
        colours[REGION["skin"]] = skin
        hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.8, 1.2)
        bald, long_hair = rng.random() < self.cfg.bald_prob, rng.random() < self.cfg.long_hair_prob
        colours[REGION["hair"]] = skin * 0.95 if bald else hair
        colours[REGION["hair_long"]] = hair if long_hair and not bald else skin
        colours[REGION["brow"]] = skin * 0.7 if bald else 0.4 * hair + 0.4 * skin
        colours[REGION["lips"]] = skin * np.array([0.85, 0.68, 0.68])
        colours[REGION["sclera"]] = (235, 230, 225)
        colours[REGION["iris"]] = _hsv(rng.uniform(0.05, 0.6), rng.uniform(0.3, 0.8), rng.uniform(0.1, 0.45))
        top, trousers = _cloth(rng), _cloth(rng)
        sleeves = rng.choice(3, p=[0.15, 0.45, 0.4])  # none, short, long
        colours[REGION["torso"]] = top
        colours[REGION["upper_arm"]] = top if sleeves > 0 else skin
        colours[REGION["lower_arm"]] = top if sleeves == 2 else skin
        colours[REGION["hips"]] = colours[REGION["thigh"]] = trousers
        colours[REGION["shin"]] = trousers if rng.random() < 0.75 else skin
        colours[REGION["foot"]] = _cloth(rng) * 0.8 if rng.random() < 0.9 else skin
        albedo = colours[self.face_region] / 255.0  # (F, 3)
        if rng.random() < 0.3:  # a striped top
            period = rng.uniform(0.02, 0.12)
            clothed = np.isin(self.face_region, [REGION["torso"], REGION["upper_arm"], REGION["lower_arm"]])
            clothed &= (colours[self.face_region] == top).all(1)
            albedo[clothed & (np.floor(self.face_height / period) % 2 == 1)] = _cloth(rng) / 255.0
        cloth = (self.face_region >= REGION["torso"]) & (colours[self.face_region] != skin).any(1)
        albedo[cloth] *= 1.0 + rng.normal(0, 0.04, (int(cloth.sum()), 1))  # a little texture on clothes
        return np.clip(albedo, 0.0, 1.0), tone

    def render(
        self,
        rng: np.random.Generator,
        vertices: np.ndarray,
        K: np.ndarray,
        image_size,
        occluder: np.ndarray | None = None,
    ) -> RenderedPerson:
        """An RGB image of the body ``vertices (V, 3)`` (full mesh, camera frame, metres) seen
        through ``K`` in an image of ``image_size`` (width, height); ``occluder`` (4,) is an
        image rectangle (u0, v0, u1, v1) drawn in front (NaN or None: none)."""
        cfg = self.cfg
        width, height = int(image_size[0]), int(image_size[1])
        face, depth = rasterize(vertices, self.faces, K, (width, height))
        albedo, tone = self.appearance(rng)
        light = np.array([rng.uniform(-1, 1), rng.uniform(-1, 0.3), -rng.uniform(0.2, 1.0)])
        light /= np.linalg.norm(light)
        ambient = float(rng.uniform(*cfg.ambient))
        person = face >= 0
        drawn = face[person]
        ids = np.unique(drawn)  # shade only the faces that show
        tri = vertices[self.faces[ids]].astype(np.float64)
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-12
        shade = ambient + (1 - ambient) * np.clip(normal @ light, 0.0, 1.0)
        colour = np.zeros((len(self.faces), 3), np.uint8)
        colour[ids] = np.clip(albedo[ids] * shade[:, None] * 255.0 + 0.5, 0, 255)
        kind = int(rng.integers(len(BACKGROUNDS) - 1))
        if rng.random() < cfg.photo_prob and _pictures():
            kind = BACKGROUNDS.index("photo")
        image = background(rng, width, height, BACKGROUNDS[kind])
        image[person] = colour[drawn]
        visible = person.copy()
        if occluder is not None and np.isfinite(occluder).all():
            u0, v0, u1, v1 = np.clip(np.round(occluder), 0, [width, height, width, height]).astype(int)
            if u1 > u0 and v1 > v0:
                image[v0:v1, u0:u1] = _occluder(rng, u1 - u0, v1 - v0)
                visible[v0:v1, u0:u1] = False
        image = self._camera(rng, image)
        return RenderedPerson(image, visible, depth, tone, kind, light, ambient)

    def _camera(self, rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
        """Focus blur, exposure, sensor noise and JPEG compression of a uint8 image (OpenCV calls)."""
        cfg = self.cfg
        sigma = rng.uniform(*cfg.blur_px)
        if sigma > 0.3:
            image = cv2.GaussianBlur(image, (0, 0), sigma)
        # exposure and sensor noise in one saturating step: a window of a fixed noise tile at a random place
        h, w = image.shape[:2]
        tile = _noise_tile()
        if h > tile.shape[0] or w > tile.shape[1]:
            tile = np.tile(tile, (h // tile.shape[0] + 1, w // tile.shape[1] + 1, 1))
        y0, x0 = int(rng.integers(tile.shape[0] - h + 1)), int(rng.integers(tile.shape[1] - w + 1))
        sigma = float(rng.uniform(*cfg.noise)) / NOISE_TILE_STD
        gain = float(rng.uniform(*cfg.exposure))
        image = cv2.addWeighted(image, gain, tile[y0 : y0 + h, x0 : x0 + w], sigma, 0.0, dtype=cv2.CV_8U)
        if rng.random() < cfg.jpeg_prob:
            quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if ok else image
        return image


NOISE_TILE_STD = 16.0  # the noise tile's standard deviation (int8 steps)


@functools.lru_cache(maxsize=1)
def _noise_tile() -> np.ndarray:
    """Gaussian noise ``(1536, 2304, 3)`` int8 of std ``NOISE_TILE_STD``, the same in every process:
    windows of it are the sensor noise of the images (larger than the largest preset camera)."""
    noise = np.random.default_rng(0).standard_normal((1536, 2304, 3), dtype=np.float32) * NOISE_TILE_STD
    return np.clip(np.round(noise), -127, 127).astype(np.int8)


def _occluder(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A box or a desk front: a flat colour, lit from one side, with a darker rim."""
    base = _cloth(rng) * rng.uniform(0.6, 1.0)
    ramp = np.linspace(rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0), height, dtype=np.float32)
    out = np.broadcast_to(base.astype(np.float32) * ramp[:, None, None], (height, width, 3)).copy()
    rim = max(1, int(min(width, height) * 0.03))
    out[:rim] *= 0.6
    out[:, :rim] *= 0.8
    out[:, -rim:] *= 0.8
    return np.clip(out, 0, 255).astype(np.uint8)


def _colours(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.stack([_cloth(rng) for _ in range(n)]).astype(np.float32)


def background(rng: np.random.Generator, width: int, height: int, kind: str) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB background of ``kind`` (one of ``BACKGROUNDS``; ``photo`` needs
    pictures, see :func:`_pictures`)."""
    if kind not in BACKGROUNDS:
        raise ValueError(f"background kind must be one of {', '.join(BACKGROUNDS)}; got {kind!r}")
    # drawn at a quarter of the size (half for sharp patterns), then scaled up: a few ms at 1280x800
    down = 2 if kind in ("stripes", "checkers") else 4
    small = _background(rng, max(8, width // down), max(8, height // down), kind)
    return cv2.resize(np.clip(small, 0, 255).astype(np.uint8), (width, height), interpolation=cv2.INTER_LINEAR)


def _background(rng: np.random.Generator, w: int, h: int, kind: str) -> np.ndarray:
    if kind == "gradient":
        a, b = _colours(rng, 2)
        angle = rng.uniform(0, 2 * np.pi)
        u, v = (
            np.cos(angle) * np.linspace(0, 1, w, dtype=np.float32),
            np.sin(angle) * np.linspace(0, 1, h, dtype=np.float32),
        )
        t = u[None, :] + v[:, None]
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        out = a + t[..., None] * (b - a)
    elif kind == "noise":  # value noise at a few scales
        cells = int(rng.integers(3, 24))
        small = rng.random((max(2, cells * h // w), cells, 3)).astype(np.float32)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        a, b = _colours(rng, 2)
        out = a + np.clip(out, 0, 1) * (b - a)
    elif kind in ("stripes", "checkers"):
        a, b = _colours(rng, 2)
        period = rng.uniform(4, 60)  # pixels at half size
        angle = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        s = (np.cos(angle) * xx + np.sin(angle) * yy) / period
        t = np.floor(s) % 2
        if kind == "checkers":
            t = (t + np.floor((-np.sin(angle) * xx + np.cos(angle) * yy) / period)) % 2
        out = a + t[..., None] * (b - a)
    elif kind == "blobs":  # an out-of-focus scene: blurred ellipses
        out = np.empty((h, w, 3), np.float32)
        out[:] = _colours(rng, 1)[0]
        for c in _colours(rng, int(rng.integers(4, 16))):
            centre = (int(rng.integers(w)), int(rng.integers(h)))
            axes = (int(rng.integers(2, max(3, w // 2))), int(rng.integers(2, max(3, h // 2))))
            cv2.ellipse(out, centre, axes, float(rng.uniform(0, 180)), 0, 360, c.tolist(), -1)
        out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(1, 6)))
    elif kind == "room":  # a wall, a floor and some furniture and doors
        wall, floor = _colours(rng, 2)
        out = np.empty((h, w, 3), np.float32)
        horizon = int(h * rng.uniform(0.3, 0.8))
        out[:horizon] = wall * np.linspace(rng.uniform(0.7, 1.0), 1.0, horizon, dtype=np.float32)[:, None, None]
        out[horizon:] = floor * np.linspace(0.8, 1.0, h - horizon, dtype=np.float32)[:, None, None]
        for c in _colours(rng, int(rng.integers(1, 6))):
            x0, x1 = np.sort(rng.integers(0, w, 2))
            y0 = int(rng.integers(0, horizon))
            y1 = int(min(h, horizon + rng.integers(0, max(1, h - horizon))))
            cv2.rectangle(out, (int(x0), y0), (int(x1), y1), c.tolist(), -1)
            cv2.rectangle(out, (int(x0), y0), (int(x1), y1), (c * 0.6).tolist(), 1)
    else:
        out = _photo(rng, w, h)
    return out


# matplotlib's sample pictures without people (grace_hopper.jpg shows one): terrain models
# (shaded like aerial views) and a photographed object
_PICTURES = ("jacksboro_fault_dem.npz", "topobathy.npz", "Minduka_Present_Blue_Pack.png")


@functools.lru_cache(maxsize=1)
def _pictures() -> List[np.ndarray]:
    """RGB float32 pictures from the installed packages (none when matplotlib is absent)."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or spec.origin is None:
        return []
    folder = os.path.join(os.path.dirname(spec.origin), "mpl-data", "sample_data")
    out = []
    for name in _PICTURES:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        if name.endswith(".npz"):
            with np.load(path) as data:
                elevation = data["elevation" if "elevation" in data.files else "topo"].astype(np.float32)
            gy, gx = np.gradient(elevation / max(float(np.ptp(elevation)), 1e-6) * 40)
            shade = np.clip((1 - gx + gy) / np.sqrt(3 + gx**2 + gy**2), 0, 1)  # hill shading, light from the NW
            height = (elevation - elevation.min()) / max(float(np.ptp(elevation)), 1e-6)
            colour = np.stack([60 + 150 * height, 90 + 110 * height, 50 + 90 * height], -1)
            out.append((colour * (0.4 + 0.6 * shade)[..., None]).astype(np.float32))
        else:
            rgba = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            if rgba is None:
                continue
            alpha = rgba[..., 3:].astype(np.float32) / 255.0 if rgba.shape[2] == 4 else 1.0
            out.append((rgba[..., 2::-1].astype(np.float32) * alpha + 200.0 * (1 - alpha)).astype(np.float32))
    return out


def _photo(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    pictures = _pictures()
    if not pictures:
        raise ValueError("no background pictures: matplotlib's sample data is not installed")
    pic = pictures[int(rng.integers(len(pictures)))]
    ph, pw = pic.shape[:2]
    scale = rng.uniform(0.4, 1.0)  # a random crop of the picture, scaled to the image
    ch, cw = max(4, int(ph * scale)), max(4, int(pw * scale))
    y0, x0 = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    crop = pic[y0 : y0 + ch, x0 : x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    out = cv2.resize(np.ascontiguousarray(crop), (width, height), interpolation=cv2.INTER_LINEAR)
    return out * rng.uniform(0.7, 1.2, 3).astype(np.float32)


def background_counts() -> Dict[str, int]:
    """How many pictures each background source offers here (for a study's meta data)."""
    return {"photo": len(_pictures())}
