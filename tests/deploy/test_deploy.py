"""deploy/ stays valid: the Ray cluster config against the schema the ray package ships, the
KubeRay manifests against the fields KubeRay requires, the image and the tracking stacks against
what they promise (pinned versions; nothing reachable that should not be)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml

from helpers import ROOT

DEPLOY = ROOT / "deploy"


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def pinned(package: str) -> str:
    line = next(line for line in (ROOT / "constraints.txt").read_text().splitlines()
                if line.lower().startswith(package.lower() + "=="))
    return line.split("==")[1]


# --- the Ray cluster launcher config ---------------------------------------------------------


def test_cluster_config_matches_the_schema_ray_ships():
    config = yaml.safe_load((DEPLOY / "ray" / "cluster-aws.yaml").read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)  # raises with the offending path
    assert config["head_node_type"] in config["available_node_types"]
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}  # no trials there
    assert config["provider"]["use_internal_ips"] is True
    assert all("--dashboard-host=127.0.0.1" in command for command in config["head_start_ray_commands"]
               if "ray start" in command)


def test_the_schema_check_would_catch_a_mistake():
    config = yaml.safe_load((DEPLOY / "ray" / "cluster-aws.yaml").read_text())
    config["max_worker"] = config.pop("max_workers")  # a typo
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, schema)


# --- KubeRay ---------------------------------------------------------------------------------


def check_pod_template(template: dict, where: str) -> list[dict]:
    containers = template["spec"]["containers"]
    assert containers, f"{where}: no containers"
    for container in containers:
        assert container.get("name") and container.get("image"), f"{where}: a container needs a name and an image"
        assert container.get("resources", {}).get("limits"), f"{where}: set resource limits (Ray sizes itself by them)"
    return containers


def check_ray_cluster_spec(spec: dict, where: str) -> list[dict]:
    """The fields KubeRay's RayCluster CRD requires (ray-operator/apis/ray/v1/raycluster_types.go:
    headGroupSpec.{rayStartParams, template}; each worker group's groupName, minReplicas,
    maxReplicas, rayStartParams, template), and what this project relies on."""
    assert spec["rayVersion"] == pinned("ray"), f"{where}: rayVersion must be the ray of constraints.txt"
    assert spec.get("authOptions", {}).get("mode") == "token", f"{where}: Ray token authentication off"
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert head["rayStartParams"].get("num-cpus") == "0", f"{where}: the head must not run trials"
    assert head.get("serviceType", "ClusterIP") == "ClusterIP", f"{where}: the head is exposed outside the cluster"
    containers = check_pod_template(head["template"], f"{where} head")
    names = set()
    for group in spec.get("workerGroupSpecs", []):
        for key in ("groupName", "minReplicas", "maxReplicas", "rayStartParams", "template"):
            assert key in group, f"{where}: worker group without {key}"
        assert group["groupName"] not in names
        names.add(group["groupName"])
        assert 0 <= group["minReplicas"] <= group.get("replicas", group["minReplicas"]) <= group["maxReplicas"]
        assert isinstance(group["rayStartParams"], dict)
        containers += check_pod_template(group["template"], f"{where} {group['groupName']}")
    assert names, f"{where}: no worker group"
    return containers


def test_raycluster_has_the_fields_kuberay_requires():
    [cluster] = documents(DEPLOY / "kuberay" / "raycluster.yaml")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    assert cluster["metadata"]["name"]
    containers = check_ray_cluster_spec(cluster["spec"], "raycluster.yaml")
    for container in containers:  # every node reaches the tracking server and the checkpoint store
        env = {item["name"]: item for item in container["env"]}
        assert env["MLFLOW_TRACKING_URI"]["value"].startswith("http://mlflow.tracking.")
        assert "valueFrom" in env["AWS_SECRET_ACCESS_KEY"]  # from a Secret, never inline
    gpu = [c for group in cluster["spec"]["workerGroupSpecs"] if group["groupName"] == "gpu"
           for c in group["template"]["spec"]["containers"]]
    assert gpu and all(c["resources"]["limits"].get("nvidia.com/gpu") for c in gpu)


def test_rayjob_runs_a_sweep_on_a_cluster_of_its_own():
    [job] = documents(DEPLOY / "kuberay" / "rayjob-sweep.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    spec = job["spec"]
    # KubeRay's validation: a cluster to run on (a spec, or a selector of a running one), and an
    # entrypoint (unless in InteractiveMode); shutdownAfterJobFinishes needs a cluster of its own.
    assert spec.get("rayClusterSpec") and not spec.get("clusterSelector")
    assert spec.get("submissionMode", "K8sJobMode") != "InteractiveMode"
    assert spec["shutdownAfterJobFinishes"] is True
    check_ray_cluster_spec(spec["rayClusterSpec"], "rayjob-sweep.yaml")
    command = spec["entrypoint"].split()
    assert command[:2] == ["trainyard", "sweep"] and (ROOT / command[2]).is_file()
    assert "sweep.storage_path=s3://sweeps/trainyard" in command  # shared storage: the preflight demands it
    assert any(arg.startswith("tracking.uri=http://") for arg in command)


def test_every_image_is_the_project_image():
    images = {container["image"] for path in (DEPLOY / "kuberay").glob("*.yaml") for doc in documents(path)
              for template in _pod_templates(doc["spec"]) for container in template["spec"]["containers"]}
    config = yaml.safe_load((DEPLOY / "ray" / "cluster-aws.yaml").read_text())
    images |= {config["docker"]["image"]} | {t["docker"]["worker_image"]
                                              for t in config["available_node_types"].values() if "docker" in t}
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    assert images == {f"REPLACE_REGISTRY/trainyard:{version}", f"REPLACE_REGISTRY/trainyard:{version}-cu128"}


def _pod_templates(spec: dict):
    cluster = spec.get("rayClusterSpec", spec)
    yield cluster["headGroupSpec"]["template"]
    for group in cluster.get("workerGroupSpecs", []):
        yield group["template"]


# --- the image -------------------------------------------------------------------------------


def test_dockerfile_installs_the_pinned_versions():
    text = (DEPLOY / "Dockerfile").read_text()
    python = re.search(r"^FROM python:(\d+\.\d+)", text, re.MULTILINE).group(1)
    requires = re.search(r'requires-python = ">=(\d+\.\d+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert tuple(map(int, python.split("."))) >= tuple(map(int, requires.split(".")))
    assert f"torch=={pinned('torch').split('+')[0]}" in text
    assert "pip install -c constraints.txt ." in text
    assert '"ray[default,' in (ROOT / "pyproject.toml").read_text()  # the job server, for ray job submit
    for folder in ("platform", "plugins", "experiments"):
        assert f"COPY {folder} {folder}" in text
    assert re.search(r"^USER (?!root)\w+", text, re.MULTILINE), "the image must not run as root"


def test_mlflow_image_matches_the_pinned_mlflow():
    text = (DEPLOY / "tracking" / "mlflow.Dockerfile").read_text()
    assert f"mlflow=={pinned('mlflow')}" in text and f"psycopg[binary]=={pinned('psycopg')}" in text and "boto3" in text
    assert re.search(r"^USER (?!root)\w+", text, re.MULTILINE)


# --- the tracking stacks ---------------------------------------------------------------------


def test_compose_stack_publishes_only_mlflow_and_only_on_loopback_by_default():
    compose = yaml.safe_load((DEPLOY / "tracking" / "docker-compose.yaml").read_text())
    services = compose["services"]
    published = {name: service["ports"] for name, service in services.items() if service.get("ports")}
    assert list(published) == ["mlflow"]
    [port] = published["mlflow"]
    assert port.startswith("${MLFLOW_BIND:-127.0.0.1}:")
    assert compose["networks"]["backend"]["internal"] is True
    for name in ("postgres", "minio", "buckets"):
        assert services[name]["networks"] == ["backend"]
    arguments = services["mlflow"]["command"]
    assert any(a.startswith("--backend-store-uri=postgresql://") for a in arguments)
    assert "--artifacts-destination=s3://mlflow/artifacts" in arguments  # proxied: clients need no S3 keys
    assert any(a.startswith("--allowed-hosts=") for a in arguments)
    secrets = re.findall(r"(PASSWORD|SECRET)[A-Z_]*: (\S+)", (DEPLOY / "tracking" / "docker-compose.yaml").read_text())
    assert secrets and all(value.startswith("${") for _, value in secrets), "a secret written into the file"


def test_kubernetes_stack_is_reachable_only_where_it_should_be():
    docs = documents(DEPLOY / "tracking" / "kubernetes.yaml")
    kinds = [doc["kind"] for doc in docs]
    assert "Secret" not in kinds and "Ingress" not in kinds
    services = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "Service"}
    assert set(services) == {"postgres", "minio", "mlflow"}
    assert all(service["spec"].get("type", "ClusterIP") == "ClusterIP" for service in services.values())
    policies = {doc["metadata"]["name"]: doc["spec"] for doc in docs if doc["kind"] == "NetworkPolicy"}
    deny = policies.pop("deny-all-ingress")
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}

    def allowed(app: str) -> list[dict]:
        [spec] = [spec for spec in policies.values() if spec["podSelector"] == {"matchLabels": {"app": app}}]
        return [source for rule in spec["ingress"] for source in rule["from"]]

    ray_pods = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ray"}},
                "podSelector": {"matchLabels": {"ray.io/is-ray-node": "yes"}}}
    assert allowed("postgres") == [{"podSelector": {"matchLabels": {"app": "mlflow"}}}]
    assert allowed("mlflow") == [ray_pods]
    assert ray_pods in allowed("minio") and {"podSelector": {"matchLabels": {"app": "mlflow"}}} in allowed("minio")
    for doc in docs:  # credentials come from the Secret created by hand, never inline
        for template in [doc["spec"]["template"]] if doc["kind"] in ("Deployment", "Job") else []:
            for container in template["spec"]["containers"]:
                for item in container.get("env", []):
                    if re.search("PASSWORD|SECRET|ROOT_USER", item["name"]):
                        assert item["valueFrom"]["secretKeyRef"]["name"] == "tracking-credentials"
    [mlflow] = [doc for doc in docs if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "mlflow"]
    arguments = mlflow["spec"]["template"]["spec"]["containers"][0]["args"]
    hosts = next(a for a in arguments if a.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
    assert "mlflow.tracking.svc.cluster.local:5000" in hosts and "localhost:5000" in hosts  # pods, port-forward
