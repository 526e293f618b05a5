//! The PodMonitors (`deploy/kubernetes/`, `deploy/azure/`) are tested as code:
//! kubernetes-validate has no schema for custom resources, so each is validated against
//! the CRD it is written for (vendored in `tests/fixtures/crds/`), made strict the way
//! kubectl's strict field validation is (unknown fields rejected). Not validated: what the
//! CRDs do not say (e.g. that `port` names a container port of the selected pods, checked
//! here by hand) and `x-kubernetes-*` validation rules (CEL), which the PodMonitor CRDs do
//! not use. Also: one job per canary, the label limits Microsoft asks for on ama-metrics
//! PodMonitors, and the Operator's `release` label.

use std::collections::BTreeSet;
use std::fs;

use serde_json::{json, Value};

use crate::manifests::{all_documents, documents, kind, repo};

/// The v1 openAPIV3Schema of a vendored CRD, made strict: objects that list
/// their properties accept no others (what `kubectl apply --validate=strict`
/// does with unknown fields).
fn crd_schema(file: &str) -> Value {
    let crd = &documents(&repo().join("tests/fixtures/crds").join(file))[0];
    let version = crd["spec"]["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|v| v["name"] == "v1")
        .expect("v1");
    let mut schema = version["schema"]["openAPIV3Schema"].clone();
    make_strict(&mut schema);
    schema
}

fn make_strict(v: &mut Value) {
    if let Value::Object(map) = v {
        let open = map.contains_key("additionalProperties")
            || map.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        if map.contains_key("properties") && !open {
            map.insert("additionalProperties".into(), Value::Bool(false));
        }
        // `metadata` is ObjectMeta, not described by the CRD.
        map.values_mut().for_each(make_strict);
    } else if let Value::Array(items) = v {
        items.iter_mut().for_each(make_strict);
    }
}

fn validate_against(schema: &Value, doc: &Value) -> Vec<String> {
    let validator = jsonschema::validator_for(schema).expect("CRD schema compiles");
    validator
        .iter_errors(doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

#[test]
fn podmonitors_validate_against_their_crds() {
    let mut seen = BTreeSet::new();
    for (file, doc) in all_documents() {
        if kind(&doc) != "PodMonitor" {
            continue;
        }
        let crd = match doc["apiVersion"].as_str() {
            Some("monitoring.coreos.com/v1") => "monitoring.coreos.com_podmonitors.yaml",
            Some("azmonitoring.coreos.com/v1") => "azmonitoring.coreos.com_podmonitors.yaml",
            other => panic!("{}: PodMonitor of {other:?}", file.display()),
        };
        let schema = crd_schema(crd);
        let errors = validate_against(&schema, &doc);
        assert!(errors.is_empty(), "{}: {errors:#?}", file.display());
        // Not vacuous: a misspelt field and a wrong type fail.
        let mut bad = doc.clone();
        bad["spec"]["podMetricsEndpoints"][0]["intervall"] = json!("30s");
        assert!(!validate_against(&schema, &bad).is_empty());
        let mut bad = doc.clone();
        bad["spec"]["labelLimit"] = json!("63");
        assert!(!validate_against(&schema, &bad).is_empty());
        seen.insert(crd);
    }
    assert_eq!(seen.len(), 2, "one PodMonitor for each CRD: {seen:?}");
}

/// The named port a PodMonitor scrapes exists on the pods it selects, and
/// the job label comes from a pod label every canary sets.
#[test]
fn podmonitors_scrape_the_canary_pods_as_one_job_per_canary() {
    let docs = all_documents();
    let pod_templates: Vec<&Value> = docs
        .iter()
        .filter(|(_, d)| kind(d) == "Deployment")
        .map(|(_, d)| &d["spec"]["template"])
        .collect();
    assert!(!pod_templates.is_empty());
    for (file, pm) in docs.iter().filter(|(_, d)| kind(d) == "PodMonitor") {
        let spec = &pm["spec"];
        let name = file.display();
        // No relabeling that forces one job for every canary.
        for ep in spec["podMetricsEndpoints"].as_array().expect("endpoints") {
            for r in ep["relabelings"].as_array().into_iter().flatten() {
                assert_ne!(r["targetLabel"], "job", "{name}: forces the job label");
            }
            let interval = ep["interval"].as_str().expect("interval");
            assert!(
                ["15s", "30s", "60s", "1m"].contains(&interval),
                "{name}: interval {interval} is not a cadence the rules are tested at"
            );
            let port = ep["port"].as_str().expect("named port");
            for template in &pod_templates {
                let ports: Vec<&str> = template["spec"]["containers"]
                    .as_array()
                    .expect("containers")
                    .iter()
                    .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                assert!(ports.contains(&port), "{name}: no port {port} in {ports:?}");
            }
        }
        let job_label = spec["jobLabel"].as_str().expect("jobLabel");
        let selector = spec["selector"]["matchLabels"]
            .as_object()
            .expect("matchLabels");
        for template in &pod_templates {
            let labels = &template["metadata"]["labels"];
            assert!(
                labels[job_label].is_string(),
                "{name}: pods lack the job label {job_label}"
            );
            for (k, v) in selector {
                assert_eq!(
                    &labels[k], v,
                    "{name}: selector {k} does not match the pods"
                );
            }
        }
    }
}

#[test]
fn ama_metrics_podmonitor_sets_microsofts_label_limits() {
    let docs = documents(&repo().join("deploy/azure/ama-metrics-podmonitor.yaml"));
    let spec = &docs[0]["spec"];
    // Microsoft's page on ama-metrics custom resources: use the limits of its
    // templates, or samples are dropped during processing.
    assert_eq!(spec["labelLimit"], 63);
    assert_eq!(spec["labelNameLengthLimit"], 511);
    assert_eq!(spec["labelValueLengthLimit"], 1023);
}

#[test]
fn operator_podmonitor_carries_a_release_label_and_says_why() {
    let path = repo().join("deploy/kubernetes/podmonitor.yaml");
    let docs = documents(&path);
    assert!(
        docs[0]["metadata"]["labels"]["release"].is_string(),
        "kube-prometheus-stack selects PodMonitors by its release label"
    );
    let text = fs::read_to_string(&path).expect("read");
    assert!(text.contains("podMonitorSelectorNilUsesHelmValues"));
}
