"""The Dockerfile, docker-compose.yml, deploy/prometheus.yml and the lock file agree with
the code: every service runs something the image provides, with options that exist, under
a configuration that validates; the metrics port is one number everywhere; pins are pins.

Pure Python (PyYAML and the click group); no Docker engine. CI also runs
``docker-compose -f docker-compose.yml config -q`` (.ci/run).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shlex
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from streams import config as cfg
from streams.cli import cli

ROOT = Path(__file__).resolve().parents[2]
BROKER = "kafka://kafka:9092"


# -- parsing ---------------------------------------------------------------------------
@cache
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text("utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    """Instructions of the last build stage (the image that runs)."""
    steps = dockerfile()
    last = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last:]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in final_stage():
        if op == "ENV":
            for item in shlex.split(args):
                key, sep, value = item.partition("=")
                assert sep, f"ENV {item!r}: use KEY=VALUE"
                env[key] = value
    return env


def instruction(op: str) -> str:
    found = [args for o, args in final_stage() if o == op]
    assert len(found) == 1, f"the final stage should have one {op}, has {found}"
    return found[0]


def copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context (not --from a stage)."""
    out = []
    for op, args in dockerfile():
        if op != "COPY":
            continue
        words = shlex.split(args)
        if any(w.startswith("--from") for w in words):
            continue
        paths = [w for w in words if not w.startswith("--")]
        out.append((paths[:-1], paths[-1]))
    return out


def image_files() -> dict[str, Path]:
    """Image path -> repository file, for files the Dockerfile copies one by one."""
    out = {}
    for sources, dest in copies():
        for src in sources:
            target = dest.rstrip("/") + "/" + Path(src).name if dest.endswith("/") else dest
            out[target] = ROOT / src
    return out


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(value: Any) -> Any:
    """Compose's ``${VAR:-default}`` with nothing set in the environment (the defaults)."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


@cache
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))
    return interpolate(data)


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def ours() -> dict[str, dict[str, Any]]:
    """Services that run the coordwatch image (built from this Dockerfile)."""
    return {n: s for n, s in services().items() if "build" in s}


def as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def entrypoint_and_command(service: dict[str, Any]) -> tuple[list[str], list[str]]:
    """What the container runs: the service's entrypoint/command, else the image's."""
    if "entrypoint" in service:
        entry = as_list(service["entrypoint"])
        command = as_list(service.get("command"))  # a new entrypoint drops the image's CMD
    else:
        entry = exec_form(instruction("ENTRYPOINT"))
        command = as_list(service["command"]) if "command" in service else exec_form(instruction("CMD"))
    return entry, command


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def container_env(service: dict[str, Any]) -> dict[str, str]:
    return image_env() | service_env(service)


def resolve(args: list[str]) -> tuple[click.Command, list[str], str]:
    """Walk ``coordwatch ARGS`` through the click groups: (leaf command, its args, its path)."""
    cmd: click.Command = cli
    path = ["coordwatch"]
    rest = list(args)
    while isinstance(cmd, click.Group):
        assert rest, f"`{' '.join(path)}` needs a subcommand: {sorted(cmd.commands)}"
        name = rest.pop(0)
        assert name in cmd.commands, f"`{' '.join(path)} {name}`: no such command ({sorted(cmd.commands)})"
        cmd = cmd.commands[name]
        path.append(name)
    return cmd, rest, " ".join(path)


def check_click_args(cmd: click.Command, args: list[str], where: str) -> None:
    """Every option exists, flags take no value, the rest fits the declared arguments."""
    options = {}
    for p in cmd.params:
        if isinstance(p, click.Option):
            for name in [*p.opts, *p.secondary_opts]:
                options[name] = p
    positional = []
    i = 0
    while i < len(args):
        word = args[i]
        if word.startswith("-") and word != "-":
            name = word.split("=", 1)[0]
            assert name in options, f"{where}: no option {name} (has {sorted(options)})"
            opt = options[name]
            if not (opt.is_flag or opt.count) and "=" not in word:
                assert i + 1 < len(args), f"{where}: {name} needs a value"
                i += 1
        else:
            positional.append(word)
        i += 1
    arguments = [p for p in cmd.params if isinstance(p, click.Argument)]
    assert len(positional) <= len(arguments), f"{where}: extra arguments {positional[len(arguments):]}"
    missing = [a.name for a in arguments[len(positional) :] if a.required]
    assert not missing, f"{where}: missing argument(s) {missing}"


def load_script(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"deploy_script_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def metrics_port() -> int:
    return int(image_env()["COORDWATCH_KAFKA__WEB_PORT"])


# -- the image -------------------------------------------------------------------------
def test_entrypoint_is_a_console_script_of_the_project() -> None:
    (entry,) = exec_form(instruction("ENTRYPOINT"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["scripts"]
    assert entry in scripts, f"ENTRYPOINT {entry!r} is not in [project.scripts] {scripts}"
    module, _, attr = scripts[entry].partition(":")
    target = getattr(importlib.import_module(module), attr)
    assert callable(target)
    assert exec_form(instruction("CMD")) == ["worker"], "the image's default command is the worker"
    resolve(exec_form(instruction("CMD")))


def test_image_runs_as_a_non_root_user_on_a_pinned_slim_python() -> None:
    user = [args for op, args in final_stage() if op == "USER"]
    assert user and user[-1].split(":")[0] not in ("root", "0"), f"USER {user}"
    args = {k: v for op, a in dockerfile() if op == "ARG" for k, _, v in [a.partition("=")]}
    bases = [a.split()[0] for op, a in dockerfile() if op == "FROM"]
    for base in bases:
        image = args.get(base.strip("${}"), base) if base.startswith("${") else base
        assert re.fullmatch(r"python:3\.11-slim(-\w+)?", image), f"FROM {image}: python:3.11-slim expected"


def test_dependencies_are_installed_from_the_lock_and_the_project_without_deps() -> None:
    runs = " ".join(a for op, a in dockerfile() if op == "RUN")
    assert "-r /tmp/requirements.lock" in runs
    assert re.search(r"pip install [^&]*--no-deps[^&]* /src", runs), "the project goes in with --no-deps"
    for name, version in re.findall(r"\b(setuptools|wheel)([=<>!~]=?\S*)?", runs):
        if version:
            assert version.startswith("=="), f"build tool {name}{version} is not pinned"
    assert image_files()["/tmp/requirements.lock"] == ROOT / "deploy" / "requirements.lock"


def test_lock_pins_every_runtime_dependency_within_its_declared_range() -> None:
    pins: dict[str, str] = {}
    for line in (ROOT / "deploy" / "requirements.lock").read_text("utf-8").splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", line)
        assert m, f"requirements.lock: {line!r} is not name==version"
        name = canonicalize_name(m.group(1))
        assert name not in pins, f"requirements.lock pins {name} twice"
        pins[name] = m.group(2)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    for dep in project["dependencies"]:
        req = Requirement(dep)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} (pyproject) is not in deploy/requirements.lock: regenerate it"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name]} outside pyproject's {req}: "
            "python deploy/lock_requirements.py > deploy/requirements.lock"
        )
    assert "crc32c" in pins, "kafka-python[crc32c]: the extra's package is pinned too"


def test_dockerignore_lets_in_every_file_the_dockerfile_copies() -> None:
    rules = [r.strip() for r in (ROOT / ".dockerignore").read_text("utf-8").splitlines()]
    rules = [r for r in rules if r and not r.startswith("#")]
    assert rules[0] == "*", ".dockerignore starts from nothing and lets files in one by one"
    allowed = [r[1:].rstrip("/") for r in rules if r.startswith("!")]
    for sources, _ in copies():
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: no such file in the repository"
            assert any(src == a or src.startswith(a + "/") for a in allowed), f"COPY {src} is excluded by .dockerignore"


def test_health_check_fetches_the_metrics_port_the_image_sets() -> None:
    env = image_env()
    assert env["COORDWATCH_KAFKA__WEB_HOST"] == "0.0.0.0", "metrics must be reachable from other containers"
    check = instruction("HEALTHCHECK")
    cmd = exec_form(check[check.index("CMD") + 3 :].strip())
    assert cmd[:2] == ["python", "-c"] and "urllib.request" in cmd[2] and "/metrics" in cmd[2]
    assert "COORDWATCH_KAFKA__WEB_PORT" in cmd[2], "the check reads the port the worker binds"
    loaded = cfg.load(environ=env)
    assert loaded.config.kafka.web_port == metrics_port() > 0


# -- the compose file -------------------------------------------------------------------
def test_every_service_runs_something_the_image_provides() -> None:
    assert {"topic-init", "worker"} <= set(ours())
    files = image_files()
    for name, service in ours().items():
        entry, command = entrypoint_and_command(service)
        where = f"service {name}"
        if entry == exec_form(instruction("ENTRYPOINT")):
            cmd, args, path = resolve(command)
            check_click_args(cmd, args, f"{where}: `{path}`")
        else:
            assert entry[0] == "python" and len(entry) >= 2, f"{where}: entrypoint {entry}"
            script = entry[1]
            assert script in files, f"{where}: {script} is not copied into the image"
            src = files[script]
            assert src.is_file() and src.parent == ROOT / "deploy", f"{where}: {script} <- {src}"
            load_script(src).parser().parse_args(entry[2:] + command)


def test_every_coordwatch_container_uses_the_compose_kafka_with_a_valid_config() -> None:
    kafka = services()["kafka"]
    kenv = service_env(kafka)
    assert "PLAINTEXT://kafka:9092" in kenv["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert "broker" in kenv["KAFKA_PROCESS_ROLES"] and "controller" in kenv["KAFKA_PROCESS_ROLES"], "KRaft"
    for name, service in ours().items():
        env = container_env(service)
        assert env.get("COORDWATCH_KAFKA__BROKER") == BROKER, f"service {name}: COORDWATCH_KAFKA__BROKER"
        cfg.load(environ=env)  # raises ConfigError, naming the key, if the compose env is invalid
        if entrypoint_and_command(service)[1][:1] != ["generate"]:  # the one that never connects
            deps = service.get("depends_on") or {}
            assert "kafka" in deps or "topic-init" in deps, f"service {name} starts before its broker"


def test_workers_scale_and_keep_their_health_check() -> None:
    worker = services()["worker"]
    entry, command = entrypoint_and_command(worker)
    assert command[:1] == ["worker"] and "--worker-id" not in command, "the id comes from the host name"
    for key in ("container_name", "hostname", "ports"):
        assert key not in worker, f"worker: {key} stops `--scale worker=N`"
    assert not (worker.get("healthcheck") or {}).get("disable"), "the image's health check applies to workers"
    assert worker.get("restart") in ("unless-stopped", "always", "on-failure")
    deps = worker["depends_on"]
    assert deps["topic-init"]["condition"] == "service_completed_successfully"
    assert cfg.load(environ=container_env(worker)).config.topics.partitions == cfg.load(
        environ=container_env(services()["topic-init"])
    ).config.topics.partitions, "workers and topic-init agree on the partition count"


def test_services_that_are_not_workers_turn_the_metrics_health_check_off() -> None:
    for name, service in ours().items():
        entry, command = entrypoint_and_command(service)
        if command[:1] != ["worker"] or entry != ["coordwatch"]:
            assert (service.get("healthcheck") or {}).get("disable") is True, (
                f"service {name} serves no metrics: it would be 'unhealthy' forever"
            )


def test_demo_profile_generates_produces_and_shows_alerts() -> None:
    demo = {n: s for n, s in services().items() if "demo" in (s.get("profiles") or [])}
    for name, service in services().items():
        if name not in demo:
            assert not service.get("profiles"), f"{name} should run without a profile"
    runs = {n: entrypoint_and_command(s)[1] for n, s in demo.items()}
    gen = next(n for n, c in runs.items() if c[:1] == ["generate"])
    prod = next(n for n, c in runs.items() if c[:1] == ["produce"])
    assert any(c[:1] == ["alerts"] and "--follow" in c for c in runs.values())
    out = runs[gen][runs[gen].index("--out") + 1]
    assert Path(runs[prod][1]).parent == Path(out), "produce reads what generate wrote"
    mounts = {n: {v.split(":")[1]: v.split(":")[0] for v in demo[n].get("volumes", [])} for n in (gen, prod)}
    assert mounts[gen].get(out) and mounts[gen][out] == mounts[prod].get(out), "one shared volume at --out"
    assert mounts[gen][out] in compose()["volumes"]
    assert demo[prod]["depends_on"][gen]["condition"] == "service_completed_successfully"


def test_named_volumes_of_coordwatch_containers_exist_in_the_image_for_the_non_root_user() -> None:
    runs = " ".join(a for op, a in final_stage() if op == "RUN")
    for name, service in ours().items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source in compose().get("volumes", {}):
                assert re.search(rf"mkdir -p [^&]*{re.escape(target)}\b", runs), (
                    f"service {name}: {target} must be made (and chowned) in the image, "
                    "or a new named volume is owned by root"
                )


def test_prometheus_scrapes_every_worker_on_the_metrics_port() -> None:
    prom = services()["prometheus"]
    assert not prom["image"].endswith(":latest") and ":" in prom["image"]
    flags = as_list(prom.get("command"))
    conf_path = next(f.split("=", 1)[1] for f in flags if f.startswith("--config.file="))
    mounted = {v.split(":")[1]: v.split(":")[0] for v in prom["volumes"]}
    assert (ROOT / mounted[conf_path]).resolve() == ROOT / "deploy" / "prometheus.yml"
    conf = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text("utf-8"))
    targets = [
        (name, sd["port"])
        for job in conf["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for name in sd["names"]
    ]
    assert targets, "workers are found by DNS service discovery"
    for name, port in targets:
        assert name in services() and entrypoint_and_command(services()[name])[1][:1] == ["worker"], name
        assert port == metrics_port(), f"prometheus scrapes {name}:{port}, workers serve :{metrics_port()}"


@pytest.mark.parametrize("name", ["kafka", "prometheus"])
def test_third_party_images_are_pinned(name: str) -> None:
    image = services()[name]["image"]
    repo, _, tag = image.rpartition(":")
    assert repo and re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {image} is not pinned to a release"
    if name == "kafka":
        assert repo == "apache/kafka"
