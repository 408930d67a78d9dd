"""A node's config file, users and modules: collected beside its nodes.conf by backup, read back for a restore
plan, and placed by restore --with-config / --with-acl.

These files hold secrets. They are stored 0600 in the set (FileSink), listed in the manifest with sha256, read back
only through VerifiedReader, and never printed: messages name paths, never content.

A node that cannot give one of them (started without a config file, CONFIG/ACL/MODULE not permitted to our user, an
unreadable file) is a warning recorded in the manifest, not a failed backup: the data and nodes.conf are what a
restore cannot do without, and refusing the whole backup over a missing users file would leave the operator with
no backup at all.
"""

from __future__ import annotations

import io
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from clusterbak.errors import ClusterbakError, StepFailed, VerifyError
from clusterbak.model.inventory import Inventory
from clusterbak.model.manifest import Manifest, StoredFile
from clusterbak.model.names import NameError_, check_absolute_dir
from clusterbak.model.nodeconfig import acl_users, entries, rewrite_directives
from clusterbak.model.state import TargetState
from clusterbak.plan.backup import NodeFilePlan
from clusterbak.plan.restore import NodeRestore
from clusterbak.redisops.connect import ConnectionOptions, RedisFailure, make_client, split_address
from clusterbak.redisops.nodeinfo import apply_users, authenticates, read_node_extras, users_now
from clusterbak.storage.reader import VerifiedReader
from clusterbak.storage.repository import SetFile, SetWriter, StoredSet, open_stored
from clusterbak.transports.factory import TEXT_LIMIT, open_transport, read_text
from clusterbak.transports.pool import TransportPool


class _SmallFileSink:
    """A config or ACL file stored as it is (0600, uncompressed), at most TEXT_LIMIT bytes."""

    def __init__(self, path: SetFile | Path, name: str) -> None:
        self.file = open_stored(path, "none")
        self.name, self.size = name, 0
        self.data = bytearray()  # the plain text (small): read back from here, never from the store
        self.stored = None

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > TEXT_LIMIT:
            raise VerifyError(f"{self.name} is larger than {TEXT_LIMIT} bytes; not a config or ACL file")
        self.data += chunk
        self.file.write(chunk)

    def close(self) -> None:
        self.stored = self.file.close()

    def abort(self) -> None:
        self.file.abort()


def _record(relative: str, source_path: str | None, stored) -> dict:
    return {"path": relative, "source_path": source_path, "size": stored.stored_size, "sha256": stored.sha256_stored}


def _node_path(value: str, what: str, address: str) -> str:
    """A path a node reported: absolute and normalised, or refused (a node's reply is untrusted)."""
    try:
        return check_absolute_dir(value)
    except NameError_ as exc:
        raise StepFailed(f"{address}: {what} {exc}") from None


class NodeExtras:
    """Config files, users and modules of the nodes, collected in the background from the set's first shard file on:
    they do not depend on the snapshots, so they overlap the saves instead of following them (issue 14). `add_to`
    waits and adds them to the node records; `close` (always, also on failure) waits for what still runs, so
    nothing writes into a set being discarded."""

    def __init__(self, node_files: tuple[NodeFilePlan, ...], partial: SetWriter, transports: TransportPool,
                 conn: ConnectionOptions) -> None:
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="node-extras")
        jobs = [nf for nf in node_files if not nf.optional]
        if jobs:
            (partial / "nodes").mkdir(exist_ok=True, mode=0o700)
        self._jobs = [(nf, self._pool.submit(_collect, nf, partial, transports, conn)) for nf in jobs]

    def add_to(self, records: list[dict]) -> list[str]:
        """Add each node's config file, users and modules to its record; returns the warnings."""
        by_id = {r["id"]: r for r in records}
        warnings = []
        for nf, future in self._jobs:
            fields, notes = future.result()
            if nf.node_id in by_id:
                by_id[nf.node_id].update(fields)
                warnings += notes
        return warnings

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _collect(nf: NodeFilePlan, partial: SetWriter, transports: TransportPool,
             conn: ConnectionOptions) -> tuple[dict, list[str]]:
    fields: dict = {}
    host, port = split_address(nf.address)
    client = make_client(conn, host, port)
    try:
        extras = read_node_extras(client, nf.address)
    except (RedisFailure, OSError) as exc:
        return fields, [f"{nf.address}: config file, users and modules not collected: {str(exc)[:160]}"]
    finally:
        client.close()
    notes = list(extras.notes)
    if extras.modules is not None:
        fields["modules"] = [{"name": m.name, "ver": m.version, "path": m.path} for m in extras.modules]
    stem = f"{nf.address.replace(':', '_')}-{nf.node_id[:8]}"
    config_file = nf.config_file or extras.config_file  # the plan's (inventory, else INFO server)
    if not config_file:
        notes.append(f"{nf.address}: started without a config file (INFO server config_file is empty): "
                     "none stored; set config_file in the inventory if it has one")
    else:
        try:
            path = _node_path(config_file, "config_file", nf.address)
            kept: dict = {}
            fields["config_file"] = _fetch(nf.address, path, partial, f"{stem}.redis.conf", transports, kept)
            included = entries(kept["text"]).get("include")
            if included:
                notes.append(f"{nf.address}: {path} includes {len(included)} other file(s); they were not collected "
                             "(keep them with your configuration management)")
        except ClusterbakError as exc:
            notes.append(f"{nf.address}: config file not collected: {exc}")
    aclfile = nf.aclfile or extras.aclfile
    if aclfile:
        try:
            path = _node_path(aclfile, "aclfile", nf.address)
            fields["acl"] = {"source": "aclfile", **_fetch(nf.address, path, partial, f"{stem}.acl", transports)}
        except ClusterbakError as exc:
            notes.append(f"{nf.address}: ACL file not collected: {exc}")
    elif extras.acl_list is not None:
        target = partial / "nodes" / f"{stem}.users.acl"
        sink = _SmallFileSink(target, f"{nf.address} ACL LIST")
        try:
            sink.write(("\n".join(extras.acl_list) + "\n").encode())
        except BaseException:
            sink.abort()
            raise
        sink.close()
        fields["acl"] = {"source": "acl-list", **_record(f"nodes/{target.name}", None, sink.stored)}
    return fields, notes


def _fetch(address: str, path: str, partial: SetWriter, name: str, transports: TransportPool,
           kept: dict | None = None) -> dict:
    target = partial / "nodes" / name
    holder: dict = {}

    def open_sink() -> _SmallFileSink:
        holder["sink"] = _SmallFileSink(target, f"{address}:{path}")
        return holder["sink"]

    transports.get(address).fetch(path, open_sink)
    if kept is not None:
        kept["text"] = holder["sink"].data.decode(errors="replace")
    return _record(f"nodes/{name}", path, holder["sink"].stored)


# --- restore -----------------------------------------------------------------------------------------------------

def read_stored_text(set_dir: StoredSet, record: StoredFile) -> str:
    """A stored config or ACL file, hashed against the manifest as it is read (bytes kept as they are)."""
    if record.stored_size > TEXT_LIMIT:
        raise VerifyError(f"{set_dir.label(record.path)} is larger than {TEXT_LIMIT} bytes; not a config or ACL file")
    return VerifiedReader(set_dir, record).read().decode("utf-8", "surrogateescape")


def stored_configs(set_dir: StoredSet, manifest: Manifest) -> dict[str, str]:
    """node id -> its stored config file text (for planning; nothing of it is printed unmasked)."""
    return {c.id: read_stored_text(set_dir, c.config) for c in manifest.node_confs if c.config is not None}


def with_current_config(targets: dict[str, TargetState], inventory: Inventory,
                        accept_new_host_keys: bool = False) -> dict[str, TargetState]:
    """Each target with the text of its current config file (where the inventory or the live node says it is),
    for the plan's diff. A file that is not there, or cannot be read, leaves config_text None."""
    out = {}
    for address, target in targets.items():
        path = inventory.access(address).config_file or target.config_file
        text = None
        if path and path.startswith("/"):
            transport = open_transport(inventory.access(address), accept_new_host_keys)
            try:
                if transport.stat(path) is not None:
                    text = read_text(transport, path)
            except ClusterbakError:
                text = None
            finally:
                transport.close()
        out[address] = replace(target, config_text=text)
    return out


def extras_paths(node: NodeRestore) -> tuple[str, ...]:
    return tuple(p for p in (node.config_path, node.acl_path) if p)


def place_extras(node: NodeRestore, transport, set_dir: StoredSet, manifest: Manifest, modes: dict[str, int]) -> None:
    """The config file (with the plan's directive edits) and the users file, through the verified placement path."""
    conf = manifest.conf_of(node.node_id)
    if node.config_path and conf is not None and conf.config is not None:
        text = rewrite_directives(read_stored_text(set_dir, conf.config), dict(node.config_edits))
        transport.makedirs(posixpath.dirname(node.config_path))
        transport.write_from(node.config_path, io.BytesIO(text.encode("utf-8", "surrogateescape")),
                             mode=modes.get(node.config_path, 0o600))
    if node.acl_path and conf is not None and conf.acl is not None:
        transport.makedirs(posixpath.dirname(node.acl_path))
        transport.write_from(node.acl_path, VerifiedReader(set_dir, conf.acl), mode=modes.get(node.acl_path, 0o600))


# --- drill -------------------------------------------------------------------------------------------------------

def drill_users(conn: ConnectionOptions, set_dir: StoredSet, manifest: Manifest, new_address: dict[str, str],
                prove_user: str | None = None, password: str | None = None) -> list[dict]:
    """Apply every node's stored users to its drill node (ACL SETUSER name reset <rules>; hashes stay hashes) and
    prove them: the names are there on every node and, given a user and its password, that user authenticates on
    every node. The drill keeps its own `default` user, so that it can still check the cluster."""
    rows, applied = [], 0
    for conf in manifest.node_confs:
        address = new_address.get(conf.id)
        if address is None or conf.acl is None:
            continue
        text = read_stored_text(set_dir, conf.acl)
        wanted = set(acl_users(text)) - {"default"}
        try:
            apply_users(conn, address, text, skip=frozenset({"default"}))
            missing = sorted(wanted - set(users_now(conn, address)))
        except RedisFailure as exc:
            missing = [f"(ACL SETUSER or ACL LIST failed: {type(exc).__name__})"]  # its text may quote a rule
        applied += 1
        rows.append({"check": "users restored", "subject": address, "ok": not missing,
                     "detail": f"{len(wanted)} users" + (f"; missing {', '.join(missing)}" if missing else "")})
        if prove_user:
            problem = (authenticates(conn, address, prove_user, password) if password
                       else "no password given for it")
            rows.append({"check": f"user {prove_user} authenticates", "subject": address, "ok": problem is None,
                         "detail": problem or "AUTH and PING ok"})
    if not applied:
        rows.append({"check": "users restored", "subject": "drill", "ok": not prove_user,
                     "detail": "the backup recorded no users (see its warnings)"})
    return rows
