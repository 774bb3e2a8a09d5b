"""The CLI's argument parser: every command, its options and its help."""

from __future__ import annotations

import argparse

from .api import add_api_parsers
from .args import (
    MAX_AUDIT_TEXT,
    MAX_COUNT,
    MAX_SPAN_TEXT,
    PROG,
    Parents,
    Parser,
    Subparsers,
    add_watchdog_options,
    audit_text_type,
    limit_field,
    source_ip_type,
    whole_type,
)
from .calls import TABLE_LIMIT, cmd_calls_list, cmd_calls_purge
from .customers import (
    cmd_customer_import,
    cmd_customer_list,
    cmd_customer_paid,
    cmd_customer_reactivate,
    cmd_customer_remind,
    cmd_customer_show,
    cmd_customer_suspend,
)
from .daemon import cmd_must_reach_dialplan, cmd_serve, cmd_status, cmd_watchdog
from .db import add_db_parsers
from .exceptions import cmd_reblock, cmd_unblock, cmd_unblocks
from .inspect import cmd_audit, cmd_check
from .limits import cmd_limits_set, cmd_limits_show


def build_parser() -> argparse.ArgumentParser:
    parents = _parents()
    parser = Parser(
        prog=PROG, parents=[parents.common],
        description="Ops CLI of the call policy: customers, their exceptions to the default "
                    "blocks (contract art. 3.10), suspensions (art. 5.7), fraud limits, call "
                    "records (art. 4.3), the audit log, and `check` to see how a call would be "
                    "decided and why.",
        epilog="Exit codes: 0 ok, 1 operational error, 2 bad usage. "
               "Changes are committed before the command reports success; a running daemon "
               "picks them up within a second.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    for add_family in (add_customer_parsers, add_unblock_parsers, add_inspect_parsers,
                       add_limits_parsers, add_calls_parsers, add_daemon_parsers,
                       add_db_parsers, add_api_parsers):
        add_family(sub, parents)  # in this order: the order of `callpolicy --help`
    return parser


def _parents() -> Parents:
    # --db/--config are accepted before or after the sub-command.
    common = Parser(add_help=False)  # only a parent: its arguments are copied
    common.add_argument("--db", metavar="PATH|URL", default=argparse.SUPPRESS,
                        help="the database: a SQLite file (PATH or sqlite:///PATH) or "
                             "postgresql://USER@HOST[:PORT]/DB (default: $CALLPOLICY_DB, "
                             "else the config file's [store] url or path)")
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help="config file (default: $CALLPOLICY_CONFIG, else "
                             "/etc/callpolicy/callpolicy.toml, else the repo's "
                             "config/callpolicy.toml)")
    json_flag = Parser(add_help=False)
    json_flag.add_argument("--json", action="store_true",
                           help="one JSON object per line, for scripts")
    who = Parser(add_help=False)
    who.add_argument("--by", required=True, metavar="WHO",
                     type=audit_text_type("who makes the change"),
                     help="who makes the change (audit; printable, at most "
                          f"{MAX_AUDIT_TEXT} characters, like --ticket and --reason)")
    who.add_argument("--ticket", required=True, metavar="REF",
                     type=audit_text_type("the ticket reference"),
                     help="ticket or e-mail reference (audit)")
    who.add_argument("--reason", metavar="TEXT", type=audit_text_type("the reason"),
                     help="free text (audit)")
    target = Parser(add_help=False)
    group = target.add_mutually_exclusive_group(required=True)
    group.add_argument("--prefix", metavar="P",
                       help="number prefix, national (0905) or E.164 (+32905, +4122)")
    group.add_argument("--country", metavar="CC", help="ISO country code outside the EU (CH)")
    group.add_argument("--category", metavar="C", help="premium or non_eu (the whole category)")
    return Parents(common, json_flag, who, target)


def add_customer_parsers(sub: Subparsers[Parser], parents: Parents) -> None:
    """customer import, show, list, and the suspension commands."""
    common, json_flag = parents.common, parents.json_flag
    customer = sub.add_parser("customer", parents=[common], help="import, show, list, suspend, "
                              "reactivate customers; payment reminders")
    csub = customer.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    csub.required = True
    p = csub.add_parser("import", parents=[common], help="create or update customers from a "
                        "TOML or JSON file",
                        description="Create or update customers from a TOML file ([[customer]] "
                        "tables, see README), or a JSON file (name ending in .json: the same "
                        "keys, {\"customer\": [{...}, ...]}, parsed ~7x faster). Any problem "
                        "in the file or with the database "
                        "aborts the import before anything is written; big files are then "
                        "written in batches (a failure names what was written). "
                        "Status of existing customers is not changed by a file: use suspend "
                        "or reactivate.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--by", metavar="WHO", type=audit_text_type("who makes the change"),
                   help="who imports (default: your user name)")
    p.add_argument("--ticket", metavar="REF", type=audit_text_type("the ticket reference"),
                   help="ticket reference (audit)")
    p.add_argument("--dry-run", action="store_true", help="validate only, write nothing")
    p.add_argument("--accept-zone-violations", action="store_true",
                   help="import geographic numbers outside the installation zone (art. 3.8) "
                        "with a warning instead of refusing")
    p.set_defaults(func=cmd_customer_import)
    p = csub.add_parser("show", parents=[common, json_flag], help="one customer in full")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=cmd_customer_show)
    p = csub.add_parser("list", parents=[common, json_flag], help="all customers")
    p.set_defaults(func=cmd_customer_list)
    _add_suspension_parsers(csub, parents)


def _add_suspension_parsers(csub: Subparsers[Parser], parents: Parents) -> None:
    """customer suspend, reactivate, remind, paid (art. 5.7)."""
    common, who = parents.common, parents.who
    p = csub.add_parser("suspend", parents=[common, who],
                        help="suspend for non-payment (art. 5.7): only must-reach numbers pass",
                        description="Suspend a customer (art. 5.7): only must-reach numbers "
                        "pass, live calls to other numbers are hung up. Now, or at --at (a "
                        "scheduled suspension: calls are refused from that second on; "
                        "`customer reactivate` or `customer paid` cancels it).")
    p.add_argument("id", metavar="ID")
    p.add_argument("--at", metavar="ISO8601",
                   help="suspend at this future time (at most 10 years ahead), with "
                        "timezone, e.g. 2026-12-01T00:00+01:00")
    p.set_defaults(func=cmd_customer_suspend)
    p = csub.add_parser("reactivate", parents=[common, who],
                        help="lift a suspension and cancel a scheduled one",
                        description="Lift the customer's suspension and cancel a pending "
                        "scheduled suspension (on an active customer: only the latter). "
                        "Does not close the payment-reminder episode: `customer paid` does.")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=cmd_customer_reactivate)
    p = csub.add_parser(
        "remind", parents=[common, who],
        help="record a payment reminder; the first one schedules the suspension (art. 5.7)",
        description="Record a payment reminder sent on DATE. Art. 5.7: the FIRST reminder of "
        "an unpaid episode schedules the suspension at 00:00 Europe/Brussels time of DATE + 15 "
        "calendar days (if that is already past, the customer is suspended at once). Later "
        "reminders of the same episode are recorded and do not move the date. `customer "
        "paid` closes the episode and cancels the suspension (or lifts it).")
    p.add_argument("id", metavar="ID")
    p.add_argument("--sent", required=True, metavar="DATE",
                   help="the day the reminder was sent, YYYY-MM-DD, not in the future, at "
                        "most 10 years ago")
    p.set_defaults(func=cmd_customer_remind)
    p = csub.add_parser(
        "paid", parents=[common, who],
        help="record payment: close the reminders, cancel or lift the suspension (art. 5.7)",
        description="Record that the customer paid (art. 5.7, 'reactivated after payment'): "
        "closes the open payment-reminder episode, cancels a pending scheduled suspension "
        "and reactivates a suspended customer. Error if there is nothing of these.")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=cmd_customer_paid)


def add_unblock_parsers(sub: Subparsers[Parser], parents: Parents) -> None:
    """unblock, reblock, unblocks: the exceptions to the default blocks (art. 3.10)."""
    common, json_flag = parents.common, parents.json_flag
    who, target = parents.who, parents.target
    p = sub.add_parser("unblock", parents=[common, target, who],
                       help="open a blocked prefix, country or category for a customer",
                       description="Open a default block for one customer (art. 3.10, 'op "
                       "eenvoudig verzoek'). Longest prefix wins: --prefix 090 does not open "
                       "0905.")
    p.add_argument("id", metavar="ID")
    expiry = p.add_mutually_exclusive_group()
    expiry.add_argument("--expires", metavar="ISO8601",
                        help="end time with timezone, e.g. 2026-12-01T18:00+01:00 (at "
                             "most 10 years ahead)")
    expiry.add_argument("--for", dest="for_", metavar="DURATION",
                        help=f"duration: 30m, 12h, 7d, 2w, 1h30m (at most {MAX_SPAN_TEXT})")
    p.set_defaults(func=cmd_unblock)
    p = sub.add_parser("reblock", parents=[common, target, who],
                       help="revoke a customer's active unblock(s) of a prefix/country/category")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=cmd_reblock)
    p = sub.add_parser("unblocks", parents=[common, json_flag],
                       help="active unblocks (of one customer, or all)")
    p.add_argument("id", metavar="ID", nargs="?")
    p.add_argument("--all", action="store_true", help="include expired and reblocked ones")
    p.set_defaults(func=cmd_unblocks)


def add_inspect_parsers(sub: Subparsers[Parser], parents: Parents) -> None:
    """audit and check: read the audit log, decide numbers as a live call would."""
    common, json_flag = parents.common, parents.json_flag
    p = sub.add_parser("audit", parents=[common, json_flag], help="the audit log, newest last")
    p.add_argument("id", metavar="ID", nargs="?")
    p.add_argument("--limit", type=whole_type(1, MAX_COUNT), default=50, metavar="N",
                   help=f"last N entries (default 50, at most {MAX_COUNT})")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("check", parents=[common, json_flag],
                       help="decide numbers exactly as a live call would, and say why",
                       description="Decide each NUMBER for a customer (or the customer of an "
                       "endpoint) exactly as a live call would, and name the rule that decided. "
                       "An unknown customer or endpoint is decided too, as a live call from it "
                       "would be, with a warning on stderr. Exit 0 whatever the decisions. "
                       "With --json, one JSON object per line.")
    p.add_argument("--customer", metavar="ID",
                   help="whose rights decide (an unknown one is decided as a live call would "
                        "be: refused, must-reach numbers pass; a warning says so)")
    p.add_argument("--endpoint", metavar="NAME",
                   help="the PJSIP endpoint calling; without --customer, its customer decides")
    p.add_argument("--source-ip", metavar="IP", type=source_ip_type,
                   help="the calling device's IP (emergency "
                   "location)")
    p.add_argument("--caller-id", metavar="NUM", help="caller ID the phone asks for (or the "
                   "original caller on a forwarded call)")
    p.add_argument("--privacy", action="store_true", help="the phone asked for privacy")
    p.add_argument("--forwarded-from", metavar="NUM",
                   help="decide the forwarded leg of a call to this customer number")
    p.add_argument("numbers", metavar="NUMBER", nargs="+")
    p.set_defaults(func=cmd_check)


def add_limits_parsers(sub: Subparsers[Parser], parents: Parents) -> None:
    """limits show, limits set: a customer's fraud limits."""
    common, json_flag, who = parents.common, parents.json_flag, parents.who
    limits = sub.add_parser(
        "limits", parents=[common], help="a customer's fraud limits: show, set",
        description="Fraud limits cap a customer's external calls: up at once "
        "(max_concurrent), started in the last minute (max_per_minute), and non-EU or "
        "unblocked premium calls up at once (max_concurrent_risky). Each is the customer's "
        "own value if set, else the operator default from the config's [fraud] section.")
    lsub = limits.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    lsub.required = True
    p = lsub.add_parser("show", parents=[common, json_flag],
                        help="effective limits, and whether each is the customer's own or the "
                        "operator default")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=cmd_limits_show)
    p = lsub.add_parser("set", parents=[common, who],
                        help="set or clear (--default) a customer's own limits",
                        description="Set a customer's own fraud limits (N from 0 to "
                        f"{MAX_COUNT}; 0 allows no such calls), or give one back to the "
                        "operator default with --default FIELD. Limits not named keep their "
                        "value. Audited; a running daemon applies the change within a second.")
    p.add_argument("id", metavar="ID")
    p.add_argument("--max-concurrent", type=whole_type(0, MAX_COUNT), metavar="N",
                   help="external calls up at once")
    p.add_argument("--max-per-minute", type=whole_type(0, MAX_COUNT), metavar="N",
                   help="external calls started in the last 60 s")
    p.add_argument("--max-concurrent-risky", type=whole_type(0, MAX_COUNT), metavar="N",
                   help="non-EU or unblocked premium calls up at once")
    p.add_argument("--default", type=limit_field, nargs="+", action="extend", metavar="FIELD",
                   help="use the operator default for these: max_concurrent, max_per_minute, "
                        "max_concurrent_risky")
    p.set_defaults(func=cmd_limits_set)


def add_calls_parsers(sub: Subparsers[Parser], parents: Parents) -> None:
    """calls list, calls purge: the call records (art. 4.3)."""
    common, who = parents.common, parents.who
    calls = sub.add_parser(
        "calls", parents=[common], help="call records (billable seconds, art. 4.3): list, purge",
        usage=f"{PROG} calls [list] [ID] [--since T] [--until T] [--limit N] [--json | --csv]\n"
              f"       {PROG} calls purge [--older-than DURATION] --by WHO --ticket REF",
        description="Call records: every call the policy decided, with its decision, answer "
        "and hang-up times and billable seconds (art. 4.3: from the answer to the hang-up, "
        "rounded up; 0 for refused or unanswered calls, and for free calls: emergency, "
        "must-reach and 0800 numbers, marked free, their duration kept). `calls` and "
        "`calls ID` are short for "
        "`calls list` and `calls list ID`; `calls purge` deletes old records (a customer "
        "named list or purge: `calls list purge`).")
    calls.implicit_action = ("list", ("list", "purge"))
    ksub = calls.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser,
                                prog=f"{PROG} calls")  # not the two-line usage
    ksub.required = True
    p = ksub.add_parser(
        "list", parents=[common], help="call records, oldest first (the default action)",
        description="Call records by start time, oldest first: all customers or customer ID. "
        "--since/--until take an ISO 8601 time with a timezone (2026-06-01T00:00+02:00) or a "
        "duration ago (24h, 7d); --since is inclusive, --until exclusive. The table shows the "
        f"last {TABLE_LIMIT} unless --limit N; --json (one object per line) and --csv (a "
        "header row, UTC ISO 8601 times, free, duration_seconds, billable_seconds) give all, "
        "for export. In CSV, "
        "text a spreadsheet would run as a formula is prefixed with '.")
    p.add_argument("id", metavar="ID", nargs="?")
    p.add_argument("--since", metavar="T", help="calls that started at or after T (within "
                   "10 years of now)")
    p.add_argument("--until", metavar="T", help="calls that started before T")
    p.add_argument("--limit", type=whole_type(1, MAX_COUNT), metavar="N",
                   help=f"only the last N calls (at most {MAX_COUNT})")
    formats = p.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="one JSON object per line")
    formats.add_argument("--csv", action="store_true", help="CSV with a header row")
    p.set_defaults(func=cmd_calls_list)
    p = ksub.add_parser(
        "purge", parents=[common, who], help="delete call records older than a duration",
        description="Delete the call records of calls that started more than DURATION ago "
        "(default: the config's calls.retention_days). The purge is audited with the count; "
        "the audit log itself is never purged.")
    p.add_argument("--older-than", metavar="DURATION",
                   help="30d, 26w, 180d, at most 3650d (default: calls.retention_days from "
                        "the config)")
    p.set_defaults(func=cmd_calls_purge)


def add_daemon_parsers(sub: Subparsers[Parser], parents: Parents) -> None:
    """serve, watchdog, status, must-reach-dialplan: the daemon and its dialplan."""
    common, json_flag = parents.common, parents.json_flag
    p = sub.add_parser("serve", parents=[common],
                       help="run the FastAGI daemon that decides live calls for Asterisk",
                       description="Run the FastAGI policy daemon (listen address and lists from "
                       "the config file). Loads the customers into memory, then "
                       "listens; picks up CLI changes within a second; SIGHUP re-reads the "
                       "config; SIGTERM/SIGINT stop it. Logs one JSON line per decision.")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"),
                   help="INFO logs every decision (default); WARNING only blocks' anomalies")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("watchdog", parents=[common],
                       help="run `serve` under a watchdog (for machines without systemd)",
                       description="Run `callpolicy serve` and kill+restart it when its event "
                       "loop stops pinging (systemd notify protocol). Asterisk waits forever "
                       "on a frozen FastAGI server; a killed one releases the calls to the "
                       "fallback AGI. Under systemd, use Type=notify and WatchdogSec instead.")
    add_watchdog_options(p, "the daemon", 1.0)
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"))
    p.set_defaults(func=cmd_watchdog)

    p = sub.add_parser(
        "status", parents=[common, json_flag],
        help="the running daemon: AMI link, fraud guard, snapshot age, live calls, decisions",
        description="Ask the running daemon (over HTTP, at the config's [metrics] listen "
        "address, /status) for its state: the AMI link (connected, down, not configured; "
        "since when), whether the fraud guard's concurrent-call limits are enforced (not "
        "while the AMI link is down: live calls cannot be tracked; per-minute limits always "
        "are), the snapshot's age and audit high-water mark, whether the database is usable, "
        "how changes arrive, live calls per customer (concurrent, started in the last "
        "minute), the decision counts, the alerts (open, waiting, failing channels) and, on "
        "PostgreSQL, every node of the cluster.",
        epilog="Exit codes: 0 healthy; 3 degraded (AMI link down or not configured, database "
        "unusable, PostgreSQL change feed or cluster link down, snapshot not refreshed for "
        "over 5 s); 1 no daemon answering.")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("must-reach-dialplan", parents=[common],
                       help="print the dialplan's last-resort must-reach list (from the config)",
                       description="Print dialplan/must-reach.conf for the config's must-reach "
                       "numbers: what the dialplan lets through when neither the daemon nor "
                       "the fallback can decide. Regenerate after changing the list: "
                       "callpolicy must-reach-dialplan > dialplan/must-reach.conf")
    p.set_defaults(func=cmd_must_reach_dialplan)
