#!/usr/bin/env python3
"""Generates cadence.test.yml: the alerts of prometheus/rules/pgdrill.rules.yml
run at the scrape cadences our users have (15 s, 30 s, 60 s, each aligned with
the 1 m rule evaluation and shifted off it), with must-fire and must-not-fire
cases.

Every scenario is a small model of two pgdrill replicas of one canary job
(what each one would export at any instant); the generator samples the model
at each scrape and writes the samples on the coarsest grid that holds them
(15 s aligned: every 15 s; 15 s shifted by 5 s: every 5 s), `_` where no scrape
happened and `stale` where Prometheus would write a staleness marker (a
failed scrape, a target that went away). Expectations are stated once per
scenario, at evaluation times that hold at every cadence.

Usage: generate_cadence_tests.py [--check]   (--check: exit 1 if the
committed file differs from what this script generates)
"""

import math
import sys
from pathlib import Path

OUT = Path(__file__).with_name("cadence.test.yml")
# (scrape interval, offset of the first scrape from the evaluation clock)
CADENCES = [(15, 0), (15, 5), (30, 0), (30, 15), (60, 0), (60, 30)]
RATE = 10.0  # target transactions per second per replica
JOB = {"job": "pgdrill", "cluster": "aks-1", "namespace": "pgdrill"}
STATES = ["healthy", "degraded", "outage", "recovering"]

ALL_ALERTS = [
    "PgdrillWritesUnavailable",
    "PgdrillAcknowledgedWritesLost",
    "PgdrillRTOObjectiveMissed",
    "PgdrillErrorRatioHigh",
    "PgdrillRateBelowTarget",
    "PgdrillVerificationFailing",
    "PgdrillCanaryDown",
    "PgdrillCanaryAbsent",
    "PgdrillFailoverInProgress",
    "PgdrillPrimaryChanged",
]


class Replica:
    """What one pgdrill process exports, as a function of time (seconds)."""

    def __init__(self, n, outages=(), achieved=None, err_frac=None, lost=(),
                 verify_errors=(), verified=None, scrape=None, pgdrill=True):
        self.n = n
        self.outages = list(outages)  # (start, end, recovering seconds)
        self.achieved = achieved or (lambda t: 1.0)  # attempts / target outside outages
        self.err_frac = err_frac or (lambda t: 0.0)  # failing fraction outside outages
        self.lost = list(lost)  # (time, writes)
        self.verify_errors = list(verify_errors)  # (time, errors): failed attempts
        # times verifications completed; None: pgdrill_verifications_total not
        # modelled (not exported), for the scenarios that do not read it
        self.verified = None if verified is None else list(verified)
        # scrape(t) -> "ok", "failed" (up 0, series stale) or "gone" (no target)
        self.scrape = scrape or (lambda t: "ok")
        self.pgdrill = pgdrill  # False: a pod that never serves /metrics
        self._attempts, self._errors = [0.0], [0.0]
        self._names = {}  # series key -> name: labels are fixed once a sample is taken

    def labels(self):
        return dict(JOB, instance=f"10.0.0.{self.n}:9743", pod=f"pgdrill-{self.n}",
                    container="pgdrill", endpoint="metrics")

    def in_outage(self, t):
        return any(s <= t < e for s, e, _ in self.outages)

    def counters(self, t):
        """Cumulative attempts and errors at t, integrated second by second."""
        cum_attempts, cum_errors = self._attempts, self._errors
        for u in range(len(cum_attempts) - 1, math.floor(t)):
            if self.in_outage(u):
                attempts, errors = RATE, RATE
            else:
                attempts = RATE * self.achieved(u)
                errors = attempts * self.err_frac(u)
            cum_attempts.append(cum_attempts[-1] + attempts)
            cum_errors.append(cum_errors[-1] + errors)
        return cum_attempts[int(t)], cum_errors[int(t)]

    def sample(self, t):
        """Every series of this replica at a scrape at time t: {series: value}."""
        attempts, errors = self.counters(t)
        started = [o for o in self.outages if o[0] <= t]
        ended = [o for o in self.outages if o[1] <= t]
        state = "healthy"
        for s, e, r in self.outages:
            if s <= t < e:
                state = "outage"
            elif e <= t < e + r:
                state = "recovering"
        last_success = max((s for s, e, _ in self.outages if s <= t < e), default=t)
        out = {
            ("pgdrill_build_info", ("version", "0.1.0")): 1,
            ("pgdrill_target_rate",): RATE,
            ("pgdrill_transactions_total",): attempts,
            ("pgdrill_transaction_errors_total", ("class", "connect_refused")): errors,
            ("pgdrill_last_success_timestamp_seconds",): last_success,
            ("pgdrill_load_running",): 1,
            ("pgdrill_outage_start_timestamp_seconds",): started[-1][0] if started else 0,
            ("pgdrill_outage_end_timestamp_seconds",): ended[-1][1] if ended else 0,
            ("pgdrill_outages_total",): len(started),
            ("pgdrill_primary_changes_total",): len(ended),
            ("pgdrill_lost_writes_total",): sum(n for at, n in self.lost if at <= t),
            ("pgdrill_verification_errors_total",): sum(n for at, n in self.verify_errors if at <= t),
        }
        if self.verified is not None:
            out[("pgdrill_verifications_total",)] = sum(1 for at in self.verified if at <= t)
        for s in STATES:
            out[("pgdrill_failover_state", ("state", s))] = int(s == state)
        return {self.name(key): v for key, v in out.items()}

    def name(self, key):
        """series_name(key, self.labels()), computed once per series."""
        name = self._names.get(key)
        if name is None:
            name = self._names[key] = series_name(key, self.labels())
        return name


def series_name(key, labels):
    labels = dict(labels)
    for extra in key[1:]:
        labels[extra[0]] = extra[1]
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{key[0]}{{{inner}}}"


def fmt(v):
    if isinstance(v, str):
        return v
    if float(v).is_integer():
        return str(int(v))
    return repr(round(v, 6))


def compress(values):
    """promtool's expanding notation: runs of missing samples `_xN` (N missing),
    arithmetic runs `a+dxN` / `a-dxN` / `axN` (N+1 values)."""
    out, i = [], 0
    while i < len(values):
        v = values[i]
        if v == "_":
            j = i
            while j < len(values) and values[j] == "_":
                j += 1
            out.append("_" if j - i == 1 else f"_x{j - i}")
            i = j
        elif v == "stale" or i + 1 >= len(values) or not is_num(values[i + 1]):
            out.append(v if v == "stale" else fmt(v))
            i += 1
        else:
            d = values[i + 1] - v
            j = i + 1
            while j + 1 < len(values) and is_num(values[j + 1]) and \
                    abs(values[j + 1] - (v + (j + 1 - i) * d)) < 1e-9:
                j += 1
            n = j - i
            if d == 0:
                out.append(f"{fmt(v)}x{n}")
            else:
                out.append(f"{fmt(v)}{'+' if d > 0 else '-'}{fmt(abs(d))}x{n}")
            i = j + 1
    return " ".join(out)


def is_num(v):
    return not isinstance(v, str)


def grid(cadence, offset):
    """The coarsest sample grid that holds every scrape."""
    return math.gcd(cadence, offset) if offset else cadence


def input_series(replicas, duration, cadence, offset):
    """promtool input_series for the replicas, sampled at the given cadence."""
    step = grid(cadence, offset)
    points = duration // step + 1
    table = {}  # series -> [value or "_" per grid point]

    def put(name, i, v):
        values = table.get(name)
        if values is None:  # not setdefault: its default would be built on every call
            values = table[name] = ["_"] * points
        values[i] = v

    for r in replicas:
        up = series_name(("up",), r.labels())
        seen = set()  # series with a sample since the last staleness marker
        for i in range(points):
            t = i * step
            if t < offset or (t - offset) % cadence:
                continue
            how = r.scrape(t)
            if how == "gone":
                # The target vanished: one staleness marker per series, then nothing.
                for name in seen:
                    put(name, i, "stale")
                seen = set()
                continue
            healthy = how == "ok" and r.pgdrill
            put(up, i, 1 if healthy else 0)
            if healthy:
                for name, v in r.sample(t).items():
                    put(name, i, round(v, 6))
                    seen.add(name)
            else:
                # A failed scrape marks every series of the target stale.
                for name in seen - {up}:
                    put(name, i, "stale")
                seen = set()
            seen.add(up)
    return [{"series": k, "values": compress(v)} for k, v in sorted(table.items())]


# --- expectations ----------------------------------------------------------
# Both kinds read the ALERTS series that the rule evaluation writes at every
# evaluation (stale once an alert resolves), so that one check covers a range
# of evaluations:
#   fire (alert, a, b): the alert fired at every evaluation from minute a to
#     minute b as exactly one alert for the canary job (labels job, cluster,
#     namespace; no replica labels), never resolved in between;
#   quiet (alert, a, b): it was not firing at any evaluation from a to b.

def firing(alert):
    return f'ALERTS{{alertname="{alert}",alertstate="firing"}}'


def fire_check(alert, a, b, severity):
    labels = dict(JOB, alertname=alert, alertstate="firing", severity=severity)
    return {"expr": f"count_over_time({firing(alert)}[{window(a, b)}])", "eval_time": f"{b}m",
            "exp_samples": [{"labels": labels_text(labels), "value": b - a + 1}]}


def quiet_check(alert, a, b):
    return {"expr": f"max_over_time({firing(alert)}[{window(a, b)}])", "eval_time": f"{b}m",
            "exp_samples": []}


def window(a, b):
    """A range at minute b that holds the evaluations of minutes a..b and no
    other, whether range starts are inclusive (Prometheus 2) or not (3)."""
    return f"{b - a}m30s" if b > a else "30s"


def labels_text(labels):
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


SEVERITY = {
    "PgdrillWritesUnavailable": "critical", "PgdrillAcknowledgedWritesLost": "critical",
    "PgdrillRTOObjectiveMissed": "warning", "PgdrillErrorRatioHigh": "warning",
    "PgdrillRateBelowTarget": "warning", "PgdrillVerificationFailing": "warning",
    "PgdrillCanaryDown": "warning", "PgdrillCanaryAbsent": "warning",
    "PgdrillFailoverInProgress": "info", "PgdrillPrimaryChanged": "info",
}


def scenario(name, doc, duration_min, replicas, fire=(), quiet=(), extra=()):
    return dict(name=name, doc=doc, duration=duration_min * 60, replicas=replicas,
                fire=fire, quiet=quiet, extra=extra)


def scenarios():
    out = []
    out.append(scenario(
        "failover within the objective (120 s) pages nothing",
        "Both replicas: outage from 10m to 12m (RTO 120 s = the objective), recovering "
        "for 60 s. Only the info alerts fire, once per job.",
        40,
        lambda: [Replica(1, outages=[(600, 720, 60)]), Replica(2, outages=[(600, 720, 60)])],
        fire=[("PgdrillFailoverInProgress", 11, 12), ("PgdrillPrimaryChanged", 14, 16)],
        quiet=[(a, 0, 40) for a in [
            "PgdrillWritesUnavailable", "PgdrillRTOObjectiveMissed", "PgdrillErrorRatioHigh",
            "PgdrillRateBelowTarget", "PgdrillCanaryDown", "PgdrillCanaryAbsent",
            "PgdrillAcknowledgedWritesLost", "PgdrillVerificationFailing"]]
        + [("PgdrillFailoverInProgress", 0, 9), ("PgdrillFailoverInProgress", 25, 40),
           ("PgdrillPrimaryChanged", 0, 9), ("PgdrillPrimaryChanged", 22, 40)],
    ))
    # pgdrill judges durations to the millisecond, as it prints them: an outage shown as
    # 120.000 s meets a 120 s objective, and the rules must agree.
    out.append(scenario(
        "failover of 120.0004 s, printed as 120.000 s, pages nothing",
        "Both replicas: outage from 600 s to 720.0004 s.",
        40,
        lambda: [Replica(1, outages=[(600, 720.0004, 60)]),
                 Replica(2, outages=[(600, 720.0004, 60)])],
        quiet=[(a, 0, 40) for a in ["PgdrillWritesUnavailable", "PgdrillRTOObjectiveMissed"]],
    ))
    # Ends 5 s after a scrape at 60 s (shifted): the evaluation at 13m still sees
    # it in progress; measured on the evaluation's clock it would be 140 s.
    out.append(scenario(
        "failover of 115 s ending between a scrape and an evaluation pages nothing",
        "Both replicas: outage from 640 s to 755 s (RTO 115 s).",
        30,
        lambda: [Replica(1, outages=[(640, 755, 30)]), Replica(2, outages=[(640, 755, 30)])],
        quiet=[(a, 0, 30) for a in ["PgdrillWritesUnavailable", "PgdrillRTOObjectiveMissed"]],
    ))
    out.append(scenario(
        "failover beyond the objective pages once per job, through a failed scrape",
        "Both replicas: outage from 10m to 16m (RTO 360 s); the first scrape at or after "
        "850 s fails (up 0, every series stale) while the page is firing.",
        50,
        lambda: with_failed_scrape([Replica(1, outages=[(600, 960, 60)]),
                                    Replica(2, outages=[(600, 960, 60)])], 850),
        fire=[("PgdrillWritesUnavailable", 14, 20), ("PgdrillRTOObjectiveMissed", 20, 45),
              ("PgdrillFailoverInProgress", 11, 16)],
        quiet=[("PgdrillWritesUnavailable", 0, 12), ("PgdrillWritesUnavailable", 22, 50),
               ("PgdrillRTOObjectiveMissed", 0, 15), ("PgdrillRTOObjectiveMissed", 48, 50)],
    ))
    out.append(scenario(
        "a missed objective stays on record through a later short failover and a restart",
        "Both replicas: outage from 10m to 16m (RTO 360 s); replica 1 has a 10 s outage at "
        "26m (its gauges then hold that one), replica 2 is replaced by replica 3 at 25m "
        "(gauges back at 0). The record of the 360 s outage holds for 30 minutes.",
        50,
        lambda: [Replica(1, outages=[(600, 960, 60), (1560, 1570, 10)]),
                 Replica(2, outages=[(600, 960, 60)],
                         scrape=lambda t: "gone" if t >= 1500 else "ok"),
                 Replica(3, scrape=lambda t: "ok" if t >= 1500 else "gone")],
        fire=[("PgdrillRTOObjectiveMissed", 20, 45)],
        quiet=[("PgdrillRTOObjectiveMissed", 0, 15), ("PgdrillRTOObjectiveMissed", 48, 50)],
    ))
    out.append(scenario(
        "8 % of transactions fail for 35 minutes",
        "Both replicas: 8 % errors from 5m on; the achieved rate stays at 92 % of target.",
        40,
        lambda: [Replica(n, err_frac=lambda t: 0.08 if t >= 300 else 0.0) for n in (1, 2)],
        fire=[("PgdrillErrorRatioHigh", 21, 40)],
        quiet=[("PgdrillErrorRatioHigh", 0, 14), ("PgdrillRateBelowTarget", 0, 40)],
    ))
    out.append(scenario(
        "4 % of transactions fail for 35 minutes",
        "Both replicas: 4 % errors from 5m on (below the 5 % threshold).",
        40,
        lambda: [Replica(n, err_frac=lambda t: 0.04 if t >= 300 else 0.0) for n in (1, 2)],
        quiet=[("PgdrillErrorRatioHigh", 0, 40), ("PgdrillRateBelowTarget", 0, 40)],
    ))
    out.append(scenario(
        "a new primary that sustains 50 % of the target, recovering forever",
        "Both replicas: 30 s outage at 5m, then 50 % of the target rate and the recovering "
        "state until the end (the daemon never leaves it).",
        60,
        lambda: [Replica(n, outages=[(300, 330, 10**9)],
                         achieved=lambda t: 0.5 if t >= 330 else 1.0) for n in (1, 2)],
        fire=[("PgdrillRateBelowTarget", 18, 60), ("PgdrillFailoverInProgress", 7, 14)],
        quiet=[("PgdrillRateBelowTarget", 0, 5), ("PgdrillFailoverInProgress", 17, 60),
               ("PgdrillWritesUnavailable", 0, 60)],
    ))
    out.append(scenario(
        "a new primary that sustains 95 % of the target",
        "Both replicas: 30 s outage at 5m, then 95 % of the target rate.",
        40,
        lambda: [Replica(n, outages=[(300, 330, 60)],
                         achieved=lambda t: 0.95 if t >= 330 else 1.0) for n in (1, 2)],
        quiet=[("PgdrillRateBelowTarget", 0, 40), ("PgdrillErrorRatioHigh", 0, 40)],
    ))
    out.append(scenario(
        "a replica is deleted and not replaced",
        "Replica 2's target disappears at 10m (pod deleted, or its replacement pending).",
        30,
        lambda: [Replica(1), Replica(2, scrape=lambda t: "gone" if t >= 600 else "ok")],
        fire=[("PgdrillCanaryAbsent", 17, 30)],
        quiet=[("PgdrillCanaryAbsent", 0, 10), ("PgdrillCanaryDown", 0, 30),
               ("PgdrillWritesUnavailable", 0, 30), ("PgdrillRateBelowTarget", 0, 30)],
    ))
    out.append(scenario(
        "a replacement pod crash-loops before its first good scrape",
        "Replica 2 is gone at 10m; its replacement (replica 3, a new target) never serves "
        "/metrics: up is 0 at every scrape and pgdrill_build_info never appears.",
        30,
        lambda: [Replica(1), Replica(2, scrape=lambda t: "gone" if t >= 600 else "ok"),
                 Replica(3, scrape=lambda t: "ok" if t >= 600 else "gone", pgdrill=False)],
        fire=[("PgdrillCanaryAbsent", 17, 30)],
        quiet=[("PgdrillCanaryDown", 0, 14)],
        extra=[{
            "expr": f'count_over_time({firing("PgdrillCanaryDown")}[{window(16, 30)}])',
            "eval_time": "30m",
            "exp_samples": [{"labels": labels_text(dict(
                Replica(3).labels(), alertname="PgdrillCanaryDown", alertstate="firing",
                severity="warning")), "value": 15}],
        }],
    ))
    out.append(scenario(
        "one failed scrape of a healthy replica alerts nothing",
        "Replica 1: the first scrape at or after 10m fails (up 0, every series stale).",
        30,
        lambda: with_failed_scrape([Replica(1)], 600) + [Replica(2)],
        quiet=[(a, 0, 30) for a in ALL_ALERTS],
    ))
    out.append(scenario(
        "lost writes, and a verification retried for 30 s",
        "A 30 s outage at 5m; replica 1's verification finds 3 acknowledged writes lost at "
        "6m; replica 2's fails every 2 s from 350 s (the new primary not reachable yet) and "
        "completes at 380 s, so that most cadences scrape a failed attempt before the "
        "completion.",
        30,
        lambda: [Replica(1, outages=[(300, 330, 30)], lost=[(360, 3)], verified=[360]),
                 Replica(2, outages=[(300, 330, 30)],
                         verify_errors=[(t, 1) for t in range(350, 380, 2)], verified=[380])],
        fire=[("PgdrillAcknowledgedWritesLost", 8, 19)],
        quiet=[("PgdrillAcknowledgedWritesLost", 0, 5), ("PgdrillAcknowledgedWritesLost", 23, 30),
               ("PgdrillVerificationFailing", 0, 30), ("PgdrillWritesUnavailable", 0, 30)],
    ))
    out.append(scenario(
        "a verification that keeps failing",
        "A 30 s outage at 5m; replica 1's verification completes at 331 s, replica 2's fails "
        "every 2 s from 331 s on and never completes. One warning for the job, 5 minutes "
        "after the first failed attempt was scraped.",
        30,
        lambda: [Replica(1, outages=[(300, 330, 30)], verified=[331]),
                 Replica(2, outages=[(300, 330, 30)],
                         verify_errors=[(t, 1) for t in range(331, 1800, 2)], verified=[])],
        fire=[("PgdrillVerificationFailing", 12, 30)],
        quiet=[("PgdrillVerificationFailing", 0, 10), ("PgdrillAcknowledgedWritesLost", 0, 30),
               ("PgdrillWritesUnavailable", 0, 30)],
    ))
    return out


def failed_first_after(t, at, first):
    """"failed" for the first scrape at or after `at`, "ok" otherwise (`first`
    remembers the scrape that failed)."""
    if t >= at and not first:
        first.append(t)
    return "failed" if first and first[0] == t else "ok"


def with_failed_scrape(replicas, at):
    """The first scrape at or after `at` of each replica fails."""
    for r in replicas:
        first = []
        r.scrape = lambda t, first=first: failed_first_after(t, at, first)
    return replicas


def generate():
    tests = []
    for sc in scenarios():
        for cadence, offset in CADENCES:
            replicas = sc["replicas"]()
            promql = [quiet_check(alert, a, b) for alert, a, b in sc["quiet"]]
            promql += [fire_check(alert, a, b, SEVERITY[alert]) for alert, a, b in sc["fire"]]
            promql += [dict(p) for p in sc["extra"]]
            name = (f"{sc['name']} - scrape every {cadence}s, "
                    + (f"{offset}s after the evaluation" if offset else "aligned"))
            for p in promql:
                # promtool prints a failing expression but not its test's name.
                p["expr"] += f"  # {name}"
            test = {
                "name": name,
                "interval": f"{grid(cadence, offset)}s",
                "input_series": input_series(replicas, sc["duration"], cadence, offset),
            }
            test["promql_expr_test"] = promql
            tests.append((sc["doc"], test))
    return render(tests)


def q(s):
    return "'" + s.replace("'", "''") + "'"


def render(tests):
    lines = [
        "# GENERATED by generate_cadence_tests.py - do not edit; regenerate with",
        "#   python3 prometheus/tests/generate_cadence_tests.py",
        "# The alerts at 15 s, 30 s and 60 s scrapes (aligned with the 1 m evaluation",
        "# and shifted off it); `_` no scrape, `stale` staleness marker.",
        "# Checks read ALERTS over a range of evaluations: count_over_time = minutes",
        "# firing as one alert per job (job, cluster, namespace; no replica labels),",
        "# max_over_time = [] never firing in that range.",
        "rule_files:",
        "  - ../rules/pgdrill.rules.yml",
        "  - ../rules/pgdrill-expected.rules.yml",
        "evaluation_interval: 1m",
        "tests:",
    ]
    last_doc = None
    for doc, t in tests:
        if doc != last_doc:
            lines.append(f"  # {'-' * 74}")
            lines.append(f"  # {doc}")
            last_doc = doc
        lines.append(f"  - name: {q(t['name'])}")
        lines.append(f"    interval: {t['interval']}")
        lines.append("    input_series:")
        for s in t["input_series"]:
            lines.append(f"      - series: {q(s['series'])}")
            lines.append(f"        values: {q(s['values'])}")
        if "promql_expr_test" in t:
            lines.append("    promql_expr_test:")
            for p in t["promql_expr_test"]:
                lines.append(f"      - expr: {q(p['expr'])}")
                lines.append(f"        eval_time: {p['eval_time']}")
                if p["exp_samples"]:
                    lines.append("        exp_samples:")
                    for s in p["exp_samples"]:
                        lines.append(f"          - labels: {q(s['labels'])}")
                        lines.append(f"            value: {s['value']}")
                else:
                    lines.append("        exp_samples: []")
    return "\n".join(lines) + "\n"


def main():
    text = generate()
    if "--check" in sys.argv[1:]:
        have = OUT.read_text() if OUT.exists() else ""
        if have != text:
            print(f"{OUT} is out of date: run python3 {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
