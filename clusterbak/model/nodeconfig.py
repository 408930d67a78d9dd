"""A node's config file, its users and its modules, as text and replies. Pure.

Config files and ACL files hold secrets (`requirepass`, `masterauth`, `user ... >password` / `#hash`, TLS key
passphrases). Nothing here returns them for display unmasked: `config_changes` (through `mask_value`) is what a plan
shows. `placed_config` edits only the directives that carry an address or a path of the target; every other line
(the operator's tuning, the users, the secrets) is kept byte for byte.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass

MASK = "<secret>"
SECRET_DIRECTIVES = frozenset({"requirepass", "masterauth", "tls-key-file-pass", "tls-client-key-file-pass",
                               "primaryauth"})
# password (>pw, <pw) and hash (#h, !h) rules of a `user` line or an ACL file line
SECRET_RULE_PREFIXES = (">", "<", "#", "!")
PORT_DIRECTIVES = ("port", "tls-port")
# what Redis uses when a config file does not set them (`dir` has none worth trusting: the start directory)
LAYOUT_DEFAULTS = {"dbfilename": "dump.rdb", "cluster-config-file": "nodes.conf", "appendonly": "no",
                   "appenddirname": "appendonlydir", "appendfilename": "appendonly.aof"}
MOVABLE_PATHS = ("pidfile", "logfile", "unixsocket")  # kept in the source's data dir: kept in the target's


@dataclass(frozen=True, slots=True)
class ModuleLoaded:
    name: str
    version: int
    path: str | None = None


@dataclass(frozen=True, slots=True)
class DirectiveChange:
    directive: str
    before: str | None  # masked; None: not set
    after: str | None


def parse_module_list(reply: object) -> tuple[ModuleLoaded, ...]:
    """MODULE LIST as redis-py returns it (RESP2 flat lists or RESP3 maps, bytes or str)."""
    out = []
    for entry in reply if isinstance(reply, (list, tuple)) else ():
        if isinstance(entry, dict):
            fields = {_s(k): v for k, v in entry.items()}
        else:
            items = list(entry)
            fields = {_s(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}
        name = _s(fields.get("name", ""))
        try:
            version = int(_s(fields.get("ver", 0)))
        except ValueError:
            version = 0
        path = fields.get("path")
        out.append(ModuleLoaded(name, version, _s(path) if path else None))
    return tuple(out)


def module_problem(needed: ModuleLoaded, loaded: tuple[ModuleLoaded, ...] | None, target: str) -> str | None:
    """Why `target` cannot load data that needs `needed` (None: it can). loaded None: unknown (checked elsewhere)."""
    if loaded is None:
        return None
    have = next((m for m in loaded if m.name == needed.name), None)
    if have is None:
        return (f"{target}: the backup's data may hold types of module {needed.name} (version {needed.version}), "
                f"which this target does not load; load the module (loadmodule) and run the restore again")
    if have.version < needed.version:
        return (f"{target}: loads module {needed.name} version {have.version}, older than the backup's "
                f"{needed.version}; upgrade the module first")
    return None


def _s(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# --- users -------------------------------------------------------------------------------------------------------

def acl_tokens(rules: str) -> list[str]:
    """Split ACL rules on spaces, keeping Redis 7 selectors `( ... )` as one token."""
    out, depth, current = [], 0, ""
    for ch in rules:
        if ch == " " and depth == 0:
            if current:
                out.append(current)
            current = ""
            continue
        depth += ch == "("
        depth -= ch == ")" and depth > 0
        current += ch
    if current:
        out.append(current)
    return out


def acl_users(text: str) -> dict[str, list[str]]:
    """ACL-file text (what an aclfile holds, or ACL LIST's lines) -> user name -> its rules."""
    users = {}
    for line in text.splitlines():
        tokens = acl_tokens(line.strip())
        if len(tokens) >= 2 and tokens[0] == "user":
            users[tokens[1]] = tokens[2:]
    return users


def mask_rules(tokens: list[str]) -> list[str]:
    return [MASK if t.startswith(SECRET_RULE_PREFIXES) else t for t in tokens]


def users_summary(text: str) -> list[str]:
    """User names with their masked rules: what a plan may show about an ACL file."""
    return [f"{name} {' '.join(mask_rules(rules))}" for name, rules in acl_users(text).items()]


# --- config files ------------------------------------------------------------------------------------------------

def _split(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=False, posix=True)
    except ValueError:
        return line.split()


def entries(text: str) -> dict[str, list[str]]:
    """directive (lower case) -> its values in order (a directive given twice, like `save` or `user`, has two)."""
    out: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = _split(line)
        if parts:
            out.setdefault(parts[0].lower(), []).append(" ".join(parts[1:]))
    return out


def mask_value(directive: str, value: str) -> str:
    if directive in SECRET_DIRECTIVES:
        return MASK
    if directive == "user":
        return " ".join(mask_rules(acl_tokens(value)))
    if directive == "sentinel" and value.startswith("auth-pass"):
        return "auth-pass " + MASK
    if directive == "rename-command":  # a renamed command's new name is a password of sorts
        return value.split(" ", 1)[0] + " " + MASK
    return value


def config_changes(current: str | None, placed: str) -> tuple[DirectiveChange, ...]:
    """What placing `placed` changes on a node whose config file is `current` (None: unknown or absent), masked.
    A secret that differs shows as `<secret> (changed)`: that it changes, never what it is."""
    before = entries(current or "")
    after = entries(placed)
    out = []
    for key in sorted(set(before) | set(after)):
        b, a = before.get(key), after.get(key)
        if b == a:
            continue
        mb = "; ".join(mask_value(key, v) for v in b) if b is not None else None
        ma = "; ".join(mask_value(key, v) for v in a) if a is not None else None
        if mb == ma and ma is not None:
            ma += " (changed)"
        out.append(DirectiveChange(key, mb, ma))
    return tuple(out)


def rewrite_directives(text: str, edits: dict[str, str]) -> str:
    """Set each directive of `edits` to its value: the first line that sets it is replaced, later ones are dropped,
    a directive not there is appended. Comments and every other line are kept as they are."""
    done: set[str] = set()
    lines = []
    for raw in text.splitlines():
        parts = _split(raw.strip()) if raw.strip() and not raw.strip().startswith("#") else []
        key = parts[0].lower() if parts else None
        if key in edits:
            if key not in done:
                lines.append(f"{key} {edits[key]}")
                done.add(key)
            continue
        lines.append(raw)
    missing = [k for k in edits if k not in done]
    if missing:
        lines.append("# set by clusterbak restore --with-config")
        lines += [f"{k} {edits[k]}" for k in missing]
    return "\n".join(lines) + "\n"


def quote(value: str) -> str:
    """A config-file value: bare when it can be, else double-quoted with escapes."""
    if value and all(ch.isalnum() or ch in "/._-:@+," for ch in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def placed_edits(stored: str, old_host: str, old_port: int, new_host: str, new_port: int, new_cport: int,
                 layout: dict[str, str]) -> dict[str, str]:
    """The directives of a stored config file that must change for it to run on the target:

    - `layout` (dir, dbfilename, cluster-config-file, appendonly, appenddirname, appendfilename, aclfile): the
      target's own values, which the restore placed its files for (from the inventory or the live target, never
      from the set);
    - with a new address (--map): `port`/`tls-port` that carried the old port, `bind` entries naming the old host,
      `cluster-port`, and the `cluster-announce-*` directives that are set;
    - `pidfile`, `logfile`, `unixsocket` kept inside the source's data dir: moved into the target's.
    """
    have = {k: v[-1] for k, v in entries(stored).items()}
    edits = {k: quote(v) for k, v in layout.items()
             if v is not None and have.get(k, LAYOUT_DEFAULTS.get(k)) != v}
    old_dir, new_dir = have.get("dir", ""), layout.get("dir")
    if old_dir.startswith("/") and new_dir and old_dir.rstrip("/") != new_dir.rstrip("/"):
        for key in MOVABLE_PATHS:
            value = have.get(key, "")
            if value.startswith(old_dir.rstrip("/") + "/"):
                edits[key] = quote(posixpath.join(new_dir, value[len(old_dir.rstrip("/")) + 1:]))
    if (old_host, old_port) != (new_host, new_port):
        for key in PORT_DIRECTIVES:
            if have.get(key) == str(old_port):
                edits[key] = str(new_port)
        if "bind" in have and old_host != new_host:
            hosts = have["bind"].split()
            if old_host in hosts:
                edits["bind"] = " ".join(new_host if h == old_host else h for h in hosts)
        for key, port in (("cluster-port", new_cport), ("cluster-announce-port", new_port),
                          ("cluster-announce-tls-port", new_port), ("cluster-announce-bus-port", new_cport)):
            if have.get(key) not in (None, "0"):
                edits[key] = str(port)
        if have.get("cluster-announce-ip"):
            edits["cluster-announce-ip"] = new_host
    return edits
