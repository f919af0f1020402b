"""The Prometheus manager: config + rules it writes (checked by promtool), start/ready/stop, `autoopt infra`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from autooptimizer.errors import ConfigError
from autooptimizer.gates import gate_queries
from autooptimizer.infra.net import free_port, port_open, require_loopback
from autooptimizer.infra.prometheus import INSTALL_CMD, Prometheus, prometheus_binary, rule_files
from autooptimizer.profiles import load_profile


def test_config_and_rules_are_valid(tmp_path: Path) -> None:
    prom = Prometheus(tmp_path, 9999, {"search": ["127.0.0.1:1234"], "optimizer": ["127.0.0.1:1235"]})
    cfg = yaml.safe_load(prom.write_config().read_text())
    assert cfg["global"]["scrape_interval"] == "1s" and cfg["global"]["evaluation_interval"] == "1s"
    assert {j["job_name"]: j["static_configs"][0]["targets"] for j in cfg["scrape_configs"]} == {
        "search": ["127.0.0.1:1234"], "optimizer": ["127.0.0.1:1235"]}
    assert {j["job_name"]: j["metrics_path"] for j in cfg["scrape_configs"]} == {
        "search": "/metrics", "optimizer": "/api/v1/optimizer/metrics"}
    alerts = yaml.safe_load((tmp_path / "rules" / "autoopt-alerts.yml").read_text())["groups"][0]["rules"]
    queries = gate_queries(load_profile("dev"))
    assert [a["labels"]["gate"] for a in alerts] == [q.name for q in queries]
    assert alerts[1]["expr"] == queries[1].alert_expr
    least = load_profile("dev").gates.min_samples.p95_latency
    assert alerts[1]["expr"] == (f"({queries[1].promql} > 800) and on() "
                                 f"(floor(sum(increase(autoopt_search_request_seconds_count[30s]))) >= {least})")
    assert set(rule_files(load_profile("dev"))) == {"autoopt-recording.yml", "autoopt-alerts.yml"}
    promtool = shutil.which("promtool")
    if promtool:  # Debian's prometheus package ships it
        out = subprocess.run([promtool, "check", "config", str(prom.config_path)], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "7 rules found" in out.stdout + out.stderr  # 4 gates + 3 per-version signals (version_signals.py)


def test_missing_binary_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        prometheus_binary(str(tmp_path / "no-such-prometheus"))
    assert INSTALL_CMD in str(err.value) and INSTALL_CMD == "apt-get install -y --no-install-recommends prometheus"


def test_loopback_only() -> None:
    assert require_loopback("http://127.0.0.1:8700/") == "http://127.0.0.1:8700"
    assert require_loopback("http://localhost:1") and require_loopback("http://[::1]:5")
    for url in ("http://10.0.0.1:8700", "http://example.com", "ftp://127.0.0.1", "127.0.0.1:8700"):
        with pytest.raises(Exception, match="loopback|not an http"):
            require_loopback(url)


@pytest.mark.prometheus
def test_context_manager_scrapes_and_stops(tmp_path: Path) -> None:
    port = free_port()
    with Prometheus(tmp_path, port, {"self": [f"127.0.0.1:{port}"]}) as prom:
        result = prom.wait_for('up{job="self"} == 1', timeout=20)
        assert result[0]["metric"]["job"] == "self"
        assert prom.target_health() == {f"self/127.0.0.1:{port}": "up"}
        rules = prom.rules()
        assert {g["name"] for g in rules} == {"autoopt-gates-recording", "autoopt-version-signals",
                                              "autoopt-gates-alerts"}
        assert (tmp_path / "data").is_dir()
    assert not port_open("127.0.0.1", port)


@pytest.mark.prometheus
def test_cli_infra_up_status_down(monkeypatch) -> None:
    from autooptimizer.cli import app
    from autooptimizer.settings import get_settings

    port = free_port()
    monkeypatch.setenv("AUTOOPT_PROMETHEUS_PORT", str(port))
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        up = runner.invoke(app, ["infra", "up", "--json"])
        assert up.exit_code == 0, up.output
        state = json.loads(up.stdout)
        assert state["running"] and state["port"] == port and port_open("127.0.0.1", port)
        home = get_settings().home
        assert (home / "prometheus" / "prometheus.pid").read_text() == str(state["pid"])
        assert set(state["targets"]) == {"search", "optimizer"}
        again = json.loads(runner.invoke(app, ["infra", "up", "--json"]).stdout)
        assert again["pid"] == state["pid"]  # idempotent: no second server
        st = json.loads(runner.invoke(app, ["infra", "status", "--json"]).stdout)
        assert st["running"] and set(st["scrape_health"]) == {"search/127.0.0.1:8700", "optimizer/127.0.0.1:8800"}
    finally:
        down = runner.invoke(app, ["infra", "down", "--json"])
    assert down.exit_code == 0 and not json.loads(down.stdout)["running"]
    assert not port_open("127.0.0.1", port)
    text = runner.invoke(app, ["infra", "status"]).output
    assert "stopped" in text
