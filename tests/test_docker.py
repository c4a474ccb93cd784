"""The compose file and image: services, images, volumes, secrets and copied paths are consistent."""

import re

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
