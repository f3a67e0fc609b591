"""The httpd.conf reader: lines, words, variables, sections, conditionals, Include."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from proxympm.config import ConfigError
from proxympm.config.grammar import (
    Directive,
    Reader,
    Section,
    expand_variables,
    logical_lines,
    split_words,
)

Write = Callable[..., Path]


def read(path: Path, defines: tuple[str, ...] = (), environ: dict[str, str] | None = None):
    reader = Reader(str(path.parent), defines, environ or {})
    return reader.read(str(path)), reader


# -- logical lines -----------------------------------------------------------


def test_continuation_keeps_the_next_lines_leading_whitespace() -> None:
    assert list(logical_lines("Listen 80 \\\n   8080\n")) == [(1, "Listen 80    8080")]


def test_comment_ending_in_backslash_swallows_the_next_line() -> None:
    text = "# a comment \\\nListen 80\nListen 81\n"
    assert list(logical_lines(text)) == [(3, "Listen 81")]


def test_blank_lines_comments_crlf_and_trimming() -> None:
    text = "\r\n   # indented comment\r\n\t KeepAlive On  \r\n\r\nListen 80"
    assert list(logical_lines(text)) == [(3, "KeepAlive On"), (5, "Listen 80")]


def test_trailing_hash_is_not_a_comment() -> None:
    assert split_words("KeepAlive On # yes") == ["KeepAlive", "On", "#", "yes"]


def test_logical_line_reports_its_first_physical_line() -> None:
    lines = list(logical_lines("A 1\nB 2 \\\n  3 \\\n  4\nC 5\n"))
    assert lines == [(1, "A 1"), (2, "B 2   3   4"), (5, "C 5")]


def test_utf8_bom_is_skipped() -> None:
    assert list(logical_lines("\ufeffListen 80\n")) == [(1, "Listen 80")]


# -- words ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (r'LogFormat "%h \"%r\"" x', ["LogFormat", '%h "%r"', "x"]),
        (r"LogFormat '%h \'%r\'' x", ["LogFormat", "%h '%r'", "x"]),
        (r'X "a\\b"', ["X", "a\\b"]),
        (r'X "\.php$"', ["X", r"\.php$"]),  # other backslashes stay
        (r"X a\\b", ["X", "a\\b"]),
        (r"X a\b", ["X", r"a\b"]),
        ('X foo"bar', ["X", 'foo"bar']),  # quotes inside a bare word are literal
        ('X "a"b', ["X", "a", "b"]),  # a closing quote ends the word
        ('X "a b', ["X", "a b"]),  # unterminated: to the end of the line
        ('X "" y', ["X", "", "y"]),
        ("X  \t spaced   out ", ["X", "spaced", "out"]),
    ],
)
def test_words_split_as_ap_getword_conf(line: str, words: list[str]) -> None:
    assert split_words(line) == words


# -- variables -----------------------------------------------------------------


def test_define_beats_environment_and_unknown_stays_literal() -> None:
    line, unknown = expand_variables(
        "A ${ONE} ${TWO} ${NOPE} ${a:b} $HOME ${open",
        {"ONE": "1"},
        {"ONE": "env", "TWO": "2"},
    )
    assert line == "A 1 2 ${NOPE} ${a:b} $HOME ${open"
    assert unknown == ["NOPE"]  # no warning for names with ':'


def test_variable_is_expanded_before_words_are_split(tmp_path: Path, write: Write) -> None:
    path = write('Define ARGS "/a http://b/"\nProxyPass ${ARGS}\n')
    nodes, _ = read(path)
    assert nodes == (Directive("ProxyPass", ("/a", "http://b/"), str(path), 2),)


def test_undefined_variable_warns_ah00111_with_place(write: Write) -> None:
    path = write("ServerName ${HOST}\n")
    nodes, reader = read(path)
    assert nodes[0].args == ("${HOST}",)
    assert reader.warnings == [f"AH00111: Config variable ${{HOST}} is not defined ({path}:1)"]


def test_environment_variables_expand(write: Write) -> None:
    path = write("ServerName ${HOST}\n")
    nodes, reader = read(path, environ={"HOST": "example.org"})
    assert nodes[0].args == ("example.org",)
    assert reader.warnings == []


def test_undefine_removes_variable_and_name(write: Write) -> None:
    path = write("Define V value\nA ${V}\nUnDefine V\nB ${V}\n<IfDefine V>\nC\n</IfDefine>\n")
    nodes, reader = read(path)
    assert [(n.name, n.args) for n in nodes] == [("A", ("value",)), ("B", ("${V}",))]
    assert "V" not in reader.define_names


def test_define_name_with_colon_is_refused(write: Write) -> None:
    path = write("\nDefine a:b c\n")
    with pytest.raises(ConfigError) as caught:
        read(path)
    assert (caught.value.message, caught.value.line) == ("Variable name must not contain ':'", 2)
    assert (
        str(caught.value) == f"Syntax error on line 2 of {path}: Variable name must not contain ':'"
    )


def test_define_arity_uses_httpd_wording(write: Write) -> None:
    path = write("Define a b c\n")
    with pytest.raises(ConfigError) as caught:
        read(path)
    assert caught.value.message.startswith("Define takes 1-2 arguments, Define a variable")


# -- sections ------------------------------------------------------------------


def test_sections_nest_close_case_insensitively_and_keep_positions(write: Write) -> None:
    path = write(
        "<VirtualHost *:80>\n"
        "  ServerName a\n"
        "  <location /x>\n"
        "    ProxyPass http://b/\n"
        "  </LOCATION>\n"
        "</virtualhost>\n"
    )
    nodes, _ = read(path)
    f = str(path)
    assert nodes == (
        Section(
            "VirtualHost",
            ("*:80",),
            (
                Directive("ServerName", ("a",), f, 2),
                Section("location", ("/x",), (Directive("ProxyPass", ("http://b/",), f, 4),), f, 3),
            ),
            f,
            1,
        ),
    )


def test_section_args_are_words_and_the_last_bracket_is_stripped(write: Write) -> None:
    path = write('<Location "/a b">\n</Location>\n<IfModule !x_module >\n</IfModule>\n')
    nodes, _ = read(path)
    assert nodes[0].args == ("/a b",)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("<VirtualHost *:80>\n</Location>\n", 2, "Expected </VirtualHost> but saw </Location>"),
        ("Listen 80\n</VirtualHost>\n", 2, "</VirtualHost> without matching <VirtualHost> section"),
        ("<VirtualHost *:80\n</VirtualHost>\n", 1, "<VirtualHost> directive missing closing '>'"),
        ("<IfDefine>\n</IfDefine>\n", 1, "<IfDefine> directive requires additional arguments"),
    ],
)
def test_section_errors_use_httpd_wording(write: Write, text: str, line: int, message: str) -> None:
    path = write(text)
    with pytest.raises(ConfigError) as caught:
        read(path)
    error = caught.value
    assert (error.file, error.line, error.message, error.phase) == (
        str(path),
        line,
        message,
        "read",
    )
    assert str(error) == f"Syntax error on line {line} of {path}: {message}"


def test_unclosed_sections_are_listed_innermost_first(write: Write) -> None:
    path = write("Listen 80\n<VirtualHost *:80>\n  <Location />\n")
    with pytest.raises(ConfigError) as caught:
        read(path)
    assert caught.value.message == (
        f"{path}:3: <Location> was not closed.\n{path}:2: <VirtualHost> was not closed."
    )
    assert caught.value.line == 2


# -- conditionals ---------------------------------------------------------------


def test_ifdefine_true_false_negated_and_nested(write: Write) -> None:
    path = write(
        "<IfDefine A>\n"
        "  one\n"
        "  <IfDefine !B>\n"
        "    two\n"
        "  </IfDefine>\n"
        "  <IfDefine B>\n"
        "    three\n"
        "  </IfDefine>\n"
        "</IfDefine>\n"
        "<IfDefine !A>\n"
        "  four\n"
        "</IfDefine>\n"
    )
    nodes, _ = read(path, defines=("A",))
    assert [(n.name, n.line) for n in nodes] == [("one", 2), ("two", 4)]
    nodes, _ = read(path, defines=("A", "B"))
    assert [n.name for n in nodes] == ["one", "three"]
    nodes, _ = read(path)
    assert [n.name for n in nodes] == ["four"]


def test_define_without_value_counts_for_ifdefine(write: Write) -> None:
    path = write("Define TLS\n<IfDefine TLS>\nyes\n</IfDefine>\n")
    nodes, reader = read(path)
    assert [n.name for n in nodes] == ["yes"]
    assert reader.define_names == ["TLS"]


@pytest.mark.parametrize(
    ("module", "loaded"),
    [
        ("proxy_module", True),
        ("mod_proxy.c", True),
        ("ssl_module", True),
        ("mod_ssl.c", True),
        ("mpm_event_module", True),
        ("proxy_wstunnel_module", True),
        ("rewrite_module", False),
        ("mod_rewrite.c", False),
        ("mpm_prefork_module", False),
        ("mod_proxy", False),
    ],
)
def test_ifmodule_sees_the_modules_proxympm_provides(
    write: Write, module: str, loaded: bool
) -> None:
    path = write(f"<IfModule {module}>\nin\n</IfModule>\n<IfModule !{module}>\nout\n</IfModule>\n")
    nodes, _ = read(path)
    assert [n.name for n in nodes] == (["in"] if loaded else ["out"])


def test_iffile_is_relative_to_server_root(tmp_path: Path, write: Write) -> None:
    write("x", "certs/site.pem")
    path = write(
        "<IfFile certs/site.pem>\nyes\n</IfFile>\n<IfFile !certs/missing.pem>\nno\n</IfFile>\n"
    )
    nodes, _ = read(path)
    assert [n.name for n in nodes] == ["yes", "no"]


def test_false_conditional_is_skipped_unexpanded_and_unchecked(write: Write) -> None:
    path = write(
        "<IfDefine NOPE>\n"
        "  Bogus ${UNSET}\n"
        "  <VirtualHost *:80>\n"
        "    Include /does/not/exist\n"
        "  </VirtualHost>\n"
        "</IfDefine>\n"
        "after\n"
    )
    nodes, reader = read(path)
    assert [(n.name, n.line) for n in nodes] == [("after", 7)]
    assert reader.warnings == []


def test_false_conditional_still_matches_sections(write: Write) -> None:
    path = write("<IfDefine NOPE>\n<VirtualHost *:80>\n</Location>\n</IfDefine>\n")
    with pytest.raises(ConfigError) as caught:
        read(path)
    assert (caught.value.line, caught.value.message) == (
        3,
        "Expected </VirtualHost> but saw </Location>",
    )


def test_false_conditional_without_end(write: Write) -> None:
    path = write("Listen 80\n<IfModule nope_module>\nX\n")
    with pytest.raises(ConfigError) as caught:
        read(path)
    assert (caught.value.line, caught.value.message) == (
        2,
        "Expected </IfModule> before end of configuration",
    )


# -- Include -------------------------------------------------------------------


def test_include_glob_reads_matches_alphabetically(tmp_path: Path, write: Write) -> None:
    write("B\n", "conf.d/20-b.conf")
    write("A\n", "conf.d/10-a.conf")
    write("skipped\n", "conf.d/10-a.conf.bak")
    write("hidden\n", "conf.d/.hidden.conf")
    path = write("first\nInclude conf.d/*.conf\nlast\n")
    nodes, _ = read(path)
    assert [(n.name, Path(n.file).name, n.line) for n in nodes] == [
        ("first", "httpd.conf", 1),
        ("A", "10-a.conf", 1),
        ("B", "20-b.conf", 1),
        ("last", "httpd.conf", 3),
    ]


def test_include_wildcard_in_directory_part(tmp_path: Path, write: Write) -> None:
    write("two\n", "sites/b/site.conf")
    write("one\n", "sites/a/site.conf")
    write("file, not dir\n", "sites/c")
    path = write("Include sites/*/site.conf\n")
    nodes, _ = read(path)
    assert [n.name for n in nodes] == ["one", "two"]


def test_include_directory_reads_everything_below_it(tmp_path: Path, write: Write) -> None:
    write("b\n", "extra/b.conf")
    write("a\n", "extra/a/inner.conf")
    path = write(f"Include {tmp_path}/extra\n")
    nodes, _ = read(path)
    assert [n.name for n in nodes] == ["a", "b"]


def test_include_inside_a_section_lands_inside_it(tmp_path: Path, write: Write) -> None:
    inc = write("ServerName inner\n", "vhost.inc")
    path = write("<VirtualHost *:80>\n  Include vhost.inc\n</VirtualHost>\n")
    nodes, _ = read(path)
    assert nodes[0].children == (Directive("ServerName", ("inner",), str(inc), 1),)


def test_included_file_must_close_its_own_sections(write: Write) -> None:
    inc = write("</VirtualHost>\n", "close.inc")
    path = write("<VirtualHost *:80>\nInclude close.inc\n</VirtualHost>\n")
    with pytest.raises(ConfigError) as caught:
        read(path)
    assert (caught.value.file, caught.value.line) == (str(inc), 1)


def test_include_without_match_is_an_error_optional_is_not(tmp_path: Path, write: Write) -> None:
    (tmp_path / "conf.d").mkdir()
    path = write("Listen 80\nInclude conf.d/*.conf\n")
    with pytest.raises(ConfigError) as caught:
        read(path)
    assert caught.value.line == 2
    assert caught.value.message == f"No matches for the wildcard '*.conf' in {tmp_path}/conf.d"
    path = write("IncludeOptional conf.d/*.conf\nIncludeOptional nothere/*.conf\n"
                 "IncludeOptional missing.conf\nok\n")  # fmt: skip
    nodes, _ = read(path)
    assert [n.name for n in nodes] == ["ok"]


def test_include_of_missing_file(tmp_path: Path, write: Write) -> None:
    path = write("Listen 80\n\nInclude missing.conf\n")
    with pytest.raises(ConfigError) as caught:
        read(path)
    error = caught.value
    assert (error.file, error.line) == (str(path), 3)
    assert error.message == (
        f"Could not open configuration file {tmp_path}/missing.conf: No such file or directory"
    )


@pytest.mark.parametrize("target", ["\0onf.d/*.conf", "conf.d/\0.conf"])
def test_include_of_a_path_with_a_nul_byte(tmp_path: Path, write: Write, target: str) -> None:
    (tmp_path / "conf.d").mkdir()
    path = write(f"Listen 80\nInclude {target}\n")
    with pytest.raises(ConfigError) as caught:  # not os.listdir's ValueError
        read(path)
    assert (caught.value.file, caught.value.line) == (str(path), 2)
    assert caught.value.message == (
        f"Could not open configuration file {target!r}: a path cannot contain a NUL byte")


def test_include_recursion_stops_at_depth_128(write: Write) -> None:
    loop = write("Include loop.conf\n", "loop.conf")
    path = write("Include loop.conf\n")
    with pytest.raises(ConfigError) as caught:
        read(path)
    assert caught.value.message == (
        "Exceeded maximum include depth of 128, There appears to be a recursion."
    )
    assert (caught.value.file, caught.value.line) == (str(loop), 1)


def test_include_is_relative_to_a_serverroot_directive(tmp_path: Path, write: Write) -> None:
    write("inner\n", "other/root/conf/x.conf")
    path = write(f"ServerRoot {tmp_path}/other/root\nInclude conf/x.conf\n")
    nodes, reader = read(path)
    assert [n.name for n in nodes] == ["ServerRoot", "inner"]
    assert reader.server_root == f"{tmp_path}/other/root"


def test_serverroot_must_be_a_directory(write: Write) -> None:
    path = write("ServerRoot /does/not/exist\n")
    with pytest.raises(ConfigError, match="ServerRoot must be a valid directory"):
        read(path)


def test_non_utf8_bytes_survive_into_words(tmp_path: Path) -> None:
    path = tmp_path / "httpd.conf"
    path.write_bytes(b"ErrorLog logs/caf\xe9.log\n")
    nodes, _ = read(path)
    assert nodes[0].args[0].encode("utf-8", "surrogateescape") == b"logs/caf\xe9.log"
