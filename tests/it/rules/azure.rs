//! The Azure Monitor managed Prometheus rule groups (ARM template): generated from the YAML,
//! kept in sync, within Azure's limits.

use super::*;

// ---------------------------------------------------------------------------
// Azure Monitor managed Prometheus rule groups (ARM template).

const AZURE_TEMPLATE: &str = "prometheus/azure/pgdrill-rule-groups.json";
/// Azure evaluates rule groups every 1 to 15 minutes.
const AZURE_INTERVAL: &str = "PT1M";
const AZURE_MAX_RULES_PER_GROUP: usize = 20;

/// Prometheus duration ("90s", "5m", "1h30m") to ISO 8601 ("PT90S", "PT5M", "PT1H30M").
fn iso8601(duration: &str) -> String {
    let mut out = String::from("PT");
    let mut number = String::new();
    for c in duration.chars() {
        if c.is_ascii_digit() {
            number.push(c);
        } else {
            let unit = match c {
                'h' => 'H',
                'm' => 'M',
                's' => 'S',
                other => panic!("duration {duration:?}: unit {other:?} has no Azure equivalent"),
            };
            assert!(!number.is_empty(), "duration {duration:?}");
            out.push_str(&number);
            out.push(unit);
            number.clear();
        }
    }
    assert!(number.is_empty() && out.len() > 2, "duration {duration:?}");
    out
}

/// Azure alert severity (0 critical .. 4 verbose) from our `severity` label.
fn azure_severity(label: &str) -> u8 {
    match label {
        "critical" => 0,
        "warning" => 2,
        "info" => 3,
        other => panic!("severity {other:?} has no Azure mapping"),
    }
}

/// ARM evaluates strings starting with `[` as template expressions; `[[` escapes.
fn arm_literal(s: &str) -> Value {
    if s.starts_with('[') {
        Value::String(format!("[{s}"))
    } else {
        Value::String(s.to_string())
    }
}

fn arm_map(v: &Value) -> Value {
    let map = v
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), arm_literal(v.as_str().expect("string value"))))
                .collect()
        })
        .unwrap_or_default();
    Value::Object(map)
}

/// The ARM template equivalent to the YAML rule files: one
/// Microsoft.AlertsManagement/prometheusRuleGroups resource per YAML group,
/// the same names, expressions, `for`, labels and annotations; Azure-only
/// fields (severity number, auto-resolve, action group) added.
fn azure_rule_groups() -> Value {
    let mut resources = Vec::new();
    for file in rule_files() {
        for group in load_groups(&file) {
            let rules: Vec<Value> = group
                .rules
                .iter()
                .map(|r| {
                    let mut rule = serde_json::Map::new();
                    if let Some(record) = &r.record {
                        rule.insert("record".into(), json!(record));
                    }
                    if let Some(alert) = &r.alert {
                        rule.insert("alert".into(), json!(alert));
                    }
                    rule.insert("expression".into(), arm_literal(r.expr.trim_end()));
                    rule.insert("enabled".into(), json!(true));
                    if let Some(labels) = r.raw.get("labels") {
                        rule.insert("labels".into(), arm_map(labels));
                    }
                    if r.alert.is_some() {
                        if let Some(f) = str_of(&r.raw, "for") {
                            rule.insert("for".into(), json!(iso8601(f)));
                        }
                        let severity = str_of(&r.raw["labels"], "severity")
                            .unwrap_or_else(|| panic!("{:?} has no severity", r.alert));
                        rule.insert("severity".into(), json!(azure_severity(severity)));
                        if let Some(annotations) = r.raw.get("annotations") {
                            let mut annotations = arm_map(annotations);
                            // The runbook base is a template parameter.
                            if let Some(url) = annotations.get_mut("runbook_url") {
                                let anchor = url
                                    .as_str()
                                    .and_then(|u| u.strip_prefix(RUNBOOK_BASE))
                                    .unwrap_or_else(|| panic!("{:?}: runbook_url {url}", r.alert))
                                    .to_string();
                                *url = json!(format!(
                                    "[concat(parameters('runbookBaseUrl'), '{anchor}')]"
                                ));
                            }
                            rule.insert("annotations".into(), annotations);
                        }
                        rule.insert(
                            "resolveConfiguration".into(),
                            json!({"autoResolved": true, "timeToResolve": "PT5M"}),
                        );
                        rule.insert(
                            "actions".into(),
                            json!("[if(empty(parameters('actionGroupId')), createArray(), createArray(createObject('actionGroupId', parameters('actionGroupId'))))]"),
                        );
                    }
                    Value::Object(rule)
                })
                .collect();
            resources.push(json!({
                "type": "Microsoft.AlertsManagement/prometheusRuleGroups",
                "apiVersion": "2023-03-01",
                "name": format!("[concat(parameters('ruleGroupPrefix'), '{}')]", group.name),
                "location": "[parameters('location')]",
                "properties": {
                    "description": format!("pgdrill rule group {} (generated from {})", group.name, rel(&file)),
                    "enabled": true,
                    "scopes": ["[parameters('azureMonitorWorkspace')]"],
                    "clusterName": "[if(empty(parameters('clusterName')), null(), parameters('clusterName'))]",
                    "interval": AZURE_INTERVAL,
                    "rules": rules,
                }
            }));
        }
    }
    json!({
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "metadata": {
            "description": "pgdrill recording rules and alerts for Azure Monitor managed service for Prometheus. GENERATED from prometheus/rules/*.yml by tests/it/rules/azure.rs; do not edit, regenerate with: PGDRILL_BLESS=1 cargo test azure_rule_groups"
        },
        "parameters": {
            "azureMonitorWorkspace": {"type": "string", "metadata": {"description": "Resource ID of the Azure Monitor workspace that stores the pgdrill metrics"}},
            "location": {"type": "string", "defaultValue": "[resourceGroup().location]", "metadata": {"description": "Location of the rule groups (the workspace's region)"}},
            "clusterName": {"type": "string", "defaultValue": "", "metadata": {"description": "Restrict the rules to the metrics of this AKS/Arc cluster (empty: all data in the workspace)"}},
            "actionGroupId": {"type": "string", "defaultValue": "", "metadata": {"description": "Resource ID of the action group notified by the alerts (empty: none)"}},
            "ruleGroupPrefix": {"type": "string", "defaultValue": "", "metadata": {"description": "Prefix of the rule group names, to deploy several copies into one resource group"}},
            "runbookBaseUrl": {"type": "string", "defaultValue": RUNBOOK_BASE, "metadata": {"description": "URL of your published copy of docs/runbooks.md; the alerts link to its #pgdrill... anchors (one per alert)"}}
        },
        "resources": resources,
    })
}

#[test]
fn rules_stay_within_azure_managed_prometheus_limits() {
    let mut problems = Vec::new();
    for file in rule_files() {
        for group in load_groups(&file) {
            for key in ["interval", "limit", "query_offset"] {
                if group.raw.get(key).is_some() {
                    problems.push(format!(
                        "group {}: `{key}` (Azure sets the interval itself; the others are not accepted)",
                        group.name
                    ));
                }
            }
            if group.rules.len() > AZURE_MAX_RULES_PER_GROUP {
                problems.push(format!(
                    "group {}: {} rules, Azure accepts {AZURE_MAX_RULES_PER_GROUP}",
                    group.name,
                    group.rules.len()
                ));
            }
            for rule in &group.rules {
                let name = rule
                    .record
                    .clone()
                    .or(rule.alert.clone())
                    .unwrap_or_default();
                if let Some(map) = rule.raw.as_object() {
                    for key in map.keys() {
                        let allowed = ["record", "alert", "expr", "for", "labels", "annotations"];
                        if !allowed.contains(&key.as_str()) {
                            problems.push(format!(
                                "{}/{name}: `{key}` is not accepted by Azure",
                                rule.group
                            ));
                        }
                    }
                }
                if rule.raw["labels"].as_object().is_some_and(|l| l.len() > 10) {
                    problems.push(format!("{name}: more than 10 labels"));
                }
                for (k, v) in rule.raw["annotations"].as_object().into_iter().flatten() {
                    if v.as_str().is_some_and(|s| s.len() > 1024) {
                        problems.push(format!("{name}: annotation {k} longer than 1024"));
                    }
                }
                if let Some(f) = str_of(&rule.raw, "for") {
                    iso8601(f);
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn azure_rule_groups_match_the_yaml() {
    let mut want = serde_json::to_string_pretty(&azure_rule_groups()).expect("serialize");
    want.push('\n');
    let path = repo().join(AZURE_TEMPLATE);
    if std::env::var_os("PGDRILL_BLESS").is_some() {
        fs::write(&path, &want).expect("write the Azure template");
        return;
    }
    let have = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{AZURE_TEMPLATE} is out of date with prometheus/rules; regenerate it with \
         `PGDRILL_BLESS=1 cargo test azure_rule_groups` and commit the result"
    );
    // Azure's own limits, checked on the generated resources.
    let doc: Value = serde_json::from_str(&have).expect("valid JSON");
    for res in doc["resources"].as_array().expect("resources") {
        let rules = res["properties"]["rules"].as_array().expect("rules");
        assert!(!rules.is_empty() && rules.len() <= AZURE_MAX_RULES_PER_GROUP);
        for r in rules {
            assert!(r.get("record").is_some() != r.get("alert").is_some());
            if let Some(s) = r.get("severity") {
                assert!(s.as_u64().is_some_and(|s| s <= 4));
            }
        }
    }
}
