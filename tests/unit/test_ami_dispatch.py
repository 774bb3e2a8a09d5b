"""AmiLink's event dispatch: one handler's bug must not stop the others, nor escape."""

from __future__ import annotations

from callpolicy.asterisk.ami import AmiLink
from callpolicy.service.config import AmiSettings


def test_a_failing_handler_is_logged_and_the_others_still_run(capsys) -> None:
    link = AmiLink(AmiSettings())
    seen: list[str] = []

    def broken(_event: dict[str, str]) -> None:
        raise ValueError("bug in a handler")

    link.on("Hangup", broken)
    link.on("Hangup", lambda event: seen.append(event["Uniqueid"]))
    link._dispatch(None, {"Event": "Hangup", "Uniqueid": "1.1"})
    assert seen == ["1.1"]
    logged = capsys.readouterr()
    assert "ami_handler_failed" in logged.out + logged.err
    assert "Hangup" in logged.out + logged.err
