"""keys generate: the key pairs for signed manifests (Ed25519) and encrypted sets (age)."""

from __future__ import annotations

from typing import Annotated

import typer

from clusterbak.cli import common as c
from clusterbak.cli.render import Outcome, Renderer
from clusterbak.storage.keys import generate

keys_app = typer.Typer(
    no_args_is_help=True, help="Make the keys for --encrypt-to/--identity and --sign-key/--verify-key."
)


@keys_app.command("generate")
def generate_keys(out: Annotated[str, typer.Option("--out", help="Directory for the key files (never overwritten).")],
                  json_out: c.Json = False) -> None:
    """Write signing-key.pem + verify-key.pem (Ed25519) and age-identity.txt; print the age recipient."""

    def body(r: Renderer) -> Outcome:
        made = generate(out)
        r.table("keys", ("what", "value"), [
            ("age recipient (--encrypt-to)", made["recipient"]),
            ("age identity (--identity; keep it OFF the control host)", made["identity"]),
            ("signing key (--sign-key; on the control host)", made["signing_key"]),
            ("verify key (--verify-key; anywhere)", made["verify_key"])])
        return Outcome(data=made)

    c.execute("keys generate", json_out, body)
