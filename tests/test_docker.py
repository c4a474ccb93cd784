"""The compose file and image: services, images, volumes, secrets and copied paths are consistent."""

import re

import pytest
import yaml

from tests.conftest import REPO

DOCKER = REPO / "docker"


def compose():
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def test_stack_has_the_production_services():
    services = compose()["services"]
    assert {"postgres", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "mlflow", "spark-master",
            "spark-worker", "pipeline"} <= set(services)
    commands = {name: service.get("command") for name, service in services.items()}
    assert commands["airflow-apiserver"] == ["api-server"] and commands["airflow-scheduler"] == ["scheduler"]
    assert commands["airflow-dag-processor"] == ["dag-processor"]
    assert "org.apache.spark.deploy.master.Master" in commands["spark-master"]
    assert "spark://spark-master:7077" in commands["spark-worker"]


def test_images_are_built_here_or_public():
    services = compose()["services"]
    built = {s["image"] for s in services.values() if "build" in s}
    assert built == {"lstmad-pipeline:latest"}
    for name, service in services.items():
        assert service["image"] in built or re.fullmatch(r"postgres:\d+", service["image"]), name
    build = services["pipeline"]["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == (DOCKER / "Dockerfile").resolve()


def test_volumes_dependencies_and_secrets_are_declared():
    doc = compose()
    declared = set(doc["volumes"])
    for name, service in doc["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source in declared or (DOCKER / source).exists(), (name, volume)
        for dependency in service.get("depends_on", {}):
            assert dependency in doc["services"], (name, dependency)
    shared = [n for n, s in doc["services"].items() if "lakehouse:/lakehouse" in s.get("volumes", [])]
    assert {"airflow-scheduler", "mlflow", "spark-worker", "pipeline"} <= set(shared)
    text = (DOCKER / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{(\w+)\}", text))
    example = dict(line.split("=", 1) for line in (DOCKER / "env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert used and used <= set(example)
    assert "docker/.env" in (REPO / ".gitignore").read_text()


def test_dockerfile_installs_java_and_copies_existing_paths():
    text = (DOCKER / "Dockerfile").read_text()
    assert "openjdk-17" in text and "constraints.txt" in text
    for line in text.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), source


def test_every_long_running_service_has_a_health_check_and_waits_for_what_it_needs():
    services = compose()["services"]
    one_shot = {name for name, s in services.items() if s.get("restart") == "no"}
    assert one_shot == {"airflow-init", "pipeline"}
    for name, service in services.items():
        if name in one_shot:
            continue
        check = service.get("healthcheck", {})
        assert check.get("test") and check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert check.get("interval") and check.get("timeout") and check.get("retries"), name
        for dependency, condition in service.get("depends_on", {}).items():  # a dict: every wait has a condition
            wanted = "service_completed_successfully" if dependency in one_shot else "service_healthy"
            assert condition == {"condition": wanted}, (name, dependency)
    assert {"airflow-apiserver", "mlflow", "spark-master"} <= set(services["airflow-scheduler"]["depends_on"])
    # the tasks and jobs reach MLflow by its service name, which MLflow 3's host check must accept
    command = services["mlflow"]["command"]
    assert "mlflow:5000" in command[command.index("--allowed-hosts") + 1].split(",")
    assert services["airflow-scheduler"]["environment"]["LSTMAD_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert "spark-master" in services["spark-worker"]["depends_on"]


def test_the_stack_runs_the_dags_with_the_spark_submit_runner(monkeypatch):
    import importlib.util
    import os

    # a fresh copy of the module, loaded without any LSTMAD_AIRFLOW_* of the developer's environment
    for key in [k for k in os.environ if k.startswith("LSTMAD_AIRFLOW_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("LSTMAD_CONF", str(REPO / "conf" / "demo.yaml"))
    spec = importlib.util.spec_from_file_location("lstmad_common_under_test", REPO / "dags" / "_lstmad_common.py")
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    airflow_settings = common.airflow_settings
    assert common.SETTINGS["runner"] == "in_process"  # the demo config itself runs in process
    environment = compose()["services"]["airflow-scheduler"]["environment"]
    settings = airflow_settings({k: str(v) for k, v in environment.items()})
    assert settings["runner"] == "spark_submit" and settings["spark_conf"] == "spark.executor.memory=2g"
    assert environment["AIRFLOW_CONN_SPARK_DEFAULT"] == "spark://spark-master:7077"
    with pytest.raises(ValueError, match="LSTMAD_AIRFLOW_RUNNER.*'spark-submit'"):
        airflow_settings({"LSTMAD_AIRFLOW_RUNNER": "spark-submit"})
