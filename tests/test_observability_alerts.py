"""The alert rules, checked by promtool: they parse, they fire on the trouble they name, and stay quiet otherwise.

``promtool test rules`` evaluates the real rule file against synthetic series, minute by
minute, like Prometheus would. Annotations are compared exactly by promtool, so the fire/quiet
cases run on a copy without them, and one case checks the rendered annotations as written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.prometheus_support import WORKER_JOB, promtool

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
EXPECTED_ALERTS = {"IdgraphPropagationSlow", "IdgraphConsumerLagGrowing", "IdgraphDeadLetterRate",
                   "IdgraphWebhookFailing", "IdgraphGenericValueSpike", "IdgraphProfileOvergrown",
                   "IdgraphWorkerDown"}


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules_accepts_the_alert_file():
    checked = promtool("check", "rules", str(ALERTS))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout


def test_promtool_check_rules_would_reject_a_broken_expression(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(ALERTS.read_text().replace("histogram_quantile(0.99,", "histogram_quantile(0.99,,", 1))
    assert promtool("check", "rules", str(broken)).returncode != 0


def test_the_compose_prometheus_config_loads_the_alert_rules():
    config = ALERTS.with_name("prometheus.yml")
    checked = promtool("check", "config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "alerts.yml" in yaml.safe_load(config.read_text())["rule_files"]
    assert WORKER_JOB in [job["job_name"] for job in yaml.safe_load(config.read_text())["scrape_configs"]]


def test_the_seven_alerts_are_defined():
    assert {rule["alert"] for rule in alert_rules()} == EXPECTED_ALERTS


def test_every_alert_has_a_summary_and_a_runbook_section():
    headings = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("# ").strip().lower()).replace(" ", "-")
                for line in RUNBOOK.read_text().splitlines() if line.startswith("## ")}
    for rule in alert_rules():
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), rule["alert"]
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert (ROOT / path).resolve() == RUNBOOK.resolve(), rule["alert"]
        assert anchor in headings, f"{rule['alert']}: no '## ' heading in docs/runbook.md for #{anchor}"


def test_every_alert_selects_the_worker_scrape_job_or_only_worker_metrics():
    for rule in alert_rules():
        names = set(re.findall(r"\b([a-z_]+)(?=[{\[])", rule["expr"]))
        assert all(n.startswith("idgraph_") or n == "up" for n in names), (rule["alert"], names)
        if "up" in names:
            assert f'job="{WORKER_JOB}"' in rule["expr"]


def run_unit_test(tmp_path: Path, series: dict[str, str], alert: str, eval_minutes: int,
                  expected: list[dict[str, str]], *, keep_annotations: bool = False) -> None:
    """Run promtool test rules on one case; fail with promtool's own explanation."""
    rules = yaml.safe_load(ALERTS.read_text())
    if not keep_annotations:
        for rule in rules["groups"][0]["rules"]:
            rule.pop("annotations", None)
    rule_file = tmp_path / "rules.yml"
    rule_file.write_text(yaml.safe_dump(rules))
    expected_alerts = [{"exp_labels": labels} for labels in expected]
    case = {"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in series.items()],
            "alert_rule_test": [{"eval_time": f"{eval_minutes}m", "alertname": alert, "exp_alerts": expected_alerts}]}
    test_file = tmp_path / "test.yml"
    test_file.write_text(yaml.safe_dump({"rule_files": [str(rule_file)], "evaluation_interval": "1m", "tests": [case]}))
    result = promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr


def propagation(fast_per_min: int, slow_per_min: int) -> dict[str, str]:
    """A propagation histogram for kafka sinks: ``fast`` deliveries within 100 ms, ``slow`` at 300 ms."""
    labels = 'scenario="service",sink_type="kafka"'
    total = fast_per_min + slow_per_min
    return {f'idgraph_propagation_seconds_bucket{{{labels},le="0.1"}}': f"0+{fast_per_min}x30",
            f'idgraph_propagation_seconds_bucket{{{labels},le="0.2"}}': f"0+{fast_per_min}x30",
            f'idgraph_propagation_seconds_bucket{{{labels},le="0.3"}}': f"0+{total}x30",
            f'idgraph_propagation_seconds_bucket{{{labels},le="+Inf"}}': f"0+{total}x30"}


def test_propagation_alert_fires_when_p99_stays_above_200_ms(tmp_path):
    run_unit_test(tmp_path, propagation(fast_per_min=90, slow_per_min=10), "IdgraphPropagationSlow", 15,
                  [{"severity": "page", "sink_type": "kafka"}])


def test_propagation_alert_waits_five_minutes(tmp_path):
    run_unit_test(tmp_path, propagation(fast_per_min=90, slow_per_min=10), "IdgraphPropagationSlow", 4, [])


def test_propagation_alert_stays_quiet_within_target(tmp_path):
    run_unit_test(tmp_path, propagation(fast_per_min=100, slow_per_min=0), "IdgraphPropagationSlow", 15, [])


def test_lag_alert_fires_when_lag_keeps_growing(tmp_path):
    series = {'idgraph_consumer_lag_messages{topic="touchpoints",partition="0"}': "0+100x30"}
    run_unit_test(tmp_path, series, "IdgraphConsumerLagGrowing", 25, [{"severity": "page", "topic": "touchpoints"}])


def test_lag_alert_stays_quiet_on_a_large_but_shrinking_lag(tmp_path):
    series = {'idgraph_consumer_lag_messages{topic="touchpoints",partition="0"}': "9000-100x30"}
    run_unit_test(tmp_path, series, "IdgraphConsumerLagGrowing", 25, [])


def consumed(resolved_per_min: int, dead_per_min: int) -> dict[str, str]:
    return {'idgraph_events_consumed_total{scenario="sales.crm",outcome="resolved",reason_class="none"}': f"0+{resolved_per_min}x30",
            'idgraph_events_consumed_total{scenario="sales.crm",outcome="dead_lettered",reason_class="schema"}': f"0+{dead_per_min}x30"}


def test_dead_letter_alert_fires_above_one_percent_of_events(tmp_path):
    run_unit_test(tmp_path, consumed(95, 5), "IdgraphDeadLetterRate", 20, [{"severity": "ticket", "reason_class": "schema"}])


def test_dead_letter_alert_stays_quiet_below_one_percent(tmp_path):
    run_unit_test(tmp_path, consumed(199, 1), "IdgraphDeadLetterRate", 20, [])


def deliveries(delivered_per_min: int, failed_per_min: int) -> dict[str, str]:
    labels = 'scenario="quotes",sink_type="webhook"'
    return {f"idgraph_deltas_delivered_total{{{labels}}}": f"0+{delivered_per_min}x30",
            f"idgraph_delivery_failures_total{{{labels}}}": f"0+{failed_per_min}x30"}


def test_webhook_alert_fires_when_an_endpoint_fails_everything(tmp_path):
    run_unit_test(tmp_path, deliveries(0, 10), "IdgraphWebhookFailing", 15, [{"severity": "ticket", "scenario": "quotes"}])


def test_webhook_alert_stays_quiet_when_deliveries_succeed(tmp_path):
    run_unit_test(tmp_path, deliveries(100, 0), "IdgraphWebhookFailing", 15, [])


def generic(protections_per_min: int) -> dict[str, str]:
    return {'idgraph_events_consumed_total{scenario="store-inspection.app",outcome="resolved",reason_class="none"}': "0+100x30",
            'idgraph_merge_protections_total{scenario="store-inspection.app",kind="generic_value"}': f"0+{protections_per_min}x30"}


def test_generic_value_alert_fires_when_a_scenario_keeps_sending_shared_values(tmp_path):
    run_unit_test(tmp_path, generic(20), "IdgraphGenericValueSpike", 25,
                  [{"severity": "ticket", "scenario": "store-inspection.app"}])


def test_generic_value_alert_stays_quiet_on_the_odd_shared_value(tmp_path):
    run_unit_test(tmp_path, generic(1), "IdgraphGenericValueSpike", 25, [])


def overgrown(worker_1: str, worker_2: str) -> dict[str, str]:
    """Profiles over the growth threshold as two workers report the same store."""
    return {f'idgraph_profiles_over_growth_threshold{{instance="w{n}:18100"}}': values
            for n, values in ((1, worker_1), (2, worker_2))}


def test_overgrown_profile_alert_fires_once_for_the_store_however_many_workers_report_it(tmp_path):
    run_unit_test(tmp_path, overgrown("0 0 1x30", "0 0 1x30"), "IdgraphProfileOvergrown", 20, [{"severity": "ticket"}])


def test_overgrown_profile_alert_waits_fifteen_minutes(tmp_path):
    run_unit_test(tmp_path, overgrown("0 0 1x30", "0 0 1x30"), "IdgraphProfileOvergrown", 10, [])


def test_overgrown_profile_alert_stays_quiet_while_no_profile_is_over_the_threshold(tmp_path):
    run_unit_test(tmp_path, overgrown("0x30", "0x30"), "IdgraphProfileOvergrown", 20, [])


def test_worker_down_alert_fires_with_its_summary_and_runbook(tmp_path):
    series = {f'up{{job="{WORKER_JOB}",instance="w1:18100"}}': "1 1 1 0 0 0 0 0 0"}
    labels = {"severity": "page", "job": WORKER_JOB, "instance": "w1:18100"}
    rule = next(r for r in alert_rules() if r["alert"] == "IdgraphWorkerDown")
    annotations = {**rule["annotations"], "summary": "idgraph worker w1:18100 is down or not scraped"}
    case = [{"exp_labels": labels, "exp_annotations": annotations}]
    _run_with_annotations(tmp_path, series, case)


def _run_with_annotations(tmp_path: Path, series: dict[str, str], expected: list[dict[str, Any]]) -> None:
    case = {"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in series.items()],
            "alert_rule_test": [{"eval_time": "8m", "alertname": "IdgraphWorkerDown", "exp_alerts": expected}]}
    test_file = tmp_path / "test.yml"
    test_file.write_text(yaml.safe_dump({"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": [case]}))
    result = promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_worker_down_alert_fires_when_no_worker_is_scraped_at_all(tmp_path):
    series = {'idgraph_open_reviews{job="other"}': "0x10"}
    run_unit_test(tmp_path, series, "IdgraphWorkerDown", 5, [{"severity": "page", "job": WORKER_JOB}])


def test_worker_down_alert_stays_quiet_while_workers_are_up(tmp_path):
    series = {f'up{{job="{WORKER_JOB}",instance="w1:18100"}}': "1x10"}
    run_unit_test(tmp_path, series, "IdgraphWorkerDown", 8, [])

