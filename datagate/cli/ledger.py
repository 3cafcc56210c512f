"""``datagate keygen``, ``datagate ledger init|show|verify|model`` and ``datagate verify``:
the provenance ledger, its key, and gate attestations."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from datagate.cli.app import app
from datagate.cli.options import JsonOption
from datagate.errors import ExitCode

if TYPE_CHECKING:
    from datagate.ledger.chain import Ledger

ledger_app = typer.Typer(
    help="The provenance ledger: a signed, hash-chained record of every gate run and of the "
    "models trained on its dataset versions (.datagate/ledger by default).",
    no_args_is_help=True,
)
app.add_typer(ledger_app, name="ledger")

LedgerOption = Annotated[
    Path,
    typer.Option(
        "--ledger", help="Ledger folder (kept in the data repository).", show_default=True
    ),
]
KeyOption = Annotated[
    Path | None,
    typer.Option(
        "--key",
        help="Signing key (PEM, from `datagate keygen`; default $DATAGATE_LEDGER_KEY, else "
        "~/.config/datagate/ledger.key).",
        show_default=False,
    ),
]
PubOption = Annotated[
    Path | None,
    typer.Option(
        "--pub",
        help="Public key to verify with (default: the ledger's ledger.pub).",
        show_default=False,
    ),
]
_SHA = re.compile(r"^[0-9a-f]{64}$")


def _default_ledger() -> Path:
    from datagate.ledger.chain import DEFAULT_LEDGER

    return DEFAULT_LEDGER


def _key(key: Path | None) -> Path:
    from datagate.ledger.keys import default_key_path

    return key if key is not None else default_key_path()


@app.command()
def keygen(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Where to write the private key (mode 0600; default $DATAGATE_LEDGER_KEY, "
            "else ~/.config/datagate/ledger.key). Never inside the ledger folder.",
            show_default=False,
        ),
    ] = None,
    ledger: LedgerOption = Path(".datagate/ledger"),
    no_ledger: Annotated[
        bool, typer.Option("--no-ledger", help="Only write the key; create no ledger.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing key file.")] = False,
) -> int:
    """Create an ed25519 signing key and a ledger for it (its public key, an empty checkpoint)."""
    from datagate.cli import console
    from datagate.errors import InputError
    from datagate.ledger import chain, keys

    path = _key(out)
    if not no_ledger and ledger.resolve() in (path.resolve(), *path.resolve().parents):
        raise InputError(
            f"{path}: the private key would be inside the ledger folder {ledger}, which is "
            "shared with everyone who reads the data repository",
            hint="write it elsewhere (--out), e.g. ~/.config/datagate/ledger.key",
        )
    private = keys.generate(path, force=force)
    console.out.print(
        console.markup(
            "key: [bold]{}[/] (keyid {})", str(path), keys.key_id(private.public_key())[:16]
        ),
        soft_wrap=True,
    )
    if not no_ledger:
        created = chain.init(ledger, private)
        what = "created" if created else "already set up for this key"
        console.out.print(
            console.markup("ledger: [bold]{}[/] " + what, str(ledger)), soft_wrap=True
        )
    return ExitCode.OK


@ledger_app.command("init")
def ledger_init(ledger: LedgerOption = Path(".datagate/ledger"), key: KeyOption = None) -> int:
    """Create an empty ledger for an existing signing key."""
    from datagate.cli import console
    from datagate.ledger import chain, keys

    private = keys.load_private(_key(key))
    created = chain.init(ledger, private)
    what = "created" if created else "already set up for this key"
    console.out.print(console.markup("ledger: [bold]{}[/] " + what, str(ledger)), soft_wrap=True)
    return ExitCode.OK


@ledger_app.command("verify")
def ledger_verify(
    ledger: LedgerOption = Path(".datagate/ledger"),
    pub: PubOption = None,
    json_output: JsonOption = False,
) -> int:
    """Check every entry's signature and chain link and the signed checkpoint; exit 2 naming
    the first bad entry."""
    from datagate.cli import console
    from datagate.ledger import keys
    from datagate.ledger.chain import open_ledger

    found = open_ledger(ledger, pub)
    summary = {
        "ledger": str(ledger),
        "entries": len(found.entries),
        "runs": sum(e.kind == "run" for e in found.entries),
        "models": sum(e.kind == "model" for e in found.entries),
        "head": found.head,
        "root": found.checkpoint.get("root"),
        "keyid": keys.key_id(found.public),
        "uncommitted": found.uncommitted,
    }
    if json_output:
        console.print_json(summary)
        return ExitCode.OK
    console.out.print(
        console.markup(
            "[green]ok[/] {}: {} entries ({} runs, {} models), head {}, signed by keyid {}",
            str(ledger),
            summary["entries"],
            summary["runs"],
            summary["models"],
            found.head[:16],
            str(summary["keyid"])[:16],
        ),
        soft_wrap=True,
    )
    for seq in found.uncommitted:
        console.warn(
            f"entry {seq} was written but never committed (its run was interrupted); "
            "it is ignored and the next append replaces it"
        )
    return ExitCode.OK


def _content_sha(target: str) -> tuple[str | None, str | None]:
    """(sha256, key pattern) for ``ledger show``: a hash, a file's bytes, or a key to match."""
    text = target.strip().lower()
    if _SHA.match(text):
        return text, None
    path = Path(target)
    if path.is_file():
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest(), None
    return None, target


def history(ledger: Ledger, target: str) -> list[dict[str, Any]]:
    """Every committed run that saw the content (or key) ``target``, with its verdict."""
    import pyarrow.compute as pc

    sha, key = _content_sha(target)
    rows: list[dict[str, Any]] = []
    for entry in ledger.entries:
        if entry.kind != "run":
            continue
        index = ledger.index(entry)
        if sha is not None:
            mask = pc.equal(index.column("sha256"), sha)
        else:
            keys = index.column("key")
            mask = pc.or_(pc.equal(keys, key), pc.ends_with(keys, f"/{key}"))
        for row in index.filter(mask).to_pylist():
            rows.append(
                {
                    "entry": entry.seq,
                    "entry_sha256": entry.hash,
                    "time": entry.time,
                    "policy": entry.payload.get("policy", {}).get("name"),
                    "out": entry.payload.get("out"),
                    **row,
                }
            )
    return rows


@ledger_app.command("show")
def ledger_show(
    target: Annotated[
        str | None,
        typer.Argument(
            help="An image: its sha256, a file (hashed), or a key in the manifests. Without "
            "it: list the entries.",
            show_default=False,
        ),
    ] = None,
    ledger: LedgerOption = Path(".datagate/ledger"),
    pub: PubOption = None,
    json_output: JsonOption = False,
) -> int:
    """List the ledger's entries, or every run that saw an image and its verdict there."""
    from datagate.cli import console
    from datagate.ledger.chain import open_ledger

    found = open_ledger(ledger, pub)
    if target is None:
        listing = [
            {
                "entry": e.seq,
                "sha256": e.hash,
                "kind": e.kind,
                "time": e.time,
                **_brief(e.payload, e.kind),
            }
            for e in found.entries
        ]
        if json_output:
            console.print_json(listing)
            return ExitCode.OK
        for item in listing:
            console.out.print(
                console.markup(
                    "[bold]#{}[/] {} {} {}  {}",
                    item["entry"],
                    item["sha256"][:12],
                    item["time"],
                    item["kind"],
                    item["summary"],
                ),
                soft_wrap=True,
                highlight=False,
            )
        if not listing:
            console.out.print("the ledger has no entries yet")
        return ExitCode.OK
    rows = history(found, target)
    if json_output:
        console.print_json(rows)
        return ExitCode.OK
    if not rows:
        console.out.print(
            console.markup("no run in {} saw {}", str(ledger), target), soft_wrap=True
        )
        return ExitCode.OK
    for r in rows:
        why = f" ({r['rule_id']}: {r['reason_code']})" if r["verdict"] == "rejected" else ""
        generation = "unknown" if r["generation"] is None else r["generation"]
        console.out.print(
            console.markup(
                "#{} {} {}: [bold]{}[/]{}  key {} origin {} generation {}",
                r["entry"],
                r["time"],
                r["policy"] or "",
                r["verdict"],
                why,
                r["key"],
                r["origin"] or "unknown",
                str(generation),
            ),
            soft_wrap=True,
            highlight=False,
        )
    return ExitCode.OK


def _brief(payload: dict[str, Any], kind: str) -> dict[str, Any]:
    if kind == "model":
        trained = ", ".join(t["ref"] for t in payload.get("trained_on", []))
        gen = payload.get("generation")
        return {
            "summary": f"model {payload.get('name')} trained on {trained}: generation "
            f"{'unknown' if gen is None else gen}"
        }
    counts = payload.get("counts", {})
    share = payload.get("human_share", {}).get("share")
    mix = payload.get("generations", {}).get("kept", {})
    return {
        "summary": f"{payload.get('verdict')}: kept {counts.get('kept')} of "
        f"{counts.get('images')}, human {'?' if share is None else f'{share:.1%}'}, "
        f"generations {mix}, policy {payload.get('policy', {}).get('name')}"
    }


@ledger_app.command("model")
def ledger_model(
    name: Annotated[str, typer.Argument(help="The generator's name as images record it.")],
    trained_on: Annotated[
        list[str],
        typer.Option(
            "--trained-on",
            help="A dataset version it was trained on: a run entry's number or hash prefix "
            "(repeatable).",
            show_default=False,
        ),
    ],
    ledger: LedgerOption = Path(".datagate/ledger"),
    key: KeyOption = None,
    note: Annotated[str | None, typer.Option(help="A free-text note kept in the entry.")] = None,
) -> int:
    """Record that a generator was trained on dataset versions: its outputs then count as
    generation 1 + the highest generation those versions kept."""
    from datagate.cli import console
    from datagate.errors import InputError
    from datagate.ledger import chain, keys
    from datagate.ledger.lineage import model_generation, training_runs

    if not name.strip():
        raise InputError("NAME: expected the generator's name, found an empty string")
    private = keys.load_private(_key(key))
    found = chain.open_ledger(ledger)
    runs = training_runs(found, trained_on)
    generation = model_generation(runs)
    payload = {
        "name": name.strip(),
        "trained_on": [{"ref": r.ref, "seq": r.seq, "hash": r.hash} for r in runs],
        "generation": generation,
        "note": note,
    }
    entry = chain.append(ledger, private, "model", payload)
    gen = "unknown (no generation is known in that data)" if generation is None else generation
    console.out.print(
        console.markup(
            "recorded model [bold]{}[/] as entry #{}: its outputs are generation {}",
            name,
            entry.seq,
            str(gen),
        ),
        soft_wrap=True,
    )
    return ExitCode.OK


@app.command("verify")
def verify_gate(
    gate_dir: Annotated[
        Path, typer.Argument(help="Gate output folder (where `datagate enforce` wrote).")
    ],
    pub: PubOption = None,
    json_output: JsonOption = False,
) -> int:
    """Check a gate run's signed attestation and every file it names against its digest."""
    from datagate.cli import console
    from datagate.errors import InputError
    from datagate.ledger import keys
    from datagate.ledger.attest import verify_gate as check

    if pub is None:
        default = _default_ledger() / keys.PUBLIC_FILE
        if not default.is_file():
            raise InputError(
                f"no public key to verify with ({default} not found)",
                hint="pass the signer's public key with --pub (a ledger's ledger.pub)",
            )
        pub = default
    verified = check(gate_dir, pub)
    predicate = verified.predicate
    if json_output:
        console.print_json(
            {
                "attestation": str(verified.path),
                "keyid": verified.keyid,
                "statement": verified.statement,
            }
        )
        return ExitCode.OK
    console.out.print(
        console.markup(
            "[green]ok[/] {}: signed by keyid {}; {} files match their digests",
            str(verified.path),
            verified.keyid[:16],
            len(verified.subjects),
        ),
        soft_wrap=True,
    )
    ledger = predicate.get("ledger")
    if ledger:
        console.out.print(
            console.markup("  ledger entry #{} in {}", ledger["entry"], str(ledger["dir"])),
            soft_wrap=True,
        )
    return ExitCode.OK
