"""Built-in generated data sets: 2-D shapes (28×28, 10 classes) and 3-D solids (16³, 5 classes).

Nothing to download, seeded, a few seconds for tens of thousands of samples. Each sample is a
shape drawn from its distance field: the pixel grid is moved into the shape's own frame
(random position, scale, rotation, aspect), a distance to the outline (or a signed distance for
a filled shape) is computed for every pixel at once, and anti-aliased ink follows from it.

To make the task worth a BatchNorm, every image also gets its own brightness offset, contrast
(a factor of 16 between the faintest and the strongest), background ramp and noise level, so
raw input statistics vary a lot from image to image.
"""

from __future__ import annotations

import numpy as np

SHAPES2D_CLASSES = (
    "ring", "disk", "square", "filled square", "triangle",
    "filled triangle", "cross", "bar", "parallel bars", "corner",
)  # fmt: skip

SHAPES3D_CLASSES = ("sphere", "cube", "cylinder", "torus", "cone")

_CHUNK = 2048  # samples drawn at a time: bounds the temporary arrays to a few tens of MB


def shapes2d(n: int, seed: int = 0, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images of 10 kinds of shapes: (images float32 (n, 1, size, size), labels int64).

    The classes, in order, are :data:`SHAPES2D_CLASSES`; each appears n/10 times (±1).
    """
    n = _check_count("shapes2d", n)
    size = _check_size("shapes2d", size, 8)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(SHAPES2D_CLASSES)).astype(np.int64)
    # One row of pose and appearance parameters per image, drawn up front (vectorised).
    radius = rng.uniform(0.24, 0.38, n) * size
    slack = np.maximum(size / 2 - 1.1 * radius - 1, 0)
    centre = size / 2 - 0.5 + rng.uniform(-1, 1, (n, 2)) * slack[:, None]
    angle = rng.uniform(0, 2 * np.pi, n)
    aspect = np.exp(rng.uniform(-0.2, 0.2, n))
    thickness = rng.uniform(1.4, 3.0, n)
    look = _appearance(rng, n, size)
    # float32 from here on: half the memory traffic of float64 for the per-pixel work.
    radius, centre, angle, aspect, thickness = (
        v.astype(np.float32) for v in (radius, centre, angle, aspect, thickness)
    )

    images = np.empty((n, 1, size, size), dtype=np.float32)
    grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float32)
    for start in range(0, n, _CHUNK):
        rows = slice(start, min(start + _CHUNK, n))
        # The pixel grid in each shape's frame: translate, rotate by −angle, scale to radius 1.
        dx = grid_x - centre[rows, 0, None, None]
        dy = grid_y - centre[rows, 1, None, None]
        cos = np.cos(angle[rows])[:, None, None]
        sin = np.sin(angle[rows])[:, None, None]
        r = radius[rows, None, None]
        a = aspect[rows, None, None]
        ux = (cos * dx + sin * dy) / (r * a)
        uy = (cos * dy - sin * dx) * a / r
        ink = np.empty(ux.shape, dtype=np.float32)
        chunk_labels = labels[rows]
        for label, draw in enumerate(_DRAW2D):
            mine = chunk_labels == label
            if not mine.any():
                continue
            distance, filled = draw(ux[mine], uy[mine])
            # Distances are in shape units; times the radius they are pixels. One pixel of
            # linear ramp at the edge anti-aliases the drawing.
            pixels = distance * r[mine]
            if filled:
                ink[mine] = np.clip(0.5 - pixels, 0, 1)
            else:
                half = thickness[rows][mine, None, None] / 2
                ink[mine] = np.clip(half + 0.5 - pixels, 0, 1)
        images[rows, 0] = _render(ink, look, rows, rng)
    return images, labels


def shapes3d(n: int, seed: int = 0, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """``n`` volumes of 5 kinds of solids: (volumes float32 (n, 1, size, size, size), labels).

    The classes, in order, are :data:`SHAPES3D_CLASSES`, each in a uniformly random
    orientation, position and size, with per-volume brightness, contrast and noise.
    """
    n = _check_count("shapes3d", n)
    size = _check_size("shapes3d", size, 6)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % len(SHAPES3D_CLASSES)).astype(np.int64)
    radius = rng.uniform(0.26, 0.38, n) * size
    slack = np.maximum(size / 2 - radius - 1, 0)
    centre = size / 2 - 0.5 + rng.uniform(-1, 1, (n, 3)) * slack[:, None]
    rotation = _random_rotations(rng, n)
    look = _appearance(rng, n, size, ndim=3)
    radius, centre, rotation = (v.astype(np.float32) for v in (radius, centre, rotation))

    volumes = np.empty((n, 1, size, size, size), dtype=np.float32)
    grid = np.mgrid[0:size, 0:size, 0:size].reshape(3, -1).astype(np.float32)
    step = _CHUNK // 8
    for start in range(0, n, step):
        rows = slice(start, min(start + step, n))
        offset = [grid[j] - centre[rows, j, None] for j in range(3)]
        # u = Rᵀ (p − c) / radius: the voxel grid in each solid's own frame, one axis at a time.
        scale = 1 / radius[rows, None]
        u = [
            sum(offset[j] * rotation[rows, j, i, None] for j in range(3)) * scale for i in range(3)
        ]
        sd = np.empty(u[0].shape, dtype=np.float32)
        chunk_labels = labels[rows]
        for label, solid in enumerate(_SOLIDS3D):
            mine = chunk_labels == label
            if mine.any():
                sd[mine] = solid(u[0][mine], u[1][mine], u[2][mine])
        ink = np.clip(0.5 - sd * radius[rows, None], 0, 1).reshape(-1, size, size, size)
        volumes[rows, 0] = _render(ink, look, rows, rng)
    return volumes, labels


def _check_size(name: str, size, smallest: int) -> int:
    """The side length: an int large enough for a shape to be drawn recognisably."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < smallest:
        raise ValueError(f"{name} expected size to be an int >= {smallest}, got {size!r}")
    return int(size)


def _check_count(name: str, n) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name} expected a positive number of samples, got {n!r}")
    return int(n)


# -- appearance -----------------------------------------------------------------------------------


def _appearance(rng, n: int, size: int, ndim: int = 2) -> dict[str, np.ndarray]:
    """Per-sample brightness, contrast, background ramp and noise level."""
    look = {
        "brightness": rng.uniform(-1.0, 2.0, n),
        "contrast": np.exp(rng.uniform(np.log(0.25), np.log(4.0), n)),
        # A linear background ramp of up to half the ink's strength across the image.
        "ramp": rng.normal(0, 1, (n, ndim)) * (rng.uniform(0, 0.5, n) / size)[:, None],
        "noise": rng.uniform(0.05, 0.2, n),
    }
    return {key: value.astype(np.float32) for key, value in look.items()}


def _render(ink: np.ndarray, look: dict, rows: slice, rng) -> np.ndarray:
    """brightness + contrast · (ink + ramp + noise), broadcast over each sample's pixels."""
    spatial = ink.shape[1:]
    expand = (slice(None),) + (None,) * len(spatial)
    coords = np.indices(spatial, dtype=np.float32) - (spatial[0] - 1) / 2
    ramp = np.tensordot(look["ramp"][rows], coords, axes=1)
    noise = rng.standard_normal(ink.shape, dtype=np.float32) * look["noise"][rows][expand]
    image = look["brightness"][rows][expand] + look["contrast"][rows][expand] * (ink + ramp + noise)
    return image.astype(np.float32, copy=False)


# -- 2-D shapes: each returns (distance, filled) in shape units -----------------------------------


def _segment(ux, uy, ax, ay, bx, by):
    """Distance from every point to the segment from (ax, ay) to (bx, by)."""
    ex, ey = bx - ax, by - ay
    h = np.clip(((ux - ax) * ex + (uy - ay) * ey) / (ex * ex + ey * ey), 0, 1)
    return np.hypot(ux - ax - h * ex, uy - ay - h * ey)


def _box(ux, uy):
    return np.maximum(np.abs(ux), np.abs(uy)) - 0.8


def _triangle(ux, uy):
    # An equilateral triangle is the intersection of three half-planes n_k · u <= inradius.
    normals = [(np.cos(t), np.sin(t)) for t in (np.pi / 2, np.pi * 7 / 6, np.pi * 11 / 6)]
    return np.max([nx * ux + ny * uy for nx, ny in normals], axis=0) - 0.55


def _cross(ux, uy):
    return np.minimum(_segment(ux, uy, -1, 0, 1, 0), _segment(ux, uy, 0, -1, 0, 1))


def _parallel_bars(ux, uy):
    return np.minimum(_segment(ux, uy, -1, -0.4, 1, -0.4), _segment(ux, uy, -1, 0.4, 1, 0.4))


def _corner(ux, uy):
    bottom = _segment(ux, uy, -0.8, -0.8, 0.8, -0.8)
    return np.minimum(bottom, _segment(ux, uy, -0.8, -0.8, -0.8, 0.8))


# In the order of SHAPES2D_CLASSES: (distance, filled).
_DRAW2D = (
    lambda ux, uy: (np.abs(np.hypot(ux, uy) - 1), False),
    lambda ux, uy: (np.hypot(ux, uy) - 1, True),
    lambda ux, uy: (np.abs(_box(ux, uy)), False),
    lambda ux, uy: (_box(ux, uy), True),
    lambda ux, uy: (np.abs(_triangle(ux, uy)), False),
    lambda ux, uy: (_triangle(ux, uy), True),
    lambda ux, uy: (_cross(ux, uy), False),
    lambda ux, uy: (_segment(ux, uy, -1, 0, 1, 0), False),
    lambda ux, uy: (_parallel_bars(ux, uy), False),
    lambda ux, uy: (_corner(ux, uy), False),
)


# -- 3-D solids: each returns a signed distance in shape units ------------------------------------


def _cube(x, y, z):
    q = np.stack([np.abs(x), np.abs(y), np.abs(z)]) - 0.65
    outside = np.sqrt(np.sum(np.maximum(q, 0) ** 2, axis=0))
    return outside + np.minimum(q.max(axis=0), 0)


def _cylinder(x, y, z):
    qx = np.hypot(x, y) - 0.55
    qz = np.abs(z) - 0.9
    return np.minimum(np.maximum(qx, qz), 0) + np.hypot(np.maximum(qx, 0), np.maximum(qz, 0))


def _cone(x, y, z):
    # Apex at z = 1, base radius 0.8 at z = −1; the slanted side's distance is approximate.
    side = (np.hypot(x, y) - 0.4 * (1 - z)) / np.hypot(1, 0.4)
    return np.maximum(side, np.abs(z) - 1)


_SOLIDS3D = (
    lambda x, y, z: np.sqrt(x * x + y * y + z * z) - 0.9,  # sphere
    _cube,
    _cylinder,
    lambda x, y, z: np.hypot(np.hypot(x, y) - 0.62, z) - 0.3,  # torus
    _cone,
)


def _random_rotations(rng, n: int) -> np.ndarray:
    """Uniformly random rotation matrices (n, 3, 3), from normalised Gaussian quaternions."""
    q = rng.standard_normal((n, 4))
    w, x, y, z = (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    return np.stack(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    ).transpose(2, 0, 1)
