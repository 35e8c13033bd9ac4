"""``govml serve`` against ``mlflow models serve --env-manager local`` on the same registered model.

    .venv/bin/python benchmarks/serving.py [--model NAME@ALIAS] [--requests 2000] [--big-requests 100]

Without ``--model`` it registers an sklearn Pipeline (govml's ColumnTransformer +
LightGBM, 300 trees) trained on UCI Adult in a temporary MLflow store, with the
schema and drift reference govml stores beside its models. Both servers run as
separate processes on 127.0.0.1; one client process (httpx, one keep-alive
connection, requests sent one after another) loads each in turn with the same
bodies: a one-row and a 1,000-row ``dataframe_split``. It prints p50/p99 latency and
requests/s side by side and checks that both servers return the same predictions.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "credit-risk" / "data"
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def register_benchmark_model(home: Path) -> str:
    """Train and register ``adult-bench@candidate`` the way govml's pipeline stores a model."""
    import lightgbm as lgb
    import pandas as pd
    from mlflow import MlflowClient
    from sklearn.pipeline import Pipeline

    from govml.data.validation import build_schema
    from govml.features.drift import DriftReference
    from govml.features.preprocess import build_preprocessor, split_columns
    from govml.registry import log_sklearn_model, register_model

    train = pd.read_csv(DATA / "adult_train.csv.gz")
    y = (train.pop("income") == ">50K").astype(int)
    model = Pipeline(
        [
            ("preprocess", build_preprocessor(split_columns(train))),
            ("model", lgb.LGBMClassifier(n_estimators=300, num_leaves=31, verbose=-1)),
        ]
    ).fit(train, y)
    uri = f"sqlite:///{home / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("serving-benchmark", artifact_location=(home / "mlruns").as_uri())
    run_id = client.create_run(experiment).info.run_id
    example = train.head(5)
    source = log_sklearn_model(client, run_id, model, input_example=example, predict_fn_output=model.predict(example))
    client.log_text(run_id, build_schema(train).to_json(), "govml/schema.json")
    client.log_text(run_id, DriftReference.from_frame(train).to_json(), "govml/drift_reference.json")
    client.set_terminated(run_id)
    register_model(client, "adult-bench", source=source, run_id=run_id, tags={}, aliases=["candidate"])
    return "adult-bench@candidate"


def _wait(url: str, process: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {process.stdout.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def run_client(url: str, body_path: str, requests: int, seconds: float) -> dict[str, float]:
    """The load client (run in its own process): sequential requests on one keep-alive connection."""
    body = Path(body_path).read_bytes()
    headers = {"content-type": "application/json"}
    latencies: list[float] = []
    with httpx.Client(timeout=60) as client:
        for _ in range(min(50, requests)):
            client.post(url, content=body, headers=headers).raise_for_status()
        start = time.perf_counter()
        while len(latencies) < requests and time.perf_counter() - start < seconds:
            t = time.perf_counter()
            response = client.post(url, content=body, headers=headers)
            latencies.append(time.perf_counter() - t)
            if response.status_code != 200:
                raise RuntimeError(f"{url}: {response.status_code} {response.text[:300]}")
        elapsed = time.perf_counter() - start
    latencies.sort()
    n = len(latencies)
    return {
        "requests": n,
        "p50_ms": latencies[n // 2] * 1000,
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000,
        "rps": n / elapsed,
    }


def _load(url: str, body_path: Path, requests: int, seconds: float) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--client", url, str(body_path), str(requests), str(seconds)],
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"load client failed on {url}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="an existing NAME@ALIAS (uses MLFLOW_TRACKING_URI / GOVML_HOME)")
    parser.add_argument("--requests", type=int, default=2000, help="one-row requests per server")
    parser.add_argument("--big-requests", type=int, default=100, help="1,000-row requests per server")
    parser.add_argument("--seconds", type=float, default=120, help="time limit per measurement")
    args = parser.parse_args()

    import pandas as pd

    workdir = Path(tempfile.mkdtemp(prefix="govml-bench-"))
    env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "PATH": f"{BIN}:{os.environ['PATH']}"}
    if args.model:
        model = args.model
    else:
        env["GOVML_HOME"] = str(workdir)
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
        os.environ.update({k: env[k] for k in ("GOVML_HOME", "MLFLOW_TRACKING_URI")})
        print("registering the benchmark model ...", flush=True)
        model = register_benchmark_model(workdir)
    name, _, alias = model.partition("@")
    from mlflow import MlflowClient

    from govml.paths import default_tracking_uri

    client = MlflowClient(tracking_uri=default_tracking_uri(), registry_uri=default_tracking_uri())
    version = client.get_model_version_by_alias(name, alias).version
    test = pd.read_csv(DATA / "adult_test.csv.gz").drop(columns="income")
    bodies = {}
    for label, rows in (("1 row", 1), ("1,000 rows", 1000)):
        split = json.loads(test.head(rows).to_json(orient="split", index=False))
        path = workdir / f"body_{rows}.json"
        path.write_text(json.dumps({"dataframe_split": split}))
        bodies[label] = path

    govml_port, mlflow_port = _free_port(), _free_port()
    servers = {
        "govml serve": (
            [str(BIN / "govml"), "serve", model, "--port", str(govml_port)],
            f"http://127.0.0.1:{govml_port}",
            f"http://127.0.0.1:{govml_port}/v2/health/ready",
        ),
        "mlflow models serve": (
            [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{name}/{version}", "--env-manager", "local",
             "--host", "127.0.0.1", "-p", str(mlflow_port)],
            f"http://127.0.0.1:{mlflow_port}",
            f"http://127.0.0.1:{mlflow_port}/ping",
        ),
    }
    results: dict[tuple[str, str], dict[str, float]] = {}
    predictions: dict[str, list[object]] = {}
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    for server, (command, base, ready) in servers.items():
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            _wait(ready, process)
            predictions[server] = httpx.post(
                f"{base}/invocations", content=bodies["1,000 rows"].read_bytes(),
                headers={"content-type": "application/json"}, timeout=60,
            ).json()["predictions"]
            for label, path in bodies.items():
                count = args.requests if label == "1 row" else args.big_requests
                results[(server, label)] = _load(f"{base}/invocations", path, count, args.seconds)
                print(f"  {server:<22}{label:<12}{results[(server, label)]}", flush=True)
        finally:
            process.terminate()
            process.wait(timeout=60)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    same = predictions["govml serve"] == predictions["mlflow models serve"]
    print(f"\nidentical predictions on 1,000 rows: {same}")
    print(f"\n{'body':<12}{'server':<22}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}")
    for label in bodies:
        for server in servers:
            r = results[(server, label)]
            print(f"{label:<12}{server:<22}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['rps']:>10.1f}")
        ratio = results[("govml serve", label)]["rps"] / results[("mlflow models serve", label)]["rps"]
        print(f"{'':<12}{'govml / mlflow req/s':<22}{ratio:>30.1f}x")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        print(json.dumps(run_client(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))))
    else:
        main()
