"""The pruning report: per-layer channels before/after, groups, FLOPs, params, allocations, accuracy."""
from typing import Any, Dict, List, Optional

import numpy as np

from edgekit.convert.flops import model_flops
from edgekit.convert.pruning.groups import ChannelGraph, kept_indices


def _layers(graph: ChannelGraph, keep_sets) -> List[Dict[str, Any]]:
    rows = []
    for name, (lin, lout) in graph.layer_io.items():
        rows.append({"layer": name,
                     "in_channels": [lin.width, int(len(kept_indices(lin, keep_sets)))],
                     "out_channels": [lout.width, int(len(kept_indices(lout, keep_sets)))]})
    return rows


def _groups(graph: ChannelGraph, tables, plans) -> List[Dict[str, Any]]:
    chosen = {t.group: (k, plans["uniform"]["keeps"][i]) for i, (t, k) in enumerate(zip(tables, plans["dp"]["keeps"]))}
    by_group = {t.group: t for t in tables}
    rows = []
    for g in graph.groups:
        if g.index not in by_group:
            continue
        t = by_group[g.index]
        dp_k, uni_k = chosen[g.index]
        rows.append({"group": g.name, "channels": g.channels, "kept_dp": dp_k, "kept_uniform": uni_k,
                     "kinds": list(g.kinds),
                     "options": [{"keep": int(k), "distortion": float(d), "saving": float(s)}
                                 for k, d, s in zip(t.keeps, t.distortion, t.saving)]})
    return rows


def _skipped(graph: ChannelGraph, tables, multiple: int) -> List[Dict[str, Any]]:
    cand = {t.group for t in tables}
    out = []
    for g in graph.groups:
        if g.index in cand:
            continue
        reason = g.reason or "{} channel(s), not more than the channel multiple {}".format(g.channels, multiple)
        out.append({"group": g.name, "channels": g.channels, "reason": reason})
    return out


def _plan_summary(plan: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in plan.items() if k not in ("keep_sets",)}


def build_report(model, pruned, graph: ChannelGraph, cost, options, multiple: int, tables, plans,
                 recovery, accuracy: Dict[str, Optional[Any]]) -> Dict[str, Any]:
    chosen = plans[options.allocation]
    flops = [model_flops(model), model_flops(pruned)]
    params = [int(model.count_params()), int(pruned.count_params())]
    return {
        "options": options.to_dict(),
        "channel_multiple": multiple,
        "budget": {"kind": cost.kind, "unit": cost.unit, "note": cost.note, "full": cost.full(),
                   "target": options.fraction * cost.full(), "pruned": chosen["cost"],
                   "fraction": chosen["cost_fraction"]},
        "flops": {"before": flops[0], "after": flops[1], "fraction": flops[1] / max(flops[0], 1)},
        "params": {"before": params[0], "after": params[1], "fraction": params[1] / max(params[0], 1)},
        "allocation": dict({"method": options.allocation}, **{k: _plan_summary(v) for k, v in plans.items()}),
        "accuracy": accuracy,
        "recovery": recovery.to_dict() if recovery is not None else None,
        "groups": _groups(graph, tables, plans),
        "skipped_groups": _skipped(graph, tables, multiple),
        "unsupported_layers": [{"layer": n, "reason": r} for n, r in graph.unsupported],
        "layers": _layers(graph, chosen["keep_sets"]),
        "outputs": [str(n) for n in pruned.output_names],
    }


def to_json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): to_json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj
