"""Feature engineering (``preprocess``) and drift statistics (``drift``)."""
