"""Unit tests for janus.policy: parsing, validation, inheritance, compilation (no Redis)."""

from __future__ import annotations

import json
import math
import textwrap
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

import janus.policy as policy_module
from janus.errors import JanusError, PolicyError, PolicyIssue
from janus.keys import MAX_NAME_BYTES, encode_part
from janus.policy import (
    CompiledPolicy,
    DependencyPolicy,
    PolicySet,
    ScopeLimits,
    compile_policy,
    describe,
    format_duration_ms,
    format_rate,
    format_size,
    interval_us,
    load_policies,
    parse_duration_ms,
    parse_policy_text,
    parse_rate,
    parse_size,
    weight_milli,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "policies"
FILE = "test.yaml"


# --------------------------------------------------------------------------- helpers


def doc(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def dep(body: str, name: str = "payments") -> str:
    """A one-dependency document whose settings are ``body`` (YAML, unindented)."""
    indented = textwrap.indent(doc(body), "    ")
    return f"dependencies:\n  {name}:\n{indented}"


def issues_of(text: str, file: str = FILE) -> list[PolicyIssue]:
    with pytest.raises(PolicyError) as caught:
        parse_policy_text(text, file)
    return caught.value.issues


def only_issue(text: str, file: str = FILE) -> PolicyIssue:
    issues = issues_of(text, file)
    assert len(issues) == 1, issues
    return issues[0]


def load_one(text: str, name: str = "payments") -> DependencyPolicy:
    return parse_policy_text(text, FILE).dependencies[name]


MINIMAL = "rate: 10\nburst: 20\n"


# --------------------------------------------------------------------------- example file


def test_example_directory_loads_both_dependencies() -> None:
    """policies/example.yaml loads cleanly and declares payments and llm, both from that file."""
    loaded = load_policies([EXAMPLES])
    assert isinstance(loaded, PolicySet)
    assert list(loaded.dependencies) == ["payments", "llm"]
    example = str(EXAMPLES / "example.yaml")
    assert loaded.sources == {"payments": example, "llm": example}


def test_example_payments_is_resolved_as_documented() -> None:
    """The example's payments policy has the documented limits and the tenant-vip override."""
    payments = load_policies([EXAMPLES / "example.yaml"]).dependencies["payments"]
    assert payments.rate == 20
    assert payments.burst == 20
    assert payments.max_in_flight == 10
    assert payments.max_wait_ms == 30_000
    assert payments.lease_ms == 30_000
    assert payments.max_cost == 10  # the smallest burst: scopes.default.burst
    assert payments.default_scope == ScopeLimits(rate=10, burst=10, weight=1)
    assert payments.scope_overrides == {"tenant-vip": ScopeLimits(rate=15, burst=15, weight=2)}


def test_example_llm_uses_default_scopes() -> None:
    """The example's llm policy has no scopes section, so every scope gets the dependency limits."""
    llm = load_policies([EXAMPLES]).dependencies["llm"]
    assert (llm.rate, llm.burst, llm.max_wait_ms, llm.lease_ms) == (2, 4, 120_000, 120_000)
    assert llm.max_in_flight is None
    assert llm.default_scope == ScopeLimits(rate=2, burst=4, weight=1)
    assert llm.scope_overrides == {}


def test_example_compiles() -> None:
    """Every dependency of the example compiles to integer fields."""
    for name, policy in load_policies([EXAMPLES]).dependencies.items():
        compiled = compile_policy(name, policy)
        assert all(isinstance(v, int) for v in compiled.fields.values())


# ----------------------------------------------------------------------- defaults and inheritance


def test_defaults_for_omitted_settings() -> None:
    """Omitted settings take the documented defaults: 60s, 30s, 1d, 1MiB, unlimited."""
    policy = load_one(dep(MINIMAL))
    assert policy.max_in_flight is None
    assert policy.max_wait_ms == 60_000
    assert policy.lease_ms == 30_000
    assert policy.retention_ms == 86_400_000
    assert policy.max_payload == 1024 * 1024


def test_omitted_default_scope_takes_dependency_limits() -> None:
    """Without a scopes.default section, each scope gets the dependency rate and burst, weight 1."""
    policy = load_one(dep(MINIMAL))
    assert policy.default_scope == ScopeLimits(rate=10, burst=20, weight=1)


def test_partial_default_scope_inherits_from_dependency() -> None:
    """A default section that sets only weight takes rate and burst from the dependency."""
    policy = load_one(dep(MINIMAL + "scopes:\n  default: {weight: 3}\n"))
    assert policy.default_scope == ScopeLimits(rate=10, burst=20, weight=3)


def test_override_inherits_omitted_fields_from_default_section() -> None:
    """An override that sets only rate takes burst and weight from scopes.default, not the dep."""
    policy = load_one(
        dep(
            """
            rate: 50
            burst: 100
            scopes:
              default: {rate: 10, burst: 20, weight: 2}
              tenant-42: {rate: 25}
            """
        )
    )
    assert policy.scope_overrides["tenant-42"] == ScopeLimits(rate=25, burst=20, weight=2)


def test_empty_override_inherits_everything() -> None:
    """An override written as {} has exactly the default scope's limits."""
    policy = load_one(dep(MINIMAL + "scopes:\n  default: {rate: 5, burst: 6}\n  quiet: {}\n"))
    assert policy.scope_overrides["quiet"] == policy.default_scope


def test_default_section_is_not_an_override() -> None:
    """'default' is the reserved default section: it never appears among the overrides."""
    policy = load_one(dep(MINIMAL + "scopes:\n  default: {rate: 5}\n  a: {}\n"))
    assert list(policy.scope_overrides) == ["a"]


def test_default_max_cost_is_smallest_burst() -> None:
    """Without max_cost, it defaults to the smallest of the dependency and every scope burst."""
    policy = load_one(
        dep(
            """
            rate: 50
            burst: 100
            scopes:
              default: {burst: 20}
              small: {burst: 7}
              big: {burst: 90}
            """
        )
    )
    assert policy.max_cost == 7


def test_max_cost_equal_to_tightest_burst_is_accepted() -> None:
    """A max_cost exactly equal to the smallest burst fits, so it is valid."""
    policy = load_one(dep(MINIMAL + "max_cost: 20\n"))
    assert policy.max_cost == 20


def test_fractional_rate_is_accepted() -> None:
    """Fractional rates such as 0.5 per second are valid."""
    assert load_one(dep("rate: 0.5\nburst: 1\n")).rate == 0.5


def test_scientific_notation_is_a_number() -> None:
    """'1e3' and '2.5e-1' are read as floats (YAML 1.2), not as strings."""
    policy = load_one(dep("rate: 1e3\nburst: 1\nscopes:\n  default: {rate: 2.5e-1}\n"))
    assert policy.rate == 1000.0
    assert policy.default_scope.rate == 0.25


def test_durations_and_sizes_in_files_are_parsed() -> None:
    """Duration and size strings in a file become milliseconds and bytes."""
    policy = load_one(
        dep(MINIMAL + "max_wait: 1.5s\nlease: 200ms\nretention: 2h\nmax_payload: 64KiB\n")
    )
    assert (policy.max_wait_ms, policy.lease_ms, policy.retention_ms) == (1500, 200, 7_200_000)
    assert policy.max_payload == 65536


def test_null_max_in_flight_means_unlimited() -> None:
    """max_in_flight: null is the same as omitting it (unlimited)."""
    assert load_one(dep(MINIMAL + "max_in_flight: null\n")).max_in_flight is None


def test_several_dependencies_in_one_file() -> None:
    """One file may declare several dependencies; each is sourced to that file."""
    loaded = parse_policy_text(
        "dependencies:\n  a: {rate: 1, burst: 1}\n  b: {rate: 2, burst: 2}\n", "many.yaml"
    )
    assert list(loaded.dependencies) == ["a", "b"]
    assert loaded.sources == {"a": "many.yaml", "b": "many.yaml"}


def test_yaml_merge_keys_are_not_duplicates() -> None:
    """A '<<' merge followed by an explicit key overrides it without a duplicate-key error."""
    loaded = parse_policy_text(
        doc(
            """
            dependencies:
              a: &base {rate: 1, burst: 2}
              b:
                <<: *base
                burst: 3
            """
        ),
        FILE,
    )
    assert loaded.dependencies["b"].burst == 3
    assert loaded.dependencies["b"].rate == 1


# --------------------------------------------------------------------------- field validation

FIELD_CASES = [
    # (settings YAML, field, expected message fragment)
    ("rate: 0\nburst: 1", "rate", "a rate must be greater than 0, got 0"),
    ("rate: -1\nburst: 1", "rate", "a rate must be greater than 0, got -1"),
    ("rate: true\nburst: 1", "rate", "a rate must be a number of cost units per second or a"),
    ("rate: fast\nburst: 1", "rate", "invalid rate 'fast': write a number of cost units"),
    ("rate: '5'\nburst: 1", "rate", "rate '5' has no unit: write e.g. '5/s', or a bare number"),
    ("rate: .nan\nburst: 1", "rate", "a rate must be a finite number, got nan"),
    ("rate: 1000001\nburst: 1", "rate", "a rate must be at most 1000000/s, got 1000001"),
    ("burst: 1", "rate", "this setting is required"),
    ("rate: 1", "burst", "this setting is required"),
    ("rate: 1\nburst: 0", "burst", "must be at least 1, got 0"),
    ("rate: 1\nburst: ten", "burst", "must be a whole number, got 'ten'"),
    ("rate: 1\nburst: 2.5", "burst", "must be a whole number, got 2.5"),
    ("rate: 1\nburst: true", "burst", "must be a whole number, got true"),
    ("rate: 1\nburst: 1000000001", "burst", "must be at most 1000000000, got 1000000001"),
    ("rate: 1\nburst: 1\nmax_in_flight: 0", "max_in_flight", "must be at least 1, got 0"),
    ("rate: 1\nburst: 1\nmax_in_flight: 1.5", "max_in_flight", "must be a whole number, got 1.5"),
    ("rate: 1\nburst: 1\nmax_wait: -1", "max_wait", "must not be negative"),
    ("rate: 1\nburst: 1\nmax_wait: 5x", "max_wait", "unknown duration unit 'x'"),
    ("rate: 1\nburst: 1\nmax_wait: true", "max_wait", "a duration must be a number"),
    ("rate: 1\nburst: 1\nmax_wait: null", "max_wait", "got NoneType"),
    ("rate: 1\nburst: 1\nlease: 50ms", "lease", "must be at least 100ms, got 50ms"),
    ("rate: 1\nburst: 1\nretention: 500ms", "retention", "must be at least 1s, got 500ms"),
    ("rate: 1\nburst: 1\nmax_payload: 0", "max_payload", "must be between 1B and 512MiB, got 0"),
    ("rate: 1\nburst: 1\nmax_payload: 513MiB", "max_payload", "must be between 1B and 512MiB"),
    ("rate: 1\nburst: 1\nmax_payload: 1.5", "max_payload", "whole number of bytes"),
    ("rate: 1\nburst: 1\nmax_payload: 1TB", "max_payload", "unknown size unit 'TB'"),
    ("rate: 1\nburst: 1\nmax_cost: 0", "max_cost", "must be at least 1, got 0"),
    ("rate: 1\nburst: 1\ncolour: red", "colour", "unknown key 'colour'; the keys here are rate,"),
    ("rate: 1\nburst: 1\nscopes: [a, b]", "scopes", "must be a mapping of names to settings"),
    ("rate: 1\nburst: 1\nscopes:\n  t: {rate: 0}", "scopes.t.rate", "greater than 0, got 0"),
    ("rate: 1\nburst: 1\nscopes:\n  t: {burst: 0}", "scopes.t.burst", "at least 1, got 0"),
    ("rate: 1\nburst: 1\nscopes:\n  t: {weight: 0}", "scopes.t.weight", ">= 0.001, got 0"),
    ("rate: 1\nburst: 1\nscopes:\n  t: {weight: -1}", "scopes.t.weight", ">= 0.001, got -1"),
    ("rate: 1\nburst: 1\nscopes:\n  t: {weight: 0.0005}", "scopes.t.weight", ">= 0.001"),
    ("rate: 1\nburst: 1\nscopes:\n  t: {colour: red}", "scopes.t.colour", "unknown key 'colour'"),
    ("rate: 1\nburst: 1\nscopes:\n  t: null", "scopes.t", "must be a mapping of settings (rate,"),
    ("rate: 1\nburst: 1\nscopes:\n  default: {rate: 0}", "scopes.default.rate", "greater than 0"),
]


def _normalise(fragment: str) -> str:
    return fragment.replace(">= 0.001", "must be at least 0.001")


@pytest.mark.parametrize(("settings", "field", "message"), FIELD_CASES)
def test_invalid_setting_gives_one_issue_at_its_field(
    settings: str, field: str, message: str
) -> None:
    """Each invalid setting gives exactly one issue naming the file, dependency and field."""
    issue = only_issue(dep(settings))
    assert (issue.file, issue.dependency, issue.field) == (FILE, "payments", field)
    assert _normalise(message) in issue.message


def test_issue_renders_file_dependency_and_field() -> None:
    """str(issue) reads 'file: dependency.field: message'."""
    issue = only_issue(dep("rate: 1\nburst: 1\nscopes:\n  tenant-42: {rate: 0}"))
    assert str(issue) == (
        "test.yaml: payments.scopes.tenant-42.rate: a rate must be greater than 0, got 0"
    )


def test_all_issues_in_a_file_are_reported_together() -> None:
    """A dependency with three mistakes gives three issues, not just the first."""
    issues = issues_of(dep("rate: 0\nburst: 2.5\nlease: 1ms\n"))
    assert sorted(i.field for i in issues) == ["burst", "lease", "rate"]


def test_issues_of_several_dependencies_are_collected() -> None:
    """Mistakes in different dependencies of one file are all reported."""
    text = "dependencies:\n  a: {rate: 0, burst: 1}\n  b: {rate: 1, burst: 0}\n"
    assert [(i.dependency, i.field) for i in issues_of(text)] == [("a", "rate"), ("b", "burst")]


def test_policy_error_is_a_janus_error_listing_every_issue() -> None:
    """PolicyError is a JanusError whose message counts and lists the issues."""
    with pytest.raises(JanusError) as caught:
        parse_policy_text(dep("rate: 0\nburst: 0\n"), FILE)
    assert isinstance(caught.value, PolicyError)
    assert str(caught.value).startswith("2 policy error(s):")
    assert "test.yaml: payments.rate: a rate must be greater than 0, got 0" in str(caught.value)


# --------------------------------------------------------------------------- max_cost fit


def test_max_cost_above_dependency_burst_can_never_fit() -> None:
    """A max_cost larger than the dependency burst is rejected at max_cost."""
    issue = only_issue(dep("rate: 1\nburst: 100\nmax_cost: 150\n"))
    assert issue.field == "max_cost"
    assert issue.message == "max_cost 150 can never fit: burst is 100"


def test_max_cost_above_default_scope_burst_can_never_fit() -> None:
    """A max_cost larger than scopes.default.burst is rejected, naming that burst."""
    issue = only_issue(
        dep("rate: 50\nburst: 100\nmax_cost: 50\nscopes:\n  default: {rate: 10, burst: 20}\n")
    )
    assert issue.field == "max_cost"
    assert issue.message == "max_cost 50 can never fit: scopes.default.burst is 20"


def test_max_cost_above_an_override_burst_can_never_fit() -> None:
    """A max_cost larger than any override's effective burst is rejected, naming it."""
    issue = only_issue(dep("rate: 50\nburst: 100\nmax_cost: 10\nscopes:\n  small: {burst: 5}\n"))
    assert issue.message == "max_cost 10 can never fit: scopes.small.burst is 5"


def test_max_cost_checked_against_inherited_override_burst() -> None:
    """An override that inherits its burst from default is checked with that inherited burst."""
    issue = only_issue(
        dep("rate: 5\nburst: 100\nmax_cost: 30\nscopes:\n  default: {burst: 20}\n  t: {}\n")
    )
    assert issue.message == "max_cost 30 can never fit: scopes.default.burst is 20"


def test_resolved_policy_rejects_unfit_max_cost() -> None:
    """Building a DependencyPolicy by hand with a max_cost above a burst is a ValidationError."""
    with pytest.raises(ValidationError, match="can never fit"):
        DependencyPolicy(
            rate=1,
            burst=10,
            max_cost=11,
            default_scope=ScopeLimits(rate=1, burst=10),
        )


def test_refill_span_longer_than_a_century_is_rejected() -> None:
    """A bucket that would take more than 100 years to refill is an issue at rate."""
    issue = only_issue(dep("rate: 1.0e-9\nburst: 1000\n"))
    assert issue.field == "rate"
    assert "years to refill; the limit is 100 years" in issue.message


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["bad name", "a{b}", "-leading", "x" * 65, "a:b"])
def test_invalid_dependency_name(name: str) -> None:
    """A dependency name outside keys.DEPENDENCY_NAME is an issue for that dependency."""
    issue = only_issue(f"dependencies:\n  '{name}': {{rate: 1, burst: 1}}\n")
    assert (issue.dependency, issue.field) == (name, "")
    assert issue.message.startswith(f"invalid dependency name {name!r}")


def test_non_string_dependency_name() -> None:
    """A dependency name YAML reads as a number must be quoted."""
    issue = only_issue("dependencies:\n  123: {rate: 1, burst: 1}\n")
    assert issue.dependency == "123"
    assert "dependency names must be strings, got int 123 (quote it in YAML)" in issue.message


def test_dependency_settings_must_be_a_mapping() -> None:
    """A dependency whose value is not a mapping is one issue for that dependency."""
    issue = only_issue("dependencies:\n  payments: 5\n")
    assert issue.dependency == "payments"
    assert "must be a mapping of settings (rate, burst, ...), got int" in issue.message


def test_empty_scope_name_is_rejected() -> None:
    """An empty scope override name breaks keys.check_user_name."""
    issue = only_issue(dep("rate: 1\nburst: 1\nscopes:\n  '': {rate: 1}\n"))
    assert issue.field == "scopes.''"
    assert issue.message == "scope must not be empty"


def test_oversized_scope_name_is_rejected() -> None:
    """A scope override name longer than MAX_NAME_BYTES is rejected with its size."""
    name = "t" * (MAX_NAME_BYTES + 1)
    # YAML limits implicit keys to 1024 characters; '? key' is an explicit (unlimited) key.
    issue = only_issue(dep(f"rate: 1\nburst: 1\nscopes:\n  ? {name}\n  : {{rate: 1}}\n"))
    assert issue.field.startswith("scopes.'ttt")
    assert len(issue.field) < 100
    assert issue.message == f"scope is {MAX_NAME_BYTES + 1} bytes; the limit is 16384 bytes"


def test_scope_name_with_nul_is_rejected() -> None:
    """A scope override name containing NUL is rejected."""
    issue = only_issue(dep('rate: 1\nburst: 1\nscopes:\n  "a\\0b": {rate: 1}\n'))
    assert issue.message == "scope must not contain NUL characters"


def test_non_string_scope_name() -> None:
    """A scope name YAML reads as a number must be quoted."""
    issue = only_issue(dep("rate: 1\nburst: 1\nscopes:\n  42: {rate: 1}\n"))
    assert issue.field == "scopes.42"
    assert issue.message == "scope names must be strings, got int 42 (quote it in YAML)"


def test_unusual_scope_names_are_accepted() -> None:
    """Scope names need not be key-safe: spaces and non-ASCII are encoded when compiled."""
    policy = load_one(dep("rate: 1\nburst: 1\nscopes:\n  'acme corp': {}\n  'ünï': {}\n"))
    assert set(policy.scope_overrides) == {"acme corp", "ünï"}


def test_scope_names_that_encode_alike_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two override names whose encoded keys collide are an issue naming both."""
    monkeypatch.setattr(policy_module, "encode_part", lambda name: "~same")
    issue = only_issue(dep("rate: 1\nburst: 1\nscopes:\n  a: {}\n  b: {}\n"))
    assert issue.field == "scopes.b"
    assert issue.message == "encodes to the same key '~same' as scopes.a; rename one"


# --------------------------------------------------------------------------- file structure


def test_unknown_top_level_key() -> None:
    """A top-level key other than 'dependencies' is an issue."""
    issue = only_issue("dependencies:\n  a: {rate: 1, burst: 1}\nversion: 2\n")
    assert (issue.dependency, issue.field) == (None, "version")
    assert issue.message == "unknown top-level key 'version': only 'dependencies' is allowed"


@pytest.mark.parametrize("text", ["dependencies:\n", "dependencies: {}\n", "{}\n"])
def test_file_without_dependencies(text: str) -> None:
    """A file whose dependencies section is missing, null or empty is an issue."""
    issue = only_issue(text)
    assert (issue.file, issue.field) == (FILE, "dependencies")
    assert issue.message == "no dependencies declared in this file"


def test_empty_file() -> None:
    """An empty file is an issue."""
    assert only_issue("").message == "the file is empty: expected 'dependencies:'"


def test_document_must_be_a_mapping() -> None:
    """A YAML document that is a list is an issue."""
    assert "must be a mapping with a 'dependencies' key, got list" in only_issue("- a\n").message


def test_dependencies_must_be_a_mapping() -> None:
    """A 'dependencies' section that is a list is an issue."""
    issue = only_issue("dependencies: [payments]\n")
    assert issue.field == "dependencies"
    assert "must be a mapping of dependency name -> settings, got list" in issue.message


def test_yaml_syntax_error_names_file_and_line() -> None:
    """A YAML syntax error is one issue naming the file and the line of the problem."""
    text = "dependencies:\n  a:\n    rate: 1\n    burst: 2\n     lease: 3\n"
    issue = only_issue(text, file="broken.yaml")
    assert issue.file == "broken.yaml"
    assert issue.message.startswith("invalid YAML at line 5, column 11:")
    assert "mapping values are not allowed here" in issue.message


def test_duplicate_dependency_key_in_one_file() -> None:
    """A dependency declared twice in one file is a duplicate-key issue with both lines."""
    text = "dependencies:\n  a: {rate: 1, burst: 1}\n  a: {rate: 2, burst: 1}\n"
    issue = only_issue(text)
    assert issue.file == FILE
    assert issue.message == "duplicate key 'a' at line 3, column 3 (first on line 2)"


def test_duplicate_setting_key() -> None:
    """A setting given twice inside one dependency is a duplicate-key issue."""
    issue = only_issue(dep("rate: 1\nburst: 1\nrate: 2\n"))
    assert issue.message == "duplicate key 'rate' at line 5, column 5 (first on line 3)"


# ---------------------------------------------------------------------- files and directories


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_same_dependency_in_two_files_names_both(tmp_path: Path) -> None:
    """A dependency declared in two files is an issue whose message names both files."""
    first = write(tmp_path / "a.yaml", "dependencies:\n  payments: {rate: 1, burst: 1}\n")
    second = write(tmp_path / "b.yaml", "dependencies:\n  payments: {rate: 2, burst: 2}\n")
    with pytest.raises(PolicyError) as caught:
        load_policies([tmp_path])
    [issue] = caught.value.issues
    assert (issue.file, issue.dependency) == (str(second), "payments")
    assert str(first) in issue.message
    assert str(second) in issue.message


def test_duplicate_is_reported_even_if_second_declaration_is_invalid(tmp_path: Path) -> None:
    """The cross-file duplicate is reported alongside the second declaration's own issues."""
    write(tmp_path / "a.yaml", "dependencies:\n  payments: {rate: 1, burst: 1}\n")
    write(tmp_path / "b.yaml", "dependencies:\n  payments: {rate: 0, burst: 1}\n")
    with pytest.raises(PolicyError) as caught:
        load_policies([tmp_path])
    messages = [issue.message for issue in caught.value.issues]
    assert len(messages) == 2
    assert any("declared in both" in m for m in messages)


def test_issues_are_collected_across_files(tmp_path: Path) -> None:
    """Problems in several files are all reported in one PolicyError."""
    write(tmp_path / "a.yaml", "dependencies:\n  a: {rate: 0, burst: 1}\n")
    write(tmp_path / "b.yml", "dependencies: [\n")
    with pytest.raises(PolicyError) as caught:
        load_policies([tmp_path])
    assert [Path(i.file).name for i in caught.value.issues] == ["a.yaml", "b.yml"]


def test_directory_reads_yaml_and_yml_sorted_not_recursive(tmp_path: Path) -> None:
    """A directory contributes its *.yaml and *.yml files in sorted order, not subfolders."""
    write(tmp_path / "b.yml", "dependencies:\n  b: {rate: 1, burst: 1}\n")
    write(tmp_path / "a.yaml", "dependencies:\n  a: {rate: 1, burst: 1}\n")
    write(tmp_path / "notes.txt", "not yaml: [")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "c.yaml", "dependencies:\n  c: {rate: 1, burst: 1}\n")
    loaded = load_policies([tmp_path])
    assert list(loaded.dependencies) == ["a", "b"]


def test_file_given_twice_is_read_once(tmp_path: Path) -> None:
    """A file reached both through its directory and directly is not a duplicate of itself."""
    path = write(tmp_path / "a.yaml", "dependencies:\n  a: {rate: 1, burst: 1}\n")
    assert list(load_policies([tmp_path, path]).dependencies) == ["a"]


def test_single_path_string_is_accepted(tmp_path: Path) -> None:
    """load_policies given one path (not a list) loads it rather than iterating its characters."""
    write(tmp_path / "a.yaml", "dependencies:\n  a: {rate: 1, burst: 1}\n")
    assert list(load_policies(str(tmp_path)).dependencies) == ["a"]


def test_missing_path_is_an_issue(tmp_path: Path) -> None:
    """A path that does not exist is an issue naming it."""
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PolicyError) as caught:
        load_policies([missing])
    [issue] = caught.value.issues
    assert (issue.file, issue.message) == (str(missing), "no such file or directory")


def test_directory_without_policy_files_is_an_issue(tmp_path: Path) -> None:
    """A directory with no *.yaml / *.yml files is an issue (no files found)."""
    with pytest.raises(PolicyError) as caught:
        load_policies([tmp_path])
    [issue] = caught.value.issues
    assert issue.message == "no *.yaml or *.yml files in this directory"


def test_no_paths_is_an_issue() -> None:
    """An empty list of paths is an issue, not an empty policy set."""
    with pytest.raises(PolicyError) as caught:
        load_policies([])
    assert caught.value.issues[0].message == "no policy files given"


# --------------------------------------------------------------------------- durations and sizes


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (0, 0),
        (30, 30_000),
        (1.5, 1500),
        (0.1, 100),
        (0.3, 300),
        (0.0001, 1),
        ("200ms", 200),
        ("1.2ms", 2),
        ("1.5s", 1500),
        ("30s", 30_000),
        ("0.0001s", 1),
        ("10m", 600_000),
        ("1h", 3_600_000),
        ("1d", 86_400_000),
        (" 2 s ", 2000),
        (".5s", 500),
    ],
)
def test_parse_duration(value: object, ms: int) -> None:
    """Durations parse to whole milliseconds, rounded up (bare numbers are seconds)."""
    assert parse_duration_ms(value) == ms


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "a duration must be a number of seconds or a string like '30s', got True"),
        (-1, "a duration must not be negative, got -1"),
        ("-5s", "a duration must not be negative, got '-5s'"),
        ("5x", "unknown duration unit 'x' in '5x': use ms, s, m, h or d"),
        ("5S", "unknown duration unit 'S'"),
        ("5", "duration '5' has no unit"),
        ("soon", "invalid duration 'soon'"),
        (math.inf, "a duration must be finite, got inf"),
        (None, "got NoneType"),
        ([1], "got list"),
        ("100000d", "longer than the maximum of 100 years"),
    ],
)
def test_parse_duration_rejects(value: object, message: str) -> None:
    """Bad durations raise ValueError with a message saying what is wrong."""
    with pytest.raises(ValueError) as caught:
        parse_duration_ms(value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (0, 0),
        (512, 512),
        ("512", 512),
        ("512B", 512),
        ("64KB", 64_000),
        ("64KiB", 65_536),
        ("1MB", 1_000_000),
        ("1MiB", 1_048_576),
        ("1GB", 1_000_000_000),
        ("1GiB", 1_073_741_824),
        ("1.5KiB", 1536),
        ("0.5B", 1),
        ("2 MiB", 2_097_152),
    ],
)
def test_parse_size(value: object, size: int) -> None:
    """Sizes parse to bytes; KB = 1000, KiB = 1024; fractional bytes round up."""
    assert parse_size(value) == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "a size must be a number of bytes or a string like '1MiB', got True"),
        (-1, "a size must not be negative, got -1"),
        ("-1KB", "a size must not be negative"),
        (1.5, "a size must be a whole number of bytes"),
        ("1TB", "unknown size unit 'TB' in '1TB': use B, KB, KiB, MB, MiB, GB or GiB"),
        ("1kb", "unknown size unit 'kb'"),
        ("big", "invalid size 'big'"),
        (None, "got NoneType"),
    ],
)
def test_parse_size_rejects(value: object, message: str) -> None:
    """Bad sizes raise ValueError with a message saying what is wrong."""
    with pytest.raises(ValueError) as caught:
        parse_size(value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "text", ["0ms", "200ms", "1s500ms", "30s", "1m30s", "10m", "1h", "1h30m", "1d", "1d12h"]
)
def test_format_duration_round_trips(text: str) -> None:
    """format_duration_ms renders units largest first, and parses back to itself."""
    assert format_duration_ms(parse_duration_ms(text)) == text


@pytest.mark.parametrize(
    ("ms", "text"),
    [(1500, "1s500ms"), (90_000, "1m30s"), (129_600_000, "1d12h"), (90_061_001, "1d1h1m1s1ms")],
)
def test_format_duration_is_compound(ms: int, text: str) -> None:
    """A duration no single unit divides is written as a compound ('1m30s', not '90s')."""
    assert format_duration_ms(ms) == text


@given(st.integers(min_value=0, max_value=policy_module.MAX_DURATION_MS))
def test_every_formatted_duration_parses_back(ms: int) -> None:
    """Property: for every duration accepted, parse(format(ms)) == ms."""
    assert parse_duration_ms(format_duration_ms(ms)) == ms


@pytest.mark.parametrize("text", ["1B", "999B", "64KiB", "64KB", "1MiB", "1MB", "1GiB", "3GB"])
def test_format_size_round_trips(text: str) -> None:
    """format_size renders with the largest exact unit, and parses back to itself."""
    assert format_size(parse_size(text)) == text


# --------------------------------------------------------------------------- interval rounding


@pytest.mark.parametrize(
    ("rate", "expected"),
    [(3, 333_334), (0.5, 2_000_000), (1000, 1000), (1, 1_000_000), (0.1, 10_000_000), (7, 142_858)],
)
def test_interval_rounds_up(rate: float, expected: int) -> None:
    """interval_us = ceil(1e6 / rate), computed exactly (0.1 gives 10000000, not 9999999)."""
    assert interval_us(rate) == expected


@given(st.floats(min_value=0, max_value=1e6, exclude_min=True))
def test_interval_never_exceeds_declared_rate(rate: float) -> None:
    """For any rate in (0, 1e6]: 1e6/interval_us <= rate, and interval_us - 1e6/rate is in [0, 1).

    The rate is the decimal the user wrote (Fraction(str(rate))); the comparison is exact,
    plus a float check of the first inequality. (A float evaluation of 1e6/rate could round
    onto an integer and hide a real overshoot of less than one microsecond.)
    """
    interval = interval_us(rate)
    declared = Fraction(str(rate))
    assert Fraction(1_000_000, interval) <= declared
    assert float(Fraction(1_000_000, interval)) <= rate
    assert 0 <= interval - Fraction(1_000_000) / declared < 1


@pytest.mark.parametrize(("weight", "milli"), [(1, 1000), (2, 2000), (0.001, 1), (1.5, 1500)])
def test_weight_milli(weight: float, milli: int) -> None:
    """Weights compile to thousandths: round(weight * 1000)."""
    assert weight_milli(weight) == milli


# --------------------------------------------------------------------------- compile

FULL = dep(
    """
    rate: 50
    burst: 100
    max_in_flight: 20
    max_wait: 30s
    lease: 45s
    retention: 2d
    max_payload: 64KiB
    max_cost: 10
    scopes:
      default: {rate: 10, burst: 20, weight: 1}
      tenant-42: {rate: 25, burst: 50, weight: 2}
      acme corp: {rate: 3, weight: 0.5}
    """
)


def test_compile_fields_names_and_values() -> None:
    """compile_policy writes exactly the fields the Lua scripts read, with integer values."""
    compiled = compile_policy("payments", load_one(FULL))
    assert isinstance(compiled, CompiledPolicy)
    assert compiled.dependency == "payments"
    assert compiled.fields == {
        "interval_us": 20_000,
        "burst": 100,
        "max_in_flight": 20,
        "max_wait_ms": 30_000,
        "lease_ms": 45_000,
        "retention_ms": 172_800_000,
        "max_payload": 65_536,
        "max_dead_letters": 100_000,
        "max_cost": 10,
        "scope_interval_us": 100_000,
        "scope_burst": 20,
        "scope_weight_milli": 1000,
        "scope_max_queued": 0,
        "scope_max_queued_cost": 0,
        "scope_quota_limit": 0,
        "scope_quota_period_ms": 0,
        "scope_quota_rolling": 0,
        "scope_quota_wait": 0,
        "scope_overrides": 2,
        "retry_max_attempts": 3,
        "backoff_base_ms": 1000,
        "backoff_factor_milli": 2000,
        "backoff_max_ms": 60000,
        "backoff_jitter": 1,
        "max_retry_after_ms": 3_600_000,
        "pause_on_retry_after": 0,
        "budget_enabled": 1,
        "budget_ratio_milli": 100,
        "budget_mps_milli": 1000,
        "budget_max_wait_ms": 0,
        "budget_window_ms": 10_000,
        "circuit_enabled": 0,
    }
    assert compiled.texts == {"retry_on": "*"}


def test_compile_retry_circuit_and_scope_retry() -> None:
    """Retry rules, budget, circuit and per-scope retry overrides compile to the fields the
    scripts read; a scope override inherits what it does not set."""
    text = dep(
        MINIMAL + "retry:\n"
        "  max_attempts: 5\n"
        "  backoff: {base: 200ms, factor: 2, max: 30s, jitter: decorrelated}\n"
        "  retry_on: [timeout, http_5xx]\n"
        "  budget: {ratio: 0.2, min_per_second: 2, window: 30s}\n"
        "  max_retry_after: 10m\n"
        "  pause_on_retry_after: scope\n"
        "circuit: {failure_ratio: 0.25, min_requests: 10, window: 5s, open_for: 2s}\n"
        "scopes:\n"
        "  batch:\n"
        "    retry: {max_attempts: 2, retry_on: [timeout]}\n"
    )
    c = compile_policy("payments", load_one(text))
    f = c.fields
    assert (f["retry_max_attempts"], f["backoff_base_ms"], f["backoff_jitter"]) == (5, 200, 3)
    assert (f["budget_ratio_milli"], f["budget_mps_milli"], f["budget_window_ms"]) == (
        200,
        2000,
        30_000,
    )
    assert (f["max_retry_after_ms"], f["pause_on_retry_after"]) == (600_000, 1)
    assert (f["circuit_enabled"], f["circuit_failure_milli"], f["circuit_open_ms"]) == (
        1,
        250,
        2000,
    )
    assert f["circuit_open_max_ms"] == 60_000 and f["circuit_probes"] == 3
    assert c.texts == {"retry_on": "timeout,http_5xx", "retry:batch": "2 200 2000 30000 3 timeout"}


def test_budget_can_be_switched_off_and_bad_retry_rules_are_errors() -> None:
    """budget: false disables the budget; bad kinds, jitter and pause values are errors."""
    off = load_one(dep(MINIMAL + "retry: {budget: false}\n"))
    assert off.retry.budget is None
    issues = issues_of(
        dep(
            MINIMAL + "retry:\n  retry_on: ['http 500']\n  backoff: {jitter: sometimes}\n"
            "  pause_on_retry_after: fleet\n"
            "circuit: {failure_ratio: 0, open_for: 10s, open_for_max: 1s}\n"
            "scopes:\n  default: {retry: {max_attempts: 2}}\n"
        )
    )
    fields = sorted(i.field for i in issues)
    assert "retry.retry_on" in fields
    assert "retry.backoff.jitter" in fields
    assert "retry.pause_on_retry_after" in fields
    assert "circuit.failure_ratio" in fields
    assert any("invalid error kind 'http 500'" in i.message for i in issues)


def test_compile_scopes_are_encoded_overrides() -> None:
    """Overrides compile to encode_part(name) -> 'interval_us burst weight_milli', inherited."""
    compiled = compile_policy("payments", load_one(FULL))
    assert compiled.scopes == {
        "tenant-42": "40000 50 2000 0 0 0 0 0 0",
        encode_part("acme corp"): "333334 20 500 0 0 0 0 0 0",
    }
    assert encode_part("acme corp").startswith("~")


def test_compile_unlimited_in_flight_is_zero() -> None:
    """An unlimited max_in_flight compiles to 0."""
    assert compile_policy("payments", load_one(dep(MINIMAL))).fields["max_in_flight"] == 0


def test_compile_rejects_colliding_scope_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """compile_policy refuses overrides whose encoded keys collide (a hash collision)."""
    policy = load_one(dep(MINIMAL + "scopes:\n  a: {}\n  b: {}\n"))
    monkeypatch.setattr(policy_module, "encode_part", lambda name: "~same")
    with pytest.raises(PolicyError, match="encodes to the same key"):
        compile_policy("payments", policy)


def test_compile_rejects_invalid_dependency_name() -> None:
    """compile_policy refuses a name that could not be a key hash tag."""
    with pytest.raises(PolicyError, match="invalid dependency name"):
        compile_policy("a{b}", load_one(dep(MINIMAL)))


def test_digest_is_sha256_hex() -> None:
    """The digest is 64 lowercase hex characters."""
    digest = compile_policy("payments", load_one(FULL)).digest
    assert len(digest) == 64
    assert set(digest) <= set("0123456789abcdef")


def test_digest_ignores_declaration_order() -> None:
    """Reordering settings and scopes in the file does not change the digest."""
    reordered = dep(
        """
        scopes:
          acme corp: {weight: 0.5, rate: 3}
          tenant-42: {weight: 2, burst: 50, rate: 25}
          default: {weight: 1, burst: 20, rate: 10}
        max_cost: 10
        max_payload: 64KiB
        retention: 2d
        lease: 45s
        max_wait: 30s
        max_in_flight: 20
        burst: 100
        rate: 50
        """
    )
    assert (
        compile_policy("payments", load_one(FULL)).digest
        == compile_policy("payments", load_one(reordered)).digest
    )


def test_digest_ignores_override_dict_order() -> None:
    """Two policies whose scope_overrides differ only in insertion order share a digest."""
    base = load_one(FULL)
    flipped = base.model_copy(
        update={"scope_overrides": dict(reversed(list(base.scope_overrides.items())))}
    )
    assert list(flipped.scope_overrides) != list(base.scope_overrides)
    assert compile_policy("payments", base).digest == compile_policy("payments", flipped).digest


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("rate: 50", "rate: 51"),
        ("lease: 45s", "lease: 46s"),
        (
            "tenant-42: {rate: 25, burst: 50, weight: 2}",
            "tenant-42: {rate: 25, burst: 51, weight: 2}",
        ),
        ("acme corp:", "acme inc:"),
    ],
)
def test_digest_changes_with_any_limit(old: str, new: str) -> None:
    """Changing any limit (or an override's name) changes the digest."""
    changed = FULL.replace(old, new)
    assert changed != FULL
    assert (
        compile_policy("payments", load_one(FULL)).digest
        != compile_policy("payments", load_one(changed)).digest
    )


def test_digest_depends_on_dependency_name() -> None:
    """The same limits under two dependency names have different digests."""
    policy = load_one(FULL)
    assert compile_policy("payments", policy).digest != compile_policy("billing", policy).digest


# --------------------------------------------------------------------------- describe


def test_describe_example_payments() -> None:
    """describe renders units for humans and lists default then overrides."""
    payments = load_policies([EXAMPLES]).dependencies["payments"]
    assert describe(payments) == {
        "rate": "20/s",
        "burst": 20,
        "max_in_flight": 10,
        "max_wait": "30s",
        "lease": "30s",
        "retention": "1d",
        "max_payload": "256KiB",
        "max_dead_letters": 100_000,
        "max_cost": 10,
        "scopes": {
            "default": {"rate": "10/s", "burst": 10, "weight": 1.0},
            "tenant-vip": {"rate": "15/s", "burst": 15, "weight": 2.0},
        },
        "retry": {
            "max_attempts": 3,
            "backoff": {"base": "1s", "factor": 2.0, "max": "1m", "jitter": "full"},
            "retry_on": ["*"],
            "budget": {"ratio": 0.1, "min_per_second": 1.0, "window": "10s"},
            "max_retry_after": "1h",
            "pause_on_retry_after": "dependency",
        },
    }


def test_describe_shows_enforced_rate_when_rounded() -> None:
    """When interval rounding lowers the rate, describe shows the enforced rate too."""
    summary = describe(load_one(dep("rate: 3\nburst: 1\n")))
    assert summary["rate"] == "3/s"
    assert summary["enforced_rate"] == "2.99999/s"
    assert summary["max_in_flight"] == "unlimited"


def test_retry_section_defaults_and_overrides() -> None:
    """retry: defaults (3 attempts, 1s x2 up to 60s); every field can be set."""
    plain = load_one(dep(MINIMAL))
    assert plain.retry.max_attempts == 3 and plain.retry.backoff_base_ms == 1000
    custom = load_one(
        dep(MINIMAL + "retry:\n  max_attempts: 5\n  backoff: {base: 200ms, factor: 3, max: 30s}\n")
    )
    assert (custom.retry.max_attempts, custom.retry.backoff_base_ms) == (5, 200)
    assert (custom.retry.backoff_factor, custom.retry.backoff_max_ms) == (3.0, 30_000)


def test_retry_section_errors_name_the_field() -> None:
    """Unknown keys, attempts < 1 and max below base are errors on the right field."""
    issues = issues_of(dep(MINIMAL + "retry:\n  max_attempts: 0\n  colour: red\n"))
    fields = {i.field for i in issues}
    assert {"retry.max_attempts", "retry.colour"} <= fields
    issues = issues_of(dep(MINIMAL + "retry:\n  backoff: {base: 10s, max: 1s}\n"))
    assert [(i.field, i.message) for i in issues] == [
        ("retry.backoff.max", "max 1s is below base 10s")
    ]


def test_scope_queue_bounds_and_quotas_compile_and_inherit() -> None:
    """max_queued, max_queued_cost and quota on the default scope are inherited by overrides;
    an override may replace or drop (quota: false) them."""
    text = dep(
        MINIMAL + "scopes:\n"
        "  default:\n"
        "    max_queued: 100\n"
        "    quota: {limit: 5000, period: 1h}\n"
        "  big: {max_queued_cost: 900, quota: {limit: 1000000, period: 1d, window: rolling,"
        " on_exhausted: wait}}\n"
        "  free: {quota: false}\n"
    )
    p = load_one(text)
    assert p.default_scope.max_queued == 100 and p.default_scope.quota is not None
    assert p.scope_overrides["free"].quota is None and p.scope_overrides["free"].max_queued == 100
    c = compile_policy("payments", p)
    assert (c.fields["scope_max_queued"], c.fields["scope_quota_limit"]) == (100, 5000)
    assert c.fields["scope_quota_period_ms"] == 3_600_000
    assert c.scopes["big"] == "100000 20 1000 100 900 1000000 86400000 1 1"
    assert c.scopes["free"] == "100000 20 1000 100 0 0 0 0 0"


def test_a_quota_smaller_than_max_cost_can_never_fit() -> None:
    """A quota limit below max_cost is 'a cost that can never fit'."""
    issues = issues_of(
        dep(MINIMAL + "max_cost: 10\nscopes:\n  t: {quota: {limit: 5, period: 1h}}\n")
    )
    assert [(i.field, i.message) for i in issues] == [
        ("max_cost", "max_cost 10 can never fit: scopes.t.quota.limit is 5")
    ]


# --------------------------------------------------------------------------- rates as strings


@pytest.mark.parametrize(
    ("value", "rate"),
    [
        ("10/s", Fraction(10)),
        ("600/m", Fraction(10)),
        ("1/h", Fraction(1, 3600)),
        ("2.5/s", Fraction(5, 2)),
        ("100/d", Fraction(1, 864)),
        (" 0.5 / m ", Fraction(1, 120)),
        (10, Fraction(10)),
        (2.5, Fraction(5, 2)),
        (0.1, Fraction(1, 10)),
    ],
)
def test_parse_rate_is_exact(value: object, rate: Fraction) -> None:
    """Rates parse to exact units per second: '1/h' is 1/3600, not a rounded float."""
    assert parse_rate(value) == rate


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "10 per sec",
            "invalid rate '10 per sec': write a number of cost units per second, "
            "or '10/s', '600/m', '1/h', '1/d'",
        ),
        ("10/sec", "unknown rate unit 'sec' in '10/sec': use s, m, h or d"),
        (
            "5",
            "rate '5' has no unit: write e.g. '5/s', or a bare number (not a string) "
            "for units per second",
        ),
        ("0/s", "a rate must be greater than 0, got '0/s'"),
        ("-1/s", "a rate must be greater than 0, got '-1/s'"),
        ("61000000/m", "a rate must be at most 1000000/s, got '61000000/m'"),
        (math.nan, "a rate must be a finite number, got nan"),
        (
            True,
            "a rate must be a number of cost units per second or a string like '10/s', got true",
        ),
        (
            None,
            "a rate must be a number of cost units per second or a string like '10/s', got null",
        ),
    ],
)
def test_parse_rate_rejects(value: object, message: str) -> None:
    """A bad rate raises ValueError saying what to write instead."""
    with pytest.raises(ValueError) as caught:
        parse_rate(value)
    assert str(caught.value) == message


def test_rate_strings_in_a_file_compile_exactly() -> None:
    """'1/h' and '1/d' compile to exactly 3600 s and 86400 s per unit (a float 1/86400 would
    round the interval up by a microsecond)."""
    policy = load_one(dep("rate: 1/h\nburst: 2\nscopes:\n  default: {rate: 1/d}\n"))
    fields = compile_policy("payments", policy).fields
    assert fields["interval_us"] == 3_600_000_000
    assert fields["scope_interval_us"] == 86_400_000_000
    assert describe(policy)["rate"] == "1/h"
    assert "enforced_rate" not in describe(policy)


def test_bad_rate_string_in_a_file_is_an_issue_at_rate() -> None:
    """A rate string the format does not know is one issue at its field, with the fix."""
    issue = only_issue(dep("rate: 10 per sec\nburst: 1\n"))
    assert str(issue) == (
        "test.yaml: payments.rate: invalid rate '10 per sec': write a number of cost units "
        "per second, or '10/s', '600/m', '1/h', '1/d'"
    )


@pytest.mark.parametrize(
    ("rate", "text"),
    [
        (Fraction(10), "10/s"),
        (Fraction(5, 2), "2.5/s"),
        (Fraction(1, 3600), "1/h"),
        (Fraction(1, 864), "100/d"),
        (Fraction(7, 60), "7/m"),
        (0.5, "0.5/s"),
    ],
)
def test_format_rate(rate: Fraction | float, text: str) -> None:
    """Rates print per second when short, else in the unit that writes them exactly."""
    assert format_rate(rate) == text


@given(
    st.integers(min_value=1, max_value=10**6),
    st.integers(min_value=0, max_value=4),
    st.sampled_from(["s", "m", "h", "d"]),
)
def test_every_formatted_rate_parses_back(digits: int, places: int, unit: str) -> None:
    """Property: any rate written as '<decimal>/<unit>' prints as text that parses back to
    exactly the same value."""
    whole, frac = divmod(digits, 10**places)
    decimal = f"{whole}.{frac:0{places}d}" if places else f"{whole}"
    rate = parse_rate(f"{decimal}/{unit}")
    assert rate == Fraction(digits, 10**places) / {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    assert parse_rate(format_rate(rate)) == rate


def _as_document(summary: dict[str, object]) -> dict[str, object]:
    """describe() output as policy settings: only its three display words are translated."""
    body = {k: v for k, v in summary.items() if k != "enforced_rate"}
    if body["max_in_flight"] == "unlimited":
        del body["max_in_flight"]
    retry = body["retry"]
    assert isinstance(retry, dict)
    if retry["budget"] == "off":
        retry["budget"] = False
    scopes = body["scopes"]
    assert isinstance(scopes, dict)
    for limits in scopes.values():
        if limits.get("quota") == "off":
            limits["quota"] = False
    return body


ROUND_TRIP = dep(
    """
    rate: 1/h
    burst: 3
    max_wait: 1h30m
    lease: 1m30s
    retention: 2d12h
    max_payload: 1536KiB
    scopes:
      default: {rate: 100/d, burst: 2, weight: 0.5, max_queued: 7, quota: {limit: 9, period: 1h}}
      tenant-42: {rate: 2.5/s, weight: 3, quota: false}
      acme corp: {rate: 7/m, max_queued_cost: 5, retry: {max_attempts: 2, retry_on: [timeout]}}
    retry:
      max_attempts: 4
      backoff: {base: 250ms, factor: 1.5, max: 1m30s, jitter: equal}
      budget: {ratio: 0.25, min_per_second: 0.5, window: 1m}
      max_retry_after: 10m
      pause_on_retry_after: scope
    circuit: {failure_ratio: 0.3, min_requests: 5, window: 1500ms, open_for: 2s}
    """
)


@pytest.mark.parametrize("text", [ROUND_TRIP, FULL, dep(MINIMAL), dep("rate: 3\nburst: 1\n")])
def test_describe_parses_back_to_the_same_compiled_policy(text: str) -> None:
    """What `janus policy show` prints, fed back as a policy, compiles to the same fields,
    scopes, texts and digest."""
    policy = load_one(text)
    again = parse_policy_text(
        json.dumps({"dependencies": {"payments": _as_document(describe(policy))}}), FILE
    ).dependencies["payments"]
    assert compile_policy("payments", again) == compile_policy("payments", policy)


def test_round_trip_policy_shows_exact_rates_and_compound_durations() -> None:
    """The round-trip policy's rates and durations print in the forms they were written in."""
    summary = describe(load_one(ROUND_TRIP))
    assert (summary["rate"], summary["max_wait"], summary["lease"]) == ("1/h", "1h30m", "1m30s")
    scopes = summary["scopes"]
    assert isinstance(scopes, dict)
    assert [scopes[s]["rate"] for s in ("default", "tenant-42", "acme corp")] == [
        "100/d",
        "2.5/s",
        "7/m",
    ]
    assert scopes["tenant-42"]["quota"] == "off"


# --------------------------------------------------------------------------- compound durations


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("1h30m", 5_400_000),
        ("1m30s", 90_000),
        ("2d12h", 216_000_000),
        ("1.5s", 1500),
        ("500ms", 500),
        ("1h 30m", 5_400_000),
        ("1d1h1m1s1ms", 90_061_001),
        ("1m0.5s", 60_500),
    ],
)
def test_parse_compound_duration(value: str, ms: int) -> None:
    """Compound durations add their parts: units largest first, spaces allowed between."""
    assert parse_duration_ms(value) == ms


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "30s1m",
            "invalid duration '30s1m': write each unit at most once, largest first "
            "(d, h, m, s, ms), like '1h30m'",
        ),
        (
            "1m30m",
            "invalid duration '1m30m': write each unit at most once, largest first "
            "(d, h, m, s, ms), like '1h30m'",
        ),
        (
            "1h30",
            "invalid duration '1h30': 30 has no unit; every number needs one (ms, s, m, h or d)",
        ),
        ("1h30x", "unknown duration unit 'x' in '1h30x': use ms, s, m, h or d"),
        (
            "1h-30m",
            "invalid duration '1h-30m': write a number and a unit, like '200ms', '30s', '10m', "
            "'1h', '1d' or '1h30m'",
        ),
    ],
)
def test_parse_compound_duration_rejects(value: str, message: str) -> None:
    """A compound duration with units out of order, repeated or missing is refused."""
    with pytest.raises(ValueError) as caught:
        parse_duration_ms(value)
    assert str(caught.value) == message


def test_bare_lease_above_an_hour_reads_as_milliseconds() -> None:
    """lease: 30000 (seconds: 8h20m) is refused with a 'did you mean' reading it as ms."""
    issue = only_issue(dep(MINIMAL + "lease: 30000\n"))
    assert str(issue) == (
        "test.yaml: payments.lease: 30000 is a bare number, i.e. seconds (8h20m); "
        "did you mean '30s'? Write the unit ('30s', '500ms')"
    )


def test_bare_max_wait_above_an_hour_is_refused_too() -> None:
    """max_wait has the same sanity bound; both are reported at once."""
    issues = issues_of(dep(MINIMAL + "max_wait: 4500.5\nlease: 1e20\n"))
    assert [(i.field, i.message) for i in issues] == [
        (
            "max_wait",
            "4500.5 is a bare number, i.e. seconds (1h15m500ms); did you mean '4s501ms'? "
            "Write the unit ('30s', '500ms')",
        ),
        (
            "lease",
            "1e+20 is a bare number, i.e. seconds (1157407407407407d9h46m40s); "
            "write the unit ('30s', '500ms')",
        ),
    ]


def test_bare_numbers_up_to_an_hour_and_strings_are_still_seconds() -> None:
    """The bound applies only to bare lease/max_wait above 3600; units and other fields are
    unaffected."""
    policy = load_one(dep(MINIMAL + "lease: 3600\nmax_wait: 30000ms\nretention: 86400\n"))
    assert (policy.lease_ms, policy.max_wait_ms, policy.retention_ms) == (
        3_600_000,
        30_000,
        86_400_000,
    )


# --------------------------------------------------------------------------- plain messages

#: Mistakes a user can make in each section, each producing a different pydantic error type
#: (missing, extra_forbidden, invalid_key, int_type, float_type, finite_number, literal_error,
#: the `| false` union of quota and budget, bool input, greater_than..., model_type, dict_type).
PLAIN_CASES = [
    "rate: 1\n",
    "rate: 1\nburst: 1\n1: 2\n",
    MINIMAL + "burts: 5\n",
    MINIMAL + "max_in_flight: true\n",
    MINIMAL + "max_in_flight: .inf\n",
    MINIMAL + "scopes: 5\n",
    MINIMAL + "scopes:\n  t: 5\n",
    MINIMAL + "scopes:\n  t: {weight: fast}\n",
    MINIMAL + "scopes:\n  t: {weight: .inf}\n",
    MINIMAL + "scopes:\n  t: {quota: 5}\n",
    MINIMAL + "scopes:\n  t: {quota: true}\n",
    MINIMAL + "scopes:\n  t: {quota: {limit: 0, window: weekly, on_exhausted: maybe, x: 1}}\n",
    MINIMAL + "scopes:\n  t: {max_queued: 2.5, max_queued_cost: true}\n",
    MINIMAL + "retry: 5\n",
    MINIMAL + "retry: {budget: 5, max_attempts: 0}\n",
    MINIMAL + "retry: {budget: {ratio: '1', window: 1ms}}\n",
    MINIMAL + "retry: {backoff: {jitter: 5, factor: true, base: []}, retry_on: 5}\n",
    MINIMAL + "retry: {pause_on_retry_after: fleet}\n",
    MINIMAL + "circuit: true\n",
    MINIMAL + "circuit: {failure_ratio: 0, min_requests: -1, half_open_probes: '3'}\n",
    MINIMAL + 'scopes:\n  t: {"\\ud800": 1}\n',
]


@pytest.mark.parametrize("settings", PLAIN_CASES)
def test_messages_never_show_pydantic_internals(settings: str) -> None:
    """No issue, field path or message, names a model, a literal type or pydantic."""
    for issue in issues_of(dep(settings)):
        for word in ("_Raw", "literal[", "instance of", "pydantic", "Input should", "[key]"):
            assert word not in str(issue), issue


def test_quota_that_is_neither_a_mapping_nor_false() -> None:
    """`quota: 5` is one issue at quota saying what it may be (not one per union branch)."""
    issue = only_issue(dep(MINIMAL + "scopes:\n  t: {quota: 5}\n"))
    assert str(issue) == (
        "test.yaml: payments.scopes.t.quota: must be a mapping (limit, period, window, "
        "on_exhausted) or false to turn it off, got 5"
    )


def test_errors_inside_a_quota_are_reported_at_their_keys() -> None:
    """Inside a quota mapping only the quota's own errors appear, at plain paths."""
    issues = issues_of(dep(MINIMAL + "scopes:\n  t: {quota: {limit: 0, window: weekly}}\n"))
    assert [(i.field, i.message) for i in issues] == [
        ("scopes.t.quota.limit", "must be at least 1, got 0"),
        ("scopes.t.quota.period", "this setting is required"),
        ("scopes.t.quota.window", "must be 'fixed' or 'rolling', got 'weekly'"),
    ]


def test_budget_that_is_neither_a_mapping_nor_false() -> None:
    """`budget: true` is one issue saying a mapping or false is expected."""
    issue = only_issue(dep(MINIMAL + "retry: {budget: true}\n"))
    assert (issue.field, issue.message) == (
        "retry.budget",
        "must be a mapping (ratio, min_per_second, window) or false to turn it off, got true",
    )


@pytest.mark.parametrize(
    ("settings", "field", "message"),
    [
        (MINIMAL + "burts: 1\n", "burts", "unknown key 'burts'; did you mean 'burst'?"),
        (
            MINIMAL + "lease_time: 1s\n",
            "lease_time",
            "unknown key 'lease_time'; did you mean 'lease'?",
        ),
        (
            MINIMAL + "scopes:\n  t: {wieght: 2}\n",
            "scopes.t.wieght",
            "unknown key 'wieght'; did you mean 'weight'?",
        ),
        (
            MINIMAL + "retry: {backof: {}}\n",
            "retry.backof",
            "unknown key 'backof'; did you mean 'backoff'?",
        ),
        (
            MINIMAL + "retry: {budget: {raito: 1}}\n",
            "retry.budget.raito",
            "unknown key 'raito'; did you mean 'ratio'?",
        ),
        (
            MINIMAL + "scopes:\n  t: {quota: {limit: 1, period: 1h, windw: fixed}}\n",
            "scopes.t.quota.windw",
            "unknown key 'windw'; did you mean 'window'?",
        ),
        (
            MINIMAL + "circuit: {colour: red}\n",
            "circuit.colour",
            "unknown key 'colour'; the keys here are failure_ratio, min_requests, window, "
            "open_for, open_for_max, half_open_probes",
        ),
        (
            MINIMAL + "1: 2\n",
            "1",
            "unknown key 1; the keys here are rate, burst, max_in_flight, max_wait, lease, "
            "retention, max_payload, max_dead_letters, max_cost, scopes, retry, circuit",
        ),
    ],
)
def test_unknown_keys_suggest_a_close_match(settings: str, field: str, message: str) -> None:
    """An unknown key says 'did you mean' when a key of that section is close, else lists
    the section's keys."""
    issue = only_issue(dep(settings))
    assert (issue.field, issue.message) == (field, message)


def test_scope_names_that_look_like_tags_or_markers_keep_their_place() -> None:
    """Scope names are names wherever they sit in a path, even 'settings', 'off', '[key]'."""
    issues = issues_of(
        dep(MINIMAL + "scopes:\n  'settings': {rate: 0}\n  'off': {quota: 5}\n  '[key]': {x: 1}\n")
    )
    assert [i.field for i in issues] == [
        "scopes.settings.rate",
        "scopes.off.quota",
        "scopes.[key].x",
    ]


def test_all_messages_of_a_bad_dependency_arrive_together() -> None:
    """Validation stays exhaustive: each mistake of one dependency is its own issue."""
    issues = issues_of(
        dep(
            "rate: 10 per sec\nburts: 1\nlease: 30000\n"
            "retry: {budget: {max_wait: 1m}}\nscopes:\n  t: {quota: 5}\n"
        )
    )
    assert sorted(i.field for i in issues) == [
        "burst",
        "burts",
        "lease",
        "rate",
        "retry.budget.max_wait",
        "scopes.t.quota",
    ]


# --------------------------------------------------------------------------- deep YAML


@pytest.mark.parametrize(
    "text",
    [
        "[" * 10_000 + "]" * 10_000,
        "{a: " * 10_000 + "1" + "}" * 10_000,
        "- " * 10_000 + "1\n",
        "dependencies:\n  p:\n    retry:\n      retry_on: " + "[" * 10_000 + "]" * 10_000 + "\n",
    ],
)
def test_deep_nesting_is_a_policy_error_not_a_recursion_error(text: str) -> None:
    """10,000 nested lists or mappings give one issue, before anything recursive walks them."""
    issue = only_issue(text)
    assert issue.message.startswith(f"nesting deeper than {policy_module.MAX_NESTING} levels at ")


def test_nesting_through_aliases_is_bounded_too() -> None:
    """A chain of aliases, each one level deeper, counts as nesting (as construction would
    recurse through it), and so does a chain of '<<' merges."""
    chain = "x0: &a0 [1]\n" + "".join(f"x{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 10_000))
    merges = "m0: &m0 {k: 1}\n" + "".join(
        f"m{i}: &m{i} {{<<: *m{i - 1}}}\n" for i in range(1, 10_000)
    )
    for text in (chain, merges):
        issue = only_issue(text)
        assert issue.message.startswith("nesting deeper than 64 levels (through aliases) at ")


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    """A recursive structure (`&a [*a]`) is refused rather than built."""
    issue = only_issue("dependencies: &a [*a]\n")
    assert issue.message == (
        "an alias refers to a node that contains it (a structure nested in itself) "
        "at line 1, column 15"
    )


def test_nesting_up_to_the_limit_is_validated_normally() -> None:
    """Sixty levels is deep but allowed: the list is then refused by ordinary validation."""
    nested = "[" * 55 + "]" * 55
    issue = only_issue(dep(MINIMAL + f"retry: {{retry_on: {nested}}}\n"))
    assert (issue.field, issue.message) == (
        "retry.retry_on",
        "invalid error kind a list: use 1-64 characters from [A-Za-z0-9_.:-], a pattern "
        "ending in xx (http_5xx), or *",
    )


# --------------------------------------------------------------------------- names


def test_scope_name_with_a_lone_surrogate_is_a_policy_issue() -> None:
    """A scope override named with a lone surrogate ("\\ud800" in YAML) is an issue at that
    scope, not a UnicodeEncodeError later."""
    issue = only_issue(dep(MINIMAL + 'scopes:\n  "a\\ud800b": {rate: 1}\n'))
    assert issue.field == "scopes.'a\\ud800b'"
    assert issue.message == "scope must be valid Unicode text: lone surrogate at index 1"
    str(issue).encode("utf-8")  # printable: the name is shown escaped


# --------------------------------------------------------------------------- retry budget wait


def test_budget_max_wait_is_refused_with_the_reason() -> None:
    """retry.budget.max_wait was removed: a retry waiting for the budget never dead-letters."""
    issue = only_issue(dep(MINIMAL + "retry:\n  budget: {ratio: 0.2, max_wait: 10m}\n"))
    assert str(issue) == (
        "test.yaml: payments.retry.budget.max_wait: retry.budget.max_wait was removed: a retry "
        "waiting for the retry budget is never dead-lettered for waiting; remove the key"
    )


def test_budget_compiles_max_wait_as_zero_and_describe_omits_it() -> None:
    """The fixed field budget_max_wait_ms stays (the scripts read it), always 0; the model
    and describe() have no max_wait."""
    policy = load_one(dep(MINIMAL + "retry:\n  budget: {ratio: 0.2, window: 30s}\n"))
    assert policy.retry.budget is not None
    assert "max_wait_ms" not in type(policy.retry.budget).model_fields
    assert compile_policy("payments", policy).fields["budget_max_wait_ms"] == 0
    retry = describe(policy)["retry"]
    assert isinstance(retry, dict)
    assert retry["budget"] == {"ratio": 0.2, "min_per_second": 1.0, "window": "30s"}


# --------------------------------------------------------------------------- representable times


def test_fair_queue_tag_step_beyond_the_limit_is_refused() -> None:
    """A tiny weight with a huge max_cost would move virtual time by 1e15 per job."""
    issue = only_issue(dep("rate: 1000\nburst: 1000000000\nscopes:\n  default: {weight: 0.001}\n"))
    assert str(issue) == (
        "test.yaml: payments.scopes.default.weight: weight 0.001 with max_cost 1000000000 "
        "moves the fair queue's virtual time by 1e15 per job; the limit is 1e12: raise the "
        "weight or lower max_cost"
    )


def test_tag_step_is_checked_for_each_override_that_sets_a_weight() -> None:
    """Overrides are checked too, each at its own weight; one that inherits is not repeated."""
    issues = issues_of(
        dep(
            "rate: 1000\nburst: 100000000\nmax_cost: 100000000\nscopes:\n"
            "  light: {weight: 0.05}\n  fine: {weight: 100}\n  same: {}\n"
        )
    )
    assert [(i.field, i.message) for i in issues] == [
        (
            "scopes.light.weight",
            "weight 0.05 with max_cost 100000000 moves the fair queue's virtual time by 2e12 "
            "per job; the limit is 1e12: raise the weight or lower max_cost",
        )
    ]


def test_tag_step_at_the_limit_is_accepted() -> None:
    """max_cost 1e6 at weight 0.001 moves the tag by exactly 1e12: allowed."""
    policy = load_one(dep("rate: 1000\nburst: 1000000\nscopes:\n  default: {weight: 0.001}\n"))
    assert (policy.max_cost, weight_milli(policy.default_scope.weight)) == (1_000_000, 1)


def test_hand_built_policy_with_too_large_a_tag_step_is_a_validation_error() -> None:
    """The resolved model enforces the same bound, so compile_policy never sees it."""
    with pytest.raises(ValidationError, match="moves the fair queue's virtual time by 1e13"):
        DependencyPolicy(
            rate=1000,
            burst=10**7,
            max_cost=10**7,
            default_scope=ScopeLimits(rate=1000, burst=10**7, weight=0.001),
        )


def test_backoff_with_base_zero_that_overflows_is_refused() -> None:
    """base 0 x factor^(max_attempts-1) beyond a double is 0 x infinity in the scripts."""
    issue = only_issue(
        dep(MINIMAL + "retry: {max_attempts: 1000, backoff: {base: 0, factor: 100}}\n")
    )
    assert (issue.field, issue.message) == (
        "retry.backoff.factor",
        "with base 0, factor 100 over 1000 attempts makes the scripts compute 0 x infinity "
        "(100^999 is beyond a double): every delay is 0 anyway, so set factor: 1, or give a "
        "base above 0",
    )


def test_backoff_that_grows_without_bound_is_capped_by_max() -> None:
    """With base > 0 an overflowing growth is capped by max, so it is accepted; max itself
    is at most 100 years."""
    policy = load_one(
        dep(MINIMAL + "retry: {max_attempts: 1000, backoff: {base: 1ms, factor: 100}}\n")
    )
    assert policy.retry.backoff_max_ms == 60_000
    issue = only_issue(dep(MINIMAL + "retry: {backoff: {max: 36501d}}\n"))
    assert (issue.field, issue.message) == (
        "retry.backoff.max",
        "duration '36501d' is longer than the maximum of 100 years",
    )


def test_a_setting_key_with_a_lone_surrogate_is_an_unknown_key() -> None:
    """A key that is not valid Unicode text is an unknown key, named (escaped) in the path."""
    issue = only_issue(dep(MINIMAL + 'scopes:\n  t: {"r\\ud800": 1}\n'))
    assert issue.field == "scopes.t.'r\\ud800'"
    assert issue.message == (
        "unknown key 'r\\ud800'; the keys here are rate, burst, weight, retry, max_queued, "
        "max_queued_cost, quota"
    )
