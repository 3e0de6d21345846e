"""k8s/: the kustomizations, rendered (``kubectl kustomize`` when installed, else deploy/kustomize.py), validated
against the Kubernetes API schemas that kubernetes-validate ships (strict: unknown fields are errors), and checked
for what running this service needs: probes on the health endpoints, a grace period covering the drain, non-root
read-only containers, GPUs on the GPU overlay, selectors that match, and an HPA whose metrics the adapter serves.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the deploy/ helpers live at the repository root
    sys.path.insert(0, str(ROOT))

from conftest import load_file  # noqa: E402

from deploy import kustomize  # noqa: E402
from deploy.promql import adapter_rules  # noqa: E402
from service.settings import ServiceSettings  # noqa: E402

K8S = ROOT / "k8s"
OVERLAYS = {"cpu": K8S / "overlays" / "cpu", "gpu": K8S / "overlays" / "gpu"}
#: docker/entrypoint.py, whose worker/thread plan the pod's resources must feed
entrypoint = load_file("docker/entrypoint.py", "lic_entrypoint_k8s")
KUSTOMIZATIONS = {"base": K8S / "base", **OVERLAYS, "monitoring": K8S / "monitoring"}
#: the oldest Kubernetes release these manifests support, and the newest whose schemas are shipped
K8S_VERSIONS = ("1.29.0", None)
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.monitoring.coreos.com-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.monitoring.coreos.com-v1.json",
}
SETTINGS_VARS = {"LIC_" + name.upper() for name in ServiceSettings.model_fields}
ENTRYPOINT_VARS = {"LIC_WORKERS", "LIC_METRICS_PORT", "LIC_LOG_LEVEL"}


@pytest.fixture(scope="module")
def rendered() -> Dict[str, List[dict]]:
    return {name: kustomize.render(path) for name, path in KUSTOMIZATIONS.items()}


def one(docs: List[dict], kind: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def container(docs: List[dict]) -> dict:
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def settings_env(docs: List[dict]) -> Dict[str, str]:
    """What the service process sees: the ConfigMap plus the container's own env."""
    env = dict(one(docs, "ConfigMap")["data"])
    env.update({e["name"]: e["value"] for e in container(docs).get("env", [])})
    return env


# -- rendering and schemas ----------------------------------------------------------------------------------------
def test_every_kustomization_renders(rendered):
    kinds = {name: sorted(d["kind"] for d in docs) for name, docs in rendered.items()}
    expected = sorted(
        [
            "ConfigMap",
            "Deployment",
            "Service",
            "PodDisruptionBudget",
            "HorizontalPodAutoscaler",
            "ServiceMonitor",
            "PrometheusRule",
        ]
    )
    assert kinds["base"] == kinds["cpu"] == kinds["gpu"] == expected
    assert kinds["monitoring"] == ["ConfigMap"]


def test_builtin_renderer_matches_kubectl():
    if not kustomize.kubectl():
        pytest.skip("kubectl is not installed: only the built-in renderer is exercised")
    for name, path in KUSTOMIZATIONS.items():
        by_key = lambda docs: {(d["kind"], d["metadata"]["name"]): d for d in docs}  # noqa: E731
        assert by_key(kustomize.render(path, "python")) == by_key(kustomize.render(path, "kubectl")), name


def test_builtin_renderer_refuses_what_it_does_not_implement(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(kustomize.UnsupportedKustomization, match="namePrefix"):
        kustomize.render_python(tmp_path)
    (tmp_path / "kustomization.yaml").write_text("configMapGenerator:\n  - name: c\n    literals: [a=b]\n")
    with pytest.raises(kustomize.UnsupportedKustomization, match="disableNameSuffixHash"):
        kustomize.render_python(tmp_path)


@pytest.mark.parametrize("version", K8S_VERSIONS, ids=lambda v: f"k8s-{v or 'latest'}")
def test_manifests_validate_against_kubernetes_schemas(rendered, version):
    import jsonschema
    import kubernetes_validate

    version = version or kubernetes_validate.latest_version()
    checked = 0
    for name, docs in rendered.items():
        for doc in docs:
            key = (doc["apiVersion"], doc["kind"])
            if key in CRD_SCHEMAS:
                schema = json.loads((ROOT / "deploy" / "schemas" / CRD_SCHEMAS[key]).read_text())
                jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
            else:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    pytest.fail(
                        f"{name}: {doc['kind']}/{doc['metadata']['name']} is invalid for Kubernetes {version}: {exc}"
                    )
            checked += 1
    assert checked == sum(len(d) for d in rendered.values())


def test_crd_schemas_catch_mistakes(rendered):
    import jsonschema

    monitor = json.loads(json.dumps(one(rendered["gpu"], "ServiceMonitor")))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    schema = json.loads(
        (ROOT / "deploy" / "schemas" / CRD_SCHEMAS[(monitor["apiVersion"], "ServiceMonitor")]).read_text()
    )
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(monitor, schema)
    rule = json.loads(json.dumps(one(rendered["gpu"], "PrometheusRule")))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    schema = json.loads((ROOT / "deploy" / "schemas" / CRD_SCHEMAS[(rule["apiVersion"], "PrometheusRule")]).read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rule, schema)


def test_kubernetes_schemas_catch_mistakes(rendered):
    import kubernetes_validate

    deployment = json.loads(json.dumps(one(rendered["gpu"], "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


# -- the Deployment ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_probes_use_the_health_endpoints(rendered, overlay):
    c = container(rendered[overlay])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports["http"] == int(settings_env(rendered[overlay])["LIC_PORT"])
    expected = {"startupProbe": "/health/live", "readinessProbe": "/health/ready", "livenessProbe": "/health/live"}
    for probe, path in expected.items():
        get = c[probe]["httpGet"]
        assert get["path"] == path and get["port"] in ports, probe
    # a slow start (torch import, weights, warm-up) is covered by the startup probe, not by killing the pod
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    assert c["readinessProbe"]["periodSeconds"] <= 10


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_grace_period_covers_prestop_and_drain(rendered, overlay):
    docs = rendered[overlay]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    pre_stop = container(docs)["lifecycle"]["preStop"]
    sleep = int(pre_stop["sleep"]["seconds"]) if "sleep" in pre_stop else int(pre_stop["exec"]["command"][-1])
    drain = float(settings_env(docs)["LIC_DRAIN_TIMEOUT_S"])
    # service/server.py: the drain waits up to drain_timeout_s, then uvicorn's graceful shutdown up to as long again
    assert pod["terminationGracePeriodSeconds"] >= sleep + 2 * drain + 5
    assert 1 <= sleep < drain


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_runs_non_root_with_a_read_only_root_filesystem(rendered, overlay):
    docs = rendered[overlay]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = container(docs)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["runAsNonRoot"] is True
    # the same uid as the images' USER
    for dockerfile in ("Dockerfile.cpu", "Dockerfile.cuda"):
        assert "USER 10001:10001" in (ROOT / "docker" / dockerfile).read_text()
    # the only writable place is /tmp (the images set HOME and XDG_CACHE_HOME there)
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert pod["enableServiceLinks"] is False  # else Kubernetes injects LIC_SERVICE_* next to the LIC_* settings
    assert pod["automountServiceAccountToken"] is False


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_resources_gpu_and_image(rendered, overlay):
    docs = rendered[overlay]
    c = container(docs)
    requests, limits = c["resources"]["requests"], c["resources"]["limits"]
    assert {"cpu", "memory"} <= set(requests) and {"cpu", "memory"} <= set(limits)
    env = settings_env(docs)
    if overlay == "gpu":
        assert limits["nvidia.com/gpu"] == "1" and requests["nvidia.com/gpu"] == "1"
        assert c["image"].endswith(":cuda") and env["LIC_DEVICE"] == "cuda"
        tolerations = one(docs, "Deployment")["spec"]["template"]["spec"]["tolerations"]
        assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)
    else:
        assert "nvidia.com/gpu" not in limits and "nvidia.com/gpu" not in requests
        assert c["image"].endswith(":cpu") and env["LIC_DEVICE"] == "cpu"


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_entrypoint_runs_one_worker_per_gpu_with_threads_from_the_cpu_limit(rendered, overlay):
    docs = rendered[overlay]
    limits = container(docs)["resources"]["limits"]
    gpus = int(limits.get("nvidia.com/gpu", 0))
    plan = entrypoint.make_plan(settings_env(docs), cpus=int(limits["cpu"]), gpus=gpus)
    assert plan.workers == max(1, gpus)
    assert plan.threads == int(limits["cpu"]) // plan.workers


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_configmap_holds_valid_settings(rendered, overlay, monkeypatch):
    env = settings_env(rendered[overlay])
    assert set(env) <= SETTINGS_VARS | ENTRYPOINT_VARS, set(env) - SETTINGS_VARS - ENTRYPOINT_VARS
    for key in list(__import__("os").environ):
        if key.startswith("LIC_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = ServiceSettings()  # parses every value the way the service will (raises on a bad one)
    assert settings.host == "0.0.0.0" and str(settings.weights_root) == "/opt/lic/weights"


# -- wiring between the objects --------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_selectors_match(rendered, overlay):
    docs = rendered[overlay]
    deployment = one(docs, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    matches = lambda selector: all(pod_labels.get(k) == v for k, v in selector.items())  # noqa: E731
    assert matches(deployment["spec"]["selector"]["matchLabels"])
    service = one(docs, "Service")
    assert matches(service["spec"]["selector"])
    assert matches(one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
    monitor = one(docs, "ServiceMonitor")
    assert all(service["metadata"]["labels"].get(k) == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= service_ports
    assert all(e["path"] == "/metrics" for e in monitor["spec"]["endpoints"])
    container_ports = {p["name"] for p in container(docs)["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports
    # job label = the Service's name: what the alerts' up{job="lic-service"} expects
    assert service["metadata"]["name"] == "lic-service" and "jobLabel" not in monitor["spec"]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_hpa_scales_the_deployment_on_metrics_the_adapter_serves(rendered, overlay):
    docs = rendered[overlay]
    hpa = one(docs, "HorizontalPodAutoscaler")
    deployment = one(docs, "Deployment")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    served = {rule["name"]["as"] for rule in adapter_rules()}
    used = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    assert used == {"lic_queue_depth", "lic_request_duration_p95_seconds"} and used <= served
    for rule in adapter_rules():  # per pod, so the HPA's Pods metrics can find them
        assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
        assert "<<.GroupBy>>" in rule["metricsQuery"] and "<<.LabelMatchers>>" in rule["metricsQuery"]
    pdb = one(docs, "PodDisruptionBudget")
    assert hpa["spec"]["minReplicas"] - pdb["spec"]["maxUnavailable"] >= 1  # a node drain never empties the service
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300
    # the queue-depth target is below what the queue holds before answering 429
    queue_size = int(settings_env(docs)["LIC_QUEUE_SIZE"])
    target = next(m for m in hpa["spec"]["metrics"] if m["pods"]["metric"]["name"] == "lic_queue_depth")
    assert float(target["pods"]["target"]["averageValue"]) < queue_size


def test_prometheus_rule_matches_the_compose_alerts(rendered):
    compose_rules = yaml.safe_load((ROOT / "docker" / "prometheus" / "alerts.yml").read_text())["groups"]
    for overlay in OVERLAYS:
        assert one(rendered[overlay], "PrometheusRule")["spec"]["groups"] == compose_rules


def test_dashboard_configmap_for_the_grafana_sidecar(rendered):
    cm = one(rendered["monitoring"], "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1" and cm["metadata"]["namespace"] == "monitoring"
    source = (K8S / "monitoring" / "dashboards" / "lic-service.json").read_text()
    assert cm["data"] == {"lic-service.json": source}
    assert len(source.encode()) < 900_000  # a ConfigMap holds at most 1 MiB (and kubectl apply's annotation less)
