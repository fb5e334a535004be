"""Typed configuration for training, with TOML files and ``key=value`` overrides.

A run's resolved config is saved beside its model, so a run can be repeated
from its folder alone.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import sys
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_type_hints

from metarec.device import check_device
from metarec.errors import ConfigError
from metarec.values import is_number, is_whole

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

Algorithm = Literal["maml", "fomaml", "reptile", "metasgd", "transfer"]
AdaptScope = Literal["context", "head", "all"]
Objective = Literal["rating", "bce", "bpr", "softmax"]
RatingLoss = Literal["mse", "l1"]
EpisodeOrder = Literal["shuffle", "time"]

ALGORITHMS: tuple[str, ...] = get_args(Algorithm)


# Adaptation fits a handful of ratings with a few gradient steps; past this many, one
# user's adaptation takes minutes (``adapt(steps=10**6)`` ran on without a word) and
# meta-training does not finish. One bound for the config's inner steps and for
# ``Recommender.adapt(steps=...)``.
MAX_STEPS = 1000
MAX_WEIGHT_DECAY = 1000.0
MAX_NEGATIVES = 10_000  # sampled negatives a liked item
MAX_WIDTH = 16_384  # a layer's units
MAX_LAYERS = 64


def unknown_keys_error(source: str, unknown: list[str], known: set[str]) -> ConfigError:
    """The error for misspelt or foreign keys, with the nearest known name of each."""
    guesses = [
        f"{k} (did you mean {close[0]}?)"
        if (close := difflib.get_close_matches(k, known, 1))
        else k
        for k in unknown
    ]
    return ConfigError(
        f"{source}: unknown key(s) {', '.join(guesses)}; known: {', '.join(sorted(known))}"
    )


_C = TypeVar("_C", bound=type)


def _refuse_unknown_keywords(cls: _C) -> _C:
    """``cls(epoch=3)`` a ConfigError naming ``epochs``, as a file's or ``--set``'s
    misspelt key is, where the dataclass' own ``__init__`` raised a bare TypeError."""
    init = vars(cls)["__init__"]  # the dataclass' own, from its class dict
    known = {f.name for f in fields(cls)}

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise unknown_keys_error(cls.__name__, unknown, known)
        init(self, *args, **kwargs)

    setattr(cls, "__init__", __init__)  # noqa: B010 - mypy refuses assigning a method
    return cls


# the share of users a run keeps out of fitting for early stopping (--holdout none,
# metarec.train's default), and on whom `metarec retrain` judges it
VALIDATION_FRACTION = 0.1


@_refuse_unknown_keywords
@dataclass
class ModelConfig:
    """Shape of the preference network (see :mod:`metarec.models.preference`)."""

    hidden: int = 64  # width of h_i, the context z and the head layers
    tower_hidden: int = 256
    head_layers: int = 2
    user_embedding_dim: int = 8
    factors: int = 32  # width of the user's taste vector over projected items; 0 = none
    fold_in: bool = True  # start the taste vector at its ridge (ALS fold-in) solution
    # bce and bpr: start the user bias (bce) and taste vector with one Newton step of
    # the support's logistic loss, the implicit counterpart of fold_in. Off by default:
    # on synthetic clicks of categories it took the share of a top 10 in the user's
    # categories from 0.454 to 0.834 (bce) and 0.702 to 0.863 (bpr), and on ml-100k's
    # P2 cost about 0.006 nDCG@10 at K = 10 (benchmarks/results/implicit-objectives.md)
    implicit_fold_in: bool = False
    # start the user's context and taste vector at a learned map of the pooled support items
    # (an amortised first guess the inner steps refine; see UserHead.encode_support)
    support_encoder: bool = False
    use_item_ids: bool = True
    item_id_dropout: float = 0.3  # share of known items shown to the model as text only
    use_user_features: bool = True
    dropout: float = 0.0


@_refuse_unknown_keywords
@dataclass
class TrainConfig:
    """Everything that decides how a recommender is trained.

    ``algorithm``: ``maml`` (second-order), ``fomaml``, ``reptile``,
    ``metasgd`` (learned per-parameter inner step sizes) or ``transfer``
    (global training, then fine-tuning on the support set; the non-meta control).
    ``adapt``: which parameters the inner loop changes per user: ``context``
    (the user vector z, bias and taste vector), ``head`` (plus the scoring MLP,
    MeLU's choice) or ``all`` (plus the user-feature embeddings and the item tower
    but its id embeddings; slowest). Never adapted per user, in any scope: the
    taste projection (shared by all users: a user's taste vector is what moves),
    the bias solve's damping and the taste ridge (meta-learned through the solves),
    and the item id embeddings (one per item, not a user's to change).
    ``objective``: ``rating`` (predict the rating; P1), or ``softmax``, ``bce`` or ``bpr``
    (rank what the user will like next; P2, and clicks or purchases). Every field is
    explained in the README's "How the model works"; for a first try in seconds,
    ``TrainConfig(epochs=2, encoder="tfidf", max_train_users=300)``.
    """

    algorithm: Algorithm = "fomaml"
    adapt: AdaptScope = "context"
    objective: Objective = "rating"
    rating_loss: RatingLoss = "l1"  # outer (query) loss for ratings; inner steps use MSE
    inner_steps: int = 5
    inner_lr: float = 0.05
    eval_inner_steps: int | None = None  # defaults to inner_steps
    outer_lr: float = 2e-3
    weight_decay: float = 0.0
    meta_batch_size: int = 64
    epochs: int = 30
    patience: int = 4
    min_support: int = 1
    max_support: int = 100
    query_size: int = 10  # query ratings per validation/evaluation task
    # query ratings per meta-training episode; None = all the user's ratings outside the support
    train_query_size: int | None = None
    negatives: int = 4  # per positive, for the implicit objectives
    # ratings at or above count as "liked" (implicit objectives); None: the top quarter of
    # the training data's rating scale (4 on 1-5 stars), set when training starts
    like_threshold: float | None = None
    # implicit objectives: support positives are the liked or all rated items. None: set
    # from the training data when an implicit objective trains: "liked" where its
    # ratings take two values, the scale's ends either side of like_threshold (0/1
    # impressions and clicks, thumbs down and up: the lower one is a "no", which "rated"
    # read as a click), "rated" otherwise (a film rated at all was watched); a rating
    # run keeps None
    support_positives: str | None = None
    # how episodes split a user's ratings: at random, or first-k-by-time as support and
    # what came after as query (see metarec.data.tasks.sample_episodes)
    episode_order: EpisodeOrder = "shuffle"
    seed: int = 0
    device: str = "auto"
    encoder: str = "minilm"
    max_train_users: int | None = None
    model: ModelConfig = field(default_factory=ModelConfig)

    def __post_init__(self) -> None:
        # refused where it is written (``TrainConfig(algorithm="bogus")``), not minutes
        # later when training starts; a field changed after construction is checked
        # again by ``validate()``, which every training entry point calls
        self.validate()

    def validate(self) -> TrainConfig:
        """``self`` if every field has its type and a usable value, else ConfigError.

        Types are checked here too, not only when a file or ``--set`` is parsed, so a
        config built in Python (``TrainConfig(inner_steps="3")``) is refused with the
        field's name instead of failing deep inside training.
        """
        _check_types(self, "config")
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(
                f"algorithm: {self.algorithm!r} is not one of {', '.join(ALGORITHMS)}"
            )
        if self.adapt not in get_args(AdaptScope):
            raise ConfigError(f"adapt: {self.adapt!r} is not one of context, head, all")
        if self.support_positives not in ("liked", "rated", None):
            raise ConfigError(
                f"support_positives: {self.support_positives!r} is not one of liked, rated"
            )
        if self.episode_order not in ("shuffle", "time"):
            raise ConfigError(f"episode_order: {self.episode_order!r} is not one of shuffle, time")
        if self.objective not in get_args(Objective):
            raise ConfigError(
                f"objective: {self.objective!r} is not one of rating, bce, bpr, softmax"
            )
        if self.objective == "softmax" and self.adapt == "all":
            raise ConfigError(
                "objective softmax scores the whole catalogue per step; use adapt=context or head"
            )
        if self.like_threshold is not None and not math.isfinite(self.like_threshold):
            raise ConfigError(f"like_threshold: must be a finite rating, got {self.like_threshold}")
        # no option means anything at NaN or an infinity (training would run and save a
        # model scoring every item NaN), and the range checks below let NaN through
        _check_finite(self, "config")
        positive = {
            "inner_lr": self.inner_lr,
            "outer_lr": self.outer_lr,
            "meta_batch_size": self.meta_batch_size,
            "epochs": self.epochs,
            # epochs without improvement before stopping: 0 stopped after the first
            # epoch whether it improved or not (epochs= alone bounds a run without it)
            "patience": self.patience,
            "query_size": self.query_size,
            "max_support": self.max_support,
            "model.hidden": self.model.hidden,
        }
        optional_positive = {
            "train_query_size": self.train_query_size,
            "max_train_users": self.max_train_users,
        }
        positive |= {k: v for k, v in optional_positive.items() if v is not None}
        positive |= {"negatives": self.negatives, "model.tower_hidden": self.model.tower_hidden}
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{name}: must be > 0, got {value}")
        # a step size past 10 moves weights of order 0.1 by hundreds at once: training
        # ends in a degenerate model or overflows inside the optimiser (1e300)
        for name, value in (("inner_lr", self.inner_lr), ("outer_lr", self.outer_lr)):
            if value > 10:
                default = TrainConfig.__dataclass_fields__[name].default
                raise ConfigError(f"{name}: must be <= 10, got {value} (default {default:g})")
        not_negative = {
            "inner_steps": self.inner_steps,
            "eval_inner_steps": 0 if self.eval_inner_steps is None else self.eval_inner_steps,
            "weight_decay": self.weight_decay,
            "model.head_layers": self.model.head_layers,
            "model.user_embedding_dim": self.model.user_embedding_dim,
            "model.factors": self.model.factors,
            "seed": self.seed,  # numpy's generators take no negative seed
        }
        for name, value in not_negative.items():
            if value < 0:
                raise ConfigError(f"{name}: must be >= 0, got {value}")
        # far past any use: 1e300 overflowed inside the optimiser, and 10**8 negatives a
        # task exhausted memory, each after the data was loaded and encoded
        if self.weight_decay > MAX_WEIGHT_DECAY:
            raise ConfigError(
                f"weight_decay: must be <= {MAX_WEIGHT_DECAY:g}, got {self.weight_decay}"
            )
        if self.negatives > MAX_NEGATIVES:
            raise ConfigError(f"negatives: must be <= {MAX_NEGATIVES:,}, got {self.negatives}")
        for name in ("inner_steps", "eval_inner_steps"):
            if not_negative[name] > MAX_STEPS:
                raise ConfigError(f"{name}: must be <= {MAX_STEPS}, got {not_negative[name]}")
        # a layer of 10^11 units asked the allocator for 100 TB and died with torch's
        # traceback; the defaults are 8 to 256, and 16,384 is already a large model
        for name, value in (
            ("model.hidden", self.model.hidden),
            ("model.tower_hidden", self.model.tower_hidden),
            ("model.user_embedding_dim", self.model.user_embedding_dim),
            ("model.factors", self.model.factors),
            ("model.head_layers", self.model.head_layers),
        ):
            limit = MAX_LAYERS if name == "model.head_layers" else MAX_WIDTH
            if value > limit:
                raise ConfigError(f"{name}: must be <= {limit:_}, got {value:_}")
        # Reptile trained with 1 step without a word, while evaluation adapted with 0;
        # Meta-SGD's step sizes were never applied, so never learned, and with
        # eval_inner_steps > 0 served as they started (inner_lr)
        needs_steps = {
            "reptile": "Reptile moves its start toward each user's adapted weights",
            "metasgd": "Meta-SGD learns each weight's step size from the steps it takes",
        }
        if self.inner_steps == 0 and self.algorithm in needs_steps:
            raise ConfigError(
                f"inner_steps: {needs_steps[self.algorithm]}, so it needs at least 1 step "
                "(eval_inner_steps=0 still serves the start)"
            )
        if self.seed >= 2**32:  # torch's seed is seed * 100003 + epoch, a 64-bit integer
            raise ConfigError(f"seed: must be below 2**32, got {self.seed}")
        if not 0.0 <= self.model.dropout < 1.0:
            raise ConfigError(f"model.dropout: must be in [0, 1), got {self.model.dropout}")
        check_device(self.device)
        if not 0 <= self.min_support <= self.max_support:
            raise ConfigError(
                f"min_support/max_support: need 0 <= min <= max, "
                f"got {self.min_support} and {self.max_support}"
            )
        if not 0.0 <= self.model.item_id_dropout <= 1.0:
            raise ConfigError(
                f"model.item_id_dropout: must be in [0, 1], got {self.model.item_id_dropout}"
            )
        return self

    @property
    def steps_at_eval(self) -> int:
        """Inner steps when adapting at evaluation and serving time."""
        return self.inner_steps if self.eval_inner_steps is None else self.eval_inner_steps

    def support_rule(self) -> str:
        """:attr:`support_positives` as a support set is built: where training has not
        set it from the data (a config used directly), "rated", the rule before it could
        be left to the data."""
        return self.support_positives or "rated"

    def to_dict(self) -> dict[str, Any]:
        """Every key as plain JSON/TOML values (what a run saves as config.json)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> TrainConfig:
        """A validated config from :meth:`to_dict`'s keys (a subset: the rest default);
        errors name ``source`` (a file) and the key."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: expected a table of options, got {data!r:.60}")
        return _build(cls, data, source)  # constructing validates

    @classmethod
    def given(cls, cfg: object, where: str = "cfg") -> TrainConfig:
        """What a caller passed as a config, validated: a TrainConfig, a dict of its keys
        (a TOML table as Python writes it), or None for the defaults."""
        if isinstance(cfg, dict):
            cfg = cls.from_dict(cfg, source=where)
        if cfg is not None and not isinstance(cfg, TrainConfig):
            raise ConfigError(
                f"{where}: expected a TrainConfig or a dict of its keys, got {cfg!r:.60}"
            )
        return (cfg or cls()).validate()

    @classmethod
    def from_saved(cls, data: dict[str, Any], *, source: str) -> TrainConfig:
        """:meth:`from_dict` for a config a run saved: values that trained before a rule
        refused them are read as what they did, so those runs still load (patience 0
        stopped after one epoch, as patience 1 does after a first epoch that did not
        improve; Reptile with 0 inner steps trained with 1 and served the start; Meta-SGD
        with 0 served the start too, its step sizes unlearned)."""
        if isinstance(data, dict):
            data = dict(data)
            if data.get("patience") == 0:
                data["patience"] = 1
            if data.get("algorithm") in ("reptile", "metasgd") and data.get("inner_steps") == 0:
                data["inner_steps"] = 1
                if data.get("eval_inner_steps") is None:
                    data["eval_inner_steps"] = 0
        return cls.from_dict(data, source=source)

    @classmethod
    def from_toml(cls, path: str | Path) -> TrainConfig:
        """A config from a TOML file: a ``[train]`` table (``[train.model]`` nested) or
        the same keys at the top level; or from the ``config.json`` a run folder holds
        (a ``.json`` file), so a run is trained again from its folder alone."""
        path = Path(path)
        if path.is_dir():
            raise ConfigError(f"{path}: is a folder; a TOML config file is needed")
        if path.suffix.lower() == ".json":
            return cls.from_json_file(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not UTF-8 text, so not a TOML config") from None
        if "train" in data:
            beside = sorted(k for k in data if k != "train")
            if beside:  # read from the [train] table alone, they would be dropped unseen
                raise ConfigError(
                    f"{path}: {beside} beside the [train] table; put every option in it "
                    "(the model's as [train.model]) or use top-level keys without it"
                )
            data = data["train"]
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: [train] must be a table of options, got {data!r:.40}")
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_json_file(cls, path: Path) -> TrainConfig:
        """The config a run saved (``config.json``): its nulls are the optional keys'
        "not set", which TOML cannot write."""
        import json

        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not a JSON config ({exc})") from None
        except RecursionError:  # [[[[...]]]] past the parser's depth
            raise ConfigError(f"{path}: not a JSON config (nested too deeply)") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected an object of options, got {data!r:.40}")
        # another of a run's files, picked in the folder by mistake: its keys were each
        # "not an option (did you mean ...?)", guesses that fit nothing
        kind = (
            "a run's recommender.json"
            if {"format_version", "config"} <= data.keys()
            else "a split or results file"
            if "protocol" in data
            else "an ensemble's manifest"
            if "members" in data
            else None
        )
        if kind is not None:
            raise ConfigError(
                f"{path}: {kind}, not a training config; give a run's config.json "
                "(--config RUN/config.json)"
            )
        return cls.from_dict(data, source=str(path))

    def with_overrides(self, assignments: list[str]) -> TrainConfig:
        """Apply ``key=value`` strings (``model.hidden=128``); values parse as TOML,
        and ``none`` clears an optional key (``like_threshold=none``)."""
        data = self.to_dict()
        given: set[str] = set()
        for item in assignments:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--set {item!r}: expected key=value, e.g. inner_steps=3")
            # a key given again overrides the earlier value, in order, so a --set added
            # to a command line (a resumed run's epochs=2) wins over one already in it
            given.add(key.strip())
            # TOML has no null: the bare word none resets an optional key to its
            # default (eval_inner_steps=none follows inner_steps again)
            value = None if raw.strip().lower() == "none" else _parse_value(raw.strip())
            target = data
            parts = key.strip().split(".")
            for part in parts[:-1]:
                if not isinstance(target.get(part), dict):
                    raise ConfigError(f"--set {item!r}: {part!r} is not a config section")
                target = target[part]
            # a table merges into its section: model={hidden=128} replaced the whole
            # model table, and every other model setting went back to its default
            _merge(target, {parts[-1]: value})
        cfg = TrainConfig.from_dict(data, source="--set")
        for key in sorted(given):
            idle = cfg.idle_reason(key)
            if idle is not None:  # taken and ignored without a word
                warnings.warn(f"--set {key}: has no effect {idle}", UserWarning, stacklevel=2)
        return cfg

    def idle_reason(self, key: str) -> str | None:
        """Why option ``key`` does nothing under the rest of this config (None: it is
        read), for a setting given by name."""
        if key == "rating_loss" and self.objective != "rating":
            return f"with objective={self.objective} (it is the rating objective's loss)"
        if key == "support_positives" and self.objective == "rating":
            return "with objective=rating (it shapes the implicit objectives' labels)"
        if key == "negatives" and self.objective != "bce":
            return f"with objective={self.objective} (only bce samples that many negatives)"
        if key == "model.implicit_fold_in" and self.objective not in ("bce", "bpr"):
            return f"with objective={self.objective} (it starts bce and bpr users)"
        if key == "model.implicit_fold_in" and not self.model.factors:
            return "with model.factors=0 (it starts the taste vector)"
        if key == "model.support_encoder" and self.algorithm == "transfer":
            return "with algorithm=transfer, which never trains it (no support set in training)"
        return None


def _check_types(config: Any, where: str) -> None:
    """ConfigError naming the first field of ``config`` (a config dataclass) whose value
    does not have its annotated type; nested config dataclasses are checked in turn.
    Values that do are stored as that type (``1`` for a float field becomes ``1.0``)."""
    hints = get_type_hints(type(config))
    for f in fields(config):
        value, hint = getattr(config, f.name), hints[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            if not isinstance(value, hint):
                raise ConfigError(f"{where}: {f.name} must be a {hint.__name__}, got {value!r}")
            _check_types(value, f"{where}: {f.name}")
        else:  # stored as the annotated type: a numpy integer becomes an int
            setattr(config, f.name, _coerce(value, hint, f"{where}: {f.name}"))


def _check_finite(config: Any, where: str) -> None:
    for f in fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            _check_finite(value, f"{where}: {f.name}")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}: {f.name} must be a finite number, got {value}")


def _merge(section: dict[str, Any], table: dict[str, Any]) -> None:
    """``table``'s keys into ``section``, sub-tables into sub-sections alike."""
    for key, value in table.items():
        if isinstance(value, dict) and isinstance(section.get(key), dict):
            _merge(section[key], value)
        else:
            section[key] = value


def _parse_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw  # a bare word such as maml


def _build(cls: type, data: dict[str, Any], source: str) -> Any:
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    odd = [k for k in data if not isinstance(k, str)]
    if odd:  # difflib's bare TypeError on an int key
        raise ConfigError(f"{source}: keys must be option names (text), got {odd[0]!r:.40}")
    unknown = sorted(set(data) - known)
    if unknown:
        raise unknown_keys_error(source, unknown, known)
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {f.name} must be a table")
            kwargs[f.name] = _build(hint, value, f"{source}: {f.name}")  # type: ignore[arg-type]
        else:
            kwargs[f.name] = _coerce(value, hint, f"{source}: {f.name}")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        # a file's values: name the file, as a wrong type does (a --set value is
        # named by its key alone)
        if source in ("config", "--set"):
            raise
        raise ConfigError(f"{source}: {exc}") from None


def _coerce(value: Any, hint: Any, where: str) -> Any:
    args = get_args(hint)
    origin = getattr(hint, "__origin__", None)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, args))}")
        return value
    if value is None:
        if type(None) in args:
            return None
        raise ConfigError(f"{where}: a value is required")
    candidates = [a for a in args if a is not type(None)] or [hint]
    for typ in candidates:
        if typ is bool:
            if isinstance(value, bool):
                return value
        elif typ is int:
            # numpy's integers too (a seed from np.arange), stored as int
            if is_whole(value):
                return int(value)
        elif typ is float:
            if is_number(value):
                try:
                    return float(value)
                except OverflowError:  # 10**400: a traceback, not the key's name
                    raise ConfigError(f"{where}: {value!r:.40} is too large") from None
        elif typ is str and isinstance(value, str):
            return value
    names = " or ".join(getattr(t, "__name__", str(t)) for t in candidates)
    raise ConfigError(f"{where}: expected {names}, got {value!r}")
