"""Monitoring: every PromQL expression of the dashboard, the alerts and the HPA's adapter rules reads metrics (and
labels) that a real service really exports; promtool checks the Prometheus configs and rules and runs the alert
unit tests; and a real Prometheus server scrapes a real service and answers the dashboard's queries with data.

The service runs the way the images run it: ``docker/entrypoint.py`` (one worker, so it execs
``python -m service serve``) in a subprocess on 127.0.0.1, on the service tests' tiny model.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, Set

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the deploy/ helpers live at the repository root
    sys.path.insert(0, str(ROOT))
pytest.register_assert_rewrite("service_fixtures")

from conftest import load_script  # noqa: E402
from service_fixtures import MODEL, QUALITIES, png  # noqa: E402

from deploy import promql  # noqa: E402
from deploy.testing import write_preset_hook  # noqa: E402
from service.errors import ERROR_CODES  # noqa: E402
from service.metrics import STAGES, ServiceMetrics  # noqa: E402
from service.process import free_port  # noqa: E402

pytest_plugins = ("service_fixtures",)

PROMETHEUS_DIR = ROOT / "docker" / "prometheus"
#: labels Prometheus (static configs, the operator, the entry point's merged metrics) adds to every series
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "endpoint", "container", "worker"}
#: labels whose values depend on the deployment, not on the service's vocabulary
FREE_LABELS = {"job", "instance", "namespace", "pod", "device", "model", "quality", "le"}


def _tool(name: str) -> str:
    exe = shutil.which(name)
    if not exe:
        pytest.skip(f"{name} is not installed (Debian package 'prometheus'; run scripts/install_test_tools.sh)")
    return exe


# -- a real service and its traffic ----------------------------------------------------------------------------------
class Service:
    def __init__(self, weights_root: Path, hook_dir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("LIC_")},
            "PYTHONPATH": str(write_preset_hook(hook_dir)),
            "LIC_WORKERS": "1",
            "LIC_DEVICE": "cpu",
            "LIC_HOST": "127.0.0.1",
            "LIC_PORT": str(self.port),
            "LIC_WEIGHTS_ROOT": str(weights_root),
            "LIC_MODELS": json.dumps({MODEL: list(QUALITIES)}),
            "LIC_MAX_BATCH_DELAY_MS": "5",
            "LIC_MAX_PIXELS": str(256 * 256),
            "LIC_DRAIN_TIMEOUT_S": "2",
        }
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "docker" / "entrypoint.py"), "--log-level", "warning"],
            env=env,
            cwd=hook_dir,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.sent = 0

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, self.proc.stderr.read()
            try:
                if httpx.get(self.url + "/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the service did not become ready"
            time.sleep(0.1)

    def traffic(self, rounds: int = 1) -> None:
        """Compress at every quality, decompress the result, and one refused request, ``rounds`` times."""
        with httpx.Client(base_url=self.url, timeout=30) as http:
            for r in range(rounds):
                for quality in QUALITIES:
                    image = png(48, 64, seed=self.sent)
                    res = http.post(
                        "/compress", params={"quality": quality}, content=image, headers={"Content-Type": "image/png"}
                    )
                    assert res.status_code == 200, res.text
                    back = http.post(
                        "/decompress", content=res.content, headers={"Content-Type": "application/octet-stream"}
                    )
                    assert back.status_code == 200, back.text
                    self.sent += 1
                refused = http.post(
                    "/compress", params={"quality": 1}, content=b"GIF89a", headers={"Content-Type": "image/gif"}
                )
                assert refused.status_code == 415

    def scrape(self) -> str:
        return httpx.get(self.url + "/metrics", timeout=10).text

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()


@pytest.fixture(scope="module")
def service(weights_root, tmp_path_factory) -> Iterator[Service]:
    svc = Service(weights_root, tmp_path_factory.mktemp("hook"))
    try:
        svc.wait_ready()
        svc.traffic(rounds=2)
        yield svc
    finally:
        svc.stop()


def _cuda_families(monkeypatch) -> list:
    """What the service's GPU collector exports, with torch.cuda faked (no GPU here)."""
    import torch

    class Props:
        total_memory = 80 * 2**30

    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda dev=None: 2**30)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda dev=None: 2 * 2**30)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda dev=None: Props())
    monkeypatch.setattr(torch.cuda, "utilization", lambda dev=None: 37)
    metrics = ServiceMetrics()
    metrics.watch_device("cuda:0")
    return list(text_string_to_metric_families(metrics.render().decode()))


@pytest.fixture(scope="module")
def exported(service) -> Dict[str, Dict[str, Set[str]]]:
    """metric (sample) name -> label -> values seen, from a real scrape plus the GPU collector."""
    families = list(text_string_to_metric_families(service.scrape()))
    with pytest.MonkeyPatch.context() as mp:
        families += _cuda_families(mp)
    out: Dict[str, Dict[str, Set[str]]] = {}
    for family in families:
        for sample in family.samples:
            labels = out.setdefault(sample.name, {})
            for key, value in sample.labels.items():
                labels.setdefault(key, set()).add(value)
    return out


def test_the_gpu_collector_exports_memory_and_utilisation(monkeypatch):
    names = {s.name for f in _cuda_families(monkeypatch) for s in f.samples if s.name.startswith("lic_device")}
    assert names == {
        "lic_device_memory_allocated_bytes",
        "lic_device_memory_reserved_bytes",
        "lic_device_memory_total_bytes",
        "lic_device_utilization_ratio",
    }


def test_every_expression_parses():
    expressions = promql.all_expressions()
    assert len(expressions) >= 30
    for expr in expressions:
        assert expr.metrics, f"{expr.source}: selects no metric"


def test_every_expression_reads_exported_metrics(exported):
    for expr in promql.all_expressions():
        missing = expr.metrics - set(exported) - promql.SYNTHETIC
        assert not missing, f"{expr.source} reads {sorted(missing)}, which the service does not export: {expr.raw}"


def test_label_names_and_values_are_real(exported):
    vocab = {"reason": set(ERROR_CODES), "stage": set(STAGES)}
    for expr in promql.all_expressions():
        labels_in_expr = set(TARGET_LABELS)
        for sel in promql.selectors(expr.promql):
            if sel.metric in promql.SYNTHETIC:
                continue
            known = exported[sel.metric]
            labels_in_expr |= set(known)
            for label, op, value in sel.matchers:
                assert label in known or label in TARGET_LABELS, f"{expr.source}: {sel.metric} has no label {label!r}"
                if label in FREE_LABELS or value == ".*" or op.startswith("!"):
                    continue
                allowed = vocab.get(label) or known.get(label, set())
                wanted = value.split("|") if op == "=~" else [value]
                unknown = [v for v in wanted if v not in allowed]
                assert not unknown, (
                    f"{expr.source}: {sel.metric}{{{label}}} is never {unknown} (seen: {sorted(allowed)})"
                )
        stray = promql.grouping_labels(expr.promql) - labels_in_expr
        assert not stray, f"{expr.source}: groups by {sorted(stray)}, labels none of its metrics has"


def test_shipped_expressions_are_the_ones_checked():
    """Nothing escapes the checks: every file with PromQL is read by deploy.promql."""
    sources = {e.source.split()[0] for e in promql.all_expressions()}
    assert sources == {"dashboard", "rule", "adapter"}
    assert len(promql.alert_expressions()) == 5 and len(promql.adapter_expressions()) == 4


# -- promtool ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.gpu.yml"])
def test_promtool_check_config(config, tmp_path):
    promtool = _tool("promtool")
    data = yaml.safe_load((PROMETHEUS_DIR / config).read_text())
    # the container path of the rule file, pointed at the file compose mounts there
    assert data["rule_files"] == ["/etc/prometheus/alerts.yml"]
    data["rule_files"] = [str(PROMETHEUS_DIR / "alerts.yml")]
    (tmp_path / config).write_text(yaml.safe_dump(data))
    result = subprocess.run(
        [promtool, "check", "config", str(tmp_path / config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout + result.stderr


def test_promtool_check_rules_of_compose_and_kubernetes(tmp_path):
    promtool = _tool("promtool")
    operator_rule = yaml.safe_load((ROOT / "k8s" / "base" / "prometheusrule.yaml").read_text())
    (tmp_path / "operator.yml").write_text(yaml.safe_dump({"groups": operator_rule["spec"]["groups"]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(PROMETHEUS_DIR / "alerts.yml"), str(tmp_path / "operator.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_alert_unit_tests():
    promtool = _tool("promtool")
    result = subprocess.run(
        [promtool, "test", "rules", str(PROMETHEUS_DIR / "alerts_test.yml")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {
        t["alertname"]
        for case in yaml.safe_load((PROMETHEUS_DIR / "alerts_test.yml").read_text())["tests"]
        for t in case["alert_rule_test"]
    }
    alerts = {
        r["alert"] for g in yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"] for r in g["rules"]
    }
    assert tested == alerts  # every alert has a firing and a quiet case


# -- the dashboard -----------------------------------------------------------------------------------------------
REQUIRED_PANELS = {
    "Request rate": ["lic_http_requests_total"],
    "Request latency (end to end)": ["lic_http_request_duration_seconds_bucket"],
    "Queue wait": ["lic_stage_duration_seconds_bucket"],
    "Inference": ["lic_stage_duration_seconds_bucket"],
    "Batch size distribution": ["lic_batch_size_bucket"],
    "Queue depth": ["lic_queue_depth"],
    "Bits per pixel": ["lic_bits_per_pixel_sum", "lic_bits_per_pixel_count"],
    "Bytes saved per second": ["lic_original_bytes_total", "lic_compressed_bytes_total"],
    "Rejections by reason": ["lic_rejections_total"],
    "GPU utilisation": ["lic_device_utilization_ratio"],
    "GPU memory": ["lic_device_memory_reserved_bytes", "lic_device_memory_total_bytes"],
    "Images/s per GPU": ["lic_batch_size_sum"],
}


def test_dashboard_has_every_panel_users_need():
    panels = {p["title"]: p for p in promql.dashboard_panels()}
    for title, metrics in REQUIRED_PANELS.items():
        assert title in panels, f"missing panel {title!r}"
        read = set().union(
            *(promql.metric_names(promql.grafana_to_promql(t["expr"])) for t in panels[title]["targets"])
        )
        assert set(metrics) <= read, f"{title} reads {sorted(read)}"
    for title in ("Request latency (end to end)", "Queue wait", "Inference"):
        exprs = " ".join(t["expr"] for t in panels[title]["targets"])
        assert all(f"histogram_quantile({q}," in exprs for q in ("0.5", "0.95", "0.99")), title
    assert 'stage="queue_wait"' in panels["Queue wait"]["targets"][0]["expr"]
    assert 'stage="inference"' in panels["Inference"]["targets"][0]["expr"]
    assert "by (model, quality)" in panels["Bits per pixel"]["targets"][0]["expr"]
    assert "by (reason)" in panels["Rejections by reason"]["targets"][0]["expr"]
    assert panels["Batch size distribution"]["type"] == "heatmap"


def test_dashboard_is_well_formed_for_grafana():
    dashboard = json.loads(promql.DASHBOARD.read_text())
    assert dashboard["uid"] == "lic-service" and dashboard["schemaVersion"] >= 36
    panels = list(promql.dashboard_panels())
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    cells = set()
    for p in panels:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] >= 1, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"] and all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for name in ("job", "model", "quality"):
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
    # every $variable used in a query is defined (or is one of Grafana's own)
    for expr in promql.dashboard_expressions():
        promql.grafana_to_promql(expr.raw, {k: ".*" for k in variables})


# -- a real Prometheus server ------------------------------------------------------------------------------------
class Prometheus:
    def __init__(self, exe: str, target: str, workdir: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
            # the compose stack's job name: the alerts' up{job="lic-service"} relies on it
            "scrape_configs": [{"job_name": "lic-service", "static_configs": [{"targets": [target]}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = open(workdir / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [
                exe,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def api(self, path: str, **params) -> dict:
        body = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10).json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list:
        return self.api("query", query=expr)["result"]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _finite(result: list) -> bool:
    return any(math.isfinite(float(sample["value"][1])) for sample in result)


@pytest.mark.slow
def test_prometheus_scrapes_the_service_and_answers_the_dashboard(service, tmp_path):
    exe = _tool("prometheus")
    prom = Prometheus(exe, f"127.0.0.1:{service.port}", tmp_path)
    stop = threading.Event()
    errors = []

    def load():  # steady, bounded traffic while Prometheus scrapes (at most ~60 s)
        deadline = time.monotonic() + 60
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                service.traffic()
                time.sleep(0.1)
        except Exception as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    loader = threading.Thread(target=load, daemon=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert prom.proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                if prom.query('up{job="lic-service"} == 1'):
                    break
            except (httpx.TransportError, ValueError):
                pass
            assert time.monotonic() < deadline, "Prometheus never scraped the service"
            time.sleep(0.2)
        loader.start()
        # enough scrapes with traffic in between for rate() over the substituted $__rate_interval
        values = {"__rate_interval": "10s", "__interval": "1s", "__range": "5m"}
        scrapes = 'max(count_over_time(lic_http_requests_total{endpoint="/compress", status="200"}[30s]))'
        while not prom.query(scrapes) or float(prom.query(scrapes)[0]["value"][1]) < 6:
            assert time.monotonic() < deadline + 30, "too few scrapes"
            time.sleep(0.5)
        assert not errors, errors

        answered, empty = {}, []
        for expr in promql.dashboard_expressions(values=values):
            if expr.source.startswith("dashboard variable"):
                series = prom.api("series", **{"match[]": expr.promql})
                assert series, f"{expr.source}: no series for {expr.promql}"
                continue
            result = prom.query(expr.promql)  # a syntax error would be a 400 here
            if any(m.startswith("lic_device_") for m in expr.metrics):  # exported on GPUs only
                assert result == [], f"{expr.source}: GPU series on a CPU service?"
                continue
            answered[expr.source] = result
            if not _finite(result):
                empty.append(expr.source)
        assert not empty, f"panels without data: {empty}"
        # the values mean what the panels say
        rate = prom.query(
            promql.grafana_to_promql(
                'sum(rate(lic_http_requests_total{endpoint="/compress", status="200"}[$__rate_interval]))', values
            )
        )
        assert float(rate[0]["value"][1]) > 0
        models = prom.api("label/model/values")
        assert MODEL in models
        stages = {s["metric"]["stage"] for s in prom.query("sum by (stage) (lic_stage_duration_seconds_count)")}
        assert set(STAGES) <= stages
        saved = prom.query("sum(lic_original_bytes_total) - sum(lic_compressed_bytes_total)")
        assert float(saved[0]["value"][1]) > 0  # PNGs of smooth images still shrink
        # the alert rules loaded and evaluate cleanly
        groups = prom.api("rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) == 5 and all(r["health"] == "ok" for r in rules), rules
        # the HPA's adapter queries, as the adapter would run them (namespace/pod labels set to this target's)
        for rule in promql.adapter_rules():
            series = rule["seriesQuery"].split("{")[0]
            query = (
                rule["metricsQuery"]
                .replace("<<.Series>>", series)
                .replace("<<.LabelMatchers>>", 'job="lic-service"')
                .replace("<<.GroupBy>>", "instance")
            )
            assert _finite(prom.query(query)), rule["name"]["as"]

        # and the picture of the dashboard renders from this Prometheus
        out = load_script("render_dashboard").render(
            prom.url, tmp_path / "dashboard.png", minutes=1, step=1, rate_interval="10s"
        )
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 50_000
    finally:
        stop.set()
        if loader.is_alive():
            loader.join(30)
        prom.stop()
