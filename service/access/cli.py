"""`arbiter keys new NAME --scopes score,judge`: a new API key, and the entry for the key list (its hash only)."""

from __future__ import annotations

import argparse
import sys


def add_parsers(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "keys",
        help="make an API key and print its entry for api_keys_file",
        description="Print a new key (give it to the caller, once) and the YAML entry that grants it, holding only "
        "the key's SHA-256. Add the entry under `keys:` in the api_keys_file (or the ARBITER_API_KEYS secret), then "
        "reload: SIGHUP or POST /v1/admin/reload.",
    )
    p.add_argument("action", choices=["new"])
    p.add_argument("name")
    p.add_argument("--scopes", default="score", help="comma-separated: score, judge, annotate, admin")
    p.add_argument("--rps", type=float, help="this key's own rate limit, requests/s")
    p.add_argument("--burst", type=int, help="requests at once (default: twice --rps)")
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    import yaml

    from arbiter.clients.operations import SCOPES
    from arbiter.service.access.keys import ApiKey, RateLimit, digest, new_key

    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    if unknown := sorted(set(scopes) - set(SCOPES)):
        raise ValueError(f"unknown scopes {unknown}; the scopes are {', '.join(SCOPES)}")
    key = new_key()
    limit = RateLimit(rps=args.rps, burst=args.burst) if args.rps else None
    entry = ApiKey(name=args.name, sha256=digest(key), scopes=scopes, rate_limit=limit)
    print(f"key for {args.name} (shown once): {key}", file=sys.stderr)
    print(yaml.safe_dump([entry.model_dump(exclude_none=True)], sort_keys=False), end="")
    return 0
