"""Fuzzing the config loader: any text gives a ServerConfig or a ConfigError with a line.

Inputs are mutations of the kept seeds in ``tests/corpus/fuzz_seeds/*.conf``: lines
of random directives (every name in ``DECLARATIONS``, sections included) with random
arguments (quotes, ``${VAR}``, backslash continuations), section open/close
mismatches, ``Include`` of other generated files in the same temporary directory
(itself included), binary junk and very long lines. Each input is written to a file
and loaded with ``load_config``: the only allowed outcomes are a ``ServerConfig`` or
a ``ConfigError`` whose ``str()`` names "line N of FILE". The run is bounded by
``max_examples`` (well under 15 s); every seed is also replayed as is.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxympm.config import ConfigError, ServerConfig, load_config
from proxympm.config.directives import DECLARATIONS

SEED_DIR = Path(__file__).resolve().parents[2] / "corpus" / "fuzz_seeds"
SEEDS = sorted(SEED_DIR.glob("*.conf"))
SEED_TEXTS = [p.read_bytes() for p in SEEDS]

NAMES = [d.name for d in DECLARATIONS] + [a for d in DECLARATIONS for a in d.aliases]
SECTIONS = [d.name for d in DECLARATIONS if d.section]

# Words an argument is built from: plausible values, syntax characters, variables.
WORDS = [
    "on", "off", "On", "0", "1", "-1", "99999999999999999999", "4", "/", "/a/", "*", "*:8080",
    "127.0.0.1:8080", "[::1]:8443", "http://127.0.0.1:9001/", "https://h/", "balancer://pool",
    "balancer://pool/", "timeout=10", "retry=0", "lbmethod=byrequests", "loadfactor=2",
    "status=+H", "header=20-40,MinRate=500", "body=20", "common", "combined", "debug",
    "proxy:trace8", "%h %r %>s", "%{X}i", "https", "http", "!NOPE", "NOPE", "BACK",
    "${BACK}", "${UNSET}", "${", "$", "}", "\\", "\\\\", '"', "'", '""', "''", "\\\"", "<",
    ">", "#", "\t", "\u00e9", "\u2028", "\x00", "\x7f", "conf.d/*.conf", "inc1.conf",
    "httpd.conf", "missing.conf", "all -SSLv3", "HIGH:!aNULL", "require", "none",
]  # fmt: skip

word = st.one_of(
    st.sampled_from(WORDS),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
)


@st.composite
def arg(draw: st.DrawFn) -> str:
    text = "".join(draw(st.lists(word, min_size=1, max_size=3)))
    quote = draw(st.sampled_from(["", "", '"', "'", '"open', "'open"]))
    if quote in ('"', "'"):
        return quote + text + quote
    if quote:
        return quote[0] + text  # an unterminated quote
    return text


@st.composite
def line(draw: st.DrawFn) -> str:
    kind = draw(st.integers(0, 9))
    if kind == 0:  # open or close a (maybe different) section
        name = draw(st.sampled_from(SECTIONS + ["Nope", "Location", ""]))
        if draw(st.booleans()):
            args = " ".join(draw(st.lists(arg(), max_size=2)))
            return f"<{name} {args}" + draw(st.sampled_from([">", "", ">>", " >"]))
        return f"</{name}" + draw(st.sampled_from([">", "", " x>"]))
    if kind == 1:  # include a file of this directory (or a glob, or itself)
        name = draw(st.sampled_from(["Include", "IncludeOptional", "include"]))
        target = draw(st.sampled_from(
            ["inc0.conf", "inc1.conf", "conf.d/*.conf", "conf.d", "httpd.conf", "*.conf",
             "missing.conf", "missing/*.conf", "inc?.conf", "[ab].conf", '""']))
        return f"{name} {target}"
    if kind == 2:  # Define / variables
        return "Define " + " ".join(draw(st.lists(arg(), min_size=0, max_size=3)))
    if kind == 3:  # a very long line
        return draw(st.sampled_from(NAMES)) + " " + "x" * draw(st.integers(1000, 20000))
    name = draw(st.one_of(st.sampled_from(NAMES), word))
    if draw(st.integers(0, 5)) == 0:
        name = draw(st.sampled_from([name.upper(), name.lower(), " " + name, "\t" + name]))
    args = draw(st.lists(arg(), max_size=4))
    sep = draw(st.sampled_from([" ", " ", "  ", "\t", " \\\n ", "\\\n"]))
    text = name + (sep if args else "") + sep.join(args)
    if draw(st.integers(0, 7)) == 0:
        text += draw(st.sampled_from([" \\", "\\", " # comment", "\r"]))  # trailing
    return text


@st.composite
def config_bytes(draw: st.DrawFn) -> bytes:
    """A seed, with random lines replaced, inserted, deleted; maybe byte-level junk."""
    seed = draw(st.sampled_from(SEED_TEXTS + [b""]))
    lines = seed.decode("utf-8").split("\n")
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.integers(0, 3))
        pos = draw(st.integers(0, len(lines)))
        if op == 0 and pos < len(lines):
            del lines[pos]
        elif op == 1 and pos < len(lines):
            lines[pos] = draw(line())
        elif op == 2 and pos < len(lines):
            lines.insert(pos, lines[pos])  # duplicate a line
        else:
            lines.insert(pos, draw(line()))
    raw = bytearray("\n".join(lines).encode("utf-8", "surrogatepass"))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 3]))):  # byte-level damage
        pos = draw(st.integers(0, len(raw)))
        op = draw(st.integers(0, 2))
        if op == 0 and pos < len(raw):
            raw[pos] = draw(st.integers(0, 255))
        elif op == 1:
            raw[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif pos < len(raw):
            del raw[pos:pos + draw(st.integers(1, 40))]
    return bytes(raw)


def check_load(root: Path, main: bytes, includes: dict[str, bytes]) -> None:
    """Write the files under ``root``, load, and allow only the two outcomes."""
    (root / "conf.d").mkdir(exist_ok=True)
    for name, data in includes.items():
        (root / name).write_bytes(data)
    (root / "httpd.conf").write_bytes(main)
    try:
        config = load_config("httpd.conf", server_root=str(root))
    except ConfigError as exc:
        text = str(exc)
        assert re.search(r"line \d+ of \S", text), f"ConfigError without a line: {text!r}"
        assert exc.file, f"ConfigError without a file: {text!r}"
    else:
        assert isinstance(config, ServerConfig)


def _show(main: bytes, includes: dict[str, bytes]) -> str:
    def cut(b: bytes) -> str:
        return repr(b[:1500]) + (f"... ({len(b)} bytes)" if len(b) > 1500 else "")

    shown = [f"httpd.conf = {cut(main)}"] + [f"{k} = {cut(v)}" for k, v in includes.items()]
    return "\n".join(shown)


@settings(
    max_examples=300,
    deadline=2000,  # generous: a load is milliseconds; seconds would mean a near-hang
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    main=config_bytes(),
    inc0=config_bytes(),
    inc1=st.one_of(config_bytes(), st.binary(max_size=300)),
    confd=config_bytes(),
)
def test_config_loader_only_raises_config_error(
    main: bytes, inc0: bytes, inc1: bytes, confd: bytes
) -> None:
    includes = {"inc0.conf": inc0, "inc1.conf": inc1, "conf.d/a.conf": confd}
    with tempfile.TemporaryDirectory(prefix="cfgfuzz") as d:
        try:
            check_load(Path(d), main, includes)
        except AssertionError:
            raise
        except Exception as exc:  # anything else is the finding
            raise AssertionError(
                f"load_config raised {type(exc).__name__}: {exc}\n{_show(main, includes)}"
            ) from exc


@pytest.mark.parametrize("seed", SEEDS, ids=[p.name for p in SEEDS])
def test_config_seed_replays(seed: Path, tmp_path: Path) -> None:
    """Every kept seed loads or fails with a located ConfigError (includes: each other)."""
    includes = {"inc0.conf": SEED_TEXTS[0], "inc1.conf": b"", "conf.d/a.conf": SEED_TEXTS[-1]}
    check_load(tmp_path, seed.read_bytes(), includes)


def test_seed_corpus_present() -> None:
    assert len(SEEDS) >= 3, f"no config seeds in {SEED_DIR}"
