"""Blue-green and canary rollback on an ALB: the whole traffic model, switched by weights only.

Modules: `params` (the target's parameters), `traffic` (listeners and rules
as ordered action lists; only forward weights change), `stable` (which colour
a rollback goes to, and why), `health` (target-health gates that hold on real
AWS), `steps` (the switch, its verification and switch-back, and the undo),
`target` (BlueGreenTarget). Each module's docstring gives its design
reasoning.

Only the light `params` module is imported with the package; every other name
is imported where it is first used (`actions.exports.lazy`), so reading the
config file imports no client (issue 16, point 6).
"""

from typing import TYPE_CHECKING

from actions.exports import lazy
from actions.loadbalancer.params import COLOURS, BlueGreenParams, Colour, Side

if TYPE_CHECKING:
    from actions.loadbalancer.stable import DEPLOYED_AT_TAG, LAST_HEALTHY_TAG
    from actions.loadbalancer.steps import RestoreTraffic, SwitchTraffic, memory_key
    from actions.loadbalancer.target import BlueGreenTarget
    from actions.loadbalancer.traffic import Route, switched

__getattr__ = lazy(
    __name__,
    {
        "DEPLOYED_AT_TAG": "stable",
        "LAST_HEALTHY_TAG": "stable",
        "RestoreTraffic": "steps",
        "SwitchTraffic": "steps",
        "memory_key": "steps",
        "BlueGreenTarget": "target",
        "Route": "traffic",
        "switched": "traffic",
    },
)

__all__ = [
    "COLOURS",
    "DEPLOYED_AT_TAG",
    "LAST_HEALTHY_TAG",
    "BlueGreenParams",
    "BlueGreenTarget",
    "Colour",
    "RestoreTraffic",
    "Route",
    "Side",
    "SwitchTraffic",
    "memory_key",
    "switched",
]
