"""Write the Wisconsin diagnostic breast cancer data (shipped inside scikit-learn) as a CSV.

    python examples/healthcare-diagnosis/make_data.py

The output, data/breast_cancer.csv.gz, is committed; this script shows how it was made.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from sklearn.datasets import load_breast_cancer


def main() -> None:
    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.copy()
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    # sklearn codes 0 = malignant, 1 = benign; name them so the positive class reads clearly.
    frame["diagnosis"] = frame.pop("target").map({0: "malignant", 1: "benign"})
    out = Path(__file__).parent / "data" / "breast_cancer.csv.gz"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(frame.to_csv(index=False, float_format="%.6g").encode("utf-8"))


if __name__ == "__main__":
    main()
