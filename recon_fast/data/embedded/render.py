"""A small numpy point-splat renderer: shaded view of a surface sample on a white background.

Orthographic camera looking at the unit sphere from a fixed elevation/azimuth (like the single
ShapeNet render per shape), square splats resolved with a z-buffer, two-sided Lambert shading
plus ambient and a mild depth cue. Deterministic: the same points give the same pixels.
"""

from __future__ import annotations

import math

import numpy as np

BACKGROUND = 255
LIGHT = np.array([-0.45, 0.65, 0.62])  # camera space: from the upper left, towards the viewer


def camera_rotation(elevation_deg: float, azimuth_deg: float) -> np.ndarray:
    """World -> camera rotation (camera x right, y up, z towards the viewer)."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    yaw = np.array([[math.cos(az), 0, -math.sin(az)], [0, 1, 0], [math.sin(az), 0, math.cos(az)]])
    pitch = np.array([[1, 0, 0], [0, math.cos(el), -math.sin(el)], [0, math.sin(el), math.cos(el)]])
    return pitch @ yaw


def render_points(points: np.ndarray, normals: np.ndarray, colour: np.ndarray, size: int = 224,
                  closed: np.ndarray | None = None, elevation: float = 25.0,
                  azimuth: float = 35.0, splat: int = 1) -> np.ndarray:
    """Render (N, 3) points (inside the unit sphere) with unit normals as uint8 (size, size, 3) RGB.

    Args:
        colour: base RGB in [0, 1].
        closed: optional (N,) bool; points of closed surfaces that face away from the camera are
            culled (they could only show through gaps between splats as speckle).
        splat: half width in pixels of the square drawn per point.
    """
    rot = camera_rotation(elevation, azimuth)
    cam = points @ rot.T                                   # (N, 3)
    cam_normals = normals @ rot.T
    if closed is not None:
        visible = ~(closed & (cam_normals[:, 2] < 0))
        cam, cam_normals = cam[visible], cam_normals[visible]
    light = LIGHT / np.linalg.norm(LIGHT)
    lambert = np.abs(cam_normals @ light)                  # two-sided: open surfaces show inside
    depth_cue = 0.8 + 0.2 * (cam[:, 2] + 1) / 2            # nearer points slightly brighter
    shade = (0.3 + 0.7 * lambert) * depth_cue
    rgb = np.clip(shade[:, None] * colour[None, :], 0, 1) * 255

    scale = 0.46 * size                                    # the unit sphere fills ~92% of the view
    px = np.round(size / 2 + scale * cam[:, 0]).astype(np.int64)
    py = np.round(size / 2 - scale * cam[:, 1]).astype(np.int64)
    offsets = np.arange(-splat, splat + 1)
    dx, dy = np.meshgrid(offsets, offsets)
    sx = (px[:, None] + dx.reshape(1, -1)).reshape(-1)     # (N * splat_area,)
    sy = (py[:, None] + dy.reshape(1, -1)).reshape(-1)
    reps = dx.size
    depth = np.repeat(-cam[:, 2], reps)                    # larger = farther from the viewer
    colours = np.repeat(rgb, reps, axis=0)
    inside = (sx >= 0) & (sx < size) & (sy >= 0) & (sy < size)
    pixel = (sy * size + sx)[inside]
    depth, colours = depth[inside], colours[inside]

    # z-buffer: the nearest candidate of each pixel wins.
    zbuffer = np.full(size * size, np.inf)
    np.minimum.at(zbuffer, pixel, depth)
    winner = depth == zbuffer[pixel]
    image = np.full((size * size, 3), BACKGROUND, dtype=np.uint8)
    image[pixel[winner]] = np.round(colours[winner]).astype(np.uint8)
    return fill_pinholes(image.reshape(size, size, 3))


def fill_pinholes(image: np.ndarray) -> np.ndarray:
    """Give background pixels enclosed by >= 3 of their 4 neighbours those neighbours' mean colour.

    Closes the single-pixel gaps a random surface sample leaves between splats.
    """
    covered = (image != BACKGROUND).any(axis=2)
    padded = np.pad(covered, 1)
    colours = np.pad(image.astype(np.float32), ((1, 1), (1, 1), (0, 0)))
    neighbours = [(slice(0, -2), slice(1, -1)), (slice(2, None), slice(1, -1)),
                  (slice(1, -1), slice(0, -2)), (slice(1, -1), slice(2, None))]
    count = sum(padded[n].astype(np.int32) for n in neighbours)
    total = sum(colours[n] * padded[n][..., None] for n in neighbours)
    hole = ~covered & (count >= 3)
    out = image.copy()
    out[hole] = np.round(total[hole] / count[hole][:, None]).astype(np.uint8)
    return out


def render_view(points: np.ndarray, normals: np.ndarray, colour: np.ndarray, size: int = 224,
                closed: np.ndarray | None = None) -> np.ndarray:
    """The stored render: drawn at half resolution (so 8192 points cover the surface without
    gaps) and upsampled bicubically to (size, size, 3) uint8 RGB."""
    from PIL import Image

    small = render_points(points, normals, colour, size=max(size // 2, 8), closed=closed)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.BICUBIC))
