"""The autoscalers that fight a rollback: KEDA's operator and the HorizontalPodAutoscaler.

KEDA (keda.sh/v1alpha1 ScaledObject; behaviour as documented at
keda.sh/docs/2.x/concepts/scaling-deployments/#pause-autoscaling, and
kedacore/keda controllers/keda/scaledobject_controller.go): while a
ScaledObject is not paused, KEDA scales its target (spec.scaleTargetRef,
a Deployment unless `kind` says otherwise) to what its triggers ask for,
between minReplicaCount (default 0) and maxReplicaCount (default 100), from
zero too: that is what brings stopped workers back. The annotation
`autoscaling.keda.sh/paused-replicas: "N"` scales the target to N and stops
autoscaling; `autoscaling.keda.sh/paused: "true"` stops it at the current
count; paused-replicas wins when both are set. What the triggers ask for is a
test knob (`demand`), since there are no metrics here.

HPA (kubernetes pkg/controller/podautoscaler/horizontal.go,
reconcileAutoscaler): when the target's scale.spec.replicas is 0 and
minReplicas is not 0, autoscaling is disabled (condition ScalingActive=False,
reason ScalingDisabled) and nothing is scaled. Otherwise its metric
recommendation (the `demand` knob, else the current count) is stabilized and
then clamped:

- every reconcile records the recommendation with its time, starting from the
  current count (recordInitialRecommendation);
- without spec.behavior (normalizeDesiredReplicas, stabilizeRecommendation):
  the highest recommendation of the downscale window (the controller's
  --horizontal-pod-autoscaler-downscale-stabilization, 5 minutes by default),
  then clamped to [minReplicas, min(maxReplicas, max(2 * current, 4))]
  (convertDesiredReplicasWithRules, calculateScaleUpLimit);
- with spec.behavior (normalizeDesiredReplicasWithBehaviors,
  stabilizeRecommendationWithBehaviors): the current count brought within
  [lowest recommendation of the scale-up window, highest of the scale-down
  window], the windows being behavior.scaleUp / scaleDown
  .stabilizationWindowSeconds (API defaults 0 and 300: autoscaling/v2
  defaults.go GenerateHPAScaleUpRules / GenerateHPAScaleDownRules), then
  clamped to [minReplicas, maxReplicas]. The rate policies
  (convertDesiredReplicasWithBehaviorRate) are not modelled.

Time is the stand-in's clock, so a test moves it (`advance_clock`) instead of
waiting five minutes.
"""

from __future__ import annotations

from sandbox.kubernetes.objects import Obj, timestamp
from sandbox.kubernetes.store import Store

PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"
PAUSED = "autoscaling.keda.sh/paused"

Key = tuple[str, str]
DOWNSCALE_WINDOW = 300.0
"""kube-controller-manager's --horizontal-pod-autoscaler-downscale-stabilization default."""


class Autoscalers:
    """KEDA's operator and the HPA controller, over the shared Store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.demand: dict[Key, int] = {}
        self.recommendations: dict[Key, list[tuple[float, int]]] = {}

    def sync_all(self) -> None:
        """Reconcile every ScaledObject and HPA once."""
        with self.store.cond:
            for scaled in self.store.list("scaledobjects"):
                self._keda(scaled)
            for hpa in self.store.list("horizontalpodautoscalers"):
                self._hpa(hpa)

    def _target(self, namespace: str, ref: Obj) -> Obj | None:
        if ref.get("kind", "Deployment") != "Deployment":
            return None
        return self.store.find("deployments", namespace, ref.get("name", ""))

    def _scale(self, target: Obj, replicas: int) -> None:
        if target["spec"]["replicas"] != replicas:
            target["spec"]["replicas"] = replicas
            self.store.update("deployments", target, check_version=False)

    def _keda(self, scaled: Obj) -> None:
        meta = scaled["metadata"]
        target = self._target(meta["namespace"], scaled["spec"].get("scaleTargetRef") or {})
        if target is None:
            return
        annotations = meta.get("annotations") or {}
        paused_replicas = annotations.get(PAUSED_REPLICAS)
        if paused_replicas is not None and str(paused_replicas).isdigit():
            self._scale(target, int(paused_replicas))
            return
        if str(annotations.get(PAUSED, "")).lower() == "true":
            return
        wanted = self.demand.get((meta["namespace"], meta["name"]))
        if wanted is None:
            return
        low = int(scaled["spec"].get("minReplicaCount", 0))
        high = int(scaled["spec"].get("maxReplicaCount", 100))
        self._scale(target, max(low, min(high, wanted)))

    def _hpa(self, hpa: Obj) -> None:
        meta = hpa["metadata"]
        target = self._target(meta["namespace"], hpa["spec"].get("scaleTargetRef") or {})
        if target is None:
            return
        current = int(target["spec"]["replicas"])
        low = int(hpa["spec"].get("minReplicas", 1))
        if current == 0 and low != 0:
            self._condition(hpa, "False", "ScalingDisabled", desired=0, current=0)
            return
        key = (meta["namespace"], meta["name"])
        wanted = self.demand.get(key, current)
        now = self.store.clock()
        history = self.recommendations.setdefault(key, [(now, current)])
        high = int(hpa["spec"]["maxReplicas"])
        behavior = hpa["spec"].get("behavior")
        if behavior is None:
            stabilized = max([wanted] + [r for at, r in history if at >= now - DOWNSCALE_WINDOW])
            high = min(high, max(2 * current, 4))
            window = DOWNSCALE_WINDOW
        else:
            up = _window(behavior, "scaleUp", 0.0)
            window = _window(behavior, "scaleDown", DOWNSCALE_WINDOW)
            floor = min([wanted] + [r for at, r in history if at > now - up])
            ceiling = max([wanted] + [r for at, r in history if at > now - window])
            stabilized = min(max(current, floor), ceiling)
            window = max(window, up)
        # Record this recommendation, in place of one both windows have left behind.
        kept = [(at, r) for at, r in history if at >= now - window]
        self.recommendations[key] = [*kept, (now, wanted)]
        desired = max(low, min(high, stabilized))
        self._scale(target, desired)
        self._condition(hpa, "True", "ValidMetricFound", desired=desired, current=current)

    def _condition(self, hpa: Obj, status: str, reason: str, *, desired: int, current: int) -> None:
        state = hpa.setdefault("status", {})
        conditions = state.setdefault("conditions", [])
        now = next((c for c in conditions if c["type"] == "ScalingActive"), None)
        same = now is not None and (now["status"], now["reason"]) == (status, reason)
        if same and (state.get("desiredReplicas"), state.get("currentReplicas")) == (
            desired,
            current,
        ):
            return
        state.update(desiredReplicas=desired, currentReplicas=current)
        if same:
            self.store.update("horizontalpodautoscalers", hpa, check_version=False)
            return
        current_condition = now
        message = (
            "scaling is disabled since the replica count of the target is zero"
            if reason == "ScalingDisabled"
            else "the HPA was able to successfully calculate a replica count"
        )
        entry = {
            "type": "ScalingActive",
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": timestamp(self.store.clock()),
        }
        state["conditions"] = [c for c in conditions if c is not current_condition] + [entry]
        self.store.update("horizontalpodautoscalers", hpa, check_version=False)


def _window(behavior: Obj, direction: str, default: float) -> float:
    rules = behavior.get(direction) or {}
    seconds = rules.get("stabilizationWindowSeconds")
    return default if seconds is None else float(seconds)
