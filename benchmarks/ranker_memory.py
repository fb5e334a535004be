"""Peak memory and time of the dense item-by-item fits: the figures in ``metarec.models.memory``.

The episodic ridge and the stacked ranker solve dense systems over the whole
catalogue, so their memory grows with the square of the number of items. Each
row here is one fit in a fresh process on P2's training users (seed 0): the
peak resident memory over the fit less what was resident before it (data loaded,
items encoded; on Linux the peak is reset just before the fit, so encoding's own
peak, with a cold encoding cache, does not hide a smaller fit's; the committed
results were measured as the peak over the fit less the peak before it, with the
encodings cached), divided by the number of item pairs, which is what
:func:`metarec.models.memory.require_memory` multiplies by n². The stacked ranker
runs with 5 trees a bag and one bag: its item-pair part (signals, ridges) is
what grows with the catalogue; its training rows grow with the users.

    python benchmarks/ranker_memory.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from _cli import add_common, results_folder, run

from metarec.evaluation.machine import machine_info
from metarec.io import save_json, write_lines_atomic

RUNS = (
    ("ml-100k", "episodic"),
    ("ml-100k", "episodic-binary"),
    ("ml-100k", "stacked-1bag-5trees"),
    ("ml-1m", "episodic"),
    ("ml-1m", "episodic-binary"),
)

CHILD = """
import gc, json, resource, sys, time
from metarec.data import load_dataset
from metarec.evaluation.p2 import make_p2_split
from metarec.models.base import TrainingData
from metarec.models.episodic import EpisodicLinear
from metarec.models.stacked import StackedRanker
from metarec.pipeline import encode_catalogue

dataset, model, root = sys.argv[1], sys.argv[2], sys.argv[3] or None
ds = load_dataset(dataset, root=root)
catalogue = encode_catalogue(ds.items, "minilm", progress=False)
data = TrainingData.from_split(make_p2_split(ds, seed=0).frames, catalogue, ds, 0)
_ = data.ratings, data.validation_ratings
gc.collect()


def status(field):
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) * 1024 for l in fh if l.startswith(field + ":"))


try:  # Linux: reset the peak to what is resident now, so the fit's own peak is read
    # (encoding the catalogue just before, the model loaded, peaked higher than a
    # small fit, whose figure was then 0)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    before, peak_now = status("VmRSS"), lambda: status("VmHWM")
except OSError:  # elsewhere: the process's peak so far
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak_now = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t0 = time.perf_counter()
if model == "episodic":
    EpisodicLinear(seed=0).fit(data)
elif model == "episodic-binary":
    EpisodicLinear(seed=0, feature_sets=("binary",)).fit(data)
else:
    StackedRanker(seed=0, bags=1, max_iter=5).fit(data)
seconds = time.perf_counter() - t0
peak = peak_now()
print(json.dumps({"items": data.n_items, "fit_s": seconds, "bytes": peak - before}))
"""


def measure(dataset: str, model: str, root: str | None) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, dataset, model, root or ""],
        capture_output=True,
        text=True,
        check=True,
    )
    row: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    row["bytes_per_item_pair"] = row["bytes"] / row["items"] ** 2
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common(p)
    args = p.parse_args()
    out = results_folder(args.out)
    rows = []
    for dataset, model in RUNS:
        row = {"dataset": dataset, "model": model, **measure(dataset, model, args.data)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    machine = machine_info()
    # the split and every fit are seeded 0 (see CHILD)
    save_json(out / "ranker-memory.json", {"runs": rows, "seed": 0, "machine": machine})
    lines = [
        "# Peak memory of the dense item-by-item fits",
        "",
        f"Machine: {machine.get('cpu', '?')}; commit {machine.get('git_commit', '?')}. "
        "One fit per fresh process on P2's "
        "training users (seed 0); peak resident memory over the fit less the memory "
        "resident before it (Linux; elsewhere less the peak before it).",
        "Reproduce: `python benchmarks/ranker_memory.py --data ../shared/data`.",
        "",
        "| data | model | items | fit s | peak MB | bytes per item pair |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['model']} | {r['items']:,} | {r['fit_s']:.1f} | "
            f"{r['bytes'] / 1e6:,.0f} | {r['bytes_per_item_pair']:.0f} |"
        )
    write_lines_atomic(out / "ranker-memory.md", lines)


if __name__ == "__main__":
    run(main)
