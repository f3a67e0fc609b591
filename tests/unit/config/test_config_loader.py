"""The loader: ServerRoot, errors in included files, MPM clamps, vhost inheritance,
describe() and the generated directive reference."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import proxympm.config as config_package
from proxympm.config import (
    ConfigError,
    CustomLog,
    ServerConfig,
    TLSSettings,
    describe,
    load_config,
)
from proxympm.config.reference import render

Load = Callable[..., ServerConfig]
Write = Callable[..., Path]
REPO = Path(__file__).resolve().parents[3]


def error_of(load: Load, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(text)
    return caught.value


# -- ServerRoot and the config file ----------------------------------------------


def test_relative_config_path_is_under_the_d_directory(tmp_path: Path, write: Write) -> None:
    write("Listen 80\nPidFile run/p.pid\n", "conf/httpd.conf")
    config = load_config("conf/httpd.conf", server_root=str(tmp_path))
    assert config.config_file == f"{tmp_path}/conf/httpd.conf"
    assert config.server_root == str(tmp_path)
    assert config.pid_file == f"{tmp_path}/run/p.pid"


def test_server_root_defaults_to_the_working_directory(
    tmp_path: Path, write: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write("Listen 80\n")
    monkeypatch.chdir(tmp_path)
    config = load_config(str(path))
    assert config.server_root == str(tmp_path)
    assert config.pid_file == f"{tmp_path}/logs/httpd.pid"


def test_serverroot_directive_overrides_d_for_later_paths(tmp_path: Path, write: Write) -> None:
    (tmp_path / "srv").mkdir()
    path = write(f"ServerRoot {tmp_path}/srv\nListen 80\nErrorLog logs/e\n", "etc/httpd.conf")
    config = load_config(str(path), server_root="/")
    assert config.server_root == f"{tmp_path}/srv"
    assert config.error_log == f"{tmp_path}/srv/logs/e"


def test_missing_main_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path / "nope.conf"))
    assert str(caught.value) == (
        f"Could not open configuration file {tmp_path}/nope.conf: No such file or directory"
    )


def test_defines_from_command_line_and_file(load: Load) -> None:
    config = load("Define FROM_FILE\n<IfDefine TLS>\nListen 443\n</IfDefine>\nListen 80\n",
                  defines=["TLS"])  # fmt: skip
    assert [listen.port for listen in config.listens] == [443, 80]
    assert config.defines == ("TLS", "FROM_FILE")


# -- errors in included files -------------------------------------------------------


def test_directive_error_in_an_included_file_names_that_file(
    tmp_path: Path, load: Load, write: Write
) -> None:
    inc = write("# vhost\n\n  KeepAlive sometimes\n", "conf.d/site.conf")
    error = error_of(load, "Listen 80\n<VirtualHost *:80>\nInclude conf.d/*.conf\n</VirtualHost>\n")
    assert (error.file, error.line, error.message) == (str(inc), 3, "KeepAlive must be On or Off")
    assert str(error) == f"AH00526: Syntax error on line 3 of {inc}:\nKeepAlive must be On or Off"


def test_config_error_pickles_with_its_attributes() -> None:
    error = ConfigError("boom", "/x.conf", 4, "read")
    again = pickle.loads(pickle.dumps(error))
    assert (again.message, again.file, again.line, str(again)) == (
        "boom",
        "/x.conf",
        4,
        "Syntax error on line 4 of /x.conf: boom",
    )


# -- MPM clamps ------------------------------------------------------------------------


def test_max_request_workers_rounded_down_to_threads_per_child(load: Load) -> None:
    config = load("Listen 80\nThreadsPerChild 30\nMaxRequestWorkers 100\n")
    assert config.max_request_workers == 90
    assert config.warnings == (
        "AH00513: WARNING: MaxRequestWorkers of 100 is not an integer multiple of "
        "ThreadsPerChild of 30, decreasing to nearest multiple 90, for a maximum of 3 servers.",
    )


def test_max_request_workers_capped_at_server_limit(load: Load) -> None:
    config = load("Listen 80\nServerLimit 4\nThreadsPerChild 25\nMaxRequestWorkers 400\n"
                  "StartServers 2\nMaxSpareThreads 250\n")  # fmt: skip
    assert config.max_request_workers == 100
    assert config.warnings[0].startswith(
        "AH00515: WARNING: MaxRequestWorkers of 400 would require 16 servers and would exceed "
        "ServerLimit of 4, decreasing to 100."
    )


def test_max_request_workers_raised_to_threads_per_child(load: Load) -> None:
    config = load("Listen 80\nThreadsPerChild 50\nMaxRequestWorkers 10\nThreadLimit 64\n")
    assert config.max_request_workers == 50
    assert "MaxRequestWorkers of 10 is less than ThreadsPerChild of 50" in config.warnings[0]


def test_default_400_workers_is_rounded_for_a_new_thread_count(load: Load) -> None:
    # httpd's default MaxRequestWorkers is a fixed 400, not ServerLimit x ThreadsPerChild.
    config = load("Listen 80\nThreadsPerChild 64\n")
    assert config.max_request_workers == 384
    assert config.warnings[0].startswith("AH00513:")


def test_threads_per_child_capped_at_thread_limit(load: Load) -> None:
    config = load("Listen 80\nThreadLimit 20\nThreadsPerChild 25\nMaxRequestWorkers 200\n"
                  "MinSpareThreads 20\nMaxSpareThreads 100\n")  # fmt: skip
    assert (config.threads_per_child, config.max_request_workers) == (20, 200)
    assert config.warnings == (
        "WARNING: ThreadsPerChild of 25 exceeds ThreadLimit of 20 threads, decreasing to 20. "
        "To increase, please see the ThreadLimit directive.",
    )


def test_max_spare_threads_raised_to_min_plus_threads_per_child(load: Load) -> None:
    config = load("Listen 80\nMinSpareThreads 100\nMaxSpareThreads 110\n")
    assert config.max_spare_threads == 125
    assert config.warnings[0].startswith("WARNING: MaxSpareThreads of 110 is less than")


def test_values_below_one_are_raised(load: Load) -> None:
    config = load("Listen 80\nStartServers 0\nMinSpareThreads 0\nServerLimit 0\n"
                  "MaxRequestWorkers 25\nMaxSpareThreads 30\n")  # fmt: skip
    assert (config.start_servers, config.min_spare_threads, config.server_limit) == (1, 1, 1)
    assert len(config.warnings) == 3


def test_start_servers_capped_at_what_max_request_workers_allows(load: Load) -> None:
    config = load("Listen 80\nMaxRequestWorkers 50\nStartServers 5\n")
    assert config.start_servers == 2
    assert "StartServers of 5" in config.warnings[0]


def test_hard_limits(load: Load) -> None:
    config = load("Listen 80\nServerLimit 30000\nThreadLimit 200000\n")
    assert (config.server_limit, config.thread_limit) == (20000, 100000)


# -- virtual hosts -----------------------------------------------------------------------


def test_vhost_inherits_unset_values_from_the_main_server(
    tmp_path: Path, load: Load, write: Write
) -> None:
    write("C", "c.pem")
    config = load(
        "Listen 80\nListen 443\nServerName main.example\nTimeout 30\nKeepAliveTimeout 2\n"
        "ProxyTimeout 45\nLimitRequestBody 1000\nErrorLog logs/main_err\n"
        "SSLProtocol TLSv1.3\nCustomLog logs/main_access common\n"
        "<VirtualHost *:80>\n"
        "  Timeout 10\n"
        "</VirtualHost>\n"
        "<VirtualHost 10.0.0.1:443 [::1]:443>\n"
        "  ServerName tls.example\n  ServerAlias www.tls.example *.tls.example\n"
        "  SSLEngine on\n  SSLCertificateFile c.pem\n"
        "  ErrorLog logs/tls_err\n  CustomLog logs/tls_access combined\n"
        "</VirtualHost>\n"
    )
    plain, tls = (v.host for v in config.vhosts)
    assert (plain.server_name, plain.timeout, plain.keepalive_timeout) == (
        "main.example",
        10.0,
        2.0,
    )
    assert (plain.proxy_timeout, plain.limit_request_body) == (45.0, 1000)
    assert plain.error_log == f"{tmp_path}/logs/main_err"
    assert plain.custom_logs == config.main.custom_logs
    assert plain.where == f"{tmp_path}/httpd.conf:11"
    assert config.vhosts[0].addresses == (("*", 80),)
    assert config.vhosts[1].addresses == (("10.0.0.1", 443), ("::1", 443))
    assert (tls.server_name, tls.server_aliases) == (
        "tls.example",
        ("www.tls.example", "*.tls.example"),
    )
    assert tls.tls == TLSSettings(engine=True, certificate_file=f"{tmp_path}/c.pem",
                                  protocols=("TLSv1.3",))  # fmt: skip
    assert tls.error_log == f"{tmp_path}/logs/tls_err"
    assert [log.target for log in tls.custom_logs] == [f"{tmp_path}/logs/tls_access"]
    assert config.main.tls.engine is False


def test_vhost_sees_main_log_nicknames_and_its_own(tmp_path: Path, load: Load) -> None:
    config = load(
        'Listen 80\nLogFormat "%h main" mine\n'
        '<VirtualHost *:80>\nLogFormat "%h own" own\nCustomLog a mine\nCustomLog b own\n'
        "</VirtualHost>\n"
    )
    assert config.vhosts[0].host.custom_logs == (
        CustomLog(f"{tmp_path}/a", "%h main", f"{tmp_path}/httpd.conf:5"),
        CustomLog(f"{tmp_path}/b", "%h own", f"{tmp_path}/httpd.conf:6"),
    )


@pytest.mark.parametrize(
    ("address", "expected"),
    [("*", ("*", 0)), ("*:*", ("*", 0)), ("_default_:443", ("_default_", 443)),
     ("[2001:db8::1]", ("2001:db8::1", 0)), ("host.example:8080", ("host.example", 8080))],
)  # fmt: skip
def test_vhost_address_forms(load: Load, address: str, expected: tuple[str, int]) -> None:
    config = load(f"Listen 80\n<VirtualHost {address}>\n</VirtualHost>\n")
    assert config.vhosts[0].addresses == (expected,)


@pytest.mark.parametrize(
    ("address", "message"),
    [("*:http", "Invalid address or port in <VirtualHost *:http>"),
     ("80", "Missing address for VirtualHost"),
     ("[::1", "Invalid address or port in <VirtualHost [::1>")],
)  # fmt: skip
def test_vhost_bad_addresses(load: Load, address: str, message: str) -> None:
    error = error_of(load, f"Listen 80\n<VirtualHost {address}>\n</VirtualHost>\n")
    assert (error.line, error.message) == (2, message)


def test_loglevel_in_a_vhost_is_checked_then_ignored(load: Load) -> None:
    config = load("Listen 80\nLogLevel info\n<VirtualHost *:80>\nLogLevel debug\n</VirtualHost>\n")
    assert config.log_level == "info"
    assert "LogLevel in <VirtualHost> is ignored" in config.warnings[0]
    error = error_of(load, "Listen 80\n<VirtualHost *:80>\nLogLevel noisy\n</VirtualHost>\n")
    assert error.line == 3


def test_main_server_sslengine_without_certificate_points_at_sslengine(
    tmp_path: Path, load: Load
) -> None:
    error = error_of(load, "Listen 443\n\nSSLEngine on\n")
    assert (error.file, error.line) == (f"{tmp_path}/httpd.conf", 3)
    assert "the main server" in error.message


# -- describe and the reference ---------------------------------------------------------


def test_describe_shows_listeners_hosts_routes_and_mpm(tmp_path: Path, load: Load) -> None:
    config = load(
        "Listen 80\nServerName main.example\n"
        "ProxyPass /static !\nProxyPass /api http://127.0.0.1:8000/api timeout=5 retry=0\n"
        "ProxyPassReverse /api http://127.0.0.1:8000/api\n"
        "ThreadsPerChild 30\n"
        "<VirtualHost *:80>\n  ServerName v.example\n  ServerAlias w.example\n"
        "  <Location /app>\n    ProxyPass http://127.0.0.1:9000/app disablereuse=On\n"
        "  </Location>\n</VirtualHost>\n"
    )
    text = describe(config)
    conf = f"{tmp_path}/httpd.conf"
    assert f"*:80 http  ({conf}:1)" in text
    assert "ServerName: main.example" in text
    assert f"/static -> ! (not proxied)  ({conf}:3)" in text
    assert f"/api -> http://127.0.0.1:8000/api timeout=5 retry=0  ({conf}:4)" in text
    assert f"ProxyPassReverse /api http://127.0.0.1:8000/api  ({conf}:5)" in text
    assert f"<VirtualHost *:80>  ({conf}:7)" in text
    assert "ServerAlias: w.example" in text
    vhost_part = text.split("<VirtualHost *:80>")[1]
    app = vhost_part.index("/app -> http://127.0.0.1:9000/app disablereuse=On")
    assert app < vhost_part.index("/static -> !") < vhost_part.index("/api -> ")
    assert "ThreadsPerChild 30" in text and "MaxRequestWorkers 390" in text
    assert "AH00513" in text.split("Warnings:")[1]


def test_package_exports() -> None:
    for name in (
        "load_config",
        "ConfigError",
        "describe",
        "ServerConfig",
        "HostConfig",
        "VirtualHost",
        "ProxyRoute",
        "WorkerParams",
        "Listen",
        "TLSSettings",
    ):
        assert hasattr(config_package, name), name  # fmt: skip


def test_committed_directive_reference_is_up_to_date() -> None:
    committed = (REPO / "conf" / "DIRECTIVES.md").read_text(encoding="utf-8")
    assert committed == render(), (
        "conf/DIRECTIVES.md is stale: run python -m proxympm.config.reference > conf/DIRECTIVES.md"
    )


def test_reference_module_entry_point_prints_the_reference() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "proxympm.config.reference"],
        capture_output=True, text=True, check=True, cwd=REPO, env=env,
    )  # fmt: skip
    assert result.stdout == render()
    assert "### AsyncRequestWorkerFactor" in result.stdout
    assert "RLIMIT_NOFILE" in result.stdout
