"""Split a multi-exit Keras functional model at its exits into one sub-model per stage.

Stage k maps the tensors carried from earlier stages (its frontier) to the next frontier plus exit k.
The frontier can hold several tensors, e.g. when a skip connection crosses the cut.
"""
from typing import Dict, List, Sequence

import keras
import numpy as np
from keras import tree

from edgekit.convert.flops import model_flops
from edgekit.convert.keras_graph import ancestor_nodes, graph_nodes, producer_map, sanitize
from edgekit.convert.stages import Stage
from edgekit.errors import ModelError
from edgekit.manifest import TensorSpec


def _tensor_name(t, producers: Dict[int, object], input_names: Dict[int, str]) -> str:
    if id(t) in input_names:
        return input_names[id(t)]
    node = producers[id(t)]
    idx = [id(o) for o in node.outputs].index(id(t))
    base = "c_" + sanitize(node.operation.name)
    return base if len(node.outputs) == 1 else "{}_{}".format(base, idx)


def split_model(model, exit_names: Sequence[str] = ()) -> List[Stage]:
    """One stage per model output, in the order of model.outputs (exits in depth order)."""
    outputs = list(model.outputs)
    if len(outputs) < 2:
        raise ModelError("model {!r} has a single output and no exits; a multi-exit model has one output per exit "
                         "in depth order (attach exits first)".format(model.name))
    names = list(exit_names) or [sanitize(n) for n in model.output_names]
    outputs, names, scores = _pair_scores(outputs, names)
    nodes = graph_nodes(model)
    producers = producer_map(nodes)
    input_names = {id(t): sanitize(t.name) for t in model.inputs}
    order = {id(n): i for i, n in enumerate(nodes)}

    owner: Dict[int, int] = {}                      # node id -> stage index
    for k, out in enumerate(outputs):
        for t in [out] + ([scores[k][0]] if k in scores else []):
            for node in ancestor_nodes(t, producers):
                owner.setdefault(id(node), k)
    stage_nodes = [[n for n in nodes if owner.get(id(n)) == k] for k in range(len(outputs))]
    if any(not sn for sn in stage_nodes[1:]):
        raise ModelError("exits must be in depth order with work between them; outputs {} add nothing after the "
                         "exit before them".format([names[k] for k, sn in enumerate(stage_nodes) if k and not sn]))

    produced_by: Dict[int, int] = {id(t): -1 for t in model.inputs}
    tensors: Dict[int, object] = {id(t): t for t in model.inputs}
    for k, sn in enumerate(stage_nodes):
        for node in sn:
            for t in node.outputs:
                produced_by[id(t)] = k
                tensors[id(t)] = t
    last_use: Dict[int, int] = {}                   # tensor id -> last stage that consumes it
    for k, sn in enumerate(stage_nodes):
        for node in sn:
            for t in node.input_tensors:
                last_use[id(t)] = max(last_use.get(id(t), -1), k)

    stages = []
    for k, sn in enumerate(stage_nodes):
        ins = [tid for tid, p in produced_by.items() if p < k and last_use.get(tid, -1) >= k]
        carried = [tid for tid, p in produced_by.items() if p <= k and last_use.get(tid, -1) > k]
        key = lambda tid: (produced_by[tid], order.get(id(producers.get(tid)), -1), tid)  # noqa: E731
        ins.sort(key=key)
        carried.sort(key=key)
        stages.append(_build_stage(k, sn, [tensors[t] for t in ins], [tensors[t] for t in carried],
                                   outputs[k], names[k], producers, input_names, scores.get(k)))
    return stages


def _pair_scores(outputs: List[object], names: List[str]):
    """Outputs named <exit>_score are learned exit scores: they travel with their exit's stage."""
    index = {n: i for i, n in enumerate(names)}
    paired = {index[n[:-len("_score")]]: i for i, n in enumerate(names)
              if n.endswith("_score") and n[:-len("_score")] in index}
    keep = [i for i in range(len(names)) if i not in paired.values()]
    if len(keep) < 2:
        raise ModelError("model has {} exit(s) besides its score outputs; a multi-exit model needs at least two "
                         "exits".format(len(keep)))
    scores = {j: (outputs[paired[i]], names[paired[i]]) for j, i in enumerate(keep) if i in paired}
    return [outputs[i] for i in keep], [names[i] for i in keep], scores


def _build_stage(k: int, nodes, ins, carried, exit_tensor, exit_name: str, producers, input_names,
                 score=None) -> Stage:
    values: Dict[int, object] = {}
    new_inputs = []
    in_names = []
    for t in ins:
        name = _tensor_name(t, producers, input_names)
        inp = keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype, name=name)
        values[id(t)] = inp
        new_inputs.append(inp)
        in_names.append(name)
    for node in nodes:
        args, kwargs = node.arguments.fill_in(values)
        result = node.operation(*args, **kwargs)
        for x, y in zip(node.outputs, tree.flatten(result)):
            values[id(x)] = y
    out = {}
    carried_names = []
    for t in carried:
        name = _tensor_name(t, producers, input_names)
        value = values[id(t)]
        if any(value is i for i in new_inputs):     # passes through this stage untouched
            value = keras.layers.Identity(name="pass_{}_{}".format(k, name))(value)
        out[name] = value
        carried_names.append(name)
    out[exit_name] = values[id(exit_tensor)]
    if score is not None:
        out[score[1]] = values[id(score[0])]
    sub = keras.Model(new_inputs, out, name="stage_{}".format(k))
    names = carried_names + [exit_name] + ([] if score is None else [score[1]])
    return Stage(index=k, model=sub, input_names=tuple(in_names), carried_names=tuple(carried_names),
                 exit_name=exit_name, inputs=tuple(_spec(t, t.name) for t in sub.inputs),
                 outputs=tuple(_spec(sub.output[n], n) for n in names), flops=model_flops(sub),
                 score_name=None if score is None else score[1])


def _spec(t, name: str) -> TensorSpec:
    return TensorSpec(name=name, shape=(None,) + tuple(int(d) for d in t.shape[1:]))


def exit_outputs(model, stages: Sequence[Stage], x: np.ndarray) -> List[np.ndarray]:
    """The original model's exit outputs on x, in stage order (score outputs left out)."""
    outs = model([x], training=False)
    by_name = {sanitize(n): np.asarray(o) for n, o in zip(model.output_names, outs)}
    return [by_name[st.exit_name] for st in stages]


def run_stages_keras(stages: Sequence[Stage], x: np.ndarray, input_name: str) -> List[np.ndarray]:
    """Chain the float sub-models; returns every exit output. Used for parity checks and calibration."""
    env = {input_name: x}
    exits = []
    for st in stages:
        res = {k: np.asarray(v) for k, v in st.model([env[n] for n in st.input_names], training=False).items()}
        env.update(res)
        exits.append(res[st.exit_name])
    return exits


def stage_inputs(stages: Sequence[Stage], x: np.ndarray, input_name: str) -> List[Dict[str, np.ndarray]]:
    """For each stage, the float values of its inputs on x (representative data for quantization)."""
    env = {input_name: x}
    feeds = []
    for st in stages:
        feed = {n: env[n] for n in st.input_names}
        feeds.append(feed)
        res = st.model([feed[n] for n in st.input_names], training=False)
        env.update({k: np.asarray(v) for k, v in res.items()})
    return feeds
