#!/usr/bin/env python3
"""Generates the promtool tests of the canary SLO
(prometheus/rules/pgdrill-slo.rules.yml): must-fire and must-not-fire cases
for both severities of PgdrillErrorBudgetBurn, pinning the minute each one
starts firing, and the drill exclusion.

  slo.test.yml           every scenario, scraped every 60 s 30 s off the 1 m
                         evaluation (the coarsest cadence, not aligned); run by
                         tests/it/rules/ like every file here, mutations too.
  cadences/slo.test.yml  the scenarios whose timing hinges on single scrapes
                         (a failover, a drill, a failed scrape) at the other
                         five cadences: 15 s and 30 s aligned and shifted, 60 s
                         aligned; and the slowest, 40 hours of history, at 60 s
                         aligned; run by tests/it/slo.rs.

The model and the sampling are those of generate_cadence_tests.py (replicas of
one canary job, what each exports at any instant, sampled at each scrape; `_`
where no scrape happened, `stale` where Prometheus writes a staleness marker).
Added here: skipped transactions (a hang: nothing finishes, the schedule
skips), the drill verdict state set and pgdrill_target_info, so that a drill
process and the canaries that share its database can be told apart.

Usage: generate_slo_tests.py [--check]   (--check: exit 1 if a committed file
differs from what this script generates)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import generate_cadence_tests as cad  # noqa: E402

OUT = Path(__file__).with_name("slo.test.yml")
SWEEP_OUT = Path(__file__).parent / "cadences" / "slo.test.yml"
MAIN = (60, 30)  # every scenario
SWEEP = [c for c in cad.CADENCES if c != MAIN]  # the `sweep` scenarios
ALERT = "PgdrillErrorBudgetBurn"
VERDICTS = ["none", "pending", "pass", "fail", "invalid"]
DB = {"host": "db.example", "database": "pgdrill"}


class Process(cad.Replica):
    """A pgdrill process: a canary replica (verdict none) or a drill
    (`verdict(t)` other than none), skipping every write while `hangs`."""

    def __init__(self, n, job="pgdrill", hangs=(), verdict=None, host=DB["host"],
                 port=5432, **kw):
        self.hangs = list(hangs)  # (start, end): nothing finishes, all skipped
        achieved = kw.pop("achieved", None) or (lambda t: 1.0)
        kw["achieved"] = lambda t: 0.0 if self.hanging(t) else achieved(t)
        super().__init__(n, **kw)
        self.job = job
        self.verdict = verdict or (lambda t: "none")
        self.host, self.port = host, port

    def hanging(self, t):
        return any(s <= t < e for s, e in self.hangs)

    def labels(self):
        return dict(super().labels(), job=self.job)

    def sample(self, t):
        out = super().sample(t)
        skipped = cad.RATE * sum(max(0, min(t, e) - s) for s, e in self.hangs if s <= t)
        extra = {
            ("pgdrill_transactions_skipped_total",): skipped,
            ("pgdrill_target_info", ("database", DB["database"]), ("host", self.host),
             ("pooler", "none"), ("port", str(self.port))): 1,
        }
        verdict = self.verdict(t)
        for v in VERDICTS:
            extra[("pgdrill_drill_verdict", ("verdict", v))] = int(v == verdict)
        out.update({self.name(key): v for key, v in extra.items()})
        return out


def alive(start, end):
    """scrape(t) of a process that runs from `start` to `end` (seconds)."""
    return lambda t: "ok" if start <= t < end else "gone"


def drill_verdict(verdict_at):
    """A drill process: pending until its verdict exists, then pass."""
    return lambda t: "pending" if t < verdict_at else "pass"


def canaries(**kw):
    """Both replicas of the canary job `pgdrill`, alike."""
    return [Process(n, **kw) for n in (1, 2)]


def errors_from(start_min, frac):
    return lambda t: frac if t >= start_min * 60 else 0.0


# --- expectations ------------------------------------------------------------
# As in generate_cadence_tests.py, read from the ALERTS series of every
# evaluation, one severity at a time:
#   fire (severity, a, b): firing at every evaluation from minute a to minute b,
#     as exactly one alert for the canary job (job, cluster, namespace);
#   quiet (severity, a, b): not firing at any evaluation from a to b.
# A `fire` from minute a next to a `quiet` up to a - 1 (or a - 2 where the
# cadence moves it by a minute) pins the minute the alert starts firing.

def alerts(severity):
    return f'ALERTS{{alertname="{ALERT}",alertstate="firing",severity="{severity}"}}'


def fire_check(severity, a, b):
    labels = dict(cad.JOB, alertname=ALERT, alertstate="firing", severity=severity)
    return {"expr": f"count_over_time({alerts(severity)}[{cad.window(a, b)}])",
            "eval_time": f"{b}m",
            "exp_samples": [{"labels": cad.labels_text(labels), "value": b - a + 1}]}


def quiet_check(severity, a, b):
    return {"expr": f"max_over_time({alerts(severity)}[{cad.window(a, b)}])",
            "eval_time": f"{b}m", "exp_samples": []}


def sli_check(rule, at, value):
    """The recorded `rule` of the canary job at minute `at`, to 6 digits."""
    return {"expr": f'round({rule}{{job="pgdrill"}}, 0.000001)', "eval_time": f"{at}m",
            "exp_samples": [{"labels": cad.labels_text(cad.JOB), "value": value}]}


def eligible_check(at):
    """Both canary replicas count towards the SLO at minute `at`."""
    return {"expr": "instance:pgdrill_slo_canary:eligible", "eval_time": f"{at}m",
            "exp_samples": [{"labels": cad.labels_text(dict(
                Process(n).labels(), __name__="instance:pgdrill_slo_canary:eligible",
                verdict="none")), "value": 1} for n in (1, 2)]}


def absent_check(expr, at):
    return {"expr": expr, "eval_time": f"{at}m", "exp_samples": []}


def scenario(name, doc, duration_min, processes, sweep=False, main=True, fire=(), quiet=(),
             extra=()):
    """`main`: in slo.test.yml at MAIN; `sweep`: in cadences/slo.test.yml at the
    other five cadences (True) or at the ones listed."""
    sweep = SWEEP if sweep is True else list(sweep or [])
    return dict(name=name, doc=doc, duration=duration_min * 60, processes=processes,
                sweep=sweep, main=main, fire=fire, quiet=quiet, extra=extra)


def drill(host=DB["host"], port=6432):
    """A drill process (job pgdrill-drill) alive from 80m to 96m, verdict at
    95m30s, whose failover makes every write fail from 90m to 95m."""
    return Process(9, job="pgdrill-drill", host=host, port=port,
                   outages=[(90 * 60, 95 * 60, 60)], verdict=drill_verdict(95 * 60 + 30),
                   scrape=alive(80 * 60, 96 * 60))


def scenarios():
    out = []
    out.append(scenario(
        "an unplanned failover of 120 s pages",
        "Both replicas fail every write from 360m to 362m (120 s: 4.6 % of the 30-day "
        "budget at 99.9 %), after 6 hours without errors: a 1 h burn rate of 33.",
        420,
        lambda: canaries(outages=[(360 * 60, 362 * 60, 60)]),
        sweep=True,
        fire=[("critical", 363, 366), ("warning", 362, 420)],
        quiet=[("critical", 0, 362), ("critical", 367, 420), ("warning", 0, 361)],
    ))
    out.append(scenario(
        "an unplanned failover of 60 s pages",
        "Both replicas fail every write from 360m to 361m, after 6 hours without errors: "
        "a 1 h burn rate of 16.7.",
        420,
        lambda: canaries(outages=[(360 * 60, 361 * 60, 60)]),
        sweep=True,
        fire=[("critical", 365, 365), ("warning", 363, 420)],
        quiet=[("critical", 0, 364), ("critical", 366, 420), ("warning", 0, 361)],
    ))
    out.append(scenario(
        "an unplanned failover of 40 s does not page",
        "Both replicas fail every write from 360m for 40 s, after 6 hours without errors: "
        "a 1 h burn rate of 11 (the page needs 14.4), 6 h 1.9 (a ticket).",
        420,
        lambda: canaries(outages=[(360 * 60, 360 * 60 + 40, 60)]),
        sweep=True,
        quiet=[("critical", 0, 420), ("warning", 0, 362)],
        fire=[("warning", 363, 420)],
    ))
    out.append(scenario(
        "a drill's failover of 300 s burns nothing",
        "A drill process (job pgdrill-drill, verdict pending, then pass) runs from 80m to "
        "96m against the canaries' database through another port and triggers a "
        "failover: it and both canary replicas fail every write from 90m to 95m.",
        150,
        lambda: canaries(outages=[(90 * 60, 95 * 60, 60)]) + [drill()],
        sweep=True,
        quiet=[("critical", 0, 150), ("warning", 0, 150)],
        extra=[sli_check("job:pgdrill_write_success:ratio_rate6h", m, 1) for m in (100, 150)]
        + [absent_check('job:pgdrill_write_attempts:rate5m{job="pgdrill-drill"}', m)
           for m in (85, 95, 100)]
        + [absent_check('instance:pgdrill_slo_canary:eligible', m) for m in (85, 95, 100)]
        + [eligible_check(m) for m in (70, 110)],
    ))
    out.append(scenario(
        "a drill against another database does not hide the canaries' failover",
        "The same drill process, measuring another database (host other.example); the "
        "canaries' own failover from 90m to 95m is unplanned and pages.",
        150,
        lambda: canaries(outages=[(90 * 60, 95 * 60, 60)]) + [drill(host="other.example")],
        fire=[("critical", 93, 128)],
        quiet=[("critical", 0, 92), ("critical", 130, 150)],
    ))
    out.append(scenario(
        "every connection hangs for 120 s: skipped writes burn the budget",
        "Both replicas: from 90m to 92m no transaction finishes and the schedule skips "
        "every write (no error is counted).",
        100,
        lambda: canaries(hangs=[(90 * 60, 92 * 60)]),
        fire=[("critical", 93, 100)],
        quiet=[("critical", 0, 92)],
    ))
    out.append(scenario(
        "an outage of an hour pages throughout, through a failed scrape",
        "Both replicas fail every write from 60m to 120m; the first scrape of replica 1 at "
        "or after 90m fails (up 0, every series stale).",
        120,
        lambda: cad.with_failed_scrape([Process(1, outages=[(60 * 60, 120 * 60, 60)])],
                                       90 * 60)
        + [Process(2, outages=[(60 * 60, 120 * 60, 60)])],
        sweep=True,
        fire=[("critical", 62, 120)],
        quiet=[("critical", 0, 61)],
    ))
    out.append(scenario(
        "2 % of writes fail (burn rate 20)",
        "Both replicas: 2 % of writes fail from 60m on, after an hour without errors: "
        "the 6 h burn rate (all of the history) passes 6 before the 1 h one passes 14.4.",
        130,
        lambda: canaries(err_frac=errors_from(60, 0.02)),
        fire=[("critical", 88, 130), ("warning", 66, 130)],
        quiet=[("critical", 0, 87), ("warning", 0, 65)],
    ))
    out.append(scenario(
        "0.8 % of writes fail (burn rate 8)",
        "Both replicas: 0.8 % of writes fail from 60m on, after an hour without errors: the "
        "1 h burn rate stays under 14.4; the 6 h one (all of the history) passes 6 after "
        "about 3 hours.",
        260,
        lambda: canaries(err_frac=errors_from(60, 0.008)),
        fire=[("critical", 243, 260), ("warning", 71, 260)],
        quiet=[("critical", 0, 242), ("warning", 0, 70)],
    ))
    out.append(scenario(
        "0.5 % of writes fail (burn rate 5)",
        "Both replicas: 0.5 % of writes fail from 60m on: never a page; a ticket once the "
        "6 h and 3 d burn rates pass 1.",
        150,
        lambda: canaries(err_frac=errors_from(60, 0.005)),
        quiet=[("critical", 0, 150), ("warning", 0, 77)],
        fire=[("warning", 78, 150)],
    ))
    out.append(scenario(
        "0.05 % of writes fail (burn rate 0.5)",
        "Both replicas: 0.05 % of writes fail from the start: within the objective.",
        120,
        lambda: canaries(err_frac=lambda t: 0.0005),
        quiet=[("critical", 0, 120), ("warning", 0, 120)],
        extra=[sli_check(f"job:pgdrill_write_success:ratio_rate{w}", 120, 0.9995)
               for w in ("5m", "30m", "1h", "6h", "3d", "30d")]
        + [sli_check("job:pgdrill_write_attempts:rate5m", 120, 20),
           sli_check("job:pgdrill_write_failures:rate5m", 120, 0.01),
           {"expr": "pgdrill:write_success_objective_ratio", "eval_time": "120m",
            "exp_samples": [{"labels": "{__name__=\"pgdrill:write_success_objective_ratio\"}",
                             "value": 0.999}]}],
    ))
    out.append(scenario(
        "after 9 clean hours, a 30 s failover files no ticket",
        "Both replicas: 9 hours without errors, then every write fails for 30 s at 540m: "
        "the 6 h burn rate is 1.25 (SLI 0.998753), the 3 d one (all 9 h) 0.93.",
        600,
        lambda: canaries(outages=[(540 * 60, 540 * 60 + 30, 60)]),
        quiet=[("critical", 0, 600), ("warning", 0, 600)],
        extra=[sli_check("job:pgdrill_write_success:ratio_rate6h", 545, 0.998753)],
    ))
    out.append(scenario(
        "after 40 clean hours, a 120 s failover pages but files no ticket",
        "Both replicas: 40 hours without errors, then every write fails for 120 s at "
        "2400m: the 6 h burn rate is 5.6, the 3 d one (all 40 h) 0.83.",
        2460,
        lambda: canaries(outages=[(2400 * 60, 2402 * 60, 60)]),
        main=False,
        sweep=[(60, 0)],
        fire=[("critical", 2403, 2406)],
        quiet=[("critical", 0, 2402), ("critical", 2407, 2460), ("warning", 0, 2460)],
    ))
    return out


def test_for(sc, cadence, offset):
    promql = [quiet_check(sev, a, b) for sev, a, b in sc["quiet"]]
    promql += [fire_check(sev, a, b) for sev, a, b in sc["fire"]]
    promql += [dict(p) for p in sc["extra"]]
    name = (f"{sc['name']} - scrape every {cadence}s, "
            + (f"{offset}s after the evaluation" if offset else "aligned"))
    for p in promql:
        # promtool prints a failing expression but not its test's name.
        p["expr"] = p["expr"] + f"  # {name}"
    return (sc["doc"], {
        "name": name,
        "interval": f"{cad.grid(cadence, offset)}s",
        "input_series": cad.input_series(sc["processes"](), sc["duration"], cadence, offset),
        "promql_expr_test": promql,
    })


HEADER = """# GENERATED by generate_slo_tests.py - do not edit; regenerate with
#   python3 prometheus/tests/generate_slo_tests.py
# The canary SLO (prometheus/rules/pgdrill-slo.rules.yml), {what}; `_` no
# scrape, `stale` staleness marker. Checks read ALERTS over a range of
# evaluations, one severity at a time: count_over_time = minutes firing as one
# alert per job, max_over_time = [] never firing in that range.
"""


def render(tests, what, rules):
    text = cad.render(tests)
    text = text.replace("../rules/pgdrill.rules.yml", f"{rules}/pgdrill-slo.rules.yml", 1)
    text = text.replace("  - ../rules/pgdrill-expected.rules.yml\n", "", 1)
    return HEADER.format(what=what) + text[text.index("rule_files:"):]


def generate():
    """{path: text}: every scenario at MAIN, the `sweep` ones at the others."""
    main = [test_for(sc, *MAIN) for sc in scenarios() if sc["main"]]
    sweep = [test_for(sc, c, o) for sc in scenarios() for c, o in sc["sweep"]]
    return {
        OUT: render(main, "every scenario\n# scraped every 60 s, 30 s off the 1 m evaluation",
                    "../rules"),
        SWEEP_OUT: render(sweep, "the scenarios that hinge on single\n# scrapes at 15 s and "
                          "30 s (aligned and shifted) and 60 s aligned, and the\n# 40-hour "
                          "one at 60 s aligned", "../../rules"),
    }


def main():
    stale = []
    for path, text in generate().items():
        if "--check" in sys.argv[1:]:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(f"{path} is out of date: run python3 {Path(__file__).name}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
