"""``govml llm``: serve the gateway, train and evaluate its prompt guard."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="llm",
    help="The LLM gateway: an OpenAI-compatible endpoint that checks, caches, monitors, filters.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()


@app.command()
def serve(
    config: Annotated[Path, typer.Argument(help="The gateway YAML file.")],
    host: Annotated[
        str, typer.Option(help="Interface to bind; loopback unless told otherwise.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8300,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the gateway described by CONFIG (OpenAI-compatible, under /v1)."""
    import uvicorn

    from govml.llm.app import create_app
    from govml.llm.config import load_gateway_config
    from govml.llm.gateway import Gateway

    gateway_config = load_gateway_config(config)
    with console.status("loading the guard, the cache and the models"):
        gateway = Gateway.from_config(gateway_config)
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]listening on {host}: reachable from other machines")
    models = ", ".join(r.name for r in gateway_config.models)
    from govml.governance.audit import AuditLog, default_audit_path, sha256_hex
    from govml.governance.run_audit import audit_server_start

    audit_server_start(
        AuditLog(default_audit_path()), "llm", host=host, port=port,
        details={"models": [r.name for r in gateway_config.models], "config": str(config)},
        inputs={"gateway_yaml": sha256_hex(Path(config))},
    )
    console.print(f"govml gateway on http://{host}:{port}/v1 serving {models}")
    uvicorn.run(create_app(gateway), host=host, port=port, log_level=log_level)


@app.command("train-guard")
def train_guard_command(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Folder with the labelled LLM data sets.")
    ] = Path("../shared/data/llm"),
    out: Annotated[
        Path | None, typer.Option(help="Where to write the head (default: the packaged one).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed (the result is reproducible).")] = 0,
) -> None:
    """Rebuild the prompt guard's classifier head and the n-gram toxicity model
    (written beside the head as toxicity_head.npz) from the labelled data."""
    from govml.llm.safety import train_guard
    from govml.llm.safety.classifier import DEFAULT_HEAD

    target = out or DEFAULT_HEAD
    report = train_guard(data_dir, target, seed=seed)
    console.print(
        f"wrote {report.head_path} (sha256 {report.npz_sha256[:16]}) and {report.toxicity_path}"
        f" (sha256 {report.toxicity_npz_sha256[:16]}) in {report.seconds:.0f} s"
    )
    console.print_json(report.model_dump_json(include={"rows", "thresholds", "toxicity_threshold", "held_out"}))


@app.command("eval-guard")
def eval_guard_command(
    file: Annotated[Path, typer.Argument(help="Labelled CSV or JSONL (text and label columns).")],
    threshold: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Flag below this score.")
    ] = 0.5,
    head: Annotated[
        Path | None, typer.Option(help="A guard head .npz (default: the shipped one).")
    ] = None,
) -> None:
    """Print precision, recall, F1 and false-positive rate of the prompt guard on FILE."""
    from govml.llm.safety import evaluate_guard

    result = evaluate_guard(file, threshold=threshold, head=head)
    table = Table("metric", "value", title=f"prompt guard on {file} (threshold {threshold})")
    for name, value in result.metrics.model_dump().items():
        shown = (
            "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
        )
        table.add_row(name, shown)
    for category, count in result.flagged_by_category.items():
        table.add_row(f"flagged as {category}", str(count))
    console.print(table)
