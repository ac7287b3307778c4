"""Compare one bundle's results on the emulated arm64 board with the x86 results (run_arm64.py).

int8: predictions and exit indices must be identical (one-step differences in the int8 tensors are
reported, not judged). float32: the same, and the exit outputs within FLOAT_TOL, measured two ways, both
judged: the class probabilities (softmax of the exit outputs, what the exit rule and the predictions use),
absolute; and the exit outputs themselves (logits of magnitude up to ~50 here, where one float32 ulp is
~4e-6) relative to the largest magnitude of that output. The largest absolute logit difference is printed
too. Differences in the carried (frontier) tensors are reported, not judged.
"""
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence

import numpy as np

FLOAT_TOL = 1e-5


@dataclass(frozen=True)
class Comparison:
    precision: str
    reference: str                 # the x86 interpreter compared against
    n: int
    same_predictions: Dict[str, int]   # "early"/"full" (runtime CLI) and "dump" -> samples agreeing
    same_exits: Dict[str, int]
    max_exit_diff: float           # max |arm - x86| over every exit output at full depth and the early-exit outputs
    max_exit_rel: float            # the same, each output divided by its largest |x86| value
    max_prob_diff: float           # max |softmax(arm) - softmax(x86)| over the same outputs
    max_carried_diff: float
    accuracy: Dict[str, Any]       # "arm64"/"x86" -> early-exit accuracy from the runtime CLI
    problems: List[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def _agree(a: Sequence[Any], b: Sequence[Any]) -> int:
    a, b = np.asarray(a), np.asarray(b)
    return int(np.sum(a == b)) if a.shape == b.shape else 0


def _softmax(v: np.ndarray) -> np.ndarray:
    v = v.reshape(len(v), -1)
    e = np.exp(v - v.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _max_diff(arm: Dict[str, np.ndarray], x86: Dict[str, np.ndarray], keys: Sequence[str], how: str = "abs") -> float:
    """max |a - b| over keys; how="rel": divided by max |b| of each output; how="prob": of the softmaxes."""
    worst = 0.0
    for k in keys:
        a, b = np.asarray(arm[k], dtype=np.float64), np.asarray(x86[k], dtype=np.float64)
        if a.shape != b.shape:
            return float("inf")
        if not a.size:
            continue
        if how == "prob":
            a, b = _softmax(a), _softmax(b)
        d = float(np.max(np.abs(a - b)))
        worst = max(worst, d / max(float(np.max(np.abs(b))), 1e-30) if how == "rel" else d)
    return worst


def compare(precision: str, reference: str, exit_names: Sequence[str], arm: Dict[str, Any],
            x86: Dict[str, Any]) -> Comparison:
    """arm/x86: {"early": runtime JSON, "full": runtime JSON (--full-depth), "dump": dump_outputs arrays}."""
    n = len(x86["early"]["predictions"])
    preds = {m: _agree(arm[m]["predictions"], x86[m]["predictions"]) for m in ("early", "full")}
    preds["dump"] = _agree(arm["dump"]["early/predictions"], x86["dump"]["early/predictions"])
    exits = {m: _agree(arm[m]["exits"], x86[m]["exits"]) for m in ("early", "full")}
    exits["dump"] = _agree(arm["dump"]["early/exits"], x86["dump"]["early/exits"])
    keys = [k for k in x86["dump"] if k.startswith("full/")]
    missing = sorted(set(keys) ^ set(k for k in arm["dump"] if k.startswith("full/")))
    exit_keys = [k for k in keys if k.rsplit("/", 1)[1] in exit_names]
    carried = [k for k in keys if k not in exit_keys]
    problems = []
    if missing:
        problems.append("outputs present on one side only: {}".format(", ".join(missing)))
        exit_keys = [k for k in exit_keys if k not in missing]
        carried = [k for k in carried if k not in missing]
    outs = exit_keys + ["early/outputs"]
    max_exit, rel, prob = (_max_diff(arm["dump"], x86["dump"], outs, how) for how in ("abs", "rel", "prob"))
    for what, counts in (("predictions", preds), ("exit indices", exits)):
        for mode, same in counts.items():
            if same != n:
                problems.append("{} differ on {} of {} samples ({})".format(what, n - same, n, mode))
    if precision == "float32" and not prob <= FLOAT_TOL:
        problems.append("class probabilities differ by up to {:.3g} > {:g}".format(prob, FLOAT_TOL))
    if precision == "float32" and not rel <= FLOAT_TOL:
        problems.append("exit outputs differ by up to {:.3g} of their largest magnitude > {:g}".format(rel, FLOAT_TOL))
    return Comparison(precision, reference, n, preds, exits, max_exit, rel, prob,
                      _max_diff(arm["dump"], x86["dump"], carried),
                      {"arm64": arm["early"]["accuracy"], "x86": x86["early"]["accuracy"]}, problems)


def table(rows: Sequence[Comparison], judged: bool = True) -> List[str]:
    head = ("precision", "x86 reference", "same predictions", "same exits", "max|d logits|", "rel. max|d|",
            "max|d prob|", "max|d carried|",
            "accuracy arm64/x86", "verdict")
    body = []
    for c in rows:
        body.append((c.precision, c.reference,
                     "{}/{}/{} of {}".format(c.same_predictions["early"], c.same_predictions["full"],
                                            c.same_predictions["dump"], c.n),
                     "{}/{}/{} of {}".format(c.same_exits["early"], c.same_exits["full"], c.same_exits["dump"], c.n),
                     "{:.3g}".format(c.max_exit_diff), "{:.3g}".format(c.max_exit_rel), "{:.3g}".format(c.max_prob_diff),
                     "{:.3g}".format(c.max_carried_diff),
                     "{}/{}".format(c.accuracy["arm64"], c.accuracy["x86"]),
                     ("ok" if c.ok else "MISMATCH") if judged else "not judged"))
    widths = [max(len(str(r[i])) for r in body + [head]) for i in range(len(head))]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    lines = [fmt.format(*head)] + [fmt.format(*r) for r in body]
    if judged:
        lines.append("(same predictions / exits: early-exit run / full-depth run of `python -m edgekit.runtime`,"
                     " then the early-exit run of dump_outputs.py. float32 passes with rel. max|d| (each exit"
                     " output's max |d| / its max |x86|) and max|d prob| (softmax) <= {:g}; int8 on identical"
                     " predictions and exits)".format(FLOAT_TOL))
    if judged:
        for c in rows:
            lines += ["  {} vs {}: {}".format(c.precision, c.reference, p) for p in c.problems]
    return lines
