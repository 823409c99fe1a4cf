"""How far outside the image a target lies: the great-circle distance, checked against
astropy's separations from densely sampled footprint edges."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord

from services.validator.footprint import Offset, offset_from

# A 0.2 deg x 0.2 deg field at RA 150, Dec -30 (corners counter-clockwise on the sky).
CORNERS = [(150.1155, -30.1), (149.8845, -30.1), (149.8845, -29.9), (150.1155, -29.9)]


def _edges(corners: list[tuple[float, float]], per_edge: int = 20000) -> SkyCoord:
    """Points along the great-circle edges (slerp between unit vectors)."""
    ra, dec = (list(c) for c in zip(*corners, strict=True))
    vecs = SkyCoord(ra, dec, unit="deg").cartesian.xyz.value.T
    pts = []
    for i in range(len(vecs)):
        a, b = vecs[i], vecs[(i + 1) % len(vecs)]
        t = np.linspace(0.0, 1.0, per_edge)[:, None]
        p = (1 - t) * a + t * b
        pts.append(p / np.linalg.norm(p, axis=1)[:, None])
    xyz = np.vstack(pts)
    return SkyCoord(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], representation_type="cartesian").spherical


@pytest.mark.parametrize(
    ("pa_deg", "sep_deg"), [(0, 1 / 60), (90, 1.0), (200, 10.0), (45, 50.0), (300, 75.0), (135, 120.0)]
)
def test_the_distance_is_the_great_circle_separation(pa_deg: float, sep_deg: float) -> None:
    center = SkyCoord(150 * u.deg, -30 * u.deg)
    pos = center.directional_offset_by(pa_deg * u.deg, sep_deg * u.deg)
    edges = _edges(CORNERS)
    edge_coords = SkyCoord(edges.lon, edges.lat)
    truth = pos.separation(edge_coords).min().to_value(u.arcsec)
    off = offset_from(CORNERS, (pos.ra.deg, pos.dec.deg))
    # Sampling the edges overestimates the minimum by at most half a sample step.
    assert off.arcsec == pytest.approx(truth, rel=1e-4, abs=0.05)


def test_fifty_degrees_away_reads_fifty_degrees_not_the_tangent_planes_sixty_eight() -> None:
    # The case from the report: tangent-plane distance 68 deg for a true separation of ~50 deg.
    pos = SkyCoord(150 * u.deg, -30 * u.deg).directional_offset_by(0 * u.deg, 50.1 * u.deg)
    off = offset_from(CORNERS, (pos.ra.deg, pos.dec.deg))
    assert off.arcsec / 3600 == pytest.approx(50.0, abs=0.01)
    assert off.direction == "north"


@pytest.mark.parametrize(
    ("arcsec", "text"),
    [(5.04, "5.0 arcsec"), (119.9, "119.9 arcsec"), (600.0, "10.0 arcmin"), (180000.0, "50.0 deg")],
)
def test_the_distance_reads_in_a_unit_people_use(arcsec: float, text: str) -> None:
    assert Offset(arcsec, "north").distance == text
