"""RequestReadTimeout (mod_reqtimeout syntax) and ChildCPUAffinity."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxympm.config import ConfigError, load_config
from proxympm.config.model import ReadStage


def conf(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "p.conf"
    path.write_text("Listen 127.0.0.1:18999\nProxyPass / http://127.0.0.1:9/\n" + body)
    return path


def test_defaults_are_mod_reqtimeout_s(tmp_path: Path) -> None:
    rt = load_config(str(conf(tmp_path, ""))).main.read_timeout
    assert rt.handshake == ReadStage(0, 0, 0)
    assert rt.header == ReadStage(20, 40, 500)
    assert rt.body == ReadStage(20, 0, 500)


def test_stages_named_replace_only_themselves(tmp_path: Path) -> None:
    cfg = load_config(str(conf(tmp_path, "RequestReadTimeout header=5-10,MinRate=100 "
                                          "handshake=3\n")))
    rt = cfg.main.read_timeout
    assert rt.header == ReadStage(5, 10, 100)
    assert rt.handshake == ReadStage(3, 0, 0)
    assert rt.body == ReadStage(20, 0, 500)


def test_a_range_without_minrate_uses_the_default_rate(tmp_path: Path) -> None:
    rt = load_config(str(conf(tmp_path, "RequestReadTimeout body=10-30\n"))).main.read_timeout
    assert rt.body == ReadStage(10, 30, 500)


def test_a_vhost_takes_the_stages_it_does_not_name_from_the_main_server(
    tmp_path: Path,
) -> None:
    # The vhost comes first in the file: merging happens after reading, as httpd's does.
    cfg = load_config(str(conf(tmp_path, (
        "<VirtualHost 127.0.0.1:18999>\n"
        "ServerName v.example\n"
        "RequestReadTimeout header=7\n"
        "</VirtualHost>\n"
        "RequestReadTimeout body=9-19,MinRate=900 header=5-10\n"))))
    assert cfg.main.read_timeout.header == ReadStage(5, 10, 500)
    rt = cfg.vhosts[0].host.read_timeout
    assert rt.header == ReadStage(7, 0, 0)  # a fixed timeout: no MinRate
    assert rt.body == ReadStage(9, 19, 900)  # the main server's, not the default
    assert rt.handshake == ReadStage(0, 0, 0)


@pytest.mark.parametrize("arg", ["header=abc", "head=5", "header=10-5", "header=5,MinRate=x"])
def test_bad_arguments_name_the_line(tmp_path: Path, arg: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(str(conf(tmp_path, f"RequestReadTimeout {arg}\n")))
    assert exc.value.line == 3 and "RequestReadTimeout" in exc.value.message


def test_cpu_affinity_flag(tmp_path: Path) -> None:
    assert load_config(str(conf(tmp_path, ""))).cpu_affinity is True
    assert load_config(str(conf(tmp_path, "ChildCPUAffinity off\n"))).cpu_affinity is False
