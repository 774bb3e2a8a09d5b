"""The Docker-less Asterisk path end to end: the Asterisk image's filesystem (scripts/images.sh),
chroot Asterisk 22 (the session's `asterisk`), a SIPp phone calling through the plain dialplan
to a SIPp trunk. The policy tests build on this.

It is scripts/smoke-call.sh's call (092101299, answered, 1 s talk, hung up by the phone),
placed through the harness from `bare-phone` (127.0.0.6, context [bare]): the script's phone is
acme-101, whose calls go through the call policy, and the script has no setting for the phone.
"""

from __future__ import annotations

import os
import subprocess

from harness import PHONES, Asterisk, Trunk


def test_real_call_reaches_the_trunk(asterisk: Asterisk, call, trunk: Trunk) -> None:
    mark = asterisk.log_mark()
    r = call(PHONES["bare-phone"], "092101299", caller_id="092101101", hold=1.0)
    # the phone: 200 OK, ACK, then its BYE answered 200
    assert r.status == 200, r
    assert any(m.direction == "sent" and m.method == "ACK" for m in r.messages), r
    assert r.bye_completed and r.hung_up_by == "phone", r
    # the trunk: one INVITE for sip:092101299@127.0.0.3, and Asterisk's BYE
    invite = trunk.wait_for_invites(1)[0]
    assert [i.ruri_user for i in trunk.invites] == ["092101299"], trunk.describe()
    assert invite.ruri.host == "127.0.0.3", trunk.describe()
    trunk.wait_for_request("BYE")
    # through the plain dialplan
    line = asterisk.wait_for_log(r"\[092101299@bare:1\]", since=mark)
    assert "PJSIP/bare-phone-" in line, line


def test_asterisk_runs_from_the_asterisk_image(asterisk: Asterisk) -> None:
    """The one artefact that ships is the one tested: the running Asterisk's root is the
    filesystem of a buildah container of callpolicy-asterisk:local (scripts/images.sh)."""
    state = dict(line.split("=", 1) for line in
                 (asterisk.run_dir / "state").read_text().splitlines())
    root = os.readlink(f"/proc/{state['PID']}/root")
    containers = subprocess.run(
        ["buildah", "containers", "--format", "{{.ContainerID}} {{.ImageID}}"],
        capture_output=True, text=True, timeout=60, check=True).stdout.split("\n")
    mounted = {}
    for line in filter(None, containers):
        ctr, image = line.split()
        mount = subprocess.run(["buildah", "inspect", "--type", "container", "--format",
                                "{{.MountPoint}}", ctr], capture_output=True, text=True,
                               timeout=60, check=True).stdout.strip()
        mounted[mount] = image
    image = subprocess.run(["buildah", "inspect", "--type", "image", "--format",
                            "{{.FromImageID}}", "localhost/callpolicy-asterisk:local"],
                           capture_output=True, text=True, timeout=60, check=True).stdout
    assert root in mounted, (root, mounted)
    assert image.strip().startswith(mounted[root]), (root, mounted, image)
