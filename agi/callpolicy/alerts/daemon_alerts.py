"""The daemon's Alerter, wired to it: the outbox and the fallback AGI's journal beside the
database, the dialplan's last-resort UserEvents from the AMI link, the state kinds read
from the daemon every round."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from .aggregate import Condition
from .alerter import Alerter
from .config import outbox_path
from .fallback_journal import journal_path
from .kinds import NODE_HEARTBEAT_LOST, STATE_KINDS
from .sources import ami_condition, node_conditions, store_condition

if TYPE_CHECKING:
    from ..service.daemon import PolicyService


def daemon_alerter(service: PolicyService) -> Alerter:
    """The daemon's Alerter: its outbox beside the database, the fallback AGI's journal
    beside it too, the dialplan's last-resort UserEvents from the AMI link, the state kinds
    read from the daemon every round."""
    settings = service.settings
    alerter = Alerter(settings.alerts, settings.node, service.metrics,
                      outbox_path(settings.alerts, settings.db_path))
    alerter.journal = journal_path(settings.db_path)
    service.ami.on("UserEvent", alerter.on_user_event)
    alerter.conditions = functools.partial(daemon_conditions, service)
    return alerter


def daemon_conditions(service: PolicyService) -> tuple[list[Condition], set[str]]:
    """The state kinds' conditions that hold now, and the kinds that were read."""
    ami, settings = service.ami, service.settings
    holding = ami_condition(ami.configured, ami.connected, f"{settings.ami.host}:"
                            f"{settings.ami.port}", ami.since)
    holding += store_condition(service.store_problem, service.store_problem_since,
                               str(settings.db))
    covered = set(STATE_KINDS) - {NODE_HEARTBEAT_LOST}
    if service.cluster is None:  # no other node: none lost (one restored gets resolved)
        covered.add(NODE_HEARTBEAT_LOST)
    else:
        nodes = node_conditions(service.cluster.view)
        if nodes is not None:
            holding += nodes
            covered.add(NODE_HEARTBEAT_LOST)
    return holding, covered


__all__ = ["daemon_alerter", "daemon_conditions"]
