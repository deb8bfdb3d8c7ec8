"""The driving_scenes data set: SIMULATED road scenes rendered headless with pybullet's CPU renderer,
each with the exact box of every visible object read from the renderer's segmentation buffer.
Generated from a seed (scene i from its own random stream), then read from the cache."""
from __future__ import annotations

import colorsys
import contextlib
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lamina.datasets.tabular import CACHE, save_arrays
from lamina.errors import DataError

CLASSES = ("car", "pedestrian", "robot", "duck", "obstacle")
CLASS_WEIGHTS = (0.24, 0.24, 0.17, 0.17, 0.18)  # how often each class is drawn for an object slot
MIN_PIXELS = 10  # an object with fewer visible pixels gets no box
SPLIT_SHARES = (0.8, 0.1)  # train, validation; the rest is test
VERSION = 2  # bump when the generation changes, so that old cached scenes are not read
INSTALL = "pip install 'lamina[simulation]'  (pybullet; scenes are then rendered on first use and cached)"
CACHE_FOLDER = CACHE / "driving_scenes"
ROAD_HALF_WIDTH = 3.5  # metres: two 3.5 m lanes along +x, centred on y = 0
DASH_PERIOD = 9.0  # metres: a 3 m dash of the centre line, then a 6 m gap
OBJECTS_PER_SCENE = (2, 11)  # drawn from [low, high)
FAR_AWAY = (-1000.0, 0.0, -1000.0)  # where unused pool models wait: behind the camera, beyond the far plane
# radius on the ground of each model at scale 1 (metres), to keep placed models from overlapping
FOOTPRINT = {"racecar": 0.25, "humanoid": 1.2, "r2d2": 0.35, "husky": 0.6, "duck": 0.06, "cube": 0.75, "cone": 0.09}


@dataclass
class Scene:
    """One rendered scene: image (size, size, 3) uint8; boxes [[x_min, y_min, x_max, y_max, label]] in
    pixel-edge coordinates (a box over pixel columns 3..7 has x_min 3, x_max 8); instances (size, size)
    int, the index into boxes of the object each pixel shows, -1 for road, scenery and sky; split."""
    image: np.ndarray
    boxes: list
    instances: np.ndarray
    split: str


@contextlib.contextmanager
def _quiet_native_output():
    """Silence pybullet's C-level prints while it loads (its build time on stderr, URDF importer
    warnings on stdout): they bypass Python's streams, so file descriptors 1 and 2 are pointed at
    the null device, C's buffers flushed, then both restored. Failures still raise pybullet.error."""
    import ctypes

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            ctypes.CDLL(None).fflush(None)
            for descriptor, copy in zip((1, 2), saved):
                os.dup2(copy, descriptor)
                os.close(copy)


class Renderer:
    """One pybullet connection holding the road, the scenery and a pool of every object model, each
    loaded once; a scene moves, recolours and lights them (no reloading), then renders on the CPU."""

    def __init__(self, size: int):
        with _quiet_native_output():  # pybullet prints its build time when imported
            try:
                import pybullet
                import pybullet_data
                from pybullet_utils.bullet_client import BulletClient
            except ImportError:
                raise DataError(f"driving_scenes renders its scenes with pybullet, which is not installed; "
                                f"install: {INSTALL}") from None
            self.pybullet, self.size = pybullet, size
            self.client = BulletClient(connection_mode=pybullet.DIRECT)
            self.client.setAdditionalSearchPath(pybullet_data.getDataPath())
            self.data_path = Path(pybullet_data.getDataPath())
            self._build_road()
            self.pool = self._load_pool()  # {class: [(body id, model kind, scale)]}
            # each link's shipped colour: a model is hidden by making it transparent, which the tiny
            # renderer skips (a model merely moved out of view still costs its triangles every frame)
            self.colours = {body: [(shape[1], shape[7]) for shape in self.client.getVisualShapeData(body)]
                            for models in self.pool.values() for body, _, _ in models}
            self.shown: set[int] = set()
            for body in self.colours:
                self._show(body, False)
            self.trees = [self._tree() for _ in range(6)]

    def close(self) -> None:
        self.client.disconnect()

    # -- the world, built once ---------------------------------------------------------------------------
    def _static_box(self, half_extents, position, colour) -> int:
        client = self.client
        shape = client.createVisualShape(self.pybullet.GEOM_BOX, halfExtents=half_extents, rgbaColor=colour)
        return client.createMultiBody(baseMass=0, baseVisualShapeIndex=shape, basePosition=position)

    def _build_road(self) -> None:
        """Ground, a two-lane road along +x (from 10 m behind the camera to 290 m ahead), raised
        sidewalks and white lane markings (a dashed centre line and two solid edge lines)."""
        self.ground = self._static_box([300, 300, 0.01], [100, 0, -0.02], [0.3, 0.5, 0.2, 1])
        self.road = self._static_box([150, ROAD_HALF_WIDTH, 0.01], [140, 0, -0.005], [0.3, 0.3, 0.3, 1])
        self.sidewalks = [self._static_box([150, 1.0, 0.06], [140, side * (ROAD_HALF_WIDTH + 1.0), 0.04],
                                           [0.6, 0.6, 0.6, 1]) for side in (-1, 1)]
        client, box = self.client, self.pybullet.GEOM_BOX
        dashes = [[DASH_PERIOD * k + 1.5, 0, 0.006] for k in range(20)]
        edges = [[140, side * (ROAD_HALF_WIDTH - 0.25), 0.006] for side in (-1, 1)]
        shape = client.createVisualShapeArray(
            shapeTypes=[box] * (len(dashes) + 2), visualFramePositions=dashes + edges,
            halfExtents=[[1.5, 0.07, 0.002]] * len(dashes) + [[150, 0.08, 0.002]] * 2)
        self.markings = client.createMultiBody(baseMass=0, baseVisualShapeIndex=shape)
        client.changeVisualShape(self.markings, -1, rgbaColor=[0.9, 0.9, 0.85, 1])

    def _tree(self) -> tuple[int, int]:
        """An unlabelled roadside tree (a trunk and a crown): scenery that can hide objects behind it."""
        client, pb = self.client, self.pybullet
        trunk = client.createVisualShape(pb.GEOM_CYLINDER, radius=0.15, length=3.0, rgbaColor=[0.4, 0.3, 0.2, 1],
                                         visualFramePosition=[0, 0, 1.5])
        crown = client.createVisualShape(pb.GEOM_SPHERE, radius=1.3, rgbaColor=[0.2, 0.45, 0.15, 1],
                                         visualFramePosition=[0, 0, 3.6])
        return tuple(client.createMultiBody(baseMass=0, baseVisualShapeIndex=shape, basePosition=FAR_AWAY)
                     for shape in (trunk, crown))

    def _load(self, name: str, scale: float) -> int:
        return self.client.loadURDF(name, FAR_AWAY, globalScaling=scale, useFixedBase=True)

    def _cone(self, scale: float) -> int:
        shape = self.client.createVisualShape(self.pybullet.GEOM_MESH, meshScale=[scale] * 3,
                                              fileName=str(self.data_path / "racecar" / "meshes" / "cone.obj"))
        return self.client.createMultiBody(baseMass=0, baseVisualShapeIndex=shape, basePosition=FAR_AWAY)

    def _load_pool(self) -> dict:
        """Enough models of each class for the fullest scene, at a few sizes (a model's scale is fixed
        when it is loaded)."""
        pool = {name: [] for name in CLASSES}
        for scale in (7.0, 7.5, 8.0, 8.5):  # the 0.46 m racecar model as a 3.2..3.9 m car
            pool["car"].append((self._load("racecar/racecar.urdf", scale), "racecar", scale))
        for scale in (0.23, 0.25, 0.27):  # the 6.5 m humanoid (y up) as a 1.5..1.8 m person
            pool["pedestrian"].append((self._load("humanoid/humanoid.urdf", scale), "humanoid", scale))
        for scale in (1.6, 1.9):  # r2d2, 0.9 m tall as shipped
            pool["robot"].append((self._load("r2d2.urdf", scale), "r2d2", scale))
        for scale in (1.0, 1.3):  # husky, a 1 m long wheeled robot
            pool["robot"].append((self._load("husky/husky.urdf", scale), "husky", scale))
        for scale in (6.0, 7.5, 9.0):  # the 9 cm duck as a 0.55..0.8 m bird on the road
            pool["duck"].append((self._load("duck_vhacd.urdf", scale), "duck", scale))
        for scale in (0.4, 0.6, 0.9):  # 1 m cube as crates and boxes
            pool["obstacle"].append((self._load("cube.urdf", scale), "cube", scale))
        for scale in (3.5, 4.5):  # 0.17 m cone as 0.6..0.77 m traffic cones
            pool["obstacle"].append((self._cone(scale), "cone", scale))
        return pool

    # -- one scene -----------------------------------------------------------------------------------
    def scene(self, seed: int, index: int) -> Scene:
        """Scene `index` of `seed`: everything random comes from numpy.random.default_rng([seed, index]),
        so a scene does not depend on how many others are made."""
        rng = np.random.default_rng([seed, index])
        split = ("train", "validation", "test")[int(np.searchsorted(np.cumsum(SPLIT_SHARES), rng.random(),
                                                                    side="right"))]
        camera = self._camera(rng)
        self._dress_world(rng)
        placed = self._place_objects(rng, camera)
        self._place_trees(rng, camera["x"])
        image, segmentation = self._render(rng, camera)
        boxes, instances = [], np.full(segmentation.shape, -1, dtype=np.int64)
        for body, label in placed:
            mask = segmentation == body
            if mask.sum() < MIN_PIXELS:
                continue
            rows, columns = np.nonzero(mask)
            instances[mask] = len(boxes)
            boxes.append([float(columns.min()), float(rows.min()), float(columns.max() + 1), float(rows.max() + 1),
                          label])
        return Scene(image=image, boxes=boxes, instances=instances, split=split)

    def _camera(self, rng: np.random.Generator) -> dict:
        """A dashboard camera in the right-hand lane, 1.1..1.5 m up, looking along the road with a small
        random yaw and a slight downward pitch; x shifts the lane-marking dashes from scene to scene."""
        x = rng.uniform(0, DASH_PERIOD)
        eye = np.array([x, -ROAD_HALF_WIDTH / 2 + rng.normal(0, 0.3), rng.uniform(1.1, 1.5)])
        yaw, pitch = np.radians(rng.uniform(-6, 6)), np.radians(rng.uniform(-7, -1))
        direction = np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw), math.sin(pitch)])
        return {"x": x, "eye": eye, "target": eye + direction, "fov": rng.uniform(50, 65)}

    def _dress_world(self, rng: np.random.Generator) -> None:
        """Colours of the ground (grass, dry grass, gravel), the asphalt, the sidewalks and the markings."""
        client = self.client
        ground = [[0.25, 0.45, 0.18], [0.5, 0.45, 0.3], [0.45, 0.45, 0.42]][rng.integers(3)]
        client.changeVisualShape(self.ground, -1, rgbaColor=_jitter(rng, ground, 0.03))
        client.changeVisualShape(self.road, -1, rgbaColor=[*(np.full(3, rng.uniform(0.18, 0.42))
                                                              + rng.normal(0, 0.015, 3)).clip(0, 1), 1])
        for sidewalk in self.sidewalks:
            client.changeVisualShape(sidewalk, -1, rgbaColor=_jitter(rng, np.full(3, rng.uniform(0.45, 0.75)), 0.02))
        client.changeVisualShape(self.markings, -1, rgbaColor=_jitter(rng, [0.88, 0.87, 0.8], 0.06))

    def _place_objects(self, rng: np.random.Generator, camera: dict) -> list[tuple[int, str]]:
        """2..10 objects 3..35 m ahead (more of them near), on the road, the sidewalks or the verge, none
        overlapping another on the ground (they may hide one another in the image); the rest of the pool
        waits out of sight. Returns (body id, label) of those placed."""
        free = {name: list(rng.permutation(len(models))) for name, models in self.pool.items()}
        footprints, placed = [], []  # (x, y, radius) on the ground
        for _ in range(rng.integers(*OBJECTS_PER_SCENE)):
            label = CLASSES[rng.choice(len(CLASSES), p=CLASS_WEIGHTS)]
            if not free[label]:
                continue
            body, kind, scale = self.pool[label][free[label].pop()]
            for _attempt in range(10):
                x, y, yaw = _ground_pose(rng, label, camera)
                radius = FOOTPRINT[kind] * scale
                if all(math.hypot(x - other_x, y - other_y) > radius + other_radius
                       for other_x, other_y, other_radius in footprints):
                    break
            else:
                continue
            footprints.append((x, y, radius))
            self._show(body, True)
            self._pose(body, kind, scale, x, y, yaw)
            self._colour(rng, body, kind)
            placed.append((body, label))
        used = {body for body, _ in placed}
        for body in self.shown - used:
            self._show(body, False)
        return placed

    def _show(self, body: int, visible: bool) -> None:
        """Give a model back its shipped colours, or make it transparent and move it out of sight."""
        for link, colour in self.colours[body]:
            self.client.changeVisualShape(body, link, rgbaColor=[*colour[:3], 1.0 if visible else 0.0])
        if visible:
            self.shown.add(body)
        else:
            self.client.resetBasePositionAndOrientation(body, FAR_AWAY, [0, 0, 0, 1])
            self.shown.discard(body)

    def _pose(self, body: int, kind: str, scale: float, x: float, y: float, yaw: float) -> None:
        """Stand a model on the ground at (x, y) facing `yaw`: the humanoid and the duck are modelled
        y-up, so they are first turned upright; r2d2, the humanoid and the cube have their origin
        above the ground by a share of their scale."""
        roll = math.pi / 2 if kind in ("humanoid", "duck") else 0.0
        height = {"humanoid": 3.6, "r2d2": 0.47, "cube": 0.5}.get(kind, 0.0) * scale
        self.client.resetBasePositionAndOrientation(body, [x, y, height],
                                                    self.client.getQuaternionFromEuler([roll, 0, yaw]))

    def _colour(self, rng: np.random.Generator, body: int, kind: str) -> None:
        """A random paint for the parts of each model that have one colour (the car's body, a robot's
        shell, a person's shirt, trousers, skin and shoes, a crate, a cone)."""
        change = self.client.changeVisualShape
        if kind == "humanoid":
            shirt, trousers = _paint(rng), _paint(rng, value=(0.15, 0.6))
            skin = _jitter(rng, [[0.95, 0.8, 0.65], [0.8, 0.6, 0.45], [0.55, 0.38, 0.25], [0.35, 0.24, 0.16]]
                           [rng.integers(4)], 0.03)
            shoes = _jitter(rng, [0.15, 0.12, 0.1], 0.05)
            for link, colour in zip(range(15), [trousers, shirt, skin, shirt, shirt, skin, shirt, shirt, skin,
                                                trousers, trousers, shoes, trousers, trousers, shoes]):
                change(body, link, rgbaColor=colour)
        elif kind == "duck":
            change(body, -1, rgbaColor=_jitter(rng, [[1, 1, 0.4], [1, 1, 1], [0.55, 0.4, 0.25]][rng.integers(3)],
                                                 0.05))
        elif kind == "cone":
            change(body, -1, rgbaColor=_jitter(rng, [[1, 0.45, 0.05], [1, 0.85, 0.1], [0.95, 0.95, 0.95]]
                                                [rng.integers(3)], 0.05))
        else:  # the painted links of the other models
            for link in {"racecar": [0], "r2d2": [-1, 14], "husky": [6], "cube": [-1]}[kind]:
                change(body, link, rgbaColor=_paint(rng))

    def _place_trees(self, rng: np.random.Generator, camera_x: float) -> None:
        """0..6 trees beyond the sidewalks, 5..80 m ahead."""
        shown = rng.integers(len(self.trees) + 1)
        for number, parts in enumerate(self.trees):
            if number < shown:
                side = rng.choice([-1.0, 1.0])
                position = [camera_x + rng.uniform(5, 80), side * rng.uniform(ROAD_HALF_WIDTH + 2.8, 14), 0]
            else:
                position = FAR_AWAY
            for part in parts:
                self.client.resetBasePositionAndOrientation(part, position, [0, 0, 0, 1])

    def _render(self, rng: np.random.Generator, camera: dict) -> tuple[np.ndarray, np.ndarray]:
        """The image (size, size, 3) uint8 and the segmentation (size, size) of body ids (-1: nothing),
        under a random sun (direction, colour, ambient/diffuse/specular shares), with a sky gradient
        where nothing was drawn and a little sensor noise. No shadows: the tiny renderer's shadow map,
        stretched over the whole ground, shows none at these sizes and makes a frame ten times slower."""
        client, size = self.client, self.size
        view = client.computeViewMatrix(camera["eye"].tolist(), camera["target"].tolist(), [0, 0, 1])
        projection = client.computeProjectionMatrixFOV(camera["fov"], 1.0, 0.1, 200.0)
        azimuth, elevation = rng.uniform(0, 2 * math.pi), np.radians(rng.uniform(20, 80))
        sun = [math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation)]
        warmth = rng.uniform(-0.1, 0.2)
        _, _, rgba, _, segmentation = client.getCameraImage(
            size, size, view, projection, renderer=self.pybullet.ER_TINY_RENDERER, lightDirection=sun,
            lightColor=[1.0, 1.0 - warmth / 2, 1.0 - warmth], lightDistance=100.0, shadow=0,
            lightAmbientCoeff=rng.uniform(0.35, 0.7), lightDiffuseCoeff=rng.uniform(0.3, 0.65),
            lightSpecularCoeff=rng.uniform(0.0, 0.1))
        image = np.asarray(rgba, dtype=np.float32).reshape(size, size, 4)[..., :3]  # (H, W, 3)
        segmentation = np.asarray(segmentation, dtype=np.int64).reshape(size, size)  # (H, W)
        top = np.array([rng.uniform(0.2, 0.45), rng.uniform(0.45, 0.72), rng.uniform(0.75, 0.95)])
        if rng.random() < 0.3:  # overcast
            top = np.full(3, rng.uniform(0.55, 0.8))
        horizon = top + (1 - top) * 0.55
        rows = np.linspace(0, 1, size)[:, None, None]  # (H, 1, 1)
        sky = 255 * (top + (horizon - top) * rows)  # (H, 1, 3)
        image = np.where(segmentation[..., None] < 0, sky, image)
        image = image + rng.normal(0, rng.uniform(0, 4), image.shape)
        return np.clip(np.round(image), 0, 255).astype(np.uint8), segmentation


def _jitter(rng: np.random.Generator, colour, spread: float) -> list[float]:
    """An RGBA colour near `colour` (RGB in 0..1)."""
    return [*np.clip(np.asarray(colour, dtype=float) + rng.normal(0, spread, 3), 0, 1).tolist(), 1.0]


def _paint(rng: np.random.Generator, value=(0.2, 0.95)) -> list[float]:
    """A random RGBA paint: any hue, some saturation, brightness in `value`."""
    return [*colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.9), rng.uniform(*value)), 1.0]


def _ground_pose(rng: np.random.Generator, label: str, camera: dict) -> tuple[float, float, float]:
    """Where an object of `label` stands (x, y) and faces (yaw): cars drive in a lane (away from the
    camera in its own lane, towards it in the other), cross, or are parked on the verge; the others
    stand anywhere across the road, sidewalks and verges that the camera sees (or just beyond its
    edges), facing any way. Distances 3..35 m ahead, more of them near."""
    ahead = 3.0 + 32.0 * rng.random() ** 1.3
    x = camera["x"] + ahead
    if label == "car":
        draw = rng.random()
        if draw < 0.7:
            lane = rng.choice([-1.0, 1.0])
            y = lane * ROAD_HALF_WIDTH / 2 + rng.normal(0, 0.3)
            return x, y, (0.0 if lane < 0 else math.pi) + rng.normal(0, 0.08)
        if draw < 0.8:
            return x, rng.uniform(-ROAD_HALF_WIDTH, ROAD_HALF_WIDTH), rng.choice([-1.0, 1.0]) * math.pi / 2
        return x, rng.choice([-1.0, 1.0]) * (ROAD_HALF_WIDTH + 3.0), rng.choice([0.0, math.pi]) + rng.normal(0, 0.1)
    reach = ROAD_HALF_WIDTH + (4.0 if label == "pedestrian" else 3.0)
    seen = ahead * math.tan(math.radians(camera["fov"] / 2)) + 1.0  # half the width in view at that distance
    low, high = max(-reach, camera["eye"][1] - seen), min(reach, camera["eye"][1] + seen)
    return x, rng.uniform(low, high), rng.uniform(0, 2 * math.pi)


def _check(count: int, seed: int, size: int) -> None:
    for name, value, low in (("count", count, 1), ("seed", seed, 0), ("size", size, 16)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise DataError(f"driving_scenes: {name} must be a whole number >= {low}; got {value!r}")
    if size > 1024:
        raise DataError(f"driving_scenes: size must be at most 1024 pixels; got {size}")


def render(count: int, seed: int = 0, size: int = 96, start: int = 0) -> list[Scene]:
    """Scenes start..start+count-1 of `seed` at size x size, with their instance masks, not cached."""
    _check(count, seed, size)
    renderer = Renderer(size)
    try:
        return [renderer.scene(seed, index) for index in range(start, start + count)]
    finally:
        renderer.close()


def frame(scenes: list[Scene]) -> pd.DataFrame:
    """Columns image (uint8 (size, size, 3) arrays), boxes (a list of [x_min, y_min, x_max, y_max, label]
    per row) and split."""
    return pd.DataFrame({"image": [scene.image for scene in scenes], "boxes": [scene.boxes for scene in scenes],
                         "split": [scene.split for scene in scenes]})


def cache_file(count: int = 2000, seed: int = 0, size: int = 96) -> Path:
    return CACHE_FOLDER / f"v{VERSION}-count{count}-seed{seed}-size{size}.npz"


def locate() -> str | None:
    """The cached default scenes, if they were rendered before."""
    path = cache_file()
    return str(path) if path.is_file() else None


def _save(path: Path, table: pd.DataFrame) -> None:
    """Write the scenes as one compressed .npz (no pickled objects), atomically: a temporary file
    renamed into place, so a reader never sees half a file."""
    boxes = [(row, box) for row, scene_boxes in enumerate(table["boxes"]) for box in scene_boxes]
    arrays = {"image": np.stack(table["image"].to_list()),  # (N, size, size, 3)
              "split": table["split"].to_numpy(dtype=str),
              "box_row": np.array([row for row, _ in boxes], dtype=np.int64),
              "box": np.array([box[:4] for _, box in boxes], dtype=np.float32).reshape(-1, 4),
              "box_label": np.array([CLASSES.index(box[4]) for _, box in boxes], dtype=np.int64)}
    save_arrays(path, arrays)


def _read(path: Path, count: int, size: int) -> pd.DataFrame:
    """The frame _save wrote, checked against the shapes its name promises."""
    try:
        with np.load(path, allow_pickle=False) as arrays:
            images, split = arrays["image"], arrays["split"].astype(object)
            rows, coordinates, labels = arrays["box_row"], arrays["box"], arrays["box_label"]
        problem = None
        if images.shape != (count, size, size, 3) or images.dtype != np.uint8 or split.shape != (count,):
            problem = f"images {images.shape} {images.dtype}, {len(split)} splits for {count} scenes of {size}x{size}"
        elif coordinates.shape != (len(rows), 4) or labels.shape != rows.shape:
            problem = f"{len(rows)} boxes with coordinates {coordinates.shape} and {len(labels)} labels"
        elif len(rows) and (rows.min() < 0 or rows.max() >= count or labels.min() < 0 or labels.max() >= len(CLASSES)):
            problem = "a box names a scene or a class that does not exist"
        if problem:
            raise ValueError(problem)
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"cached driving scenes '{path}' cannot be read ({error}); delete the file so that "
                        f"they are rendered again") from None
    boxes = [[] for _ in range(len(images))]
    for row, box, label in zip(rows.tolist(), coordinates.tolist(), labels.tolist()):
        boxes[row].append([*box, CLASSES[label]])
    return pd.DataFrame({"image": list(images), "boxes": boxes, "split": split})


def driving_scenes(count: int = 2000, seed: int = 0, size: int = 96) -> pd.DataFrame:
    """`count` SIMULATED road scenes of `size` x `size` pixels: columns image (uint8 (size, size, 3)),
    boxes (per row a list of [x_min, y_min, x_max, y_max, label], pixel-edge coordinates, x right,
    y down, label one of CLASSES) and split (train / validation / test, about 80 / 10 / 10 %, drawn
    per scene). Rendered once with pybullet (about 25 ms a scene at 96x96 on one core), then read
    from ~/.cache/lamina/datasets/driving_scenes/."""
    _check(count, seed, size)
    path = cache_file(count, seed, size)
    if path.is_file():
        return _read(path, count, size)
    print(f"driving_scenes: rendering {count} simulated scenes at {size}x{size} with pybullet (once; cached in "
          f"{path})", file=sys.stderr, flush=True)
    table = frame(render(count, seed, size))
    try:
        _save(path, table)
    except OSError as error:  # a read-only home still gets its scenes, rendered again next time
        print(f"driving_scenes: could not cache the scenes in {path} ({error})", file=sys.stderr, flush=True)
    return table
