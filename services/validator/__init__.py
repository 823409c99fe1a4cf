"""The validator: checks an uploaded FITS file against an OB (headers by offset, WCS, field, filter)."""

from services.shared.fits_header import Limits
from services.validator.fits_checks import Target, validate_file, validate_object, validate_path
from services.validator.report import HduResult, Problem, Report

__all__ = [
    "HduResult",
    "Limits",
    "Problem",
    "Report",
    "Target",
    "validate_file",
    "validate_object",
    "validate_path",
]
