"""``govml serve`` against ``mlflow models serve --env-manager local`` on the same registered model.

    .venv/bin/python benchmarks/serving.py [--model NAME@ALIAS] [--requests 2000] [--big-requests 100]

Without ``--model`` it registers an sklearn Pipeline (govml's ColumnTransformer +
LightGBM, 300 trees) trained on UCI Adult in a temporary MLflow store, with the
schema and drift reference govml stores beside its models. Both servers run at once as
separate processes on 127.0.0.1 and are measured in alternating rounds (so load from
other work on the machine falls on both alike); one client process (the standard library's http.client, one
keep-alive connection, requests sent one after another) loads each in turn with the same
bodies: a one-row and a 1,000-row ``dataframe_split``. It prints p50/p99 latency and
requests/s side by side and checks that both servers return the same predictions.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

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


def _wait(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def run_client(url: str, body_path: str, requests: int, seconds: float) -> dict[str, float]:
    """The load client (run in its own process): sequential requests on one keep-alive connection.

    The standard library's ``http.client`` rather than httpx: like wrk it spends little CPU per
    request, so the figures measure the servers more than the client.
    """
    body = Path(body_path).read_bytes()
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

    def post() -> None:
        connection.request("POST", parts.path, body=body, headers=headers)
        response = connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"{url}: {response.status} {payload[:300]!r}")

    latencies: list[float] = []
    for _ in range(min(50, requests)):
        post()
    start = time.perf_counter()
    while len(latencies) < requests and time.perf_counter() - start < seconds:
        t = time.perf_counter()
        post()
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - start
    connection.close()
    return {"latencies": latencies, "elapsed": elapsed}


def summarise(rounds: list[dict]) -> dict[str, float]:
    """p50/p99 over every request of every round; requests/s = requests / time spent sending them."""
    latencies = sorted(t for r in rounds for t in r["latencies"])
    n = len(latencies)
    return {
        "requests": n,
        "p50_ms": latencies[n // 2] * 1000,
        "p99_ms": latencies[min(n - 1, int(n * 0.99))] * 1000,
        "rps": n / sum(r["elapsed"] for r in rounds),
    }


def _load(url: str, body_path: Path, requests: int, seconds: float) -> dict:
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
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds per server and body")
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
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for server, (command, base, ready) in servers.items():
            # A file, not a pipe nobody reads: MLflow's access log would fill the pipe and stall the server.
            log = workdir / f"{server.split()[0]}.log"
            with log.open("wb") as sink:
                processes.append(subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT))
            _wait(ready, processes[-1], log)
            predictions[server] = httpx.post(
                f"{base}/invocations", content=bodies["1,000 rows"].read_bytes(),
                headers={"content-type": "application/json"}, timeout=60,
            ).json()["predictions"]
        # Both servers up, measured in alternating short rounds: other work on the machine
        # then falls on both alike.
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
        rounds: dict[tuple[str, str], list[dict]] = {}
        for number in range(args.rounds):
            for label, path in bodies.items():
                count = (args.requests if label == "1 row" else args.big_requests) // args.rounds
                for server, (_, base, _) in servers.items():
                    outcome = _load(f"{base}/invocations", path, max(count, 1), args.seconds / args.rounds)
                    rounds.setdefault((server, label), []).append(outcome)
                    partial = summarise([outcome])
                    print(f"  round {number + 1} {server:<22}{label:<12}p50 {partial['p50_ms']:7.2f} ms  "
                          f"{partial['rps']:7.1f} req/s  load {os.getloadavg()[0]:.1f}", flush=True)
        results = {key: summarise(value) for key, value in rounds.items()}
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=60)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    same = predictions["govml serve"] == predictions["mlflow models serve"]
    print(f"\nidentical predictions on 1,000 rows: {same}")
    print(f"\n{'body':<12}{'server':<22}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}{'requests':>10}")
    for label in bodies:
        for server in servers:
            r = results[(server, label)]
            print(f"{label:<12}{server:<22}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['rps']:>10.1f}"
                  f"{r['requests']:>10}")
        ratio = results[("govml serve", label)]["rps"] / results[("mlflow models serve", label)]["rps"]
        print(f"{'':<12}{'govml / mlflow req/s':<22}{ratio:>30.1f}x")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        print(json.dumps(run_client(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))))
    else:
        main()
