//! The report page's headline and verdict: RTO, lost writes, unverified and let-go outages.

use super::tests::{drill, judged, render_30};
use super::*;
use crate::failover::outages::EarlierOutages;

#[test]
fn the_headline_judges_rto_lost_writes_and_unverified_outages() {
    let r = drill(600, 120);
    let html = render_30(&r);
    assert!(html.contains(r#"<span class="big">PASS</span>"#), "pass");
    assert!(html.contains(
        "every objective met: writes unavailable ≤ 30.00 s, acknowledged writes lost ≤ 0"
    ));
    assert!(html.contains("1 found afterwards, 23 not found, 0 unresolved"));
    assert!(
        html.contains("<b>2.974 s</b>"),
        "the outage row's RTO, to the millisecond"
    );
    assert!(
        html.contains(">11:12:00.061<"),
        "undated times within one day"
    );

    let html = render(&judged(&r, 1.0));
    assert!(html.contains(r#"<span class="big">FAIL</span>"#));
    assert!(
        html.contains("writes unavailable for 2.974 s (outage 1), over the RTO objective (1 s)")
    );

    let mut lossy = r.clone();
    lossy.counts.lost_writes = 3;
    lossy.outages[0].lost_writes = Some(3);
    let html = render_30(&lossy);
    assert!(html.contains(r#"<span class="big">FAIL</span>"#));
    assert!(html.contains("3 acknowledged writes lost, over the RPO objective (at most 0)"));

    // Unresolved unknown outcomes are shown on their card; they do not decide the verdict.
    let mut open = r.clone();
    open.counts.unknown_outcome_not_committed = 20;
    open.outages[0].lost_writes = None;
    let html = render_30(&open);
    assert!(html.contains(r#"<span class="big">INVALID</span>"#));
    assert!(html.contains("the acknowledged writes before outage 1 were never verified"));
    assert!(html.contains("1 found afterwards, 20 not found, 3 unresolved"));
}

#[test]
fn outages_whose_records_were_let_go_are_counted_and_judged() {
    let mut r = drill(600, 120);
    r.earlier_outages = EarlierOutages {
        count: 1500,
        checked_writes: 7000,
        unverified: 2,
        longest_write_unavailable_seconds: 42.5,
        longest_outage: 12,
        ..EarlierOutages::default()
    };
    for o in &mut r.outages {
        o.index += 1500;
    }
    let html = render_30(&r);
    // Unverified outages make it invalid; the missed RTO is reported too.
    assert!(html.contains(r#"<span class="big">INVALID</span>"#));
    assert!(html.contains("outage 12, the longest of outages 1-1500"));
    assert!(html.contains("2 of outages 1-1500 were never verified"));
    assert!(html.contains("objective 30.00 s; 1501 outage(s)"));
    assert!(
        html.contains(r#"<div class="card bad"><div class="d">RTO — longest write unavailability</div><div class="v">42.500 s</div>"#),
        "the RTO card"
    );
    assert!(html.contains("2 of outages 1-1500 not verified"));
    assert!(html.contains("Outages 1–1500 are not listed"));
    let text = r.to_string();
    assert!(
        text.contains(
            "outages #1-#1500 (records not kept): longest #12 42.500s, checked 7000, unverified 2"
        ),
        "{text}"
    );
}

#[test]
fn an_open_outage_checked_nothing_and_a_restart_is_not_a_new_primary() {
    let r = drill(600, 120);
    let html = render_30(&r);
    assert!(
        html.contains("new primary"),
        "a failover reached another server"
    );
    assert!(!html.contains("unverified"));

    // Still open at the end of the run: nothing was checked, so nothing is claimed.
    let mut open = r.clone();
    let o = &mut open.outages[0];
    (o.end_unix, o.checked_writes, o.lost_writes) = (None, None, None);
    let html = render_30(&open);
    assert!(html.contains(">unverified<"), "the lost-writes card");
    // Its duration is the time so far, no measured RTO: the card says so, and no pass.
    let rto = html
        .split("RTO — longest write unavailability")
        .next()
        .unwrap_or_default();
    assert!(
        rto.ends_with(r#"<div class="card warn"><div class="d">"#),
        "{html}"
    );
    assert!(html.contains(r#" so far</div>"#), "{html}");
    assert!(html.contains(
        "0 acknowledged writes checked on the primary afterwards; outage 1 still open at the end"
    ));
    // The text summary says the same.
    let text = open.to_string();
    assert!(
        text.contains("lost writes unverified (outage 1 still open at the end)"),
        "{text}"
    );
    // Writes a switchover lost (verified with no outage record) are shown all the same.
    let mut lost = open.clone();
    lost.counts.lost_writes = 3;
    let html = render_30(&lost);
    assert!(
        !html.contains(r#"<div class="v">unverified</div>"#),
        "the lost-writes card"
    );
    assert!(
        html.contains(r#"<div class="v">3</div>"#),
        "3 lost writes on the card"
    );
    assert!(lost.to_string().contains("lost writes 3 of 0 checked"));

    // The same cluster and timeline with a new postmaster: a restart in place.
    let mut restart = r.clone();
    let o = &mut restart.outages[0];
    o.identity_after = o.identity_before.clone().map(|mut i| {
        i.postmaster_start = Some("2026-11-27 09:00:00+00".into());
        i
    });
    let html = render_30(&restart);
    assert!(html.contains("<small>same primary, restarted in place</small>"));
}

#[test]
fn a_trigger_whose_later_outage_is_still_open_shows_the_time_so_far() {
    // Trigger 1: an outage of 0.5 s, then a flap still open 60 s on when the load stopped.
    // The verdict fails on the open one; the trigger tables must not show only the 0.5 s.
    let summary = serde_json::json!({
        "run_id": 7,
        "transactions": 1000,
        "outages": [
            {"index": 1, "start_unix": 1800000030.2, "end_unix": 1800000030.7,
             "write_unavailable_seconds": 0.5, "lost_writes": 0},
            {"index": 2, "start_unix": 1800000035.0, "write_unavailable_seconds": 60.0,
             "open_at_shutdown": true}],
        "drill": {
            "command": "patronictl failover --force",
            "objectives": {"rto_seconds": 30.0, "max_lost_writes": 0},
            "shell": false,
            "planned_triggers": 1,
            "triggers": [{"index": 1, "planned_unix": 1800000030.0, "started_unix": 1800000030.0,
                          "ended_unix": 1800000030.2, "duration_seconds": 0.2,
                          "outcome": {"kind": "ok"},
                          "stdout_tail": "", "stderr_tail": "", "output_truncated": false}],
            "baselines": [],
            "drills": [{"trigger": 1, "outage": 1, "later_outages": [2],
                        "trigger_to_first_failed_write_seconds": 0.2,
                        "write_unavailable_seconds": 0.5,
                        "unavailable_at_run_end_seconds": 60.0,
                        "trigger_seconds": 0.2}],
            "distribution": {},
            "verdict": {"verdict": "fail", "invalid": [],
                        "failed": ["trigger 1: writes had not come back 60.000 s after outage 2 began"]}
        }
    });
    let s = crate::report::summary_from_json(summary).expect("a summary");
    let page = render(&s);
    assert!(page.contains("<td>1 min 00.000 s so far</td>"), "{page}");
    let text = s.to_string();
    assert!(text.contains("60.000 s so far  unverified\n"), "{text}");
    assert!(!text.contains(" 0.500 s "), "{text}");
    // Its lost writes were never verified: unknown, as the outage table says, not "-".
    assert!(page.contains("<td>unverified</td>"), "{page}");
}
