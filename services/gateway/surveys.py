"""The named surveys (`survey|NAME`): HiPS surveys with the names p2api users know
(SkyView-style: `2MASS-K`, `DSS2-red`, ...), read from the SURVEYS setting, and the lookup
that refuses a name no survey has, listing those it knows.

SURVEYS is a comma-separated list of `NAME=LOCATION[;fits][;band=BAND]`: LOCATION is the
HiPS's http(s) URL, or a local folder (an absolute path, tests and `make run` without
internet) that the gateway serves at /surveys/NAME/; `fits` says the HiPS has FITS tiles
(finding charts need pixel values, not only PNG/JPEG); `band` is its filter or wavelength.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from services.shared.errors import Code, ServiceError

# Names go into URL paths (/surveys/NAME/) and the page: a short word, never markup.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,39}$")
_BAND = re.compile(r"^[A-Za-z0-9_.+ -]{1,40}$")
RESERVED = "default"  # /surveys/default/ is the default survey's folder (DEFAULT_SURVEY_DIR)
LOCAL_PREFIX = "/surveys"


@dataclasses.dataclass(frozen=True)
class Survey:
    """One named survey: where its HiPS is and what it holds."""

    name: str
    location: str  # the configured http(s) URL or local folder
    fits_tiles: bool = False
    band: str = ""

    @property
    def folder(self) -> Path | None:
        """The local folder the gateway serves it from (None for a remote HiPS)."""
        return None if "://" in self.location else Path(self.location)

    @property
    def hips_url(self) -> str:
        """The HiPS base URL Aladin Lite opens (a path on the gateway for a local folder)."""
        if self.folder is not None:
            return f"{LOCAL_PREFIX}/{self.name}"
        return self.location.rstrip("/")

    @property
    def selection(self) -> str:
        return f"survey|{self.name}"


def parse(text: str) -> tuple[Survey, ...]:
    """The surveys of a SURVEYS value; ValueError names what is wrong."""
    surveys: list[Survey] = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        head, *options = (part.strip() for part in entry.split(";"))
        name, sep, location = (part.strip() for part in head.partition("="))
        if not sep or not _NAME.match(name):
            raise ValueError(f"{entry[:60]!r}: expected NAME=URL, NAME a word such as 2MASS-K")
        if name.lower() == RESERVED or any(s.name.lower() == name.lower() for s in surveys):
            raise ValueError(f"survey name {name!r} is reserved or given twice")
        fits_tiles, band = _options(name, options)
        surveys.append(Survey(name, _location(name, location), fits_tiles, band))
    return tuple(surveys)


def _location(name: str, location: str) -> str:
    if "://" in location:
        parts = urlsplit(location)
        if parts.scheme not in ("http", "https") or not parts.hostname or " " in location:
            raise ValueError(f"survey {name}: {location[:80]!r} is not an http(s) URL")
        return location
    if not Path(location).is_absolute():
        raise ValueError(f"survey {name}: expected an http(s) URL or an absolute folder")
    return location


def _options(name: str, options: list[str]) -> tuple[bool, str]:
    """(fits_tiles, band) from the options after the location."""
    fits_tiles, band = False, ""
    for option in options:
        key, sep, value = option.partition("=")
        if option == "fits":
            fits_tiles = True
        elif key == "band" and sep and _BAND.match(value):
            band = value
        else:
            raise ValueError(f"survey {name}: unknown option {option[:40]!r} (fits, band=BAND)")
    return fits_tiles, band


class Surveys:
    """The configured named surveys, looked up by name (case does not matter)."""

    def __init__(self, surveys: Iterable[Survey]) -> None:
        self.all = tuple(surveys)
        self._by_name = {s.name.lower(): s for s in self.all}

    @classmethod
    def from_setting(cls, text: str) -> Surveys:
        return cls(parse(text))

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.all]

    def get(self, name: str) -> Survey | None:
        return self._by_name.get(name.lower())

    def lookup(self, name: str) -> Survey:
        """The survey of that name; INVALID_ARGUMENT naming the known ones if there is none."""
        survey = self.get(name)
        if survey is None:
            known = ", ".join(self.names) or "none are configured"
            raise ServiceError(
                Code.INVALID_ARGUMENT,
                f"unknown survey {name[:60]!r}: known surveys are {known}",
                known_surveys=self.names,
            )
        return survey

    def folder(self, name: str) -> Path | None:
        """The local folder of a survey served by the gateway (None: no such local survey)."""
        survey = self.get(name)
        return survey.folder if survey is not None and survey.name == name else None

    def origins(self) -> list[str]:
        """scheme://host of each remote survey (the page's Content-Security-Policy allows them)."""
        out: list[str] = []
        for survey in self.all:
            if survey.folder is None:
                parts = urlsplit(survey.location)
                origin = f"{parts.scheme}://{parts.netloc}"
                if origin not in out:
                    out.append(origin)
        return out
