"""Speed and cost, metarec beside MeLU-as-published in the same process.

What is measured (benchmarks/README.md, "Speed"):

* adaptation latency for one user — p50/p99 over repeated calls, support 10
  and 50 ratings, 0, 1 and 5 inner steps (metarec: the closed-form start and
  gradient steps on its default path — the hand-batched ``context`` gradient —
  and, beside it, the generic ``torch.func`` ``vmap``/``grad`` path it replaces;
  MeLU: its local update of the head);
* batched adaptation of 1,000 users (users/s), support 10, 5 steps;
* meta-training throughput (tasks/s), the median of a few epochs over the
  ml-100k training users, first-order and second-order, at the default meta-batch
  (64) and at 256, and first-order on the generic path for comparison;
* sentence-encoder throughput (items/s), full precision and dynamically
  quantised int8 Linear layers (MeLU encodes nothing: it looks features up);
* ``metarec quickstart`` end to end: wall time and peak resident memory
  (a child process, cached encodings), beside the same job with MeLU-as-published
  as the model (:func:`melu_quickstart`: load, P1 split, fit MeLU-5, evaluate).

Timings use ``time.perf_counter`` after warm-up calls. Each row records the torch
threads it ran on (``threads``), which are not all alike: one user's adaptation and
first-order training run on torch's default (the machine's cores) for both models;
second-order MAML trains on one thread, as ``metarec train`` runs it (see
``Trainer.reproducible_threads``), beside MeLU on the default; MeLU's quickstart job
runs MeLU on its own default of one thread. Records before 2026-12-05 carry only the
machine's default. MeLU's adaptation is timed from a support batch collated beforehand,
metarec's from raw tasks (it collates inside): a bias in MeLU's favour, kept so that
records stay comparable. Records from 2026-12-06 carry the config they timed.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metarec.config import Algorithm, TrainConfig
from metarec.data.tasks import Task, collate
from metarec.errors import DataError, MetarecError, ModelError
from metarec.evaluation.report import describe_machine, md_text
from metarec.io import save_json, write_bytes_atomic
from metarec.values import is_finite_number, is_number


def _sync() -> None:
    # CUDA kernels run asynchronously: without waiting for them a timer measures
    # only how long they took to launch
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _latency(fn: Callable[[], object], repeats: int, warmup: int = 10) -> dict[str, float]:
    """p50, p99 and mean of ``repeats`` timed calls after ``warmup`` untimed ones, with
    the torch threads they ran on. A p99 rests on its top 1 %: from fewer than 100
    calls it is only the slowest, and is not given."""
    for _ in range(warmup):
        fn()
    _sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append((time.perf_counter() - t0) * 1000)
    arr = np.asarray(times)
    out: dict[str, float] = {"p50_ms": float(np.percentile(arr, 50))}
    if repeats >= 100:
        out["p99_ms"] = float(np.percentile(arr, 99))
    return {**out, "mean_ms": float(arr.mean()), "n": repeats, "threads": torch.get_num_threads()}


def _child_wall_and_peak(args: list[str]) -> dict[str, Any]:
    """Wall time and peak resident memory of ``python ARGS`` in a child process."""
    # a small wrapper process runs the job and reports its children's peak RSS:
    # measured from here, the fork would count this process's own memory
    wrapper = (
        "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(rc)"
    )
    cmd = [sys.executable, "-c", wrapper, sys.executable, *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        # a job that failed in 4 s is not a 4 s quickstart: no figure rather than a wrong one
        tail = " ".join(proc.stderr.strip().splitlines()[-3:])[-400:]
        raise ModelError(f"speed benchmark: `python {' '.join(args)}` failed: {tail}")
    lines = proc.stdout.strip().splitlines()
    if not lines or not lines[-1].isdigit():
        # a peak of 0 MB is not a measurement either
        ended = repr(lines[-1][-200:]) if lines else "nothing"
        raise ModelError(
            f"speed benchmark: `python {' '.join(args)}` did not report its peak memory "
            f"(its output ended with {ended})"
        )
    # ru_maxrss is KiB on Linux: the figure is MiB, under the key records have always had
    return {"wall_s": wall, "peak_rss_mb": int(lines[-1]) / 1024, "ok": True}


def melu_quickstart(
    root: str | None = None, seed: int = 0, **melu_options: Any
) -> dict[str, float]:
    """``metarec quickstart``'s job with MeLU-as-published (MeLU-5) as the model: load
    and clean ml-100k, the catalogue from the encoding cache (MeLU reads no text; the
    cache hit costs little), the same P1 split, fit, then P1 on new users and new items.
    The speed benchmark times it in a child process; returns the MAE per state.
    ``melu_options``: MeLU's constructor options (tests shorten its training)."""
    from metarec.data import load_dataset
    from metarec.evaluation.p1 import evaluate_p1, make_p1_split
    from metarec.models.base import TrainingData
    from metarec.peers import make_peer
    from metarec.pipeline import encode_catalogue

    ds = load_dataset("ml-100k", root=root)
    catalogue = encode_catalogue(ds.items, TrainConfig().encoder, progress=False)
    split = make_p1_split(ds, seed=seed)
    data = TrainingData.from_split(split.frames, catalogue, ds, seed)
    melu = make_peer("melu-5", seed=seed, **melu_options).fit(data)
    result = evaluate_p1({"melu-5": melu}, split, catalogue.index, ds.users)
    maes = {state: float(v["melu-5"]["mae"]) for state, v in result["summary"].items()}
    print(", ".join(f"{state} MAE {mae:.4f}" for state, mae in maes.items()))
    return maes


@contextmanager
def quantization_notices_off() -> Iterator[None]:
    """Silence torch's deprecation notices for its eager-mode quantisation (superseded
    by torchao, not a dependency here). They name no action for a user of metarec,
    and would print in the middle of a benchmark: once when a model is quantised,
    once when a quantised layer first runs."""
    with warnings.catch_warnings():
        # both notices: "torch.ao.quantization is deprecated ...", "torch.quantize_per_tensor,
        # ... are deprecated ..."
        warnings.filterwarnings("ignore", message=r".*quantiz.*deprecated")
        yield


def int8_variant(model: torch.nn.Module) -> Any | None:
    """``model`` with its Linear layers dynamically quantised to int8, or None where
    this torch no longer has eager-mode dynamic quantisation (call and run the result
    under :func:`quantization_notices_off`)."""
    quantize = getattr(getattr(torch.ao, "quantization", None), "quantize_dynamic", None)
    if quantize is None:
        return None
    return quantize(model, {torch.nn.Linear}, dtype=torch.qint8)


def _tasks(ratings: Any, support: int, n: int, seed: int) -> list[Task]:
    rng = np.random.default_rng(seed)
    rows = [r for r in range(len(ratings)) if ratings.offsets[r + 1] - ratings.offsets[r] > support]
    out = []
    for r in rng.choice(rows, size=n, replace=len(rows) < n):
        items, values, _ = ratings.history(int(r))
        perm = rng.permutation(len(items))
        s, q = perm[:support], perm[support : support + 10]
        out.append(Task(int(r), items[s], values[s], items[q], values[q]))
    return out


def _training_breakdown(
    catalogue: Any, train_rows: Any, users: Any, source: Any, seed: int, epochs: int = 3
) -> dict[str, float]:
    """Where a first-order epoch's time goes (default episodes, 64 tasks a batch): CPU
    seconds per part, summed over ``epochs`` epochs, from timers around the learner's
    and the trainer's own calls (nothing is re-implemented here)."""
    from metarec.meta.trainer import Trainer
    from metarec.pipeline import fit_recommender

    tcfg = TrainConfig(seed=seed, epochs=1)
    rec_t, _ = fit_recommender(catalogue, train_rows.iloc[:2000], tcfg, users=users, progress=False)
    learner = rec_t.learner
    trainer = Trainer(learner, tcfg, progress=False)
    spent: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            _sync()  # on a GPU, the time of the kernels this part launched is its own
            t0 = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                _sync()
                spent[name] = spent.get(name, 0.0) + time.process_time() - t0

        return wrapper

    # instance attributes shadow the methods for this learner and trainer only
    for owner, method, part in (
        (learner.scorer, "item_reps_many", "item tower"),
        (learner, "adapt", "inner loop (closed form + steps)"),
        (learner.scorer, "masked_scores", "query scoring"),
        (learner, "outer_loss", "outer loss (forward)"),
        (trainer, "batches", "episodes: collate"),
        (trainer.optimizer, "step", "optimiser step"),
    ):
        setattr(owner, method, timed(part, getattr(owner, method)))
    t0 = time.process_time()
    for epoch in range(epochs):
        trainer.train_epoch(source, epoch)
    total = time.process_time() - t0
    forward = spent.pop("outer loss (forward)")
    parts = {k: v for k, v in spent.items() if k not in ("episodes: collate", "optimiser step")}
    out = {
        **spent,
        "outer loss: the rest": forward - sum(parts.values()),
        "backward, sampling and the rest": total - forward - spent["episodes: collate"]
        - spent["optimiser step"],
    }  # fmt: skip
    out = {k: v / total for k, v in out.items()}
    out["total_cpu_s_per_epoch"] = total / epochs
    out["tasks"] = float(len(source.ratings))
    return out


def run_speed_benchmark(
    *,
    dataset: str = "ml-100k",
    root: str | None = None,
    out: str | Path = "benchmarks/results",
    seed: int = 0,
    repeats: int = 200,
    quickstart: bool = True,
    progress: bool = True,
    encoder: str = "minilm",
    max_train_users: int | None = None,
    train_epochs: int = 3,
) -> dict[str, Any]:
    """Measure and write ``speed.json``/``speed.md`` (named by :func:`speed_stem`);
    ``max_train_users`` shrinks the
    training set (tests), which changes the training figures, not the per-user ones."""
    from metarec.data import load_dataset
    from metarec.evaluation.machine import machine_info
    from metarec.meta.trainer import TaskSource, Trainer
    from metarec.models.base import TrainingData
    from metarec.peers.melu import MeLU
    from metarec.pipeline import encode_catalogue, fit_recommender, split_users

    def log(msg: str) -> None:
        if progress:
            print(f"[speed] {msg}", flush=True)

    load_before = list(os.getloadavg())  # a busy machine shows in every figure
    torch.manual_seed(seed)
    ds = load_dataset(dataset, root=root)
    catalogue = encode_catalogue(ds.items, encoder, progress=progress)
    train_rows, val_rows = split_users(ds.interactions, 0.1, seed)
    if max_train_users is not None:
        keep = np.sort(train_rows["user_id"].unique())[:max_train_users]
        train_rows = train_rows[train_rows["user_id"].isin(set(keep))]
    cfg = TrainConfig(seed=seed, epochs=1)
    rec, _ = fit_recommender(
        catalogue, train_rows, cfg, users=ds.users, validation=val_rows, progress=False
    )
    data = TrainingData(train_rows, catalogue, ds.users, val_rows, ds.rating_range, seed)
    melu = MeLU(local_steps=5, epochs=1, min_updates=0, threads=None, seed=seed).fit(data)
    ur = data.ratings
    codes_all = rec.features.transform(ds.users, ur.user_ids)
    result: dict[str, Any] = {"adaptation": {}, "batched": {}, "training": {}, "encoder": {}}

    # -- one user's adaptation -----------------------------------------------
    net = melu._net()
    item_emb = net.item_embeddings(melu.years, melu.genres).detach()
    melu_codes = melu.user_features.transform(ds.users, ur.user_ids)
    melu_device = melu.years.device
    for support in (10, 50):
        task = _tasks(ur, support, 1, seed)[0]
        codes = torch.as_tensor(codes_all[[task.user]], device=rec.device)
        batch = collate([task]).to(melu_device)
        mcodes = torch.as_tensor(melu_codes[[task.user]], device=melu_device)
        for steps in (0, 1, 5):  # 0: the closed-form start alone, so per-step cost shows
            key = f"support{support}_steps{steps}"

            def ours(task: Task = task, codes: torch.Tensor = codes, steps: int = steps) -> None:
                rec._adapt_tasks([task], codes, steps)

            def theirs(
                batch: Any = batch, mcodes: torch.Tensor = mcodes, steps: int = steps
            ) -> None:
                melu.local_steps = steps
                # under no_grad as metarec's adaptation and MeLU's own scoring run
                # (torch.func.grad inside still differentiates)
                with torch.no_grad():
                    user = net.user_embeddings(mcodes)
                    melu.adapt(
                        net,
                        item_emb[batch.support_items],
                        batch.support_y,
                        batch.support_mask,
                        user,
                    )

            scorer = rec.learner.scorer
            scorer.direct_path = False  # the generic torch.func path, for comparison
            generic = _latency(ours, repeats)
            scorer.direct_path = True
            result["adaptation"][key] = {
                "metarec": _latency(ours, repeats),
                "metarec_torch_func": generic,
                "melu": _latency(theirs, repeats),
            }
            log(
                f"adapt {key}: metarec p50 "
                f"{result['adaptation'][key]['metarec']['p50_ms']:.2f} ms, MeLU "
                f"{result['adaptation'][key]['melu']['p50_ms']:.2f} ms"
            )
    melu.local_steps = 5

    # -- 1,000 users at once -------------------------------------------------
    tasks = _tasks(ur, 10, 1000, seed)
    codes = torch.as_tensor(codes_all[[t.user for t in tasks]], device=rec.device)
    mcodes = torch.as_tensor(melu_codes[[t.user for t in tasks]], device=melu_device)
    batch = collate(tasks).to(melu_device)

    def ours_batch() -> None:
        rec._adapt_tasks(tasks, codes, 5)

    def theirs_batch() -> None:
        with torch.no_grad():
            user = net.user_embeddings(mcodes)
            melu.adapt(
                net, item_emb[batch.support_items], batch.support_y, batch.support_mask, user
            )

    for name, fn in (("metarec", ours_batch), ("melu", theirs_batch)):
        lat = _latency(fn, max(5, repeats // 40), warmup=2)
        result["batched"][name] = {"users_per_s": 1000 / (lat["p50_ms"] / 1000), **lat}
    log(
        f"1,000 users: metarec {result['batched']['metarec']['users_per_s']:.0f} users/s, "
        f"MeLU {result['batched']['melu']['users_per_s']:.0f}"
    )

    # -- meta-training throughput -------------------------------------------
    # metarec's default episodes use every rating outside the support as the query
    # (about 7x MeLU's 10 query ratings a task on ml-100k, 72 on average); "-q10" rows
    # use MeLU's episode shape
    throughput_runs: tuple[tuple[Algorithm, int, int | None, bool], ...] = (
        ("fomaml", 64, None, True),
        ("fomaml", 64, None, False),
        ("fomaml", 256, None, True),
        ("fomaml", 64, 10, True),
        ("fomaml", 256, 10, True),
        ("maml", 64, None, True),
        ("maml", 64, 10, True),
    )
    for algo, batch_size, query, direct in throughput_runs:
        tcfg = TrainConfig(
            seed=seed,
            epochs=1,
            algorithm=algo,
            meta_batch_size=batch_size,
            train_query_size=query,
        )
        rec_t, _ = fit_recommender(
            catalogue, train_rows.iloc[:2000], tcfg, users=ds.users, progress=False
        )  # a fitted learner with the right shapes; its epoch is timed below
        rec_t.learner.scorer.direct_path = direct
        trainer = Trainer(rec_t.learner, tcfg, progress=False)
        source = TaskSource(ur, codes_all)
        epoch_s = []
        # with the threads `metarec train` uses (second-order MAML on one CPU thread,
        # for repeatable numbers; see Trainer.reproducible_threads)
        with trainer.reproducible_threads():
            threads = torch.get_num_threads()
            for epoch in range(max(1, train_epochs)):  # the median epoch: robust to a busy machine
                t0 = time.perf_counter()
                trainer.train_epoch(source, epoch)
                epoch_s.append(time.perf_counter() - t0)
        elapsed = float(np.median(epoch_s))
        tag = (
            f"metarec-{algo}-b{batch_size}"
            + (f"-q{query}" if query else "")
            + ("" if direct else "-torch-func")
        )
        result["training"][tag] = {
            "tasks_per_s": len(ur) / elapsed,
            "epoch_s": elapsed,
            "epochs_s": epoch_s,
            "tasks": len(ur),
            "threads": threads,
        }
    result["training_breakdown"] = _training_breakdown(
        catalogue, train_rows, ds.users, TaskSource(ur, codes_all), seed
    )
    for steps in (1, 5):
        # its epochs alone, as metarec's are timed: the fit's setup (features, tasks,
        # the network) was once inside this window, 25-40 % of MeLU-1's one epoch
        m = MeLU(
            local_steps=steps, epochs=max(1, train_epochs), min_updates=0, threads=None, seed=seed
        )
        m.fit(data)
        elapsed = float(np.median(m.epoch_seconds))
        n = len(m.training_tasks(ur, np.random.default_rng(seed)))
        result["training"][f"melu-{steps}"] = {
            "tasks_per_s": n / elapsed,
            "epoch_s": elapsed,
            "epochs_s": list(m.epoch_seconds),
            "tasks": n,
            "threads": torch.get_num_threads(),  # threads=None: torch's default
        }
    log(
        "training tasks/s: "
        + ", ".join(f"{k} {v['tasks_per_s']:.0f}" for k, v in result["training"].items())
    )

    # -- encoder ------------------------------------------------------------
    texts = catalogue.items["text"].astype(str).tolist()[:1000]
    enc = catalogue.encoder
    if hasattr(enc, "load"):
        # loading the model (2.5 s) is not encoding: cached vectors meant the first
        # encode here loaded it inside the timed window
        enc.load()
        enc.encode(texts[:8])
    t0 = time.perf_counter()
    enc.encode(texts)
    result["encoder"][encoder] = {"items_per_s": len(texts) / (time.perf_counter() - t0)}
    with quantization_notices_off():
        # a sentence-transformers model: also its int8 variant, where torch still has it
        # dynamic quantisation makes CPU kernels only: a GPU-resident model is left out
        model = enc.load() if hasattr(enc, "load") else None
        on_cpu = model is not None and all(p.device.type == "cpu" for p in model.parameters())
        quant = int8_variant(model) if model is not None and on_cpu else None
        if quant is not None:
            # warmed up as the fp32 model was: its first call allocates and loads kernels
            quant.encode(texts[:8], batch_size=64, convert_to_numpy=True)
            t0 = time.perf_counter()
            q_vecs = quant.encode(
                texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True
            )
            q = {"items_per_s": len(texts) / (time.perf_counter() - t0)}
            full = enc.encode(texts[:200])
            q["cosine_to_fp32_mean"] = float((full * q_vecs[:200]).sum(1).mean())
            result["encoder"][f"{encoder}-int8"] = q
    log("encoder items/s: " + ", ".join(
        f"{k} {v['items_per_s']:.0f}" for k, v in result["encoder"].items()
    ))  # fmt: skip

    # -- quickstart ----------------------------------------------------------
    result["quickstart"] = None  # not run (quickstart=False): said so in the report
    if quickstart:
        try:
            result |= _quickstart_pair(root, log)
        except MetarecError as exc:  # the minutes of figures above are kept and written
            # (no ml-100k to be found, an encoder that fails, a child that fails)
            result["quickstart_failed"] = str(exc)
            log(f"quickstart: {exc}")

    record = {
        "benchmark": "speed",
        "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()),
        "dataset": dataset,
        "seed": seed,
        # what was timed: a default changed later shows here (quickstart: the defaults)
        "config": cfg.to_dict(),
        "melu": {"local_steps": 5, "epochs": 1, "min_updates": 0},
        "encoder_name": encoder,
        "max_train_users": max_train_users,
        "train_epochs": train_epochs,
        "repeats": repeats,
        **result,
        "machine": machine_info(),
        "command": _speed_command(
            dataset,
            seed,
            repeats=repeats,
            quickstart=quickstart,
            encoder=encoder,
            max_train_users=max_train_users,
            train_epochs=train_epochs,
        ),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = speed_stem(dataset, seed)
    save_json(out / f"{stem}.json", record)
    write_bytes_atomic(out / f"{stem}.md", speed_markdown(record).encode())
    log(f"wrote {out / stem}.json, .md")
    return record


def _quickstart_pair(root: str | None, log: Callable[[str], None]) -> dict[str, Any]:
    """``metarec quickstart`` and :func:`melu_quickstart` timed in child processes, both
    on ml-100k as found from ``root`` (not ``root/ml-100k``, which need not exist: a
    root without it failed here, after every other figure) and with its encodings cached
    first, so that metarec, which runs first, does not pay MeLU's encoding for it."""
    import tempfile

    from metarec.data import load_dataset
    from metarec.pipeline import encode_catalogue

    folder = quickstart_folder(root)  # what both children read
    encode_catalogue(load_dataset("ml-100k", folder).items, TrainConfig().encoder)
    with tempfile.TemporaryDirectory() as tmp:
        ours = _child_wall_and_peak(
            ["-m", "metarec.cli", "quickstart", "--quiet", "--data", folder,
             "--out", str(Path(tmp) / "run")]
        )  # fmt: skip
    log(f"quickstart: {ours['wall_s']:.1f} s, peak {ours['peak_rss_mb']:.0f} MiB")
    # MeLU on its own default thread count (one), as make_peer builds it
    theirs = _child_wall_and_peak(
        ["-c", "import sys; from metarec.evaluation.speed import melu_quickstart; "
         "melu_quickstart(sys.argv[1])", folder]
    )  # fmt: skip
    log(f"the same job with MeLU-5: {theirs['wall_s']:.1f} s, peak {theirs['peak_rss_mb']:.0f} MiB")
    return {"quickstart": ours, "quickstart_melu": theirs}


def quickstart_folder(root: str | None) -> str:
    """A folder that holds ml-100k where the data look finds it from ``root`` (root
    itself, ``$METAREC_DATA``, the cache or a download), for ``--data``."""
    from metarec.data.registry import locate

    kind, where = locate("ml-100k", root)
    # an atomic prefix (``DIR/ml-100k``: ``DIR/ml-100k.inter``...) is found in its folder
    return str(where.parent if kind == "atomic" else where)


def speed_stem(dataset: str, seed: int) -> str:
    """The record's file name without its suffix: ``speed`` for ml-100k with seed 0 (the
    README's table), else with the data set and seed in it, as the protocols' reports
    are named: a run on ml-1m replaced ml-100k's record without a word."""
    from metarec.evaluation.splits import split_stem

    return "speed" if (dataset, seed) == ("ml-100k", 0) else f"speed-{split_stem(dataset, seed)}"


def _p99(row: dict[str, Any]) -> str:
    return f"{row['p99_ms']:.2f}" if "p99_ms" in row else "— (under 100 calls)"


def check_speed_fields(record: dict[str, Any], source: str | Path) -> None:
    """Every figure of a speed record is a time, a rate, a count or a size: finite and
    >= 0. An edited NaN or -5 was printed in the report's table as if measured."""
    stack: list[tuple[str, Any]] = [("", record)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            stack += [(f"{where}.{k}" if where else str(k), v) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(f"{where}[{i}]", v) for i, v in enumerate(value)]
        elif is_number(value) and not (is_finite_number(value) and value >= 0):
            raise DataError(
                f"field {where!r}: {value!r:.40} is no time, rate or count (a finite number "
                ">= 0 expected; damaged or edited?)",
                path=source,
            )


def _speed_command(dataset: str, seed: int, **options: Any) -> str:
    """What reproduces a record: the CLI's command where every option had its default
    (the command has no flags for them), else the Python call with the ones that did
    not. A reduced run (tests) named the full command, under figures it does not give."""
    defaults = inspect.signature(run_speed_benchmark).parameters
    changed = {k: v for k, v in options.items() if v != defaults[k].default}
    if not changed:
        return f"metarec benchmark --protocol speed --dataset {dataset} --seed {seed}"
    given = ", ".join(
        f"{k}={v!r}" for k, v in {"dataset": dataset, "seed": seed, **changed}.items()
    )
    return (
        'python -c "from metarec.evaluation.speed import run_speed_benchmark; '
        f'run_speed_benchmark({given})"'
    )


def speed_markdown(record: dict[str, Any]) -> str:
    m = record["machine"]
    lines = [
        f"# Speed on {md_text(record['dataset'])}: metarec beside MeLU-as-published",
        "",
        f"Machine: {describe_machine(m)}. Reproduce: `{record['command']}`",
        "",
        "## Adaptation latency, one user (ms)",
        "",
        "| support, steps | metarec p50 | metarec p99 | metarec torch.func path p50 / p99 "
        "| MeLU p50 | MeLU p99 |",
        "|---|---|---|---|---|---|",
    ]
    for key, v in record["adaptation"].items():
        s, st = key.removeprefix("support").split("_steps")
        tf = v.get("metarec_torch_func")
        generic = f"{tf['p50_ms']:.2f} / {_p99(tf)}" if tf else "—"
        lines.append(
            f"| {s}, {st} | {v['metarec']['p50_ms']:.2f} | {_p99(v['metarec'])} | "
            f"{generic} | {v['melu']['p50_ms']:.2f} | {_p99(v['melu'])} |"
        )
    b = record["batched"]
    lines += [
        "",
        "## Throughput",
        "",
        "| measure | metarec | MeLU |",
        "|---|---|---|",
        f"| batched adaptation, 1,000 users (support 10, 5 steps), users/s | "
        f"{b['metarec']['users_per_s']:,.0f} | {b['melu']['users_per_s']:,.0f} |",
    ]
    t = record["training"]

    def row(label: str, tag: str) -> list[str]:
        return [f"| {label} | {t[tag]['tasks_per_s']:,.0f} | — |"] if tag in t else []

    lines += [
        "| meta-training, first-order, default episodes (query = all other ratings), tasks/s | "
        f"{t['metarec-fomaml-b64']['tasks_per_s']:,.0f} | — |",
        *row(
            "meta-training, first-order, default episodes, generic torch.func path, tasks/s",
            "metarec-fomaml-b64-torch-func",
        ),
        *row(
            "meta-training, first-order, default episodes, 256 tasks a batch, tasks/s",
            "metarec-fomaml-b256",
        ),
        "| meta-training, query 10 (supports as each draws them: metarec 1-100 at random, "
        "MeLU all the other ratings up to 100): metarec first-order / MeLU-1, tasks/s | "
        f"{t['metarec-fomaml-b64-q10']['tasks_per_s']:,.0f} | {t['melu-1']['tasks_per_s']:,.0f} |",
        "| meta-training, first-order, query 10, 256 tasks a batch, tasks/s | "
        f"{t['metarec-fomaml-b256-q10']['tasks_per_s']:,.0f} | — |",
        "| meta-training, second-order, default episodes, tasks/s | "
        f"{t['metarec-maml-b64']['tasks_per_s']:,.0f} | — |",
        "| meta-training, query 10 (supports as above): metarec MAML / MeLU-5, tasks/s | "
        f"{t['metarec-maml-b64-q10']['tasks_per_s']:,.0f} | {t['melu-5']['tasks_per_s']:,.0f} |",
    ]
    tail: list[str] = []
    threads = {
        **{f"adaptation {k}": v["metarec"]["threads"] for k, v in record["adaptation"].items()
           if "threads" in v["metarec"]},
        **{f"training {k}": v["threads"] for k, v in t.items() if "threads" in v},
    }  # fmt: skip
    if threads:  # records before 2026-12-05 have the machine's default only
        by_count: dict[int, list[str]] = {}
        for what, n in threads.items():
            by_count.setdefault(int(n), []).append(what)
        said = "; ".join(f"{n}: {', '.join(whats)}" for n, whats in sorted(by_count.items()))
        tail += ["", f"Torch threads each row ran on: {said}; MeLU's quickstart job: 1."]
    if "training_breakdown" in record:  # records before it was measured have none
        br = dict(record["training_breakdown"])
        total, tasks = br.pop("total_cpu_s_per_epoch"), br.pop("tasks")
        share = ", ".join(f"{k} {v:.0%}" for k, v in sorted(br.items(), key=lambda kv: -kv[1]))
        tail += [
            "",
            f"Where a first-order epoch goes (default episodes, 64 tasks a batch; "
            f"{total:.2f} CPU s for {tasks:,.0f} tasks, CPU time over all threads, the last "
            f"part by difference): {share}.",
        ]
    for name, e in record["encoder"].items():
        extra = (
            f" (cosine to fp32 {e['cosine_to_fp32_mean']:.3f})"
            if "cosine_to_fp32_mean" in e
            else ""
        )
        lines.append(
            f"| encoder `{name}`, items/s | {e['items_per_s']:,.0f}{extra} | n/a (feature lookup) |"
        )
    q = record.get("quickstart")  # None or absent (before 2026-12-02): not run
    m = record.get("quickstart_melu")  # runs before 2026-12-01 did not time it
    melu = "; MeLU: the same job with MeLU-5, `melu_quickstart`" if m else ""
    if q is None:
        said = (
            "failed (see the record's `quickstart_failed`)"
            if record.get("quickstart_failed")
            else "not run"
        )
        lines.append(f"| `metarec quickstart`: wall s / peak MiB | {said} | {said} |")
    else:
        lines.append(
            f"| `metarec quickstart` (ml-100k, cached encodings{melu}): wall s / peak MiB | "
            f"{q['wall_s']:.0f} / {q['peak_rss_mb']:.0f} | "
            + (f"{m['wall_s']:.0f} / {m['peak_rss_mb']:.0f} |" if m else "n/a (not timed) |")
        )
    return "\n".join(lines + tail) + "\n"
