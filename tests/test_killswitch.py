"""Kill switch: a file under AUTOOPT_HOME, fail-closed when damaged, driven from the CLI."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from autooptimizer.cli.app import app
from autooptimizer.policies.audit import AuditLog
from autooptimizer.policies.killswitch import KillSwitch, kill_switch


def test_off_by_default_then_on_and_off(autoopt_home) -> None:
    assert kill_switch.is_on() is False
    st = kill_switch.set(True, "alice", "bad deploy")
    assert (st.on, st.by, st.reason) == (True, "alice", "bad deploy")
    assert (autoopt_home / "kill_switch.json").is_file()
    assert KillSwitch(autoopt_home / "kill_switch.json").is_on() is True  # any reader, same file
    kill_switch.set(False, "alice")
    assert kill_switch.is_on() is False
    assert [(r["kind"], r["on"]) for r in AuditLog().records()] == [("kill_switch", True), ("kill_switch", False)]


def test_damaged_switch_file_counts_as_on(autoopt_home) -> None:
    path = autoopt_home / "kill_switch.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    for junk in ["{not json", '{"on": "no"}', "[]", '{"by": "x"}']:
        path.write_text(junk)
        st = kill_switch.state()
        assert st.on is True and "treated as on" in st.reason, junk


CHECK = ["policy", "check", "--env", "prod", "--agent", "devops", "--tool", "rollback_deployment", "--json"]


def test_cli_on_status_off() -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["kill-switch", "on", "--reason", "incident 42", "--by", "ops"])
    assert out.exit_code == 0 and "ON" in out.output and "incident 42" in out.output
    st = json.loads(runner.invoke(app, ["kill-switch", "status", "--json"]).stdout)
    assert (st["on"], st["by"], st["reason"]) == (True, "ops", "incident 42")
    runner.invoke(app, ["kill-switch", "off"])
    assert json.loads(runner.invoke(app, ["kill-switch", "status", "--json"]).stdout)["on"] is False
    check = runner.invoke(app, CHECK)
    assert json.loads(check.stdout)["decision"] == "permit"
    runner.invoke(app, ["kill-switch", "on"])
    check = runner.invoke(app, CHECK)
    assert json.loads(check.stdout) == {"decision": "deny", "policies": ["shared.kill-switch"],
                                        "reason": "the kill switch is on: change and critical tools are stopped"}


def test_concurrent_flips_all_land_and_are_all_audited(autoopt_home) -> None:
    """Threads of one process (the API's workers) used to share one temp file: a replace failed (500)."""
    import threading

    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def flip(n: int) -> None:
        barrier.wait()
        for i in range(25):
            try:
                kill_switch.set((n + i) % 2 == 0, f"t{n}", f"flip {i}")
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=flip, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    flips = [r for r in AuditLog().records() if r["kind"] == "kill_switch"]
    assert len(flips) == 200 and AuditLog().verify().ok
    final = kill_switch.state()
    assert (final.on, final.by, final.reason) == (flips[-1]["on"], flips[-1]["actor"], flips[-1]["reason"])
    assert not list(autoopt_home.glob("kill_switch.tmp*"))
