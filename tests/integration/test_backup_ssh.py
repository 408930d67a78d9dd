"""backup through the SSH transport: a real sshd on loopback with throwaway keys (lab up --ssh)."""

from __future__ import annotations

from pathlib import Path


def test_backup_over_ssh_verifies_and_matches_key_counts(make_lab, cli, tmp_path):
    handle = make_lab(keys=900, ssh=True)
    assert 'transport = "ssh"' in Path(handle.inventory).read_text()
    result, doc = cli.json(
        "backup", "--seed", handle.seed, "--inventory", handle.inventory, "--dest", str(tmp_path / "s")
    )
    assert result.exit_code == 0, doc["errors"]
    m = doc["data"]["manifest"]
    assert m["totals"]["keys"] == 900 and len(m["nodes"]) == 6
    assert {s["source"]["role"] for s in m["shards"]} == {"replica"}
    assert cli("verify", m["backup_id"], "--dest", str(tmp_path / "s")).exit_code == 0


def test_unknown_host_key_is_refused_before_any_bgsave(make_lab, cli, tmp_path):
    handle = make_lab(ssh=True)
    known = Path(handle.lab.sshd["known_hosts"])
    known.write_text("")  # the host is now unknown
    result, doc = cli.json(
        "backup", "--seed", handle.seed, "--inventory", handle.inventory, "--dest", str(tmp_path / "s")
    )
    assert result.exit_code != 0
    assert "--accept-new-host-keys" in doc["errors"][0] and "127.0.0.1" in doc["errors"][0]
    assert not (tmp_path / "s").exists()
    result, doc = cli.json(
        "backup",
        "--seed",
        handle.seed,
        "--inventory",
        handle.inventory,
        "--dest",
        str(tmp_path / "s"),
        "--accept-new-host-keys",
    )
    assert result.exit_code == 0, doc["errors"]
    assert "ssh-ed25519" in known.read_text()
