"""``govml score NAME@ALIAS INPUT OUTPUT``: batch scoring of Parquet or CSV files of any size."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from govml.compute.batch_io import DEFAULT_CHUNK_ROWS, Engine


def score(
    model: Annotated[str, typer.Argument(help="NAME@ALIAS, NAME/VERSION or models:/... in the registry.")],
    input: Annotated[Path, typer.Argument(help="Parquet (.parquet) or CSV (.csv, .csv.gz) rows to score.")],
    output: Annotated[Path, typer.Argument(help="Result .parquet or .csv (a folder of parts with --engine ray).")],
    engine: Annotated[Engine, typer.Option(help="local: stream in this process; ray: Ray Data.")] = "local",
    chunk_rows: Annotated[int, typer.Option(min=1, help="Rows per chunk held in memory.")] = DEFAULT_CHUNK_ROWS,
    keep: Annotated[list[str] | None, typer.Option(help="Input column to copy to the output (repeatable).")] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address (ray://host:10001, auto).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="Default: MLFLOW_TRACKING_URI, else GOVML_HOME.")] = None,
) -> None:
    """Score a file with a registered model, one chunk at a time, never the whole file in memory."""
    from govml.compute.scoring import score_file
    from govml.paths import default_tracking_uri

    result = score_file(
        model, input, output, tracking_uri=tracking_uri or default_tracking_uri(), engine=engine,
        chunk_rows=chunk_rows, keep=keep or [], address=address,
    )
    typer.echo(
        f"scored {result.rows:,} rows with {result.model_uri} ({result.engine}) into {result.output} "
        f"in {result.seconds:.1f}s ({result.rows_per_second:,.0f} rows/s)"
    )


def register(app: typer.Typer) -> None:
    """Add ``govml score`` to the main command."""
    app.command("score")(score)
