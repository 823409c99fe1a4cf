"""Client of the user background images gateway: `BackgroundImages`, its typed
results, and `BgImagesError` carrying the gateway's stable error code."""

from bgimages_client._api import BackgroundImages
from bgimages_client._errors import BgImagesError
from bgimages_client._models import (
    ArchiveEntry,
    DefaultSurvey,
    FindingChart,
    Footprint,
    GaiaEntry,
    HeaderCheck,
    HipsLink,
    Image,
    Listing,
    NamedSurvey,
    Run,
    Selection,
    Tombstone,
)

__all__ = [
    "ArchiveEntry",
    "BackgroundImages",
    "BgImagesError",
    "DefaultSurvey",
    "FindingChart",
    "Footprint",
    "GaiaEntry",
    "HeaderCheck",
    "HipsLink",
    "Image",
    "Listing",
    "NamedSurvey",
    "Run",
    "Selection",
    "Tombstone",
]
