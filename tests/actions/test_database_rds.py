"""RDS point-in-time recovery against moto's server: window, restore, identifier swap."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from actions.base import PermanentError, PlanningError, StepContext, TemporaryError, spec_of
from actions.database import (
    DatabaseParams,
    DatabaseTarget,
    RdsInstance,
    RdsRestoreToTime,
    RdsSwap,
    VerifyDatabase,
    iso,
    pitr_ref,
    rds_stamp,
)
from actions.params import AwsConnection
from tests.fakes.pg import connection, run_plan, run_step

pytest_plugins = ["tests.fakes.aws"]

SWAP_TIME = datetime(2026, 1, 10, 12, 0, 0, tzinfo=UTC)
MONITORING_ROLE = "arn:aws:iam::123456789012:role/rds-monitoring"
S3_ROLE = "arn:aws:iam::123456789012:role/rds-s3-import"
READER_SETTINGS = (
    "DBInstanceIdentifier",
    "DBClusterIdentifier",
    "DBInstanceClass",
    "AvailabilityZone",
    "PromotionTier",
    "MonitoringInterval",
    "MonitoringRoleArn",
    "Tags",
)


@pytest.fixture
def live_instance(aws: AwsConnection) -> str:
    """Create an RDS PostgreSQL instance with automated backups in moto; return its id."""
    instance_id = f"voxdb-{uuid.uuid4().hex[:8]}"
    client = boto3.client("rds", region_name=aws.region, endpoint_url=aws.endpoint_url)
    client.create_db_instance(
        DBInstanceIdentifier=instance_id,
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        MasterUsername="voxflow",
        MasterUserPassword="not-used-by-the-bot",
        AllocatedStorage=20,
        DBName="voxflow_prod",
        BackupRetentionPeriod=7,
    )
    return instance_id


def target(aws: AwsConnection, instance_id: str, *, verify: bool = False) -> DatabaseTarget:
    """Build an RDS PITR target; verification off because moto has no PostgreSQL behind it."""
    rds = RdsInstance(instance_id=instance_id, aws=aws, verify=verify, poll_interval=0.05)
    params = DatabaseParams(
        kind="database", connection=connection("voxflow_prod"), methods=["pitr"], rds=rds
    )
    return DatabaseTarget(params, now=lambda: SWAP_TIME)


def instances(aws: AwsConnection) -> dict[str, dict[str, Any]]:
    """Return moto's instances by identifier."""
    client = boto3.client("rds", region_name=aws.region, endpoint_url=aws.endpoint_url)
    return {
        i["DBInstanceIdentifier"]: dict(i) for i in client.describe_db_instances()["DBInstances"]
    }


def inside_window(tgt: DatabaseTarget) -> datetime:
    """Return a time inside the instance's restorable window."""
    window = tgt.pitr_window()
    assert window is not None
    return window[0] + (window[1] - window[0]) / 2


def test_points_show_the_restorable_window(aws: AwsConnection, live_instance: str) -> None:
    points = target(aws, live_instance).points()

    assert len(points) == 1
    assert points[0].ref.startswith("pitr:")
    assert f"RDS {live_instance}" in points[0].label
    assert "any time from" in points[0].label


def test_time_outside_the_window_is_refused(aws: AwsConnection, live_instance: str) -> None:
    tgt = target(aws, live_instance)
    past = iso(datetime.now(UTC) - timedelta(days=30))

    with pytest.raises(PlanningError, match="outside the restorable window"):
        tgt.plan(f"pitr:{past}")
    assert not tgt.checks(f"pitr:{past}")[0].ok


def test_unknown_instance_is_refused(aws: AwsConnection) -> None:
    with pytest.raises(PlanningError, match="does not exist"):
        target(aws, "no-such-instance").plan(None)


def test_restore_and_swap_put_the_restored_instance_in_place(
    aws: AwsConnection, live_instance: str
) -> None:
    tgt = target(aws, live_instance)
    moment = inside_window(tgt)
    original = instances(aws)[live_instance]["InstanceCreateTime"]
    plan = tgt.plan(pitr_ref(moment))

    restored, swapped = run_plan(plan)

    aside = f"{live_instance}-pre-rollback-{rds_stamp(SWAP_TIME)}"
    found = instances(aws)
    assert restored.data["restored_instance"] == f"{live_instance}-pitr-{rds_stamp(moment)}"
    assert swapped.data["aside"] == aside
    assert found[aside]["InstanceCreateTime"] == original
    assert found[live_instance]["InstanceCreateTime"] != original
    assert found[live_instance]["DBInstanceStatus"] == "available"
    assert restored.data["restored_instance"] not in found


def test_plan_describes_exact_instances_and_time(aws: AwsConnection, live_instance: str) -> None:
    tgt = target(aws, live_instance)
    moment = inside_window(tgt)

    plan = tgt.plan(pitr_ref(moment))

    restore, swap = plan.rollback
    assert isinstance(restore, RdsRestoreToTime) and isinstance(swap, RdsSwap)
    assert iso(moment) in restore.describe()
    assert f"{live_instance}-pitr-{rds_stamp(moment)}" in swap.describe()
    assert plan.verify == []
    assert "verification queries: off (RdsInstance.verify)" in plan.notes


def test_verification_steps_are_included_when_configured(
    aws: AwsConnection, live_instance: str
) -> None:
    tgt = target(aws, live_instance, verify=True)

    plan = tgt.plan(pitr_ref(inside_window(tgt)))

    verify_restored, verify_live = plan.rollback[1], plan.verify[0]
    assert isinstance(verify_restored, VerifyDatabase)
    assert f"RDS instance {live_instance}-pitr-" in verify_restored.describe()
    assert f"RDS instance {live_instance};" in verify_live.describe()


def test_swap_run_again_after_it_finished_changes_nothing(
    aws: AwsConnection, live_instance: str
) -> None:
    tgt = target(aws, live_instance)
    plan = tgt.plan(pitr_ref(inside_window(tgt)))
    memory: dict[str, Any] = {}
    run_plan(plan, memory)
    before = instances(aws)

    run_step(plan.rollback[1], memory)

    assert instances(aws).keys() == before.keys()


def test_waiting_past_the_deadline_asks_to_retry(aws: AwsConnection) -> None:
    rds = RdsInstance(instance_id="never-there", aws=aws, poll_interval=5.0)
    restore = RdsRestoreToTime(rds, "never-there-pitr", SWAP_TIME, 1.0)

    with pytest.raises(TemporaryError, match="never-there-pitr is still not found"):
        restore.run(
            StepContext.for_test(
                timeout=1.0, memory={"database.rds_restore:never-there-pitr": True}
            )
        )


def test_an_aws_refusal_fails_the_step_permanently(aws: AwsConnection) -> None:
    rds = RdsInstance(instance_id="gone-instance", aws=aws, poll_interval=0.05)
    restore = RdsRestoreToTime(rds, "gone-instance-pitr", SWAP_TIME, 5.0)

    with pytest.raises(PermanentError, match="RDS instance gone-instance does not exist"):
        restore.run(StepContext.for_test(timeout=5.0))


@pytest.fixture
def configured_instance(aws: AwsConnection) -> dict[str, Any]:
    """An instance with its own network, groups, storage, protection, tags, IAM auth, CA,
    maintenance window, enhanced monitoring, an IAM role and a master password in Secrets
    Manager."""
    kwargs = {"region_name": aws.region, "endpoint_url": aws.endpoint_url}
    ec2, rds = boto3.client("ec2", **kwargs), boto3.client("rds", **kwargs)
    suffix = uuid.uuid4().hex[:8]
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.9.{i}.0/24", AvailabilityZone=f"us-east-1{z}")[
            "Subnet"
        ]["SubnetId"]
        for i, z in ((1, "a"), (2, "b"))
    ]
    group = ec2.create_security_group(GroupName=f"db-{suffix}", Description="db", VpcId=vpc)
    rds.create_db_subnet_group(
        DBSubnetGroupName=f"private-{suffix}", DBSubnetGroupDescription="db", SubnetIds=subnets
    )
    rds.create_db_parameter_group(
        DBParameterGroupName=f"pg15-{suffix}", DBParameterGroupFamily="postgres15", Description="x"
    )
    rds.create_option_group(
        OptionGroupName=f"opts-{suffix}",
        EngineName="postgres",
        MajorEngineVersion="13",
        OptionGroupDescription="x",
    )
    key = boto3.client("kms", **kwargs).create_key()["KeyMetadata"]["Arn"]
    instance_id = f"voxdb-{suffix}"
    rds.create_db_instance(
        DBInstanceIdentifier=instance_id,
        DBInstanceClass="db.r6g.large",
        Engine="postgres",
        EngineVersion="15.4",
        MasterUsername="voxflow",
        AllocatedStorage=100,
        DBName="voxflow_prod",
        BackupRetentionPeriod=7,
        DBSubnetGroupName=f"private-{suffix}",
        VpcSecurityGroupIds=[group["GroupId"]],
        DBParameterGroupName=f"pg15-{suffix}",
        OptionGroupName=f"opts-{suffix}",
        MultiAZ=True,
        StorageType="io1",
        Iops=3000,
        DeletionProtection=True,
        EnableIAMDatabaseAuthentication=True,
        CACertificateIdentifier="rds-ca-rsa2048-g1",
        CopyTagsToSnapshot=True,
        Tags=[{"Key": "team", "Value": "voice"}, {"Key": "env", "Value": "prod"}],
        PreferredMaintenanceWindow="sun:04:00-sun:04:30",
        MonitoringInterval=15,
        MonitoringRoleArn=MONITORING_ROLE,
        ManageMasterUserPassword=True,
        MasterUserSecretKmsKeyId=key,
    )
    rds.add_role_to_db_instance(
        DBInstanceIdentifier=instance_id, RoleArn=S3_ROLE, FeatureName="s3Import"
    )
    return {"id": instance_id, "suffix": suffix, "group": group["GroupId"], "key": key}


def recording(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[dict[str, Any]]]:
    """Record every RDS request's parameters as botocore hands them over (before moto)."""
    import actions.database.aurora as aurora_module
    import actions.database.rds as rds_module

    seen: dict[str, list[dict[str, Any]]] = {}
    real = rds_module.rds_client

    def client_with_hook(aws: AwsConnection) -> Any:
        client = real(aws)

        def keep(params: dict[str, Any], model: Any, **_: Any) -> None:
            seen.setdefault(model.name, []).append(dict(params))

        client.meta.events.register("provide-client-params.rds.*", keep)
        return client

    monkeypatch.setattr(rds_module, "rds_client", client_with_hook)
    monkeypatch.setattr(aurora_module, "rds_client", client_with_hook)
    return seen


def restores_without_a_managed_password(
    aws: AwsConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Make moto's restored instance have no password in Secrets Manager, as AWS's has: the
    restore request's ManageMasterUserPassword "Applies to RDS for Oracle only"
    (botocore/data/rds/2014-10-31/service-2.json, RestoreDBInstanceToPointInTimeMessage);
    moto copies the source's management onto the copy."""
    import actions.database.rds as rds_module

    real = rds_module.rds_client
    plain = boto3.client("rds", region_name=aws.region, endpoint_url=aws.endpoint_url)

    def client_with_hook(connection: AwsConnection) -> Any:
        client = real(connection)

        def unmanage(params: dict[str, Any], **_: Any) -> None:
            plain.modify_db_instance(
                DBInstanceIdentifier=params["TargetDBInstanceIdentifier"],
                ManageMasterUserPassword=False,
                MasterUserPassword="restored-from-the-data",
                ApplyImmediately=True,
            )

        def keep(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
            context["restore"] = dict(params)

        def after(context: dict[str, Any], **_: Any) -> None:
            unmanage(context["restore"])

        client.meta.events.register(
            "provide-client-params.rds.RestoreDBInstanceToPointInTime", keep
        )
        client.meta.events.register("after-call.rds.RestoreDBInstanceToPointInTime", after)
        return client

    monkeypatch.setattr(rds_module, "rds_client", client_with_hook)


def test_the_restore_request_carries_every_setting_of_the_source(
    aws: AwsConnection, configured_instance: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    restores_without_a_managed_password(aws, monkeypatch)
    seen = recording(monkeypatch)
    live, suffix = configured_instance["id"], configured_instance["suffix"]
    tgt = target(aws, live)
    moment = inside_window(tgt)

    run_plan(tgt.plan(pitr_ref(moment)))

    restored, aside = (
        f"{live}-pitr-{rds_stamp(moment)}",
        f"{live}-pre-rollback-{rds_stamp(SWAP_TIME)}",
    )
    assert seen["ModifyDBInstance"] == [
        {
            "DBInstanceIdentifier": restored,
            "MonitoringInterval": 15,
            "MonitoringRoleArn": MONITORING_ROLE,
            "PreferredMaintenanceWindow": "sun:04:00-sun:04:30",
            "ManageMasterUserPassword": True,
            "MasterUserSecretKmsKeyId": configured_instance["key"],
            "ApplyImmediately": True,
        },
        {"DBInstanceIdentifier": live, "NewDBInstanceIdentifier": aside, "ApplyImmediately": True},
        {
            "DBInstanceIdentifier": restored,
            "NewDBInstanceIdentifier": live,
            "ApplyImmediately": True,
        },
    ]
    assert seen["AddRoleToDBInstance"] == [
        {"DBInstanceIdentifier": restored, "RoleArn": S3_ROLE, "FeatureName": "s3Import"}
    ]
    found = instances(aws)
    assert found[live]["DBInstanceStatus"] == found[aside]["DBInstanceStatus"] == "available"
    assert found[live]["MonitoringInterval"] == 15
    assert found[live]["MasterUserSecret"]["KmsKeyId"] == configured_instance["key"]
    assert (
        found[live]["MasterUserSecret"]["SecretArn"]
        != found[aside]["MasterUserSecret"]["SecretArn"]
    )
    [request] = seen["RestoreDBInstanceToPointInTime"]
    window = found[aside]["PreferredBackupWindow"]
    assert request == {
        "SourceDBInstanceIdentifier": live,
        "TargetDBInstanceIdentifier": f"{live}-pitr-{rds_stamp(moment)}",
        "RestoreTime": moment,
        "DBInstanceClass": "db.r6g.large",
        "Port": 5432,
        "DBSubnetGroupName": f"private-{suffix}",
        "MultiAZ": True,
        "AutoMinorVersionUpgrade": True,
        "LicenseModel": "general-public-license",
        "OptionGroupName": f"opts-{suffix}",
        "CopyTagsToSnapshot": True,
        "Tags": [{"Key": "team", "Value": "voice"}, {"Key": "env", "Value": "prod"}],
        "StorageType": "io1",
        "Iops": 3000,
        "AllocatedStorage": 100,
        "VpcSecurityGroupIds": [configured_instance["group"]],
        "EnableIAMDatabaseAuthentication": True,
        "DBParameterGroupName": f"pg15-{suffix}",
        "DeletionProtection": True,
        "CACertificateIdentifier": "rds-ca-rsa2048-g1",
        "BackupRetentionPeriod": 7,
        "PreferredBackupWindow": window,
    }


@pytest.fixture
def aurora(aws: AwsConnection) -> dict[str, str]:
    """An Aurora PostgreSQL cluster with tags, protection, IAM auth and a writer instance."""
    rds = boto3.client("rds", region_name=aws.region, endpoint_url=aws.endpoint_url)
    suffix = uuid.uuid4().hex[:8]
    cluster, writer = f"voxclu-{suffix}", f"voxclu-{suffix}-writer"
    rds.create_db_cluster_parameter_group(
        DBClusterParameterGroupName=f"clu-{suffix}",
        DBParameterGroupFamily="aurora-postgresql15",
        Description="x",
    )
    rds.create_db_cluster(
        DBClusterIdentifier=cluster,
        Engine="aurora-postgresql",
        EngineVersion="15.4",
        MasterUsername="voxflow",
        MasterUserPassword="not-used-by-the-bot",
        DatabaseName="voxflow_prod",
        BackupRetentionPeriod=7,
        DBClusterParameterGroupName=f"clu-{suffix}",
        DeletionProtection=True,
        EnableIAMDatabaseAuthentication=True,
        CopyTagsToSnapshot=True,
        Tags=[{"Key": "team", "Value": "voice"}],
        PreferredMaintenanceWindow="sun:05:00-sun:05:30",
    )
    rds.add_role_to_db_cluster(DBClusterIdentifier=cluster, RoleArn=S3_ROLE, FeatureName="s3Import")
    rds.create_db_instance(
        DBInstanceIdentifier=writer,
        DBClusterIdentifier=cluster,
        DBInstanceClass="db.r6g.large",
        Engine="aurora-postgresql",
        Tags=[{"Key": "role", "Value": "writer"}],
    )
    rds.create_db_instance(
        DBInstanceIdentifier=f"{cluster}-reader",
        DBClusterIdentifier=cluster,
        DBInstanceClass="db.r6g.xlarge",
        Engine="aurora-postgresql",
        AvailabilityZone="us-east-1b",
        PromotionTier=3,
        MonitoringInterval=30,
        MonitoringRoleArn=MONITORING_ROLE,
        Tags=[{"Key": "role", "Value": "reader"}],
    )
    return {"cluster": cluster, "writer": writer, "suffix": suffix}


def test_aurora_cluster_is_restored_with_its_settings_roles_writer_and_readers(
    aws: AwsConnection, aurora: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = recording(monkeypatch)
    cluster, writer = aurora["cluster"], aurora["writer"]
    rds = RdsInstance(
        instance_id=writer, cluster_id=cluster, aws=aws, verify=False, poll_interval=0.05
    )
    params = DatabaseParams(
        kind="database", connection=connection("voxflow_prod"), methods=["pitr"], rds=rds
    )
    tgt = DatabaseTarget(params, now=lambda: SWAP_TIME)
    moment = inside_window(tgt)

    plan = tgt.plan(pitr_ref(moment))
    run_plan(plan)

    restored = f"{cluster}-pitr-{rds_stamp(moment)}"
    aside = f"{cluster}-pre-rollback-{rds_stamp(SWAP_TIME)}"
    client = boto3.client("rds", region_name=aws.region, endpoint_url=aws.endpoint_url)
    clusters = {c["DBClusterIdentifier"]: c for c in client.describe_db_clusters()["DBClusters"]}
    [restore] = seen["RestoreDBClusterToPointInTime"]
    assert restore == {
        "SourceDBClusterIdentifier": cluster,
        "DBClusterIdentifier": restored,
        "RestoreToTime": moment,
        "RestoreType": "full-copy",
        "Port": 5432,
        "Tags": [{"Key": "team", "Value": "voice"}],
        "EnableIAMDatabaseAuthentication": True,
        "DBClusterParameterGroupName": f"clu-{aurora['suffix']}",
        "DeletionProtection": True,
        "CopyTagsToSnapshot": True,
        "KmsKeyId": clusters[aside]["KmsKeyId"],
        "BackupRetentionPeriod": 7,
        "PreferredBackupWindow": clusters[aside]["PreferredBackupWindow"],
    } | {k: v for k, v in restore.items() if k in ("DBSubnetGroupName", "StorageType")}
    create, reader = seen["CreateDBInstance"]
    assert create["DBInstanceIdentifier"] == f"{writer}-pitr-{rds_stamp(moment)}"
    assert create["DBClusterIdentifier"] == restored
    assert create["DBInstanceClass"] == "db.r6g.large"
    assert create["Engine"] == "aurora-postgresql"
    assert create["Tags"] == [{"Key": "role", "Value": "writer"}]
    assert {k: reader[k] for k in READER_SETTINGS} == {
        "DBInstanceIdentifier": f"{cluster}-reader-pitr-{rds_stamp(moment)}",
        "DBClusterIdentifier": restored,
        "DBInstanceClass": "db.r6g.xlarge",
        "AvailabilityZone": "us-east-1b",
        "PromotionTier": 3,
        "MonitoringInterval": 30,
        "MonitoringRoleArn": MONITORING_ROLE,
        "Tags": [{"Key": "role", "Value": "reader"}],
    }
    assert seen["AddRoleToDBCluster"] == [
        {"DBClusterIdentifier": restored, "RoleArn": S3_ROLE, "FeatureName": "s3Import"}
    ]
    assert seen["ModifyDBCluster"] == [
        {
            "DBClusterIdentifier": restored,
            "PreferredMaintenanceWindow": "sun:05:00-sun:05:30",
            "ApplyImmediately": True,
        },
        {"DBClusterIdentifier": cluster, "NewDBClusterIdentifier": aside, "ApplyImmediately": True},
        {
            "DBClusterIdentifier": restored,
            "NewDBClusterIdentifier": cluster,
            "ApplyImmediately": True,
        },
    ]
    assert {cluster, aside} <= clusters.keys() and restored not in clusters
    made = instances(aws)[reader["DBInstanceIdentifier"]]
    assert (made["DBInstanceStatus"], made["DBInstanceClass"]) == ("available", "db.r6g.xlarge")
    assert [r["RoleArn"] for r in clusters[cluster]["AssociatedRoles"]] == [S3_ROLE]


def test_rds_steps_are_rebuilt_from_their_specs(aws: AwsConnection, live_instance: str) -> None:
    tgt = target(aws, live_instance, verify=True)
    plan = tgt.plan(pitr_ref(inside_window(tgt)))

    for step in [*plan.rollback, *plan.verify]:
        again = tgt.restore(step.name, json.loads(json.dumps(spec_of(step))))
        assert (again.name, again.describe()) == (step.name, step.describe())


def test_a_restore_started_but_not_remembered_is_waited_for_not_started_again(
    aws: AwsConnection, live_instance: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = recording(monkeypatch)
    tgt = target(aws, live_instance)
    plan = tgt.plan(pitr_ref(inside_window(tgt)))
    restore = plan.rollback[0]
    run_step(restore, {})

    again = run_step(tgt.restore(restore.name, spec_of(restore)), {})
    swapped = run_step(tgt.restore(plan.rollback[1].name, spec_of(plan.rollback[1])), {})

    assert len(seen["RestoreDBInstanceToPointInTime"]) == 1
    assert "is available, restored to" in again.summary
    assert swapped.data["live"] == live_instance


def test_aurora_steps_are_rebuilt_from_their_specs(
    aws: AwsConnection, aurora: dict[str, str]
) -> None:
    rds = RdsInstance(
        instance_id=aurora["writer"], cluster_id=aurora["cluster"], aws=aws, poll_interval=0.05
    )
    params = DatabaseParams(
        kind="database", connection=connection("voxflow_prod"), methods=["pitr"], rds=rds
    )
    tgt = DatabaseTarget(params, now=lambda: SWAP_TIME)
    plan = tgt.plan(pitr_ref(inside_window(tgt)))

    for step in plan.rollback:
        again = tgt.restore(step.name, json.loads(json.dumps(spec_of(step))))
        assert (again.name, again.describe()) == (step.name, step.describe())


def test_an_aurora_reader_whose_restored_name_would_be_too_long_is_refused_before_approval(
    aws: AwsConnection, aurora: dict[str, str]
) -> None:
    rds_api = boto3.client("rds", region_name=aws.region, endpoint_url=aws.endpoint_url)
    long_reader = f"{aurora['cluster']}-reader-in-the-second-zone-xyz"
    rds_api.create_db_instance(
        DBInstanceIdentifier=long_reader,
        DBClusterIdentifier=aurora["cluster"],
        DBInstanceClass="db.r6g.large",
        Engine="aurora-postgresql",
    )
    rds = RdsInstance(
        instance_id=aurora["writer"], cluster_id=aurora["cluster"], aws=aws, poll_interval=0.05
    )
    params = DatabaseParams(
        kind="database", connection=connection("voxflow_prod"), methods=["pitr"], rds=rds
    )
    tgt = DatabaseTarget(params, now=lambda: SWAP_TIME)
    moment = inside_window(tgt)

    with pytest.raises(PlanningError, match=f"RDS identifier {long_reader}-pitr-") as refused:
        tgt.plan(pitr_ref(moment))

    assert len(f"{long_reader}-pitr-{rds_stamp(moment)}") > 63
    assert "would be longer than 63" in str(refused.value)
