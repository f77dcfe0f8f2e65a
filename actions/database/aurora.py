"""Aurora point-in-time recovery: restore the cluster, recreate its writer, swap clusters.

- RestoreDBClusterToPointInTime makes a new cluster without instances (the API reference:
  "you must ... create DB instances for the restored DB cluster"), carrying the source
  cluster's settings (`rds.cluster_restore_request`). What the restore request cannot carry
  is given after it: the maintenance window and a master password managed in Secrets Manager
  (ModifyDBCluster, `rds.cluster_follow_up`), the IAM roles (AddRoleToDBCluster). Then the
  writer and each reader are created with CreateDBInstance as the live cluster's instances
  are (`rds.member_request`: class, AZ, promotion tier, monitoring ...), writer first. All
  are waited for. The readers' names derive from the chosen time like the writer's.
- The swap renames clusters (ModifyDBCluster NewDBClusterIdentifier, ApplyImmediately): the
  live cluster aside to `<cluster>-pre-rollback-<time>`, waiting until it is available
  under its new name, then the restored one into the live name, waiting again; the cluster
  endpoint follows the identifier. Nothing is deleted.
- Resume: the restore remembers (ctx.memory) that it was started, so a resumed step only
  waits; the writer is created only when it does not exist yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from actions.base import PermanentError, PlanningError, StepContext, StepResult, TemporaryError
from actions.clock import utcnow
from actions.database.names import iso
from actions.database.params import RdsInstance
from actions.database.rds import (
    RDS_FAILED,
    aside_name,
    cluster_follow_up,
    cluster_restore_request,
    describe_cluster,
    describe_instance,
    member_request,
    missing_roles,
    rds_client,
    rds_errors,
    rds_stamp,
    wait_available,
)

if TYPE_CHECKING:
    from mypy_boto3_rds import RDSClient


def cluster_window(client: RDSClient, cluster_id: str) -> tuple[datetime, datetime] | None:
    """Return the cluster's (earliest, latest) restorable times."""
    found = describe_cluster(client, cluster_id)
    if found is None:
        raise PlanningError(f"Aurora cluster {cluster_id} does not exist")
    earliest, latest = found.get("EarliestRestorableTime"), found.get("LatestRestorableTime")
    if earliest is None or latest is None:
        return None
    return earliest.astimezone(UTC), latest.astimezone(UTC)


def readers(cluster: dict[str, Any], writer: str) -> list[str]:
    """The cluster's instances other than `writer`, by promotion tier then name."""
    members = [
        m for m in cluster.get("DBClusterMembers") or [] if m["DBInstanceIdentifier"] != writer
    ]
    return [
        m["DBInstanceIdentifier"]
        for m in sorted(
            members, key=lambda m: (m.get("PromotionTier", 1), m["DBInstanceIdentifier"])
        )
    ]


def wait_cluster(client: RDSClient, cluster_id: str, ctx: StepContext, *, poll: float) -> None:
    """Poll until the cluster is available; TemporaryError when the deadline cuts in."""
    while True:
        found = describe_cluster(client, cluster_id)
        status = found.get("Status", "unknown") if found else "not found"
        if status == "available":
            return
        if status in RDS_FAILED:
            raise PermanentError(f"Aurora cluster {cluster_id} is {status}")
        if ctx.remaining() <= poll:
            raise TemporaryError(f"Aurora cluster {cluster_id} is still {status}", delay=poll)
        ctx.emit(f"Aurora cluster {cluster_id} is {status}")
        time.sleep(poll)


@dataclass
class AuroraRestoreToTime:
    """Restore an Aurora cluster to a time as a new cluster and recreate its writer."""

    rds: RdsInstance
    restored_cluster: str
    restored_writer: str
    restore_time: datetime
    timeout: float
    name = "database.aurora_restore"
    idempotent = True

    def describe(self) -> str:
        """Say which cluster is restored to when, and which writer is made."""
        return (
            f"Restore Aurora cluster {self.rds.cluster_id} to {iso(self.restore_time)} as new "
            f"cluster {self.restored_cluster} (restore_db_cluster_to_point_in_time, the "
            "source's security groups, subnet group, parameter and option groups, tags, "
            "deletion protection, IAM auth, KMS key, backup window), give it the maintenance "
            "window and a master password managed in Secrets Manager (modify_db_cluster: a new "
            "secret of its own, so whatever reads the old cluster's secret must be pointed at "
            "the new one) and its IAM roles (add_role_to_db_cluster), then create its writer "
            f"{self.restored_writer} as {self.rds.instance_id} is and each reader as "
            f"<reader>-pitr-{rds_stamp(self.restore_time)} as that reader is "
            "(create_db_instance: class, AZ, promotion tier, parameter group, monitoring, "
            "Performance Insights, maintenance window, CA, tags), waiting for all; "
            f"{self.rds.cluster_id} is not touched"
        )

    def spec(self) -> dict[str, Any]:
        """Return the JSON that rebuilds this step."""
        return {
            "restored_cluster": self.restored_cluster,
            "restored_writer": self.restored_writer,
            "restore_time": self.restore_time.isoformat(),
        }

    def run(self, ctx: StepContext) -> StepResult:
        """Start the cluster restore once, wait; carry what it could not; create the writer
        and the readers that are not there yet, wait."""
        assert self.rds.cluster_id is not None
        with rds_errors(f"restoring cluster {self.rds.cluster_id}"):
            client = rds_client(self.rds.aws)
            key = f"database.aurora_restore:{self.restored_cluster}"
            if not ctx.memory.get(key):
                self._start(client)
                ctx.memory[key] = True
            poll = self.rds.poll_interval
            wait_cluster(client, self.restored_cluster, ctx, poll=poll)
            source = describe_cluster(client, self.rds.cluster_id)
            if source is None:
                raise PermanentError(f"Aurora cluster {self.rds.cluster_id} does not exist")
            carried = self._carry(client, source)
            wait_cluster(client, self.restored_cluster, ctx, poll=poll)
            made = self._members(client, source)
            for instance in made:
                wait_available(client, instance, ctx, poll=poll)
        return StepResult(
            summary=f"Aurora cluster {self.restored_cluster} with writer {self.restored_writer} "
            f"and {len(made) - 1} reader(s) is available, restored to {iso(self.restore_time)}",
            output="\n".join(f"carried from {self.rds.cluster_id}: {c}" for c in carried),
            data={
                "restored_cluster": self.restored_cluster,
                "writer": self.restored_writer,
                "readers": made[1:],
            },
        )

    def _carry(self, client: RDSClient, source: dict[str, Any]) -> list[str]:
        restored = describe_cluster(client, self.restored_cluster) or {}
        done = []
        request = cluster_follow_up(source, restored, identifier=self.restored_cluster)
        if request:
            client.modify_db_cluster(**request)
            carried = [k for k in request if k not in ("DBClusterIdentifier", "ApplyImmediately")]
            done.append("modify_db_cluster: " + ", ".join(carried))
        for role in missing_roles(source, restored):
            client.add_role_to_db_cluster(DBClusterIdentifier=self.restored_cluster, **role)
            done.append(f"add_role_to_db_cluster: {role['RoleArn']}")
        return done

    def _members(self, client: RDSClient, source: dict[str, Any]) -> list[str]:
        """Create the writer, then each reader, as the live ones are; return their names."""
        pairs = [(self.rds.instance_id, self.restored_writer)]
        stamp = rds_stamp(self.restore_time)
        pairs += [(r, f"{r}-pitr-{stamp}") for r in readers(source, self.rds.instance_id)]
        for live, new in pairs:
            if describe_instance(client, new) is not None:
                continue
            found = describe_instance(client, live)
            if found is None:
                raise PermanentError(f"instance {live} of {self.rds.cluster_id} does not exist")
            client.create_db_instance(
                **member_request(found, cluster=self.restored_cluster, identifier=new)
            )
        return [new for _, new in pairs]

    def _start(self, client: RDSClient) -> None:
        assert self.rds.cluster_id is not None
        if describe_cluster(client, self.restored_cluster) is not None:
            return  # started by an earlier run that stopped before remembering it
        source = describe_cluster(client, self.rds.cluster_id)
        if source is None:
            raise PermanentError(f"Aurora cluster {self.rds.cluster_id} does not exist")
        client.restore_db_cluster_to_point_in_time(
            **cluster_restore_request(
                source, target=self.restored_cluster, moment=self.restore_time
            )
        )


@dataclass
class AuroraSwap:
    """Rename the live cluster aside and the restored cluster into its place."""

    rds: RdsInstance
    restored_cluster: str
    timeout: float
    now: Callable[[], datetime] = utcnow
    name = "database.aurora_swap"
    idempotent = True

    def describe(self) -> str:
        """Say which cluster identifiers change."""
        live = self.rds.cluster_id
        return (
            f"Rename Aurora cluster {live} to {live}-pre-rollback-<time of the swap>, then "
            f"{self.restored_cluster} to {live} (modify_db_cluster, ApplyImmediately), waiting "
            "until each is available under its new name"
        )

    def spec(self) -> dict[str, Any]:
        """Return the JSON that rebuilds this step."""
        return {"restored_cluster": self.restored_cluster}

    def run(self, ctx: StepContext) -> StepResult:
        """Do whichever renames are still to do, waiting for each."""
        live = self.rds.cluster_id
        assert live is not None
        aside = aside_name(ctx, step=self.name, live=live, now=self.now)
        poll = self.rds.poll_interval
        with rds_errors(f"swapping {self.restored_cluster} in place of {live}"):
            client = rds_client(self.rds.aws)
            if describe_cluster(client, self.restored_cluster) is not None:
                if describe_cluster(client, aside) is None:
                    self._rename(client, live, aside)
                wait_cluster(client, aside, ctx, poll=poll)
                self._rename(client, self.restored_cluster, live)
            wait_cluster(client, live, ctx, poll=poll)
        return StepResult(
            summary=f"{self.restored_cluster} is now {live}; the previous {live} is kept as "
            f"{aside}",
            data={"aside": aside, "live": live},
        )

    def _rename(self, client: RDSClient, old: str, new: str) -> None:
        client.modify_db_cluster(
            DBClusterIdentifier=old, NewDBClusterIdentifier=new, ApplyImmediately=True
        )
