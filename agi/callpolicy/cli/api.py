"""`callpolicy api serve|token add|token remove|token list|openapi`: the HTTP API
(agi/callpolicy/api)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..service.config import Settings
from ..service.logging import configure_logging
from .args import (
    OperationalError,
    Parents,
    Parser,
    Subparsers,
    UsageError,
    add_watchdog_options,
)
from .output import render_table

if TYPE_CHECKING:
    from ..api.settings import ApiSettings


def _api_settings(settings: Settings) -> ApiSettings:  # the api package imported lazily
    from ..api.settings import load_api_settings

    return load_api_settings(settings)


def _token_file(args: argparse.Namespace, settings: Settings) -> Path:
    return Path(args.file) if args.file else _api_settings(settings).tokens


def cmd_api_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Not async: uvicorn runs its own event loop and signal handling."""
    from ..api.auth import TokenSource
    from ..api.server import listen, serve

    api = _api_settings(settings)
    TokenSource(api.tokens)  # a missing or bad token file: one line, exit 2, before listening
    try:
        sock = listen(api)
    except OSError as exc:
        raise OperationalError(f"cannot listen on {api.host}:{api.port}: "
                               f"{os.strerror(exc.errno) if exc.errno else exc} "
                               "([api] host and port)") from None
    configure_logging(settings.log_format, level="INFO")
    sys.stderr.write(f"callpolicy api: listening on http://{api.host}:{api.port} "
                     f"(tokens {api.tokens}, database {settings.db})\n")
    return serve(settings, api, sock)


def cmd_api_watchdog(args: argparse.Namespace, settings: Settings) -> int:
    from .daemon import supervised

    return supervised(args, settings, "api", "serve", role="api")


def cmd_api_token_add(args: argparse.Namespace, settings: Settings) -> int:
    from ..api.tokens import TokenExists, add_token

    path = _token_file(args, settings)
    try:
        token = add_token(path, args.name, args.scope)
    except TokenExists as exc:
        raise OperationalError(str(exc)) from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    sys.stderr.write(f"token {args.name!r} ({', '.join(dict.fromkeys(args.scope))}) added "
                     f"to {path}; it is shown once, below, and stored nowhere\n")
    sys.stdout.write(token + "\n")
    return 0


def cmd_api_token_remove(args: argparse.Namespace, settings: Settings) -> int:
    from ..api.tokens import remove_token

    path = _token_file(args, settings)
    try:
        remove_token(path, args.name)
    except LookupError as exc:
        raise OperationalError(str(exc)) from None
    sys.stderr.write(f"token {args.name!r} removed from {path}; a running API refuses it "
                     "from its next request\n")
    return 0


def cmd_api_token_list(args: argparse.Namespace, settings: Settings) -> int:
    from ..api.tokens import load_tokens

    tokens = load_tokens(_token_file(args, settings)).tokens
    rows = [{"name": t.name, "scopes": ",".join(t.scopes)} for t in tokens]
    if args.json:
        for row in rows:
            sys.stdout.write(json.dumps({"name": row["name"],
                                         "scopes": row["scopes"].split(",")}) + "\n")
    else:
        sys.stdout.write(render_table(rows, ("name", "scopes")) if rows else "no tokens\n")
    return 0


def cmd_api_openapi(args: argparse.Namespace, settings: Settings) -> int:
    from ..api.reference import openapi_document, render_reference

    document = openapi_document(settings)
    sys.stdout.write(render_reference(document) if args.markdown
                     else json.dumps(document, indent=2) + "\n")
    return 0


def add_api_parsers(sub: Subparsers[Parser], parents: Parents) -> None:
    common, json_flag = parents.common, parents.json_flag
    api = sub.add_parser(
        "api", parents=[common], help="the HTTP API: serve, tokens, its OpenAPI document",
        description="The HTTP API for the operator's systems (billing, provisioning, "
        "support): the CLI's operations over HTTP with bearer tokens (README: HTTP API).")
    asub = api.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    asub.required = True
    p = asub.add_parser("serve", parents=[common], help="run the API (config [api])",
                        description="Serve the API at [api] host:port (default "
                        "127.0.0.1:8480), trusting the token file [api] tokens (re-read "
                        "when it changes). SIGINT/SIGTERM stop it.")
    p.set_defaults(func=cmd_api_serve)
    p = asub.add_parser("watchdog", parents=[common],
                        help="run `api serve` under a watchdog (for machines without systemd)",
                        description="Run `callpolicy api serve` and kill+restart it when its "
                        "event loop stops pinging (systemd notify protocol), or restart it when "
                        "it exits: billing must always be able to reactivate a customer. Under "
                        "systemd, use Type=notify and WatchdogSec instead.")
    add_watchdog_options(p, "the API", 5.0)
    p.set_defaults(func=cmd_api_watchdog)
    token = asub.add_parser("token", parents=[common], help="add, remove or list API tokens")
    tsub = token.add_subparsers(dest="token_action", metavar="ACTION", parser_class=Parser)
    tsub.required = True
    p = tsub.add_parser("add", parents=[common], help="create a token, print it once",
                        description="Create a random token, append its SHA-256 to the token "
                        "file (created mode 0600) and print the token on stdout, once: it is "
                        "stored nowhere. A running API accepts it at once.")
    p.add_argument("--name", required=True, help="the token's name: the audit's `by`")
    p.add_argument("--scope", required=True, action="append", choices=("read", "billing",
                                                                        "ops"),
                   help="read (reads), billing (reads, suspend, reactivate, reminders, "
                        "payments), ops (everything); repeatable")
    p.add_argument("--file", metavar="PATH", help="the token file (default: [api] tokens)")
    p.set_defaults(func=cmd_api_token_add)
    p = tsub.add_parser("remove", parents=[common], help="revoke a token",
                        description="Revoke a token: rewrite the token file without its "
                        "entry (atomically). A running API refuses it from its next request.")
    p.add_argument("--name", required=True, help="the token's name")
    p.add_argument("--file", metavar="PATH", help="the token file (default: [api] tokens)")
    p.set_defaults(func=cmd_api_token_remove)
    p = tsub.add_parser("list", parents=[common, json_flag], help="token names and scopes")
    p.add_argument("--file", metavar="PATH", help="the token file (default: [api] tokens)")
    p.set_defaults(func=cmd_api_token_list)
    p = asub.add_parser("openapi", parents=[common],
                        help="print the OpenAPI document (or --markdown: the API reference)")
    p.add_argument("--markdown", action="store_true",
                   help="the API reference in Markdown (docs/api.md)")
    p.set_defaults(func=cmd_api_openapi)
