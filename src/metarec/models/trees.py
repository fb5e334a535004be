"""Boosted regression trees as flat arrays, scored in torch.

A fitted scikit-learn ``HistGradientBoostingClassifier`` or LightGBM booster is
exported to plain arrays, so a model that uses it is saved as safetensors
(never pickle) and scored on a GPU when one is present.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from metarec.device import float64_device
from metarec.errors import ModelError

TREE_FIELDS = ("feature", "threshold", "missing_left", "left", "right", "is_leaf", "value")


class TreeEnsemble:
    """Boosted regression trees as flat arrays, walked in torch for a batch of rows.

    Built from a fitted scikit-learn ``HistGradientBoostingClassifier`` or a
    LightGBM booster; scoring gives exactly its ``decision_function`` /
    ``predict`` (raw scores): numeric splits only,
    ``x <= threshold`` goes left, a missing value goes where training sent it.
    Plain arrays, so a fitted model saves as safetensors, never pickle.
    """

    def __init__(self, arrays: dict[str, np.ndarray], baseline: float) -> None:
        missing = [f for f in (*TREE_FIELDS, "roots") if f not in arrays]
        if missing:
            raise ModelError(f"tree ensemble: missing arrays {missing}")
        self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
        n_nodes = len(self.arrays["feature"])
        if any(len(self.arrays[f]) != n_nodes for f in TREE_FIELDS):
            raise ModelError("tree ensemble: node arrays differ in length")
        for f in ("left", "right", "roots"):
            a = self.arrays[f]
            if len(a) and (a.min() < 0 or a.max() >= n_nodes):
                raise ModelError(f"tree ensemble: {f} points outside the {n_nodes} nodes")
        self.baseline = float(baseline)
        self._tensors: dict[str, dict[str, torch.Tensor]] = {}
        # states saved before 2026-11-30 carry a "depth" array; the depth now comes
        # from the trees themselves
        self.arrays.pop("depth", None)
        # The walk advances tree t only while ``level < tree_depths[t]``: LightGBM's
        # leaf-wise trees differ a lot in depth, and walking every tree to the deepest
        # one's depth made scoring several times slower than it needs to be.
        self.tree_depths = self._tree_depths()
        self.depth = int(self.tree_depths.max()) if self.tree_depths.size else 0
        self._order = np.argsort(-self.tree_depths, kind="stable")
        self._active = (
            self.tree_depths[self._order][None, :] > np.arange(self.depth)[:, None]
        ).sum(axis=1)

    def _tree_depths(self) -> np.ndarray:
        """Each tree's depth (its deepest leaf's level), found by walking every
        branch from the roots; a cycle in the node arrays is refused."""
        a = self.arrays
        roots = a["roots"].astype(np.int64)
        n_nodes = len(a["feature"])
        depths = np.zeros(len(roots), dtype=np.int64)
        frontier, owner, level = roots, np.arange(len(roots)), 0
        while len(frontier):
            inner = ~a["is_leaf"][frontier]
            frontier, owner = frontier[inner], owner[inner]
            if not len(frontier):
                break
            level += 1
            if level > n_nodes:
                raise ModelError("tree ensemble: the node arrays contain a cycle")
            depths[owner] = level
            frontier = np.concatenate([a["left"][frontier], a["right"][frontier]])
            owner = np.concatenate([owner, owner])
        return depths

    @classmethod
    def from_sklearn(cls, model: Any) -> TreeEnsemble:
        """Export a fitted binary ``HistGradientBoostingClassifier``."""
        try:
            trees = [group[0] for group in model._predictors]
            baseline = float(np.ravel(model._baseline_prediction)[0])
        except (AttributeError, IndexError) as exc:  # private API: name the version
            import sklearn

            raise ModelError(
                f"cannot read the trees of scikit-learn {sklearn.__version__}'s "
                "HistGradientBoostingClassifier (its internals changed)"
            ) from exc
        cols: dict[str, list[np.ndarray]] = {f: [] for f in TREE_FIELDS}
        roots, offset = [], 0
        for tree in trees:
            nodes = tree.nodes
            if nodes["is_categorical"].any():
                raise ModelError("tree ensemble: categorical splits are not supported")
            roots.append(offset)
            cols["feature"].append(nodes["feature_idx"].astype(np.int64))
            cols["threshold"].append(nodes["num_threshold"].astype(np.float64))
            cols["missing_left"].append(nodes["missing_go_to_left"].astype(bool))
            cols["left"].append(nodes["left"].astype(np.int64) + offset)
            cols["right"].append(nodes["right"].astype(np.int64) + offset)
            cols["is_leaf"].append(nodes["is_leaf"].astype(bool))
            cols["value"].append(nodes["value"].astype(np.float64))
            offset += len(nodes)
        arrays = {f: np.concatenate(v) for f, v in cols.items()}
        leaf = arrays["is_leaf"]
        # leaves point at themselves, so a walk of fixed length parks there
        arrays["left"][leaf] = np.flatnonzero(leaf)
        arrays["right"][leaf] = np.flatnonzero(leaf)
        arrays["feature"][leaf] = 0
        arrays["roots"] = np.asarray(roots, dtype=np.int64)
        return cls(arrays, baseline)

    @classmethod
    def from_lightgbm(cls, booster: Any) -> TreeEnsemble:
        """Export a fitted LightGBM booster (numeric ``<=`` splits only), from its
        JSON dump: a missing value goes where LightGBM sends it (``default_left``
        for a ``NaN`` missing type; as the value 0 when the type is ``None``)."""
        dump = booster.dump_model()
        cols: dict[str, list[Any]] = {f: [] for f in TREE_FIELDS}
        roots = []

        def walk(node: dict[str, Any]) -> int:
            me = len(cols["feature"])
            for f in TREE_FIELDS:
                cols[f].append(0)
            if "leaf_value" in node or "split_feature" not in node:
                cols["is_leaf"][me] = True
                cols["value"][me] = float(node.get("leaf_value", 0.0))
                cols["left"][me] = cols["right"][me] = me  # a leaf parks the walk on itself
                return me
            if node.get("decision_type", "<=") != "<=":
                raise ModelError("tree ensemble: categorical splits are not supported")
            threshold = float(node["threshold"])
            missing = node.get("missing_type", "None")
            if missing == "NaN":
                missing_left = bool(node["default_left"])
            elif missing == "None":
                missing_left = threshold >= 0.0  # NaN compared as the value 0
            else:
                raise ModelError(f"tree ensemble: missing type {missing!r} is not supported")
            cols["feature"][me] = int(node["split_feature"])
            cols["threshold"][me] = threshold
            cols["missing_left"][me] = missing_left
            cols["is_leaf"][me] = False
            cols["left"][me] = walk(node["left_child"])
            cols["right"][me] = walk(node["right_child"])
            return me

        for info in dump["tree_info"]:
            roots.append(walk(info["tree_structure"]))
        arrays = {
            "feature": np.asarray(cols["feature"], dtype=np.int64),
            "threshold": np.asarray(cols["threshold"], dtype=np.float64),
            "missing_left": np.asarray(cols["missing_left"], dtype=bool),
            "left": np.asarray(cols["left"], dtype=np.int64),
            "right": np.asarray(cols["right"], dtype=np.int64),
            "is_leaf": np.asarray(cols["is_leaf"], dtype=bool),
            "value": np.asarray(cols["value"], dtype=np.float64),
            "roots": np.asarray(roots, dtype=np.int64),
        }
        return cls(arrays, 0.0)

    @classmethod
    def average(cls, members: Sequence[TreeEnsemble]) -> TreeEnsemble:
        """One ensemble whose decision is the mean of ``members``' decisions."""
        if not members:
            raise ModelError("tree ensemble: nothing to average")
        m = len(members)
        parts: dict[str, list[np.ndarray]] = {f: [] for f in (*TREE_FIELDS, "roots")}
        offset = 0
        for e in members:
            a = e.arrays
            for f in TREE_FIELDS:
                v = a[f]
                if f in ("left", "right"):
                    v = v + offset
                elif f == "value":
                    v = v / m
                parts[f].append(v)
            parts["roots"].append(a["roots"] + offset)
            offset += len(a["feature"])
        arrays = {f: np.concatenate(v) for f, v in parts.items()}
        return cls(arrays, float(np.mean([e.baseline for e in members])))

    def scaled(self, factor: float) -> TreeEnsemble:
        """The same trees with every decision multiplied by ``factor``."""
        arrays = dict(self.arrays)
        arrays["value"] = self.arrays["value"] * factor
        return TreeEnsemble(arrays, self.baseline * factor)

    @property
    def n_trees(self) -> int:
        return len(self.arrays["roots"])

    def decision(
        self, x: np.ndarray, device: torch.device | str = "cpu", chunk: int = 8192
    ) -> np.ndarray:
        """Raw scores (log-odds) of the rows of ``x`` [R, F]; the walk compares in float64,
        on the CPU where ``device`` has none."""
        dev = float64_device(torch.device(device))
        t = self._tensors.get(str(dev))
        if t is None:  # once per device, not per call: scoring calls this per chunk
            t = {k: torch.as_tensor(v, device=dev) for k, v in self.arrays.items()}
            # trees deepest first, so the ones still walking at a level are a prefix
            t["roots"] = t["roots"][torch.as_tensor(self._order, device=dev)]
            t["unorder"] = torch.as_tensor(np.argsort(self._order, kind="stable"), device=dev)
            # children side by side: one gather at 2 * node + goes_right finds the next node
            # (the separate left/right copies are not kept: the walk reads only this)
            t["children"] = torch.stack([t.pop("left"), t.pop("right")], dim=1).reshape(-1)
            self._tensors[str(dev)] = t
        out = np.empty(len(x), dtype=np.float64)
        for lo in range(0, len(x), chunk):
            rows = torch.as_tensor(np.asarray(x[lo : lo + chunk], dtype=np.float64), device=dev)
            missing = bool(torch.isnan(rows).any())
            node = t["roots"].expand(len(rows), -1).clone()
            for level in range(self.depth):
                n = int(self._active[level])
                if n == 0:
                    break
                cur = node[:, :n]
                v = rows.gather(1, t["feature"][cur])
                if missing:
                    right = ~torch.where(
                        torch.isnan(v), t["missing_left"][cur], v <= t["threshold"][cur]
                    )
                else:  # the common case: no missing values, no NaN test per node
                    right = v > t["threshold"][cur]
                node[:, :n] = t["children"][cur * 2 + right]
            # leaf values summed in the trees' own order: the same sum as a full walk's
            leaves = t["value"][node[:, t["unorder"]]]
            out[lo : lo + len(rows)] = (leaves.sum(dim=1) + self.baseline).cpu().numpy()
        return out
