"""The arrows of docs/architecture.md, enforced: every import in clusterbak/ (and benchmarks/) is read with ast.

- model/ and plan/ are pure: no I/O library, no other clusterbak layer (model/ imports only model/ and errors;
  plan/ also model/).
- Only redisops/ speaks Redis: redis and hiredis are imported there, by the lab (it builds and fills clusters) and by
  the benchmarks, nowhere else.
- The layers below the engine never reach up: no layer imports cli/; only cli/ and engine/ import engine/.
- cli/ only parses, confirms and renders: from redisops/ it imports only redisops.connect (connection options and
  the seed's address check); from storage/ only the modules that open what the flags name (CLI_STORAGE); from plan/
  types and parsers, never a planner (a `plan_*` function): planning and probing are the engine's prepare steps.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clusterbak"

IO_LIBRARIES = {"redis", "hiredis", "paramiko", "docker", "socket", "subprocess", "boto3", "botocore", "requests",
                "pyrage", "zstandard", "shutil", "tempfile", "threading", "signal"}
REDIS_LIBRARIES = {"redis", "hiredis"}
PURE_MAY_IMPORT = {"model": {"model", "errors"}, "plan": {"model", "plan", "errors"}}
SPEAKS_REDIS = {"redisops", "lab"}
CLI_REDISOPS = {"clusterbak.redisops.connect"}
# the repository and key files the flags name, the S3 options, the destination checks made before any connection
CLI_STORAGE = {"clusterbak.storage." + m for m in ("repository", "s3options", "keys", "stages", "destination",
                                                   "local")}
BELOW_ENGINE = {"model", "plan", "redisops", "transports", "storage", "rdb", "errors", "config"}


def imported_names(path: Path) -> list[tuple[int, str, str]]:
    """(line, module, name) for every `from module import name` in a file (absolute imports)."""
    return [(node.lineno, node.module, alias.name) for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, ast.ImportFrom) and node.module and not node.level for alias in node.names]


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in a file, function-level (lazy) imports included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = path.relative_to(ROOT).with_suffix("").parts[: -node.level]
                out.append((node.lineno, ".".join((*base, node.module or ""))))
            elif node.module:
                out.append((node.lineno, node.module))
    return out


def layer(path: Path) -> str:
    """clusterbak/<layer>/x.py -> <layer>; clusterbak/errors.py -> errors."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def files(under: Path) -> list[Path]:
    return sorted(under.rglob("*.py"))


def violations(rule) -> list[str]:
    found = []
    for path in files(PACKAGE):
        for line, module in imports(path):
            why = rule(layer(path), module)
            if why:
                found.append(f"{path.relative_to(ROOT)}:{line}: imports {module} ({why})")
    return found


def pure_rule(src: str, module: str) -> str | None:
    if src not in PURE_MAY_IMPORT:
        return None
    top = module.split(".")[0]
    if top in IO_LIBRARIES:
        return f"{src}/ is pure: no I/O library"
    if top == "clusterbak" and module.count(".") >= 1:
        target = module.split(".")[1]
        if target not in PURE_MAY_IMPORT[src]:
            return f"{src}/ may import only {', '.join(sorted(PURE_MAY_IMPORT[src]))}"
    return None


def redis_rule(src: str, module: str) -> str | None:
    if module.split(".")[0] in REDIS_LIBRARIES and src not in SPEAKS_REDIS:
        return "only redisops/ speaks Redis (and the lab, which builds clusters)"
    return None


def upward_rule(src: str, module: str) -> str | None:
    if not module.startswith("clusterbak.") or module.count(".") < 1:
        return None
    target = module.split(".")[1]
    if target == "cli" and src not in {"cli", "__main__"}:
        return "only the entry point imports cli/"
    if target == "engine" and src not in {"cli", "engine"}:
        return "only cli/ and engine/ import engine/"
    if src in BELOW_ENGINE and target == "lab":
        return f"{src}/ is below the engine: it does not import the lab"
    return None


def thin_cli_rule(src: str, module: str) -> str | None:
    if src != "cli":
        return None
    if (module == "clusterbak.redisops" or module.startswith("clusterbak.redisops.")) and module not in CLI_REDISOPS:
        return "cli/ imports from redisops/ only redisops.connect: probing the cluster is the engine's"
    if (module == "clusterbak.storage" or module.startswith("clusterbak.storage.")) and module not in CLI_STORAGE:
        return f"cli/ imports from storage/ only {', '.join(sorted(m.rsplit('.', 1)[1] for m in CLI_STORAGE))}"
    return None


def planner_violations() -> list[str]:
    found = []
    for path in files(PACKAGE / "cli"):
        for line, module, name in imported_names(path):
            if module.startswith("clusterbak.plan") and name.startswith("plan_"):
                found.append(f"{path.relative_to(ROOT)}:{line}: imports {module}.{name} "
                             "(cli/ does not plan: the engine's prepare step does)")
    return found


def test_model_and_plan_import_no_io_and_no_other_layer():
    assert violations(pure_rule) == []


def test_only_redisops_and_the_lab_import_redis():
    assert violations(redis_rule) == []


def test_nothing_below_the_engine_reaches_up():
    assert violations(upward_rule) == []


def test_the_cli_only_parses_confirms_and_renders():
    assert violations(thin_cli_rule) + planner_violations() == []


def test_the_drill_is_given_its_scratch_cluster_and_does_not_import_the_lab():
    drill = PACKAGE / "engine" / "drill.py"
    assert [m for _, m in imports(drill) if m.startswith("clusterbak.lab")] == []


@pytest.mark.parametrize("where, bad, expected", [
    ("model", "import redis\n", "model/ is pure: no I/O library"),
    ("storage", "import redis\n", "only redisops/ speaks Redis"),
    ("plan", "from clusterbak.redisops.connect import make_client\n", "plan/ may import only"),
    ("model", "def f():\n    import subprocess\n", "no I/O library"),
    ("transports", "from clusterbak.engine import backup\n", "only cli/ and engine/ import engine/"),
    ("cli", "from clusterbak.redisops.discover import discover\n", "cli/ imports from redisops/ only"),
    ("cli", "def f():\n    from clusterbak.redisops import runlock\n", "cli/ imports from redisops/ only"),
    ("cli", "from clusterbak.storage.records import record_verify\n", "cli/ imports from storage/ only"),
    ("cli", "from clusterbak.plan.prune import plan_prune\n", "cli/ does not plan"),
])
def test_the_rules_see_what_they_forbid(tmp_path, monkeypatch, where, bad, expected):
    """A planted import in a throwaway package is reported (the checks are not vacuous)."""
    fake = tmp_path / "clusterbak"
    (fake / where).mkdir(parents=True)
    (fake / where / "planted.py").write_text(bad)
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    found = (violations(pure_rule) + violations(redis_rule) + violations(upward_rule) + violations(thin_cli_rule)
             + planner_violations())
    assert any(expected in v and f"clusterbak/{where}/planted.py" in v for v in found), found
