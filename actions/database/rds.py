"""Amazon RDS point-in-time recovery: restore to a new instance, then swap identifiers.

- `restore_db_instance_to_point_in_time` into `<id>-pitr-<time>` (a name derived from the
  chosen time, so describe() can show it), poll until available within the step's deadline
  (TemporaryError when the deadline cuts the wait short), then swap identifiers. Verification
  queries against RDS endpoints are configurable (`RdsInstance.verify`, default on): moto's
  instances have no PostgreSQL behind them, so its tests switch it off.
- Nothing is destroyed: the live instance is renamed aside and kept, which is its own
  pre-rollback state.
- The restored instance is made as the live one was. Per the API reference, a
  RestoreDBInstanceToPointInTime request that names only source, target and time gets the
  default VPC security group, the default subnet group and parameter group, single-AZ, no
  deletion protection, no tags and the default option group. So `restore_request` copies
  every setting the request can carry from DescribeDBInstances of the source; the request
  members are those of botocore's service model (botocore/data/rds/2014-10-31/service-2.json,
  shapes RestoreDBInstanceToPointInTimeMessage and DBInstance). moto copies settings on its
  own, so the tests assert the request itself (a botocore `provide-client-params` hook).
- What the restore request cannot carry for PostgreSQL (enhanced monitoring, the
  maintenance window, Performance Insights, a master password managed in Secrets Manager,
  IAM roles) is applied to the restored instance once it is available, before the swap:
  ModifyDBInstance (`instance_follow_up`) and AddRoleToDBInstance (`missing_roles`). A
  managed master password becomes a new secret of the restored instance (RDS makes one per
  instance); the step says so before approval.
- Aurora: a cluster is restored with RestoreDBClusterToPointInTime (its settings likewise,
  from DescribeDBClusters; shape RestoreDBClusterToPointInTimeMessage), which makes a cluster
  without instances, so the writer and the readers are recreated with CreateDBInstance as the
  live ones are (shape CreateDBInstanceMessage); the swap renames clusters (ModifyDBCluster
  NewDBClusterIdentifier), waiting for each rename.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from actions.aws import aws_session
from actions.base import PermanentError, PlanningError, StepContext, StepResult, TemporaryError
from actions.clock import utcnow
from actions.database.names import first_line, iso
from actions.database.params import RdsInstance
from actions.params import AwsConnection

if TYPE_CHECKING:
    from mypy_boto3_rds import RDSClient


RDS_ID_MAX = 63
RDS_FAILED = {
    "failed",
    "incompatible-restore",
    "incompatible-parameters",
    "incompatible-network",
    "storage-full",
    "inaccessible-encryption-credentials",
    "deleting",
}
RETRYABLE_AWS = {"Throttling", "ThrottlingException", "RequestLimitExceeded", "InternalFailure"}


@contextmanager
def rds_errors(what: str, *, planning: bool = False) -> Iterator[None]:
    """Turn boto errors into runner errors (throttling and lost connections are retried).

    Not `actions.aws.aws_errors`: while planning every AWS failure is a
    PlanningError, the retried codes differ (InternalFailure, not 5xx) and any
    BotoCoreError (credentials included) is retried, as the RDS steps always did.
    """
    try:
        yield
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if planning:
            raise PlanningError(f"{what}: {first_line(error)}") from error
        if code in RETRYABLE_AWS:
            raise TemporaryError(f"{what}: {first_line(error)}", delay=5.0) from error
        raise PermanentError(f"{what}: {first_line(error)}") from error
    except BotoCoreError as error:
        if planning:
            raise PlanningError(f"{what}: {first_line(error)}") from error
        raise TemporaryError(f"{what}: {first_line(error)}", delay=5.0) from error


def rds_client(aws: AwsConnection) -> RDSClient:
    """Build an RDS client from the connection settings."""
    return aws_session(aws).client("rds", endpoint_url=aws.endpoint_url)


def describe_instance(client: RDSClient, instance_id: str) -> dict[str, Any] | None:
    """Return one instance's description, or None when there is no such instance."""
    try:
        found = client.describe_db_instances(DBInstanceIdentifier=instance_id)["DBInstances"]
    except client.exceptions.DBInstanceNotFoundFault:
        return None
    return dict(found[0]) if found else None


def restorable_window(client: RDSClient, instance_id: str) -> tuple[datetime, datetime] | None:
    """Return (earliest, latest) restorable times, or None when PITR is not possible.

    When EarliestRestorableTime is absent but automated backups are on (moto does this),
    the window starts at the instance's creation; AWS itself still refuses a time before
    its first backup, and the restore step reports that refusal.
    """
    found = describe_instance(client, instance_id)
    if found is None:
        raise PlanningError(f"RDS instance {instance_id} does not exist")
    latest = found.get("LatestRestorableTime")
    earliest = found.get("EarliestRestorableTime")
    if earliest is None and found.get("BackupRetentionPeriod", 0) > 0:
        earliest = found.get("InstanceCreateTime")
    if earliest is None or latest is None:
        return None
    return earliest.astimezone(UTC), latest.astimezone(UTC)


def wait_available(
    client: RDSClient, instance_id: str, ctx: StepContext, *, poll: float
) -> dict[str, Any]:
    """Poll until the instance is available; TemporaryError when the deadline cuts in."""
    while True:
        found = describe_instance(client, instance_id)
        status = found.get("DBInstanceStatus", "unknown") if found else "not found"
        if found is not None and status == "available":
            return found
        if status in RDS_FAILED:
            raise PermanentError(f"RDS instance {instance_id} is {status}")
        if ctx.remaining() <= poll:
            raise TemporaryError(f"RDS instance {instance_id} is still {status}", delay=poll)
        ctx.emit(f"RDS instance {instance_id} is {status}")
        time.sleep(poll)


def rds_stamp(moment: datetime) -> str:
    """Format `moment` for RDS identifiers (letters, digits, hyphens only)."""
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S")


def aside_name(ctx: StepContext, *, step: str, live: str, now: Callable[[], datetime]) -> str:
    """The name a swap renames the live instance or cluster aside to: chosen once and kept in
    the step's memory, so a resumed swap looks for the same name."""
    key = f"{step}:{live}"
    aside: str = ctx.memory.get(key) or f"{live}-pre-rollback-{rds_stamp(now())}"
    ctx.memory[key] = aside
    return aside


def _present(pairs: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in pairs.items() if value not in (None, [], {})}


def _chosen(name: str | None) -> str | None:
    """A group name the source chose; None for AWS's default groups (`default:...`,
    `default.<family>`), which a restore gets anyway when the name is left out."""
    return None if name is None or name.startswith(("default:", "default.")) else name


def restore_request(
    source: dict[str, Any], *, target: str, moment: datetime, instance_class: str | None
) -> dict[str, Any]:
    """Build RestoreDBInstanceToPointInTime's parameters carrying the source's settings."""
    groups = source.get("DBParameterGroups") or []
    options = source.get("OptionGroupMemberships") or []
    return _present(
        {
            "SourceDBInstanceIdentifier": source["DBInstanceIdentifier"],
            "TargetDBInstanceIdentifier": target,
            "RestoreTime": moment,
            "DBInstanceClass": instance_class or source.get("DBInstanceClass"),
            "Port": (source.get("Endpoint") or {}).get("Port") or source.get("DbInstancePort"),
            "AvailabilityZone": None if source.get("MultiAZ") else source.get("AvailabilityZone"),
            "DBSubnetGroupName": (source.get("DBSubnetGroup") or {}).get("DBSubnetGroupName"),
            "MultiAZ": source.get("MultiAZ"),
            "PubliclyAccessible": source.get("PubliclyAccessible"),
            "AutoMinorVersionUpgrade": source.get("AutoMinorVersionUpgrade"),
            "LicenseModel": source.get("LicenseModel"),
            "OptionGroupName": _chosen(options[0]["OptionGroupName"] if options else None),
            "CopyTagsToSnapshot": source.get("CopyTagsToSnapshot"),
            "Tags": [dict(t) for t in source.get("TagList") or []],
            "StorageType": source.get("StorageType"),
            "Iops": source.get("Iops"),
            "StorageThroughput": source.get("StorageThroughput"),
            "AllocatedStorage": source.get("AllocatedStorage"),
            "MaxAllocatedStorage": source.get("MaxAllocatedStorage"),
            "VpcSecurityGroupIds": [
                g["VpcSecurityGroupId"] for g in source.get("VpcSecurityGroups") or []
            ],
            "EnableIAMDatabaseAuthentication": source.get("IAMDatabaseAuthenticationEnabled"),
            "EnableCloudwatchLogsExports": source.get("EnabledCloudwatchLogsExports"),
            "DBParameterGroupName": _chosen(groups[0]["DBParameterGroupName"] if groups else None),
            "DeletionProtection": source.get("DeletionProtection"),
            "CACertificateIdentifier": source.get("CACertificateIdentifier"),
            "BackupRetentionPeriod": source.get("BackupRetentionPeriod"),
            "PreferredBackupWindow": source.get("PreferredBackupWindow"),
        }
    )


def describe_cluster(client: RDSClient, cluster_id: str) -> dict[str, Any] | None:
    """Return one Aurora cluster's description, or None when there is no such cluster."""
    try:
        found = client.describe_db_clusters(DBClusterIdentifier=cluster_id)["DBClusters"]
    except client.exceptions.DBClusterNotFoundFault:
        return None
    return dict(found[0]) if found else None


def cluster_restore_request(
    source: dict[str, Any], *, target: str, moment: datetime
) -> dict[str, Any]:
    """Build RestoreDBClusterToPointInTime's parameters carrying the source's settings."""
    options = source.get("DBClusterOptionGroupMemberships") or []
    scaling = source.get("ServerlessV2ScalingConfiguration")
    return _present(
        {
            "SourceDBClusterIdentifier": source["DBClusterIdentifier"],
            "DBClusterIdentifier": target,
            "RestoreToTime": moment,
            "RestoreType": "full-copy",
            "Port": source.get("Port"),
            "DBSubnetGroupName": source.get("DBSubnetGroup"),
            "OptionGroupName": _chosen(options[0]["DBClusterOptionGroupName"] if options else None),
            "VpcSecurityGroupIds": [
                g["VpcSecurityGroupId"] for g in source.get("VpcSecurityGroups") or []
            ],
            "Tags": [dict(t) for t in source.get("TagList") or []],
            "KmsKeyId": source.get("KmsKeyId"),
            "EnableIAMDatabaseAuthentication": source.get("IAMDatabaseAuthenticationEnabled"),
            "BacktrackWindow": source.get("BacktrackWindow") or None,
            "EnableCloudwatchLogsExports": source.get("EnabledCloudwatchLogsExports"),
            "DBClusterParameterGroupName": _chosen(source.get("DBClusterParameterGroup")),
            "DeletionProtection": source.get("DeletionProtection"),
            "CopyTagsToSnapshot": source.get("CopyTagsToSnapshot"),
            "StorageType": source.get("StorageType"),
            "Iops": source.get("Iops"),
            "ServerlessV2ScalingConfiguration": dict(scaling) if scaling else None,
            "BackupRetentionPeriod": source.get("BackupRetentionPeriod"),
            "PreferredBackupWindow": source.get("PreferredBackupWindow"),
        }
    )


def cluster_follow_up(
    source: dict[str, Any], restored: dict[str, Any], *, identifier: str
) -> dict[str, Any]:
    """Build the ModifyDBCluster that gives the restored cluster what the restore could not:
    PreferredMaintenanceWindow and ManageMasterUserPassword are members of
    ModifyDBClusterMessage, not of RestoreDBClusterToPointInTimeMessage (botocore's
    service-2.json). Aurora's enhanced monitoring and Performance Insights are per instance
    (`member_request`); the cluster-level ones are for Multi-AZ DB clusters."""
    wanted = _present(
        {
            "PreferredMaintenanceWindow": source.get("PreferredMaintenanceWindow"),
            **_managed_secret(source, restored),
        }
    )
    if not wanted:
        return {}
    return {"DBClusterIdentifier": identifier, **wanted, "ApplyImmediately": True}


def member_request(member: dict[str, Any], *, cluster: str, identifier: str) -> dict[str, Any]:
    """Build CreateDBInstance's parameters for an instance of the new cluster (its writer or a
    reader), as the live cluster's instance is: class, AZ, promotion tier, parameter group,
    monitoring, Performance Insights, maintenance window, CA, tags (members of
    CreateDBInstanceMessage in botocore/data/rds/2014-10-31/service-2.json)."""
    groups = member.get("DBParameterGroups") or []
    interval = member.get("MonitoringInterval") or 0
    insights = bool(member.get("PerformanceInsightsEnabled"))
    return _present(
        {
            "DBInstanceIdentifier": identifier,
            "DBClusterIdentifier": cluster,
            "DBInstanceClass": member["DBInstanceClass"],
            "Engine": member["Engine"],
            "DBParameterGroupName": _chosen(groups[0]["DBParameterGroupName"] if groups else None),
            "AvailabilityZone": member.get("AvailabilityZone"),
            "PubliclyAccessible": member.get("PubliclyAccessible"),
            "AutoMinorVersionUpgrade": member.get("AutoMinorVersionUpgrade"),
            "CACertificateIdentifier": member.get("CACertificateIdentifier"),
            "PromotionTier": member.get("PromotionTier"),
            "MonitoringInterval": interval or None,
            "MonitoringRoleArn": member.get("MonitoringRoleArn") if interval else None,
            "EnablePerformanceInsights": member.get("PerformanceInsightsEnabled"),
            "PerformanceInsightsKMSKeyId": member.get("PerformanceInsightsKMSKeyId")
            if insights
            else None,
            "PerformanceInsightsRetentionPeriod": member.get("PerformanceInsightsRetentionPeriod")
            if insights
            else None,
            "PreferredMaintenanceWindow": member.get("PreferredMaintenanceWindow"),
            "Tags": [dict(t) for t in member.get("TagList") or []],
        }
    )


def _managed_secret(source: dict[str, Any], restored: dict[str, Any]) -> dict[str, Any]:
    """ManageMasterUserPassword (and its KMS key) when the source keeps its master password
    in Secrets Manager and the restored one has no secret of its own yet (none, or, as moto
    copies it, the source's own)."""
    secret = source.get("MasterUserSecret") or {}
    own = (restored.get("MasterUserSecret") or {}).get("SecretArn")
    if not secret or own not in (None, secret.get("SecretArn")):
        return {}
    return _present(
        {"ManageMasterUserPassword": True, "MasterUserSecretKmsKeyId": secret.get("KmsKeyId")}
    )


def instance_follow_up(
    source: dict[str, Any], restored: dict[str, Any], *, identifier: str
) -> dict[str, Any]:
    """Build the ModifyDBInstance that gives the restored instance what the restore could not.

    RestoreDBInstanceToPointInTimeMessage (botocore/data/rds/2014-10-31/service-2.json) has
    no MonitoringInterval, MonitoringRoleArn, PreferredMaintenanceWindow or Performance
    Insights members, and its ManageMasterUserPassword "Applies to RDS for Oracle only";
    ModifyDBInstanceMessage has them all. Empty when there is nothing to carry.
    """
    interval = source.get("MonitoringInterval") or 0
    insights = bool(source.get("PerformanceInsightsEnabled"))
    wanted = _present(
        {
            "MonitoringInterval": interval or None,
            "MonitoringRoleArn": source.get("MonitoringRoleArn") if interval else None,
            "PreferredMaintenanceWindow": source.get("PreferredMaintenanceWindow"),
            "EnablePerformanceInsights": True if insights else None,
            "PerformanceInsightsKMSKeyId": source.get("PerformanceInsightsKMSKeyId")
            if insights
            else None,
            "PerformanceInsightsRetentionPeriod": source.get("PerformanceInsightsRetentionPeriod")
            if insights
            else None,
            **_managed_secret(source, restored),
        }
    )
    if not wanted:
        return {}
    return {"DBInstanceIdentifier": identifier, **wanted, "ApplyImmediately": True}


def missing_roles(source: dict[str, Any], restored: dict[str, Any]) -> list[dict[str, str]]:
    """The IAM roles (RoleArn, FeatureName) the source has and the restored one lacks: no
    restore request carries them for an instance, so each is added after it
    (AddRoleToDBInstance / AddRoleToDBCluster)."""
    have = {r.get("RoleArn") for r in restored.get("AssociatedRoles") or []}
    return [
        {k: r[k] for k in ("RoleArn", "FeatureName") if r.get(k)}
        for r in source.get("AssociatedRoles") or []
        if r.get("RoleArn") not in have
    ]


def carry_to_instance(client: RDSClient, *, source_id: str, restored_id: str) -> list[str]:
    """Give the restored instance the source's settings the restore could not carry; say which."""
    source = describe_instance(client, source_id)
    restored = describe_instance(client, restored_id)
    if source is None or restored is None:
        raise PermanentError(f"RDS instance {source_id if source is None else restored_id} is gone")
    done = []
    request = instance_follow_up(source, restored, identifier=restored_id)
    if request:
        client.modify_db_instance(**request)
        carried = [k for k in request if k not in ("DBInstanceIdentifier", "ApplyImmediately")]
        done.append("modify_db_instance: " + ", ".join(carried))
    for role in missing_roles(source, restored):
        client.add_role_to_db_instance(
            DBInstanceIdentifier=restored_id,
            RoleArn=role["RoleArn"],
            FeatureName=role.get("FeatureName", ""),
        )
        done.append(f"add_role_to_db_instance: {role['RoleArn']}")
    return done


@dataclass
class RdsRestoreToTime:
    """Restore an RDS instance to a point in time as a new instance and wait for it."""

    rds: RdsInstance
    restored_id: str
    restore_time: datetime
    timeout: float
    name = "database.rds_restore"
    idempotent = True

    def describe(self) -> str:
        """Say which instance is restored to which time under which name."""
        return (
            f"Restore RDS instance {self.rds.instance_id} to {iso(self.restore_time)} as new "
            f"instance {self.restored_id} (restore_db_instance_to_point_in_time) with the "
            "source's settings (security groups, subnet, parameter and option groups, "
            "Multi-AZ, storage type and IOPS, deletion protection, tags, IAM auth, CA, backup "
            "window), wait until it is available, then give it what the restore cannot carry "
            "(modify_db_instance: enhanced monitoring, maintenance window, Performance "
            "Insights, and a master password managed in Secrets Manager: a new secret of its "
            "own, so whatever reads the old instance's secret must be pointed at the new one; "
            f"add_role_to_db_instance: its IAM roles); {self.rds.instance_id} is not touched"
        )

    def spec(self) -> dict[str, Any]:
        """Return the JSON that rebuilds this step."""
        return {"restored_id": self.restored_id, "restore_time": self.restore_time.isoformat()}

    def run(self, ctx: StepContext) -> StepResult:
        """Start the restore once (remembered), then wait within the deadline."""
        with rds_errors(f"restoring {self.rds.instance_id}"):
            return self._run(ctx)

    def _run(self, ctx: StepContext) -> StepResult:
        client = rds_client(self.rds.aws)
        key = f"database.rds_restore:{self.restored_id}"
        if not ctx.memory.get(key):
            self._start(client)
            ctx.memory[key] = True
            ctx.emit(f"restore of {self.rds.instance_id} to {iso(self.restore_time)} started")
        started = time.monotonic()
        poll = self.rds.poll_interval
        wait_available(client, self.restored_id, ctx, poll=poll)
        carried = carry_to_instance(
            client, source_id=self.rds.instance_id, restored_id=self.restored_id
        )
        found = wait_available(client, self.restored_id, ctx, poll=poll)
        return StepResult(
            summary=f"{self.restored_id} is available, restored to {iso(self.restore_time)}",
            output="\n".join(f"carried from {self.rds.instance_id}: {c}" for c in carried),
            data={
                "restored_instance": self.restored_id,
                "restore_time": iso(self.restore_time),
                "endpoint": (found.get("Endpoint") or {}).get("Address"),
                "waited_seconds": time.monotonic() - started,
            },
        )

    def _start(self, client: RDSClient) -> None:
        if describe_instance(client, self.restored_id) is not None:
            # Started by an earlier run of this step that stopped before remembering it
            # (the name is this rollback's own: `<id>-pitr-<chosen time>`): wait for it.
            return
        source = describe_instance(client, self.rds.instance_id)
        if source is None:
            raise PermanentError(f"RDS instance {self.rds.instance_id} does not exist")
        request = restore_request(
            source,
            target=self.restored_id,
            moment=self.restore_time,
            instance_class=self.rds.instance_class,
        )
        client.restore_db_instance_to_point_in_time(**request)


@dataclass
class RdsSwap:
    """Rename the live instance aside and the restored one into its place."""

    rds: RdsInstance
    restored_id: str
    timeout: float
    now: Callable[[], datetime] = utcnow
    name = "database.rds_swap"
    idempotent = True

    def describe(self) -> str:
        """Say which identifiers change."""
        live = self.rds.instance_id
        return (
            f"Rename RDS instance {live} to {live}-pre-rollback-<time of the swap>, then "
            f"{self.restored_id} to {live} (modify_db_instance, ApplyImmediately), waiting for "
            "each rename"
        )

    def spec(self) -> dict[str, Any]:
        """Return the JSON that rebuilds this step."""
        return {"restored_id": self.restored_id}

    def run(self, ctx: StepContext) -> StepResult:
        """Do whichever renames are still to do, waiting for each."""
        with rds_errors(f"swapping {self.restored_id} in place of {self.rds.instance_id}"):
            return self._run(ctx)

    def _run(self, ctx: StepContext) -> StepResult:
        client, live = rds_client(self.rds.aws), self.rds.instance_id
        aside = aside_name(ctx, step=self.name, live=live, now=self.now)
        started = time.monotonic()
        if describe_instance(client, self.restored_id) is not None:
            if describe_instance(client, aside) is None:
                self._rename(client, live, aside)
            self._wait_gone(client, live, ctx)
            wait_available(client, aside, ctx, poll=self.rds.poll_interval)
            self._rename(client, self.restored_id, live)
        wait_available(client, live, ctx, poll=self.rds.poll_interval)
        unavailable = time.monotonic() - started
        return StepResult(
            summary=f"{self.restored_id} is now {live}; the previous {live} is kept as {aside}. "
            f"The {live} endpoint was unavailable for about {unavailable:.1f} s",
            data={"aside": aside, "live": live, "endpoint_unavailable_seconds": unavailable},
        )

    def _rename(self, client: RDSClient, old: str, new: str) -> None:
        client.modify_db_instance(
            DBInstanceIdentifier=old, NewDBInstanceIdentifier=new, ApplyImmediately=True
        )

    def _wait_gone(self, client: RDSClient, instance_id: str, ctx: StepContext) -> None:
        while describe_instance(client, instance_id) is not None:
            if ctx.remaining() <= self.rds.poll_interval:
                raise TemporaryError(
                    f"{instance_id} is still being renamed", delay=self.rds.poll_interval
                )
            ctx.emit(f"{instance_id} is still being renamed")
            time.sleep(self.rds.poll_interval)
