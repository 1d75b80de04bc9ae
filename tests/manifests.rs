//! Every broken manifest gets exactly its error: file, line, column, field path, reason.
//! Runs the real `shoal apply --dry-run`, which checks manifests (and local module files)
//! before it would contact any server.

mod common;

use std::process::Command;

const CASES: &[(&str, &str)] = &[
    ("bad-api-version.yaml", "1:13: apiVersion: unsupported apiVersion \"shoal.dev/v2\", expected \"shoal.dev/v1\""),
    (
        "bad-name.yaml",
        "4:9: metadata.name: invalid name \"Hello_World\": must consist of lower case letters, digits and '-' (a DNS-1123 label)",
    ),
    (
        "bad-quantity.yaml",
        "8:13: spec.resources.memory: invalid memory quantity \"64Mx\": expected a whole number with an optional suffix Ki, Mi, Gi, Ti, k, M, G or T",
    ),
    ("cluster-scoped-namespace.yaml", "5:3: metadata.namespace: Node is not namespaced"),
    ("missing-kind.yaml", "1:1: kind: missing field `kind`"),
    (
        "missing-module-file.yaml",
        "6:3: spec.module: cannot read tests/manifests/broken/./missing.wasm: No such file or directory (os error 2)",
    ),
    ("not-wasm.yaml", "6:3: spec.module: tests/manifests/broken/not-wasm.yaml is not a wasm module or component"),
    (
        "rollout-deadlock.yaml",
        "7:3: spec.rollout: maxSurge and maxUnavailable must not both be 0, or a rollout could never progress",
    ),
    ("replicas-bomb.yaml", "7:3: spec.replicas: 1000000 is more than the most, 10000"),
    ("second-document.yaml", "15:5: spec.env[1]: missing field `name`"),
    ("syntax-error.yaml", "5:1: did not find expected ',' or ']'"),
    (
        "unknown-field.yaml",
        "7:3: spec.replica: unknown field `replica`, expected one of `module`, `modulePullSecret`, `type`, `replicas`, `autoscale`, `resources`, `env`, `files`, `wasiConfig`, `args`, `probes`, `restartPolicy`, `placement`, `rollout`, `allowedOutboundHosts`",
    ),
    (
        "unknown-kind.yaml",
        "2:1: kind: unknown kind \"Deployment\", expected one of Namespace, Node, Secret, Config, Service, Workload, Job, CronJob, Instance, Event",
    ),
    ("wrong-type.yaml", "7:13: spec.replicas: invalid type: string \"three\", expected u32"),
];

fn apply_dry_run(path: &str) -> std::process::Output {
    Command::new(common::shoal_bin())
        .args(["apply", "--dry-run", "-f", path])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SHOAL_CONFIG", "/nonexistent/shoal-config.yaml")
        .output()
        .expect("run shoal")
}

#[test]
fn each_broken_manifest_reports_its_exact_location_and_reason() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/manifests/broken");
    let on_disk = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(on_disk, CASES.len(), "every file in {} needs an expected error here", dir.display());
    for (file, expected) in CASES {
        let path = format!("tests/manifests/broken/{file}");
        let output = apply_dry_run(&path);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{file}: apply succeeded");
        let want = format!("{path}:{expected}");
        assert!(stderr.starts_with(&want), "{file}:\n  want: {want}\n  got:  {stderr}");
    }
}

#[test]
fn all_errors_of_a_directory_are_reported_together() {
    let output = apply_dry_run("tests/manifests/broken");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), CASES.len(), "{stderr}");
}

#[test]
fn a_valid_manifest_passes_a_dry_run() {
    let output = apply_dry_run("examples/quickstart.yaml");
    let stdout = common::ok_stdout(&output);
    assert_eq!(stdout, "namespaces/demo checked (dry run)\nservices/demo/hello checked (dry run)\n");
}
