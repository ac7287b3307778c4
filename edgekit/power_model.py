"""A board's power model and the names of the energy meters a board profile may name.

Shared by the board profiles (targets.py, on the laptop) and the bench (on the board, where the bundle's manifest
carries the model): standard library only, Python 3.8 syntax. The meters themselves live in edgekit/bench/meters/,
keyed by these names.
"""
import math
from dataclasses import dataclass
from typing import Any, Dict

from edgekit.errors import ConfigError

# Every energy meter, by the name used in targets/*.yaml `energy_meter` and in `--meter`. Order = preference among
# real sensors for `auto` (after the profile's own meter); the power model, an estimate, is always last.
METER_NAMES = ("rapl", "jetson-ina3221", "rpi5-pmic", "usb-serial", "power-model")
POWER_MODEL = "power-model"


@dataclass(frozen=True)
class PowerModel:
    """Idle and fully active watts of a board, and where the figures come from (targets/*.yaml `power_model`;
    on the board, the manifest's `energy` section or the profile the laptop hands over)."""
    idle_w: float
    active_w: float
    source: str

    def to_dict(self) -> Dict[str, Any]:
        return {"idle_w": self.idle_w, "active_w": self.active_w, "source": self.source}

    @classmethod
    def from_dict(cls, v: Any, where: str) -> "PowerModel":
        """Validated: exactly {idle_w, active_w, source}, finite watts with 0 <= idle_w <= active_w."""
        if not isinstance(v, dict) or set(v) != {"idle_w", "active_w", "source"}:
            raise ConfigError("{}: expected {{idle_w, active_w, source}}, got {!r}".format(where, v))
        idle, active = _watts(v["idle_w"], where + ".idle_w"), _watts(v["active_w"], where + ".active_w")
        if active < idle:
            raise ConfigError("{}: active_w {:g} is below idle_w {:g}; allowed: 0 <= idle_w <= active_w".format(
                where, active, idle))
        source = v["source"]
        if not isinstance(source, str) or not source.strip():
            raise ConfigError("{}.source: expected a non-empty string, got {!r}".format(where, source))
        return cls(idle, active, source)


def _watts(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v or not math.isfinite(v):
        raise ConfigError("{}: expected a finite non-negative number, got {!r}".format(where, v))
    return float(v)
