"""`arbiter db`, `arbiter annotators` and `arbiter annotations`: the preference store from the command line.
Each takes --db (default: the server's `annotation_db` setting, so ARBITER_ANNOTATION_DB or --config apply)."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from arbiter.annotation.location import store_url


def add_parsers(commands: argparse._SubParsersAction) -> None:
    db = commands.add_parser("db", help="the preference store's schema: upgrade, downgrade, current")
    db.add_argument("action", choices=["upgrade", "downgrade", "current"])
    db.add_argument("--revision", help="target revision (upgrade: head; downgrade: base, which drops every table)")
    _store_flags(db)
    db.set_defaults(run=_run_db)

    annotators = commands.add_parser("annotators", help="add an annotator or lead and print their key")
    annotators.add_argument("action", choices=["add"])
    annotators.add_argument("name")
    annotators.add_argument("--role", choices=["annotator", "lead"], default="annotator")
    _store_flags(annotators)
    annotators.set_defaults(run=_run_annotators)

    export = commands.add_parser(
        "annotations",
        help="export annotations as preference data for `arbiter train`",
        description="Write the stored annotations as JSONL preference rows (pairs with margin, or K-wise rankings), "
        "folding several annotators of a task by majority. The same rows as GET /v1/annotation/export.",
    )
    export.add_argument("action", choices=["export"])
    export.add_argument("--out", type=Path, required=True, help="the JSONL file to write")
    export.add_argument("--since", type=datetime.fromisoformat, help="annotations made at or after (ISO 8601, UTC)")
    export.add_argument("--until", type=datetime.fromisoformat, help="annotations made before")
    export.add_argument("--policy-version", help="tasks with a response from this policy version")
    export.add_argument("--min-annotations", type=int, default=1, help="tasks with at least this many annotations")
    export.add_argument("--min-agreement", type=float, default=0.0, help="share of annotators agreeing, 0 to 1")
    export.add_argument("--exclude-flagged", action="store_true", help="leave out tasks flagged unsafe")
    export.add_argument("--aggregate", choices=["majority", "each"], default="majority")
    _store_flags(export)
    export.set_defaults(run=_run_export)


def _store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", help="sqlite:///FILE or postgresql://USER@HOST/DB (default: the annotation_db setting)")
    p.add_argument("--config", type=Path, help="the server's YAML settings file, for annotation_db")


def _url(args: argparse.Namespace) -> str:
    url = args.db or store_url(args.config)
    if not url:
        raise ValueError("no database: give --db or set annotation_db")
    return url


def _run_db(args: argparse.Namespace) -> int:
    from arbiter.annotation import database

    engine = database.open_engine(_url(args))
    if args.action == "upgrade":
        database.upgrade(engine, args.revision or "head")
    elif args.action == "downgrade":
        database.downgrade(engine, args.revision or "base")
    print(f"revision: {database.current_revision(engine) or 'none'} (newest: {database.head_revision()})")
    return 0


def _run_annotators(args: argparse.Namespace) -> int:
    from arbiter.annotation.store import AnnotationStore

    store = AnnotationStore.open(_url(args))
    created = store.add_annotator(args.name, args.role)
    print(f"{created.role} {created.name} added; their key (shown once):", file=sys.stderr)
    print(created.key)
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from arbiter.annotation.export import ExportFilter, export, utc
    from arbiter.annotation.store import AnnotationStore

    where = ExportFilter(
        utc(args.since),
        utc(args.until),
        args.policy_version,
        args.min_annotations,
        args.min_agreement,
        not args.exclude_flagged,
        args.aggregate,
    )
    rows = export(AnnotationStore.open(_url(args)), where)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} preference rows written to {args.out}")
    return 0
