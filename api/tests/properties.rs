//! Property tests of everything that parses what a user or a client sends: manifests (whole,
//! and valid ones with bytes changed), objects as JSON for every kind, quantities, label
//! selectors, names and cron schedules. Each takes arbitrary input without panicking, refuses
//! with an error that says where, and where a value prints and parses back, it comes back
//! the same. (Issue 17's fuzzed inputs, the part that runs in CI.)

use std::path::Path;

use proptest::prelude::*;
use shoal_api::quantity::{Cpu, MAX_CPU_MILLI, MAX_MEMORY, Memory};
use shoal_api::resources::cronjob::Schedule;
use shoal_api::selector::LabelSelector;
use shoal_api::{AnyObject, Kind, Name};

const GOOD: &str = "apiVersion: shoal.dev/v1
kind: Workload
metadata:
  name: hello
  namespace: default
  labels: {app: hello}
spec:
  module: sha256:0000000000000000000000000000000000000000000000000000000000000000
  replicas: 3
  resources: {memory: 32Mi, cpu: 250m}
  env:
  - name: GREETING
    value: hi
  rollout: {maxSurge: 1, maxUnavailable: 0}
---
apiVersion: shoal.dev/v1
kind: Namespace
metadata:
  name: shop
spec:
  quota: {instances: 10, memory: 1Gi}
";

const KINDS: [Kind; 10] = [
    Kind::Namespace,
    Kind::Workload,
    Kind::Instance,
    Kind::Service,
    Kind::Node,
    Kind::Event,
    Kind::Secret,
    Kind::Config,
    Kind::Job,
    Kind::CronJob,
];

/// Checks a parse's errors: each names a line and column inside the text.
fn check_errors(text: &str, parsed: Result<Vec<shoal_api::manifest::Manifest>, shoal_api::manifest::ManifestErrors>) {
    if let Err(errors) = parsed {
        assert!(!errors.0.is_empty(), "a failed parse says why");
        // YAML breaks lines at CR, NEL, LS and PS too, not only at LF.
        let breaks = text.chars().filter(|c| matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}')).count();
        let lines = breaks + 1;
        for e in &errors.0 {
            assert!(e.line >= 1 && e.line <= lines + 1, "line {} of a {lines}-line text: {e}", e.line);
            assert!(e.column >= 1, "column {}: {e}", e.column);
            assert!(!e.message.is_empty());
        }
    }
}

proptest! {
    // No failure files: a failure prints its minimal input, to be kept as a unit test.
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_text_parses_or_fails_with_located_errors(text in "\\PC{0,400}") {
        check_errors(&text, shoal_api::manifest::parse_str(Path::new("any.yaml"), &text));
    }

    #[test]
    fn a_valid_manifest_with_bytes_changed_parses_or_fails_with_located_errors(
        edits in proptest::collection::vec((0..GOOD.len(), any::<u8>()), 1..8)
    ) {
        let mut bytes = GOOD.as_bytes().to_vec();
        for (at, byte) in edits {
            bytes[at] = byte;
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        check_errors(&text, shoal_api::manifest::parse_str(Path::new("edited.yaml"), &text));
    }

    #[test]
    fn any_json_body_is_an_object_or_an_error_for_every_kind(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        for kind in KINDS {
            let _ = AnyObject::from_json_slice(kind, &body);
        }
    }

    #[test]
    fn json_shaped_like_an_object_is_checked_without_panicking(
        name in "[a-z0-9-]{0,70}",
        replicas in any::<i64>(),
        memory in "\\PC{0,12}",
        field in "[a-zA-Z]{1,12}",
    ) {
        let body = serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Workload",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"module": "app.wasm", "replicas": replicas, "resources": {"memory": memory}, field: 1}});
        let bytes = serde_json::to_vec(&body).unwrap();
        if let Ok(object) = AnyObject::from_json_slice(Kind::Workload, &bytes) {
            // Validation decides without panicking, whatever the values.
            let _ = object.validate();
            prop_assert!(Name::new(object.meta().name.as_str()).is_ok(), "a parsed object has a valid name");
        }
    }

    #[test]
    fn memory_prints_and_parses_back(bytes in 0..=MAX_MEMORY) {
        let memory = Memory(bytes);
        prop_assert_eq!(memory.to_string().parse::<Memory>().unwrap(), memory);
    }

    #[test]
    fn cpu_prints_and_parses_back(milli in 0..=MAX_CPU_MILLI) {
        let cpu = Cpu(milli);
        prop_assert_eq!(cpu.to_string().parse::<Cpu>().unwrap(), cpu);
    }

    #[test]
    fn any_quantity_text_parses_within_bounds_or_fails(text in "\\PC{0,24}") {
        if let Ok(memory) = text.parse::<Memory>() {
            prop_assert!(memory.0 <= MAX_MEMORY);
        }
        if let Ok(cpu) = text.parse::<Cpu>() {
            prop_assert!(cpu.0 <= MAX_CPU_MILLI);
        }
    }

    #[test]
    fn a_selector_that_parses_prints_and_parses_back(text in "[a-z!=,. /-]{0,40}") {
        if let Ok(selector) = text.parse::<LabelSelector>() {
            let again: LabelSelector = selector.to_string().parse().unwrap();
            prop_assert_eq!(again, selector);
        }
    }

    #[test]
    fn any_selector_text_parses_or_fails(text in "\\PC{0,80}") {
        let _ = text.parse::<LabelSelector>();
    }

    #[test]
    fn a_name_is_accepted_only_as_a_dns_label(text in "\\PC{0,80}") {
        if let Ok(name) = Name::new(text.clone()) {
            let s = name.as_str();
            prop_assert!(!s.is_empty() && s.len() <= 63, "{:?}", s);
            prop_assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'), "{:?}", s);
            prop_assert!(!s.starts_with('-') && !s.ends_with('-'), "{:?}", s);
        }
    }

    #[test]
    fn any_cron_schedule_parses_or_fails_and_a_parsed_one_finds_a_next_time_or_none(
        schedule in "[0-9*/,\\- A-Z?LW#]{0,40}",
        zone in proptest::option::of("[A-Za-z/_+-]{0,20}"),
    ) {
        if let Ok(parsed) = Schedule::parse(&schedule, zone.as_deref()) {
            let _ = parsed.next(std::time::SystemTime::now());
        }
    }
}
