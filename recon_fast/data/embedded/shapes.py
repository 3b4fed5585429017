"""Procedural labelled 3D shapes: area-uniform surface samples (points + normals).

Every shape is a list of parts; a part is a surface primitive (in its own frame) placed by a
rotation and a translation. Sampling draws the number of points of each part from a multinomial
over the part areas, so the density is uniform over the whole surface. Shapes are built upright
(+y up, like ShapeNet), then posed: random yaw, slight tilt, anisotropic scale, Gaussian noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

Samples = tuple[np.ndarray, np.ndarray]  # (points (n, 3), unit normals (n, 3))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _rejection(rng: np.random.Generator, n: int, propose: Callable[[int], tuple],
               weight: Callable[..., np.ndarray]) -> tuple:
    """Draw n proposals accepted with probability weight(...) in [0, 1] (area correction)."""
    kept: list[tuple] = []
    total = 0
    while total < n:
        batch = propose(max(2 * (n - total), 16))
        accept = rng.random(len(batch[0])) < weight(*batch)
        kept.append(tuple(b[accept] for b in batch))
        total += int(accept.sum())
    return tuple(np.concatenate([k[i] for k in kept])[:n] for i in range(len(kept[0])))


# ----------------------------------------------------------------------------------------------
# Primitives: area() and sample(n, rng) -> (points, normals) in the primitive's own frame.


@dataclass
class Box:
    """Closed axis-aligned box with full extents (sx, sy, sz), centred at the origin."""

    sx: float
    sy: float
    sz: float

    closed = True

    def face_areas(self) -> np.ndarray:
        yz, xz, xy = self.sy * self.sz, self.sx * self.sz, self.sx * self.sy
        return np.array([yz, yz, xz, xz, xy, xy])

    def area(self) -> float:
        return float(self.face_areas().sum())

    def sample(self, n: int, rng: np.random.Generator) -> Samples:
        half = np.array([self.sx, self.sy, self.sz]) / 2
        face = rng.choice(6, size=n, p=self.face_areas() / self.area())
        axis, sign = face // 2, np.where(face % 2 == 0, 1.0, -1.0)
        points = (rng.random((n, 3)) * 2 - 1) * half
        points[np.arange(n), axis] = sign * half[axis]
        normals = np.zeros((n, 3))
        normals[np.arange(n), axis] = sign
        return points, normals


@dataclass
class Ellipsoid:
    """Ellipsoid with semi-axes (rx, ry, rz), centred at the origin."""

    rx: float
    ry: float
    rz: float
    closed = True

    def area(self) -> float:
        # Knud Thomsen's approximation (< 1.1% error); only used to share points between parts.
        p = 1.6075
        a, b, c = self.rx ** p, self.ry ** p, self.rz ** p
        return 4 * math.pi * ((a * b + a * c + b * c) / 3) ** (1 / p)

    def sample(self, n: int, rng: np.random.Generator) -> Samples:
        radii = np.array([self.rx, self.ry, self.rz])

        def propose(m):
            return (_unit(rng.normal(size=(m, 3))),)

        def weight(u):
            # Area element of the map u -> radii * u, relative to its maximum.
            w = np.linalg.norm(u / radii, axis=1)
            return w / (1.0 / radii.min())

        (u,) = _rejection(rng, n, propose, weight)
        return u * radii, _unit(u / radii)


@dataclass
class Frustum:
    """Lateral surface of a y-axis frustum from y=-h/2 (radius r0) to y=+h/2 (radius r1), with
    optional bottom/top caps. r1 = 0 is a cone, r0 = r1 a cylinder."""

    r0: float
    r1: float
    h: float
    bottom: bool = True
    top: bool = True

    @property
    def closed(self) -> bool:
        return (self.bottom or self.r0 == 0) and (self.top or self.r1 == 0)

    def part_areas(self) -> np.ndarray:
        slant = math.hypot(self.h, self.r0 - self.r1)
        return np.array([math.pi * (self.r0 + self.r1) * slant,
                         math.pi * self.r0 ** 2 * self.bottom, math.pi * self.r1 ** 2 * self.top])

    def area(self) -> float:
        return float(self.part_areas().sum())

    def sample(self, n: int, rng: np.random.Generator) -> Samples:
        areas = self.part_areas()
        counts = rng.multinomial(n, areas / areas.sum())
        side = self._side(counts[0], rng)
        bottom = _disk(counts[1], self.r0, -self.h / 2, -1.0, rng)
        top = _disk(counts[2], self.r1, self.h / 2, 1.0, rng)
        return tuple(np.concatenate(parts) for parts in zip(side, bottom, top))

    def _side(self, n: int, rng: np.random.Generator) -> Samples:
        r_max = max(self.r0, self.r1)

        def propose(m):
            return rng.random(m), rng.random(m) * 2 * math.pi

        def weight(t, theta):  # circumference grows with the radius at height t
            return (self.r0 + (self.r1 - self.r0) * t) / r_max

        t, theta = _rejection(rng, n, propose, weight)
        radius = self.r0 + (self.r1 - self.r0) * t
        c, s = np.cos(theta), np.sin(theta)
        points = np.stack([radius * c, (t - 0.5) * self.h, radius * s], axis=1)
        normals = _unit(np.stack([self.h * c, np.full_like(t, self.r0 - self.r1), self.h * s], 1))
        return points, normals


def _disk(n: int, radius: float, y: float, normal_y: float, rng: np.random.Generator) -> Samples:
    r = radius * np.sqrt(rng.random(n))
    theta = rng.random(n) * 2 * math.pi
    points = np.stack([r * np.cos(theta), np.full(n, y), r * np.sin(theta)], axis=1)
    return points, np.tile([0.0, normal_y, 0.0], (n, 1))


@dataclass
class Torus:
    """Torus around the y axis: ring radius R, tube radius r; `arc` < 2pi keeps part of the ring."""

    R: float
    r: float
    arc: float = 2 * math.pi

    @property
    def closed(self) -> bool:
        return self.arc >= 2 * math.pi

    def area(self) -> float:
        return 2 * math.pi * self.r * self.R * self.arc

    def sample(self, n: int, rng: np.random.Generator) -> Samples:
        def propose(m):
            return rng.random(m) * self.arc, rng.random(m) * 2 * math.pi

        def weight(theta, phi):  # the outer side of the tube has more area
            return (self.R + self.r * np.cos(phi)) / (self.R + self.r)

        theta, phi = _rejection(rng, n, propose, weight)
        normals = np.stack([np.cos(phi) * np.cos(theta), np.sin(phi),
                            np.cos(phi) * np.sin(theta)], axis=1)
        centre = np.stack([self.R * np.cos(theta), np.zeros_like(theta), self.R * np.sin(theta)], 1)
        return centre + self.r * normals, normals


@dataclass
class Pyramid:
    """Square pyramid: base side `w` at y = -h/2, apex at y = +h/2."""

    w: float
    h: float
    closed = True

    def _triangles(self) -> np.ndarray:
        a = self.w / 2
        base = np.array([[-a, -self.h / 2, -a], [a, -self.h / 2, -a], [a, -self.h / 2, a],
                         [-a, -self.h / 2, a]])
        apex = np.array([0.0, self.h / 2, 0.0])
        sides = [[base[i], base[(i + 1) % 4], apex] for i in range(4)]
        return np.array(sides + [[base[0], base[2], base[1]], [base[0], base[3], base[2]]])

    def area(self) -> float:
        return float(_triangle_areas(self._triangles()).sum())

    def sample(self, n: int, rng: np.random.Generator) -> Samples:
        return _sample_triangles(self._triangles(), n, rng)


def _triangle_areas(tri: np.ndarray) -> np.ndarray:
    return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)


def _sample_triangles(tri: np.ndarray, n: int, rng: np.random.Generator) -> Samples:
    areas = _triangle_areas(tri)
    pick = rng.choice(len(tri), size=n, p=areas / areas.sum())
    u, v = rng.random(n), rng.random(n)
    flip = u + v > 1  # fold the unit square onto the triangle
    u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
    a, b, c = tri[pick, 0], tri[pick, 1], tri[pick, 2]
    points = a + u[:, None] * (b - a) + v[:, None] * (c - a)
    normals = _unit(np.cross(b - a, c - a))
    # Orient outwards from the solid's centre (all our triangle solids are convex).
    centre = tri.reshape(-1, 3).mean(axis=0)
    normals *= np.sign(((points - centre) * normals).sum(axis=1, keepdims=True) + 1e-12)
    return points, normals


# ----------------------------------------------------------------------------------------------
# Parts and shapes.


def rotation(axis: str, angle: float) -> np.ndarray:
    """3x3 matrix rotating column vectors by `angle` about `axis` ('x', 'y' or 'z')."""
    c, s = math.cos(angle), math.sin(angle)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


@dataclass
class Part:
    primitive: object
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rot: np.ndarray | None = None

    def sample(self, n: int, rng: np.random.Generator) -> Samples:
        points, normals = self.primitive.sample(n, rng)
        if self.rot is not None:
            points, normals = points @ self.rot.T, normals @ self.rot.T
        return points + np.asarray(self.offset), normals


def sample_parts(parts: list[Part], n: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n points spread over the parts in proportion to their areas.

    Returns (points (n, 3), normals (n, 3), closed (n,) bool: the point lies on a closed surface,
    so the renderer may cull it when it faces away from the camera).
    """
    areas = np.array([p.primitive.area() for p in parts])
    counts = rng.multinomial(n, areas / areas.sum())
    samples = [p.sample(int(k), rng) + (np.full(int(k), p.primitive.closed),)
               for p, k in zip(parts, counts) if k > 0]
    order = rng.permutation(n)  # parts would otherwise appear as contiguous row blocks
    return tuple(np.concatenate([s[i] for s in samples])[order] for i in range(3))


def U(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


# Builders: rng -> parts of an upright shape (y up, roughly within [-1, 1]^3).

def sphere(rng):
    r = U(rng, 0.8, 1.0)
    return [Part(Ellipsoid(r * U(rng, 0.92, 1.08), r * U(rng, 0.92, 1.08), r * U(rng, 0.92, 1.08)))]


def cube(rng):
    return [Part(Box(U(rng, 0.85, 1.15), U(rng, 0.85, 1.15), U(rng, 0.85, 1.15)))]


def cylinder(rng):
    r = U(rng, 0.3, 0.55)
    return [Part(Frustum(r, r, U(rng, 1.0, 1.8)))]


def cone(rng):
    return [Part(Frustum(U(rng, 0.4, 0.7), 0.0, U(rng, 1.0, 1.7), top=False))]


def torus(rng):
    ring = Torus(U(rng, 0.6, 0.85), U(rng, 0.14, 0.28))
    return [Part(ring, rot=rotation("x", U(rng, -0.3, 0.3)))]


def pyramid(rng):
    return [Part(Pyramid(U(rng, 1.0, 1.5), U(rng, 0.8, 1.4)))]


def _legs(rng, half_x, half_z, height, thickness, top_y, inset):
    """Four vertical legs under a rectangle (half extents half_x, half_z) ending at top_y."""
    legs = []
    for sx in (-1, 1):
        for sz in (-1, 1):
            centre = (sx * (half_x - inset), top_y - height / 2, sz * (half_z - inset))
            legs.append(Part(Box(thickness, height, thickness), centre))
    return legs


def table(rng):
    w, d, t, h = U(rng, 1.4, 2.0), U(rng, 0.8, 1.2), U(rng, 0.05, 0.09), U(rng, 0.7, 0.95)
    leg = U(rng, 0.06, 0.1)
    top = Part(Box(w, t, d), (0.0, h - t / 2, 0.0))
    return [top] + _legs(rng, w / 2, d / 2, h - t, leg, h - t, U(rng, 0.05, 0.15))


def chair(rng):
    w, t, seat_h = U(rng, 0.8, 1.0), U(rng, 0.06, 0.1), U(rng, 0.45, 0.6)
    back_h, leg = U(rng, 0.5, 0.85), U(rng, 0.05, 0.08)
    seat = Part(Box(w, t, w), (0.0, seat_h - t / 2, 0.0))
    back = Part(Box(w, back_h, t), (0.0, seat_h + back_h / 2, -w / 2 + t / 2),
                rot=rotation("x", U(rng, -0.2, 0.0)))
    return [seat, back] + _legs(rng, w / 2, w / 2, seat_h - t, leg, seat_h - t, leg / 2)


def lamp(rng):
    pole_h, base_r = U(rng, 1.0, 1.5), U(rng, 0.25, 0.35)
    shade_h = U(rng, 0.3, 0.45)
    return [Part(Frustum(base_r, base_r * 0.9, 0.06), (0.0, 0.03, 0.0)),
            Part(Frustum(0.03, 0.03, pole_h, bottom=False, top=False), (0.0, pole_h / 2, 0.0)),
            Part(Frustum(U(rng, 0.3, 0.45), U(rng, 0.12, 0.22), shade_h, bottom=False, top=False),
                 (0.0, pole_h + shade_h * 0.3, 0.0))]


def mug(rng):
    r, h = U(rng, 0.35, 0.45), U(rng, 0.8, 1.0)
    handle_R, handle_r = U(rng, 0.22, 0.3), U(rng, 0.04, 0.06)
    # Half ring standing in the xy plane, its ends touching the wall at x = r.
    to_xy_plane = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # x->y, z->x
    handle = Part(Torus(handle_R, handle_r, math.pi), (r, 0.0, 0.0), rot=to_xy_plane)
    return [Part(Frustum(r, r, h, bottom=True, top=False)), handle]


def airplane(rng):
    length, body_r = U(rng, 1.6, 2.0), U(rng, 0.13, 0.2)
    span, chord = U(rng, 2.2, 3.0), U(rng, 0.35, 0.55)
    tail_x = -length * 0.85
    return [Part(Ellipsoid(length, body_r, body_r)),
            Part(Box(chord, 0.04, span), (U(rng, -0.2, 0.2), 0.0, 0.0),
                 rot=rotation("y", U(rng, 0.0, 0.35))),
            Part(Box(chord * 0.6, U(rng, 0.4, 0.6), 0.04), (tail_x, 0.3, 0.0)),
            Part(Box(chord * 0.5, 0.03, span * 0.35), (tail_x, 0.05, 0.0))]


def bottle(rng):
    r, body_h = U(rng, 0.28, 0.38), U(rng, 0.9, 1.2)
    neck_r, neck_h, shoulder_h = U(rng, 0.09, 0.13), U(rng, 0.25, 0.4), U(rng, 0.15, 0.3)
    return [Part(Frustum(r, r, body_h, bottom=True, top=False), (0.0, body_h / 2, 0.0)),
            Part(Frustum(r, neck_r, shoulder_h, bottom=False, top=False),
                 (0.0, body_h + shoulder_h / 2, 0.0)),
            Part(Frustum(neck_r, neck_r, neck_h, bottom=False, top=False),
                 (0.0, body_h + shoulder_h + neck_h / 2, 0.0))]


def bench(rng):
    w, d, t, h = U(rng, 1.8, 2.4), U(rng, 0.35, 0.5), U(rng, 0.05, 0.08), U(rng, 0.4, 0.5)
    seat = Part(Box(w, t, d), (0.0, h - t / 2, 0.0))
    return [seat] + _legs(rng, w / 2, d / 2, h - t, U(rng, 0.05, 0.08), h - t, U(rng, 0.1, 0.2))


def bookshelf(rng):
    w, h, d, t = U(rng, 0.8, 1.2), U(rng, 1.4, 2.0), U(rng, 0.3, 0.4), 0.04
    shelves = int(rng.integers(3, 6))
    parts = [Part(Box(t, h, d), (sx * (w / 2 - t / 2), h / 2, 0.0)) for sx in (-1, 1)]
    parts.append(Part(Box(w, h, t), (0.0, h / 2, -d / 2 + t / 2)))  # back panel
    for i in range(shelves + 1):
        parts.append(Part(Box(w - 2 * t, t, d), (0.0, t / 2 + i * (h - t) / shelves, 0.0)))
    return parts


def bed(rng):
    w, length, base_h = U(rng, 1.0, 1.6), U(rng, 1.9, 2.2), U(rng, 0.25, 0.35)
    mattress_h, head_h = U(rng, 0.15, 0.25), U(rng, 0.5, 0.8)
    return [Part(Box(w, base_h, length), (0.0, base_h / 2 + 0.1, 0.0)),
            Part(Box(w * 0.97, mattress_h, length * 0.97),
                 (0.0, 0.1 + base_h + mattress_h / 2, 0.0)),
            Part(Box(w, head_h + base_h, 0.06), (0.0, (head_h + base_h) / 2, -length / 2))]


def car(rng):
    length, w, body_h = U(rng, 1.8, 2.3), U(rng, 0.8, 1.0), U(rng, 0.3, 0.45)
    cabin_l, cabin_h, wheel_r = length * U(rng, 0.4, 0.6), U(rng, 0.25, 0.4), U(rng, 0.15, 0.22)
    parts = [Part(Box(length, body_h, w), (0.0, wheel_r + body_h / 2, 0.0)),
             Part(Box(cabin_l, cabin_h, w * 0.9),
                  (U(rng, -0.2, 0.1), wheel_r + body_h + cabin_h / 2, 0.0))]
    for sx in (-1, 1):
        for sz in (-1, 1):
            wheel = Frustum(wheel_r, wheel_r, 0.12)
            parts.append(Part(wheel, (sx * length * 0.32, wheel_r, sz * (w / 2)),
                              rot=rotation("x", math.pi / 2)))
    return parts


@dataclass(frozen=True)
class ShapeClass:
    name: str
    describe: str
    build: Callable[[np.random.Generator], list[Part]]


# The catalogue; its order fixes each class's synset id, so subsets keep their ids and shapes.
CATALOGUE: tuple[ShapeClass, ...] = (
    ShapeClass("sphere", "sphere, ball, globe: a round solid whose surface points are all at the "
                         "same distance from its centre", sphere),
    ShapeClass("cube", "cube, box, block: a solid with six square faces and straight edges", cube),
    ShapeClass("cylinder", "cylinder, tube, drum: a solid with a round flat top and bottom and "
                           "a straight curved side", cylinder),
    ShapeClass("cone", "cone: a solid that narrows from a round flat base to a single pointed "
                       "tip", cone),
    ShapeClass("torus", "torus, ring, donut: a round ring shaped like a doughnut with a hole in "
                        "the middle", torus),
    ShapeClass("pyramid", "pyramid: a solid with a square base and four triangular sides that "
                          "meet at a point", pyramid),
    ShapeClass("table", "table: a piece of furniture with a flat horizontal top supported by "
                        "four legs", table),
    ShapeClass("chair", "chair, seat: a piece of furniture for one person with a seat, a back "
                        "rest and four legs", chair),
    ShapeClass("lamp", "lamp, table lamp: a light on a thin pole standing on a round base and "
                       "covered by a shade", lamp),
    ShapeClass("mug", "mug, cup: a round drinking vessel with an open top and a curved handle on "
                      "one side", mug),
    ShapeClass("airplane", "airplane, aeroplane, plane: an aircraft with a long body, two wings "
                           "and a tail", airplane),
    ShapeClass("bottle", "bottle: a round container with a wide body, a narrow neck and an open "
                         "mouth", bottle),
    ShapeClass("bench", "bench: a long narrow seat for several people, standing on legs", bench),
    ShapeClass("bookshelf", "bookshelf, bookcase: a tall open cabinet with several horizontal "
                            "shelves", bookshelf),
    ShapeClass("bed", "bed: a piece of furniture to sleep on, with a frame, a mattress and a "
                      "headboard", bed),
    ShapeClass("car", "car, auto, automobile: a motor vehicle with a boxy body, a cabin and four "
                      "wheels", car),
)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CATALOGUE)


def synset_of(class_name: str) -> str:
    """8-digit synset-like id with one leading zero (survives the int round trip of the table)."""
    return f"09{CLASS_NAMES.index(class_name):06d}"


def pose_matrix(rng: np.random.Generator) -> np.ndarray:
    """Random yaw, a tilt of up to ~8 degrees and an anisotropic scale in [0.85, 1.15]."""
    tilt = rotation("x", U(rng, -0.14, 0.14)) @ rotation("z", U(rng, -0.14, 0.14))
    scale = np.diag(rng.uniform(0.85, 1.15, size=3))
    return rotation("y", U(rng, 0.0, 2 * math.pi)) @ tilt @ scale


def make_shape(shape_class: ShapeClass, n: int, rng: np.random.Generator,
               noise: float = 0.004) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample one posed, unit-sphere-normalised instance.

    Returns (points (n, 3) float32, normals (n, 3) float32, closed (n,) bool); `noise` is the std
    of the Gaussian jitter added to the points after normalisation.
    """
    points, normals, closed = sample_parts(shape_class.build(rng), n, rng)
    pose = pose_matrix(rng)
    points = points @ pose.T
    normals = _unit(normals @ np.linalg.inv(pose))  # normals transform by the inverse transpose
    points -= points.mean(axis=0)
    points /= np.linalg.norm(points, axis=1).max()
    points += rng.normal(scale=noise, size=points.shape)
    return points.astype(np.float32), normals.astype(np.float32), closed
