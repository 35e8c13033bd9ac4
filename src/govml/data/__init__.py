"""Loading and validating tabular data."""

from govml.data.loading import file_sha256, load_table
from govml.data.validation import ValidationOutcome, build_schema, validate_frame

__all__ = ["ValidationOutcome", "build_schema", "file_sha256", "load_table", "validate_frame"]
