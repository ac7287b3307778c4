"""Reading a Keras functional graph: its operation nodes in execution order, who produces each tensor, what a
tensor depends on, and manifest-safe names. Shared by splitting, exits, FLOPs and pruning."""
import re
from typing import Dict, List, Sequence


def sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def graph_nodes(model) -> List[object]:
    """The model's operation nodes in execution order (deepest first, as Keras runs them)."""
    nodes = []
    for depth in sorted(model._nodes_by_depth.keys(), reverse=True):
        for node in model._nodes_by_depth[depth]:
            if node.operation is not None and not node.is_input:
                nodes.append(node)
    return nodes


def producer_map(nodes: Sequence[object]) -> Dict[int, object]:
    return {id(t): node for node in nodes for t in node.outputs}


def ancestor_nodes(tensor, producers: Dict[int, object]) -> List[object]:
    seen, stack, out = set(), [tensor], []
    while stack:
        t = stack.pop()
        node = producers.get(id(t))
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        out.append(node)
        stack.extend(node.input_tensors)
    return out
