//! Fences between tenants, and between nodes, attacked end to end against a real `shoal control`:
//! each test makes the attack, asserts the documented refusal, and checks that the victim is
//! unaffected.

mod common;

use common::ControlProcess;
use shoal_api::resources::instance::{InstanceStatus, Phase};
use shoal_api::token::TokenRequest;
use shoal_api::{AnyObject, Kind, Name, Reason};

fn instance_on(name: &str, node: &str) -> AnyObject {
    AnyObject::from_json(
        Kind::Instance,
        &serde_json::json!({"apiVersion": "shoal.dev/v1", "kind": "Instance",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"module": format!("sha256:{}", "0".repeat(64)), "node": node}}),
    )
    .unwrap()
}

#[tokio::test]
async fn a_node_cannot_report_on_an_instance_bound_to_another_node() {
    let dir = tempfile::tempdir().unwrap();
    let control = ControlProcess::start(dir.path(), &[]);
    let admin = control.client();
    let mut nodes = Vec::new();
    for name in ["n1", "n2"] {
        let request = TokenRequest { name: Name::new(name).unwrap(), namespaces: Vec::new(), node: true };
        nodes.push(admin.with_token(&admin.create_token(&request).await.unwrap().token));
    }
    let victim = admin.create(&instance_on("victim", "n2")).await.unwrap();

    let mut forged = victim.clone();
    let AnyObject::Instance(i) = &mut forged else { unreachable!() };
    i.status = Some(InstanceStatus { phase: Phase::Failed, ..Default::default() });
    let refused = nodes[0].put_status(&forged).await.unwrap_err();
    assert_eq!(refused.reason(), Some(Reason::Forbidden), "{refused}");
    assert!(refused.to_string().contains("bound elsewhere"), "{refused}");

    // The instance is as it was, and its own node still reports on it.
    let now = admin.get(Kind::Instance, Some("default"), "victim").await.unwrap();
    assert_eq!(now, victim, "the refused report changed the instance");
    let AnyObject::Instance(i) = &mut forged else { unreachable!() };
    i.status = Some(InstanceStatus { phase: Phase::Running, ..Default::default() });
    let AnyObject::Instance(reported) = nodes[1].put_status(&forged).await.unwrap() else { unreachable!() };
    assert_eq!(reported.status.unwrap().phase, Phase::Running);
}
