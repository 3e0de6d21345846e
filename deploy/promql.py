"""Every PromQL expression the deployment ships, in one place, and the metric names each one reads.

Sources: the Grafana dashboard (panel targets and template-variable queries), the alert rules (compose's
``docker/prometheus/alerts.yml``; ``k8s/base/prometheusrule.yaml`` holds the same groups), and the Prometheus
adapter rules behind the HPA. Grafana variables and adapter templates are substituted with concrete values first
(``as_promql``), so every expression is plain PromQL that a Prometheus server can run.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set

import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "k8s" / "monitoring" / "dashboards" / "lic-service.json"
ALERTS = ROOT / "docker" / "prometheus" / "alerts.yml"
PROMETHEUS_RULE = ROOT / "k8s" / "base" / "prometheusrule.yaml"
ADAPTER_VALUES = ROOT / "k8s" / "monitoring" / "prometheus-adapter-values.yaml"

#: metrics Prometheus makes itself for every target (not exported by the service)
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added"}

GRAFANA_DEFAULTS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h", "job": ".*", "model": ".*",
                    "quality": ".*", "datasource": "prometheus"}


@dataclass(frozen=True)
class Expression:
    source: str  # where it comes from, for messages: "dashboard: Queue wait [B]", "alert: LicRejections", ...
    raw: str  # as written
    promql: str  # runnable PromQL

    @property
    def metrics(self) -> Set[str]:
        return metric_names(self.promql)


def grafana_to_promql(expr: str, values: Optional[Dict[str, str]] = None) -> str:
    """Substitute Grafana variables (``$var``, ``${var}``, ``[[var]]``) with concrete values."""
    values = {**GRAFANA_DEFAULTS, **(values or {})}

    def sub(match: re.Match) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in values:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return values[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", sub, expr)


def adapter_to_promql(query: str, series: str, group_by: str = "namespace, pod") -> str:
    """A prometheus-adapter ``metricsQuery`` as the adapter would run it for the pods of one namespace."""
    return (query.replace("<<.Series>>", series)
            .replace("<<.LabelMatchers>>", 'namespace="default", pod=~"lic-service-.*"')
            .replace("<<.GroupBy>>", group_by))


def metric_names(promql: str) -> Set[str]:
    """Names of the metrics an expression selects (raises ValueError when it does not parse)."""
    import promql_parser

    try:
        tree = promql_parser.parse(promql)
    except Exception as exc:  # the parser raises its own error types
        raise ValueError(f"invalid PromQL {promql!r}: {exc}") from exc
    names: Set[str] = set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    names.add(matcher.value)
        return True

    promql_parser.walk(tree, visit)
    return names


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple  # (label, op, value) with op one of = != =~ !~


def selectors(promql: str) -> list:
    """Every vector selector of an expression, with its label matchers (``__name__`` left out)."""
    import promql_parser

    ops = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}
    found = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            matchers = tuple((m.name, ops.get(str(m.op).split(".")[-1], str(m.op)), m.value)
                             for m in node.matchers.matchers if m.name != "__name__")
            name = node.name or next((m.value for m in node.matchers.matchers if m.name == "__name__"), "")
            found.append(Selector(name, matchers))
        return True

    promql_parser.walk(promql_parser.parse(promql), visit)
    return found


def grouping_labels(promql: str) -> Set[str]:
    """Labels named in ``by (...)`` / ``without (...)`` of aggregations and in ``on``/``ignoring`` of operators."""
    import promql_parser

    labels: Set[str] = set()

    def visit(node):
        if isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            labels.update(node.modifier.labels)
        if isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None and node.modifier.matching:
            labels.update(node.modifier.matching.labels)
        return True

    promql_parser.walk(promql_parser.parse(promql), visit)
    return labels


# -- the shipped expressions ---------------------------------------------------------------------------------------
def dashboard_panels(path: Path = DASHBOARD) -> Iterator[dict]:
    def walk(panels):
        for panel in panels:
            yield panel
            yield from walk(panel.get("panels", []))

    yield from walk(json.loads(path.read_text())["panels"])


def dashboard_expressions(path: Path = DASHBOARD, values: Optional[Dict[str, str]] = None) -> List[Expression]:
    dashboard = json.loads(path.read_text())
    out = []
    for panel in dashboard_panels(path):
        for target in panel.get("targets", []):
            if target.get("expr"):
                out.append(Expression(f"dashboard panel {panel['title']!r} [{target['refId']}]", target["expr"],
                                      grafana_to_promql(target["expr"], values)))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        match = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query.strip())
        if not match:
            raise ValueError(f"variable {var['name']}: only label_values(selector, label) queries are checked: {query}")
        out.append(Expression(f"dashboard variable ${var['name']}", query, grafana_to_promql(match.group(1), values)))
    return out


def alert_expressions(path: Path = ALERTS) -> List[Expression]:
    groups = yaml.safe_load(path.read_text())["groups"]
    return [Expression(f"rule {rule.get('alert') or rule.get('record')}", rule["expr"], rule["expr"])
            for group in groups for rule in group["rules"]]


def adapter_rules(path: Path = ADAPTER_VALUES) -> List[dict]:
    return yaml.safe_load(path.read_text())["rules"]["custom"]


def adapter_expressions(path: Path = ADAPTER_VALUES) -> List[Expression]:
    out = []
    for rule in adapter_rules(path):
        series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"]).group(0)
        name = rule["name"]["as"]
        out.append(Expression(f"adapter seriesQuery of {name}", rule["seriesQuery"], rule["seriesQuery"]))
        out.append(Expression(f"adapter metricsQuery of {name}", rule["metricsQuery"],
                              adapter_to_promql(rule["metricsQuery"], series)))
    return out


def all_expressions() -> List[Expression]:
    return dashboard_expressions() + alert_expressions() + adapter_expressions()
