"""Model serving and live monitoring (``govml serve``, ``govml monitor``).

``create_app`` builds the FastAPI app for a model loaded with ``load_model``; the
command-line entry points live in :mod:`govml.serving.cli`.
"""
