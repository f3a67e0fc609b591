"""Directives: lookup, contexts, arity, defaults and conversions, httpd's messages."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from proxympm.config import (
    COMBINED_LOG_FORMAT,
    COMMON_LOG_FORMAT,
    ConfigError,
    CustomLog,
    Listen,
    ServerConfig,
    TLSSettings,
)
from proxympm.config.directives import DECLARATIONS, lookup
from proxympm.config.model import HostConfig

Load = Callable[..., ServerConfig]
Write = Callable[..., Path]


def error_of(load: Load, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(text)
    return caught.value


# -- lookup and httpd's generic messages ---------------------------------------


def test_unknown_directive_is_invalid_command_with_ah00526(tmp_path: Path, load: Load) -> None:
    error = error_of(load, "Listen 80\n\nProxyPasss / http://b/\n")
    assert error.message == (
        "Invalid command 'ProxyPasss', perhaps misspelled or defined by a module not "
        "included in the server configuration"
    )
    assert (error.file, error.line, error.phase) == (str(tmp_path / "httpd.conf"), 3, "directive")
    assert str(error) == (
        f"AH00526: Syntax error on line 3 of {tmp_path}/httpd.conf:\n{error.message}"
    )


def test_unknown_section_is_invalid_command(load: Load) -> None:
    error = error_of(load, "Listen 80\n<Directory />\n</Directory>\n")
    assert error.message.startswith("Invalid command '<Directory', perhaps misspelled")
    assert error.line == 2


def test_names_are_case_insensitive(load: Load) -> None:
    config = load("LISTEN 80\nkeepalive off\nKEEPALIVE ON\nkeepAliveTimeout 7\n")
    assert config.main.keepalive is True
    assert config.main.keepalive_timeout == 7.0


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("<VirtualHost *:80>\nListen 81\n</VirtualHost>", 2,
         "Listen cannot occur within <VirtualHost> section"),
        ("<VirtualHost *:80>\nThreadsPerChild 5\n</VirtualHost>", 2,
         "ThreadsPerChild cannot occur within <VirtualHost> section"),
        ("<Location /a>\nKeepAlive On\n</Location>", 2, "KeepAlive not allowed here"),
        ("<VirtualHost *:80>\n<VirtualHost *:81>\n</VirtualHost>\n</VirtualHost>", 2,
         "<VirtualHost> doesn't nest!"),
        ("<Location /a>\n<Location /b>\n</Location>\n</Location>", 2,
         "<Location> cannot occur within <Directory/Location/Files> section"),
        ("<VirtualHost *:80>\n<Location /a>\nServerRoot /\n</Location>\n</VirtualHost>", 3,
         "ServerRoot not allowed here"),
        ("ServerAlias www", 1, "ServerAlias only used in <VirtualHost>"),
    ],
)  # fmt: skip
def test_context_errors(load: Load, text: str, line: int, message: str) -> None:
    error = error_of(load, "Listen 80\n" + text + "\n")
    assert (error.line - 1, error.message) == (line, message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("KeepAlive maybe", "KeepAlive must be On or Off"),
        ("KeepAlive", "KeepAlive must be On or Off"),
        ("ProxyPreserveHost On Off", "ProxyPreserveHost must be On or Off"),
        ("ServerName", "ServerName takes one argument, The hostname and port of the server"),
        ("ServerName a b", "ServerName takes one argument, The hostname and port of the server"),
        ('ServerName ""', "ServerName takes one argument, The hostname and port of the server"),
        ("LoadModule x_module", "LoadModule takes two arguments"),
        ("LogFormat a b c", "LogFormat takes 1-2 arguments, a log format string (see docs) "
         "and an optional format name"),
        ("CustomLog logs/x", 'CustomLog takes two or three arguments, a file name, a custom '
         'log format string or format name, and an optional "env=" or "expr=" clause (see docs)'),
        ("<VirtualHost>\n</VirtualHost>", "<VirtualHost> directive requires additional arguments"),
        ("Timeout abc", "Invalid value for directive Timeout, expected integer"),
    ],
)  # fmt: skip
def test_arity_and_value_errors_use_httpd_wording(load: Load, text: str, message: str) -> None:
    error = error_of(load, f"Listen 80\n{text}\n")
    assert (error.line, error.message) == (2, message)


def test_every_declaration_has_docs_and_valid_syntax_line() -> None:
    for declaration in DECLARATIONS:
        assert declaration.doc.endswith((".", ")")), declaration.name
        assert declaration.syntax.lstrip("<").startswith(declaration.name), declaration.name
        assert lookup(declaration.name.upper() if not declaration.section
                      else f"<{declaration.name}") is declaration  # fmt: skip


def test_writing_out_every_default_changes_nothing(load: Load) -> None:
    """Each declared default, given explicitly, yields the model's default."""
    baseline = load("Listen 80\n")
    for declaration in DECLARATIONS:
        if declaration.default is None or declaration.read_time:
            continue
        config = load(f"Listen 80\n{declaration.name} {declaration.default}\n")
        assert dataclasses.replace(config, warnings=()) == baseline, declaration.name


# -- defaults ------------------------------------------------------------------


def test_defaults_are_httpds(tmp_path: Path, load: Load) -> None:
    config = load("Listen 80\n")
    assert config.main == HostConfig(error_log=f"{tmp_path}/logs/error_log")
    assert (config.pid_file, config.error_log) == (
        f"{tmp_path}/logs/httpd.pid",
        f"{tmp_path}/logs/error_log",
    )
    assert (config.start_servers, config.server_limit, config.threads_per_child) == (3, 16, 25)
    assert (config.thread_limit, config.max_request_workers) == (64, 400)
    assert (config.min_spare_threads, config.max_spare_threads) == (75, 250)
    assert config.max_connections_per_child == 0
    assert config.async_request_worker_factor == 2.0
    assert config.listen_backlog == 511
    assert config.log_level == "warn"
    assert config.main.tls == TLSSettings()
    assert config.main.tls.protocols == ("TLSv1.2", "TLSv1.3")
    assert config.warnings == ()


# -- Listen --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("80", ("", 80, "http")),
        ("*:8080", ("", 8080, "http")),
        ("443", ("", 443, "https")),
        ("127.0.0.1:443 http", ("127.0.0.1", 443, "http")),
        ("1.2.3.4:80", ("1.2.3.4", 80, "http")),
        ("[::1]:8443 HTTPS", ("::1", 8443, "https")),
        ("[::]:80", ("::", 80, "http")),
    ],
)
def test_listen_forms(tmp_path: Path, load: Load, text: str, expected: tuple) -> None:
    config = load(f"\nListen {text}\n")
    assert config.listens == (Listen(*expected, where=f"{tmp_path}/httpd.conf:2"),)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Listen", "Listen requires 1 or 2 arguments."),
        ("Listen 80 http extra", "Listen requires 1 or 2 arguments."),
        ("Listen 1.2.3.4", "Port must be specified"),
        ("Listen 99999", "Invalid address or port"),
        ("Listen [::1", "Invalid address or port"),
        ("Listen 80 ftp", "Listen protocol 'ftp' is not supported (proxympm speaks http and "
         "https)"),
        ("Listen 80 \\\n  8080", "Listen protocol '8080' is not supported (proxympm speaks "
         "http and https)"),
        ("Listen 80\nListen *:80", "Cannot define multiple Listeners on the same IP:port"),
    ],
)  # fmt: skip
def test_listen_errors(load: Load, text: str, message: str) -> None:
    assert error_of(load, text + "\n").message == message


def test_overlapping_listeners_cannot_both_bind(tmp_path: Path, load: Load) -> None:
    error = error_of(load, "Listen 80\nListen 127.0.0.1:80\n")
    assert error.line == 2
    assert error.message.startswith(
        "(98)Address already in use: AH00072: make_sock: could not bind to address 127.0.0.1:80"
    )
    # Distinct families and ports are fine.
    config = load("Listen 0.0.0.0:80\nListen [::]:80\nListen 127.0.0.1:81\nListen 10.0.0.1:81\n")
    assert len(config.listens) == 4


def test_no_listen_is_an_error_at_the_end_of_the_main_file(tmp_path: Path, load: Load) -> None:
    error = error_of(load, "ServerName a\nKeepAlive On\n")
    assert (error.file, error.line) == (f"{tmp_path}/httpd.conf", 2)
    assert error.message == "no listening sockets available, shutting down"


# -- connection directives -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"), [("7", 7.0), ("500ms", 0.5), ("2mi", 120.0), ("1h", 3600.0), ("0", 0.0)]
)
def test_keepalive_timeout_units(load: Load, value: str, seconds: float) -> None:
    assert load(f"Listen 80\nKeepAliveTimeout {value}\n").main.keepalive_timeout == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("KeepAliveTimeout 5m", "KeepAliveTimeout has wrong format"),
        ("KeepAliveTimeout -1", "KeepAliveTimeout has wrong format"),
        ("Timeout 5ms", "Invalid value for directive Timeout, expected integer"),
        ("Timeout 0", "Timeout must be at least one second"),
        ("LimitRequestLine -1", 'LimitRequestLine "-1" must be a non-negative integer'),
        ("LimitRequestBody -5", "LimitRequestBody requires a non-negative integer."),
        ("MaxKeepAliveRequests x", "Invalid value for directive MaxKeepAliveRequests, "
         "expected integer"),
        ("ListenBacklog 0", "ListenBacklog must be > 0"),
        ("ProxyTimeout 0", "Proxy Timeout must be at least 1 second."),
        ("ProxyVia sometimes", "ProxyVia must be one of: off | on | full | block"),
        ("GracefulShutdownTimeout -1", 'GracefulShutdownTimeout "-1" must be a non-negative '
         "integer"),
    ],
)  # fmt: skip
def test_value_errors(load: Load, text: str, message: str) -> None:
    error = error_of(load, f"Listen 80\n{text}\n")
    assert (error.line, error.message) == (2, message)


def test_connection_and_proxy_settings_convert(load: Load) -> None:
    config = load(
        "Listen 80\nTimeout 30\nKeepAlive Off\nMaxKeepAliveRequests 0\n"
        "LimitRequestLine 4096\nLimitRequestFields 0\nLimitRequestFieldSize 1024\n"
        "LimitRequestBody 0\nProxyPreserveHost On\nProxyAddHeaders off\nProxyVia Full\n"
        "ProxyTimeout 90\nProxyRequests Off\nGracefulShutdownTimeout 10\nListenBacklog 128\n"
    )
    main = config.main
    assert (main.timeout, main.keepalive, main.max_keepalive_requests) == (30.0, False, 0)
    assert (main.limit_request_line, main.limit_request_fields) == (4096, 0)
    assert (main.limit_request_field_size, main.limit_request_body) == (1024, 0)
    assert (main.preserve_host, main.add_headers, main.via) == (True, False, "full")
    assert main.proxy_timeout == 90.0
    assert (config.graceful_shutdown_timeout, config.listen_backlog) == (10.0, 128)


@pytest.mark.parametrize(
    ("value", "stored"),
    [("www.example.com", "www.example.com"), ("https://www.example.com:443", "www.example.com:443"),
     ("[::1]:8080", "[::1]:8080")],
)  # fmt: skip
def test_server_name_drops_a_scheme(load: Load, value: str, stored: str) -> None:
    assert load(f"Listen 80\nServerName {value}\n").main.server_name == stored


def test_proxy_requests_on_is_refused(load: Load) -> None:
    error = error_of(load, "Listen 80\nProxyRequests On\n")
    assert "forward proxying" in error.message and "not supported" in error.message


# -- paths -----------------------------------------------------------------------


def test_paths_are_made_absolute_against_server_root(tmp_path: Path, load: Load) -> None:
    config = load(
        "Listen 80\nPidFile run/proxympm.pid\nErrorLog logs/err.log\n"
        'CustomLog "|/usr/bin/rotatelogs logs/a 86400" common\nCustomLog /dev/stderr common\n'
        "TransferLog logs/transfer.log\n"
    )
    assert config.pid_file == f"{tmp_path}/run/proxympm.pid"
    assert config.error_log == config.main.error_log == f"{tmp_path}/logs/err.log"
    assert [log.target for log in config.main.custom_logs] == [
        "|/usr/bin/rotatelogs logs/a 86400",
        "/dev/stderr",
        f"{tmp_path}/logs/transfer.log",
    ]


@pytest.mark.parametrize("target", ['"|/usr/bin/logger -t px"', "syslog", "syslog:local1"])
def test_error_log_pipes_and_syslog_stay(load: Load, target: str) -> None:
    assert load(f"Listen 80\nErrorLog {target}\n").error_log == target.strip('"')


# -- logging -----------------------------------------------------------------------


def test_log_formats_nicknames_and_transferlog(tmp_path: Path, load: Load) -> None:
    config = load(
        "Listen 80\n"
        "CustomLog logs/a combined\n"
        'CustomLog logs/b "%h %>s"\n'
        "CustomLog logs/c later\n"  # nicknames resolve after the whole file is read
        'LogFormat "%h %D" later\n'
        "TransferLog logs/d\n"
        'LogFormat "%h %T"\n'  # no nickname: TransferLog's format
    )
    assert config.main.custom_logs == (
        CustomLog(f"{tmp_path}/logs/a", COMBINED_LOG_FORMAT, f"{tmp_path}/httpd.conf:2"),
        CustomLog(f"{tmp_path}/logs/b", "%h %>s", f"{tmp_path}/httpd.conf:3"),
        CustomLog(f"{tmp_path}/logs/c", "%h %D", f"{tmp_path}/httpd.conf:4"),
        CustomLog(f"{tmp_path}/logs/d", "%h %T", f"{tmp_path}/httpd.conf:6"),
    )


def test_transferlog_defaults_to_common_and_quoting_survives(load: Load) -> None:
    config = load('Listen 80\nLogFormat "%h \\"%r\\"" q\nCustomLog x q\nTransferLog y\n')
    assert [log.format for log in config.main.custom_logs] == ['%h "%r"', COMMON_LOG_FORMAT]


def test_customlog_conditions_are_refused(load: Load) -> None:
    error = error_of(load, "Listen 80\nCustomLog x common env=!dontlog\n")
    assert error.message.startswith("CustomLog condition 'env=!dontlog' is not supported")


def test_loglevel_global_and_per_module(load: Load) -> None:
    config = load("Listen 80\nLogLevel info ssl:warn mod_proxy.c:debug proxy_http_module:trace3\n")
    assert config.log_level == "info"
    assert config.module_log_levels == (
        ("ssl", "warn"),
        ("proxy", "debug"),
        ("proxy_http", "trace3"),
    )


def test_loglevel_unknown_module_warns_and_bad_level_fails(load: Load) -> None:
    config = load("Listen 80\nLogLevel rewrite:trace3 error\n")
    assert config.log_level == "error"
    assert config.module_log_levels == ()
    assert any("LogLevel: module 'rewrite' is not part of proxympm" in w for w in config.warnings)
    assert error_of(load, "Listen 80\nLogLevel loud\n").message.startswith(
        "LogLevel requires level keyword: one of emerg/alert/crit/error/warn"
    )


# -- ignored and deprecated ----------------------------------------------------------


def test_loadmodule_is_ignored_user_and_group_warn(load: Load) -> None:
    config = load(
        "LoadModule proxy_module modules/mod_proxy.so\nUser www-data\nGroup www-data\nListen 80\n"
    )
    assert config.listens[0].port == 80
    assert [w.split(" is ignored")[0] for w in config.warnings] == ["User", "Group"]


def test_deprecated_names_work_with_a_warning(tmp_path: Path, load: Load) -> None:
    config = load("Listen 80\nMaxClients 200\nMaxRequestsPerChild 1000\n")
    assert (config.max_request_workers, config.max_connections_per_child) == (200, 1000)
    assert config.warnings == (
        f"MaxClients is deprecated, use MaxRequestWorkers instead. ({tmp_path}/httpd.conf:2)",
        "MaxRequestsPerChild is deprecated, use MaxConnectionsPerChild instead. "
        f"({tmp_path}/httpd.conf:3)",
    )


@pytest.mark.parametrize(
    ("value", "factor", "warns"), [("1.5", 1.5, False), ("3", 3.0, False), ("0.5", 1.0, True)]
)
def test_async_request_worker_factor(load: Load, value: str, factor: float, warns: bool) -> None:
    config = load(f"Listen 80\nAsyncRequestWorkerFactor {value}\n")
    assert config.async_request_worker_factor == factor
    assert bool(config.warnings) == warns


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "AsyncRequestWorkerFactor argument must be a positive number"),
        ("-2", "AsyncRequestWorkerFactor argument must be a positive number"),
        ("nan", "AsyncRequestWorkerFactor argument must be a positive number"),
        ("two", "error parsing value"),
    ],
)
def test_async_request_worker_factor_errors(load: Load, value: str, message: str) -> None:
    assert error_of(load, f"Listen 80\nAsyncRequestWorkerFactor {value}\n").message == message


# -- mod_ssl ---------------------------------------------------------------------------


@pytest.fixture
def certs(write: Write) -> tuple[Path, Path]:
    return write("CERT\n", "certs/site.pem"), write("KEY\n", "certs/site.key")


def test_tls_settings_convert(load: Load, certs: tuple[Path, Path]) -> None:
    config = load(
        "Listen 443\nSSLEngine on\nSSLCertificateFile certs/site.pem\n"
        "SSLCertificateKeyFile certs/site.key\nSSLProtocol -all +TLSv1.3\n"
        "SSLCipherSuite SSL HIGH:!aNULL\nSSLHonorCipherOrder on\nSSLSessionTickets off\n"
    )
    assert config.main.tls == TLSSettings(
        engine=True,
        certificate_file=str(certs[0]),
        certificate_key_file=str(certs[1]),
        protocols=("TLSv1.3",),
        cipher_suite="HIGH:!aNULL",
        honor_cipher_order=True,
        session_tickets=False,
    )


@pytest.mark.parametrize(
    ("spec", "protocols"),
    [
        ("all", ("TLSv1.2", "TLSv1.3")),
        ("all -SSLv3 -TLSv1 -TLSv1.1", ("TLSv1.2", "TLSv1.3")),
        ("TLSv1.2", ("TLSv1.2",)),
        ("all -TLSv1.2", ("TLSv1.3",)),
        ("+tlsv1.3 +TLSv1.2", ("TLSv1.2", "TLSv1.3")),
    ],
)
def test_ssl_protocol_resolution(load: Load, spec: str, protocols: tuple[str, ...]) -> None:
    assert load(f"Listen 80\nSSLProtocol {spec}\n").main.tls.protocols == protocols


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("all +TLSv1.1", "SSLProtocol: TLSv1.1 is not supported: proxympm requires TLSv1.2 or "
         "later"),
        ("SSLv3", "SSLProtocol: SSLv3 is not supported: proxympm requires TLSv1.2 or later"),
        ("TLSv1.4", "SSLProtocol: Illegal protocol 'TLSv1.4'"),
        ("-all", "SSLProtocol: no protocol left enabled (choose TLSv1.2 and/or TLSv1.3)"),
    ],
)  # fmt: skip
def test_ssl_protocol_errors(load: Load, spec: str, message: str) -> None:
    assert error_of(load, f"Listen 80\nSSLProtocol {spec}\n").message == message


def test_ssl_protocol_without_prefix_after_others_warns(load: Load) -> None:
    config = load("Listen 80\nSSLProtocol TLSv1.2 TLSv1.3\n")
    assert config.main.tls.protocols == ("TLSv1.3",)
    assert "overrides already set parameter(s)" in config.warnings[0]


def test_missing_certificate_file_fails_at_its_line(tmp_path: Path, load: Load) -> None:
    error = error_of(load, "Listen 443\n<VirtualHost *:443>\nSSLCertificateFile nope.pem\n"
                           "</VirtualHost>\n")  # fmt: skip
    assert (error.line, error.message) == (
        3,
        f"SSLCertificateFile: file '{tmp_path}/nope.pem' does not exist or is empty",
    )


def test_sslengine_on_without_certificate_names_the_vhost(tmp_path: Path, load: Load) -> None:
    error = error_of(
        load, "Listen 443\n\n<VirtualHost *:443>\nServerName s.example\nSSLEngine on\n"
        "</VirtualHost>\n",
    )  # fmt: skip
    assert (error.file, error.line) == (f"{tmp_path}/httpd.conf", 3)
    assert error.message.startswith(
        "AH02572: Failed to configure at least one certificate and key for s.example"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SSLEngine optional", "SSLEngine optional (RFC 2817 upgrade) is not supported by "
         "proxympm"),
        ("SSLEngine maybe", "Argument must be On, Off, or Optional"),
        ("SSLCipherSuite TLSv1.3 TLS_AES_256_GCM_SHA384", "SSLCipherSuite TLSv1.3 is not "
         "supported: Python's ssl module cannot choose TLSv1.3 cipher suites"),
    ],
)  # fmt: skip
def test_ssl_value_errors(load: Load, text: str, message: str) -> None:
    assert error_of(load, f"Listen 80\n{text}\n").message == message


def test_second_certificate_in_one_host_is_refused(load: Load, certs: tuple[Path, Path]) -> None:
    error = error_of(
        load, "Listen 80\nSSLCertificateFile certs/site.pem\nSSLCertificateFile certs/site.pem\n"
    )
    assert error.line == 3
    assert "proxympm takes one certificate and key per host" in error.message
