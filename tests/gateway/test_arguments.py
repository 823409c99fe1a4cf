"""How the gateway reads selections and OB contexts (p2api's vocabulary)."""

from __future__ import annotations

import pytest

from bgimages.catalog.v1 import catalog_pb2
from services.gateway.arguments import format_selection, ob_context, parse_selection
from services.shared.errors import ServiceError

H = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("default", catalog_pb2.SELECTION_KIND_DEFAULT, ""),
        ("gaia", catalog_pb2.SELECTION_KIND_GAIA, ""),
        ("survey|DSS2 colour", catalog_pb2.SELECTION_KIND_SURVEY, "DSS2 colour"),
        (
            "eso_im|ADP.2019-01-01T00:00:00.000",
            catalog_pb2.SELECTION_KIND_ESO_IMAGE,
            "ADP.2019-01-01T00:00:00.000",
        ),
        (f"user_bkg_image|{H}", catalog_pb2.SELECTION_KIND_USER_IMAGE, H),
    ],
)
def test_selections_round_trip(text: str, kind: int, value: str) -> None:
    assert parse_selection(text) == (kind, value)
    assert format_selection(catalog_pb2.Selection(kind=kind, value=value)) == text  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "dss",
        "default|x",
        "gaia|",
        "survey|",
        "user_bkg_image|",
        f"user_bkg_image|{H.upper()}",
        "user_bkg_image|../../etc",
        "eso_im|<script>",
        "survey|" + "x" * 300,
    ],
)
def test_malformed_selections_are_refused(text: str) -> None:
    with pytest.raises(ServiceError) as err:
        parse_selection(text)
    assert err.value.code == "INVALID_ARGUMENT"


def test_ob_context() -> None:
    ob = ob_context("42", "p2:60.A-9252(A)", "150.5", "-2.25", "150.6", "-2.2")
    assert (ob.ob_id, ob.run_id, ob.target.ra_deg, ob.target.dec_deg) == (42, "p2:60.A-9252(A)", 150.5, -2.25)
    assert ob.HasField("boa_star") and ob.boa_star.ra_deg == 150.6
    assert not ob_context(1, "r", 0, 0).HasField("boa_star")


@pytest.mark.parametrize(
    "args",
    [
        ("x", "r", 1, 1),
        ("0", "r", 1, 1),
        ("1", "", 1, 1),
        ("1", "r", 360, 1),
        ("1", "r", -0.1, 1),
        ("1", "r", 1, 90.5),
        ("1", "r", "nan", 1),
        ("1", "r", "\u0661\u0665\u0660", 1),  # Arabic-Indic 150: float() reads it, we do not
        ("1", "r", "1_50", 1),
        ("1", "r", True, 1),
        ("\u0661", "r", 1, 1),
        ("1", "r", None, 1),
        ("1", "r", 1, 1, 2, None),
    ],
)
def test_bad_contexts_are_refused(args: tuple[object, ...]) -> None:
    with pytest.raises(ServiceError) as err:
        ob_context(*args)  # type: ignore[arg-type]
    assert err.value.code == "INVALID_ARGUMENT"
