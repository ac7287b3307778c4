"""The pruning budgets (the registry): what `--prune-budget` may name, and the cost model each builds."""
from typing import Callable, Dict

from edgekit.convert.pruning.cost import CostModel, flops_cost, params_cost
from edgekit.convert.pruning.latency import latency_cost

BUDGETS: Dict[str, Callable[..., CostModel]] = {
    "flops": flops_cost,
    "params": params_cost,
    "latency": latency_cost,
}
