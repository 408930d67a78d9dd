"""Malformed replies and files are typed errors with their exit codes (errors.py), never "a bug" (exit 1).

The CLI's one error wrapper (cli.common.execute) runs a body that feeds the real parsers malformed input, as a command
would after reading a node's reply or a set's file."""

from __future__ import annotations

import json

import pytest
import typer

from clusterbak.cli.common import execute
from clusterbak.errors import (
    EXIT_INTERRUPTED,
    EXIT_PRECONDITION,
    EXIT_STEP_FAILED,
    AofManifestError,
    ClusterbakError,
    NodesConfError,
    TopologyParseError,
)
from clusterbak.model.aofmanifest import parse_aof_manifest
from clusterbak.model.nodesconf import NewAddress, rewrite
from clusterbak.model.topology import parse_cluster_nodes


def run_json(body, capsys) -> tuple[int, dict]:
    with pytest.raises(typer.Exit) as done:
        execute("probe", True, body)
    return done.value.exit_code, json.loads(capsys.readouterr().out)


def test_malformed_cluster_nodes_reply_is_refused_with_exit_3(capsys):
    code, doc = run_json(lambda r: parse_cluster_nodes("not a CLUSTER NODES line\n"), capsys)
    assert code == EXIT_PRECONDITION and doc["status"] == "refused", doc
    assert "a bug" not in " ".join(doc["errors"]) and "unexpected" not in " ".join(doc["errors"])


def test_malformed_nodes_conf_is_a_failed_step_with_exit_4(capsys):
    code, doc = run_json(lambda r: rewrite("abc 10.0.0.1:6379@16379 myself\n", {}), capsys)
    assert code == EXIT_STEP_FAILED and "nodes.conf line has 3 fields" in doc["errors"][0], doc


def test_nodes_conf_naming_an_unmapped_node_is_a_failed_step(capsys):
    line = "a" * 40 + " 10.0.0.1:6379@16379 myself,master - 0 0 1 connected 0-16383\n"
    code, doc = run_json(lambda r: rewrite(line, {"b" * 40: NewAddress("h", 1, 2)}), capsys)
    assert code == EXIT_STEP_FAILED and "no new address" in doc["errors"][0], doc


def test_malformed_aof_manifest_is_a_failed_step_even_with_an_unbalanced_quote(capsys):
    with pytest.raises(AofManifestError, match="cannot be split"):
        parse_aof_manifest('file "appendonly.aof.1.base.rdb seq 1 type b\n')  # shlex's own ValueError before
    code, doc = run_json(lambda r: parse_aof_manifest("file a.rdb seq x type b\n"), capsys)
    assert code == EXIT_STEP_FAILED, doc


def test_the_parser_errors_sit_in_the_typed_tree():
    for cls, code in ((TopologyParseError, EXIT_PRECONDITION), (NodesConfError, EXIT_STEP_FAILED),
                      (AofManifestError, EXIT_STEP_FAILED)):
        assert issubclass(cls, ClusterbakError) and cls("x").exit_code == code


def test_interrupted_runs_share_one_exit_code():
    from clusterbak.engine.restore import RestoreInterrupted
    from clusterbak.engine.rolling import RollingInterrupted

    assert RestoreInterrupted("x").exit_code == RollingInterrupted("x").exit_code == EXIT_INTERRUPTED == 130
