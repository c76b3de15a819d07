"""`janus status` as an SRE reads it: JSON that matches docs/status.schema.json, a plain
table that stays whole when piped, human times, state derived from the applied policy."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from janus.cli import main
from janus.client import Job
from janus.policy import parse_policy_text

from tests.helpers import make_janus, policy, take

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "docs" / "status.schema.json").read_text()
)
NAME = "payments-provider-with-a-long-name"
BODY = f"""
{NAME}:
  rate: 100
  burst: 10
  max_wait: 2h
  lease: 10s
  retry: {{max_attempts: 5, budget: false, backoff: {{base: 1s, jitter: none}}}}
  circuit: {{failure_ratio: 0.5, min_requests: 2, window: 10s, open_for: 1h}}
"""


def _open_circuit_and_pause(url: str, prefix: str) -> None:
    jn = make_janus(url, prefix, BODY)  # real time: the CLI reads Redis TIME
    jn.submit_many(NAME, [Job(scope="a", job_id=f"j{i}") for i in range(3)])
    w = jn.worker(NAME, group="g")
    a, b, _ = take(jn, NAME)
    w.fail(a, "http_503")
    w.fail(b, "http_429", retry_after_ms=600_000)  # pauses the dependency for 10 min
    jn.close()


def test_status_json_matches_the_schema_with_times(standalone_url: str, prefix: str) -> None:
    _open_circuit_and_pause(standalone_url, prefix)
    args = ["status", "--json", "--redis", standalone_url, "--prefix", prefix]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    jsonschema.validate(doc, SCHEMA)
    (dep,) = doc["dependencies"]
    assert dep["dependency"] == NAME and dep["circuit"] == "open" and dep["circuit_opens"] == 1
    assert dep["circuit_open_until_ms"] - doc["now_ms"] > 3_500_000  # about an hour
    assert dep["circuit_open_until_iso"].endswith("Z")
    assert 500_000 < dep["paused_until_ms"] - doc["now_ms"] <= 600_000
    assert (dep["in_flight"], dep["scheduled"]) == (1, 2)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**doc, "dependencies": [{**dep, "circuit": "ajar"}]}, SCHEMA)


def test_status_piped_is_whole_and_says_when(standalone_url: str, prefix: str) -> None:
    """Piped (CliRunner is not a terminal): no truncated cells, the whole name, the circuit
    and the pause with their clock time and how far away it is."""
    _open_circuit_and_pause(standalone_url, prefix)
    result = CliRunner().invoke(main, ["status", "--redis", standalone_url, "--prefix", prefix])
    assert result.exit_code == 0, result.output
    header, line, blank, top = result.output.strip().splitlines()
    assert "…" not in result.output and NAME in line and blank == ""
    assert top == f"{NAME}: top scopes by waiting work: a 2 jobs (cost 2)"
    assert header.split()[:3] == ["dependency", "policy", "scheduled"]
    assert ("open until " in line and "UTC (in 60 min)" in line) or "UTC (in 59 min)" in line
    assert ("until " in line and "(in 10 min)" in line) or "(in 9 min)" in line


def test_status_watch_repeats_and_a_policy_without_a_circuit_shows_off(
    standalone_url: str, prefix: str
) -> None:
    """The circuit column follows the applied policy: after a policy without a breaker is
    applied over an open circuit, status says "off", not a stale "open"."""
    _open_circuit_and_pause(standalone_url, prefix)
    jn = make_janus(standalone_url, prefix, BODY)
    no_circuit = BODY.replace(
        "  circuit: {failure_ratio: 0.5, min_requests: 2, window: 10s, open_for: 1h}\n", ""
    )
    jn.apply_policies(parse_policy_text(policy(no_circuit), "p.yaml"))
    assert jn.status(NAME).circuit == "off"
    args = ["status", "--watch", "0.2", "--count", "2", "--json"]
    result = CliRunner().invoke(main, [*args, "--redis", standalone_url, "--prefix", prefix])
    assert result.exit_code == 0, result.output
    docs = [json.loads(x) for x in result.output.strip().splitlines()]
    assert len(docs) == 2 and all(d["dependencies"][0]["circuit"] == "off" for d in docs)
    assert docs[1]["now_ms"] >= docs[0]["now_ms"] + 150
    jn.close()


def test_job_json_has_iso_times_beside_the_ms(standalone_url: str, prefix: str) -> None:
    jn = make_janus(standalone_url, prefix, BODY)
    jn.submit(NAME, scope="a", job_id="x")
    result = CliRunner().invoke(
        main, ["job", NAME, "x", "--redis", standalone_url, "--prefix", prefix]
    )
    data = json.loads(result.output)
    assert data["submitted_iso"].endswith("Z") and data["submitted_iso"][:2] == "20"
    assert "not_before_iso" in data
    jn.close()


def test_dlq_list_piped_is_whole(standalone_url: str, prefix: str) -> None:
    """`janus dlq list` keeps every cell whole when piped (it used a terminal-width table)."""
    body = BODY.replace("max_attempts: 5", "max_attempts: 1")
    jn = make_janus(standalone_url, prefix, body)
    long_id = "order-" + "x" * 60
    jn.submit(NAME, scope="tenant-with-a-long-name", job_id=long_id)
    w = jn.worker(NAME, group="g")
    (job,) = take(jn, NAME)
    w.fail(job, "http_503", detail="upstream said no")
    args = ["dlq", "list", NAME, "--redis", standalone_url, "--prefix", prefix]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    header, line, total = result.output.strip().splitlines()
    assert header.split()[:3] == ["entry", "job", "id"]
    assert long_id in line and "tenant-with-a-long-name" in line and "attempts_exhausted" in line
    assert line.rstrip().endswith("Z") and total == "1 dead letter(s)"
    jn.close()
