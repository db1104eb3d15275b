//! issue 13 item 14: `helm upgrade` brings the new CRD schema. Helm never upgrades `crds/`, so the
//! operator's leader applies its own CRD before reconciling (crates/smsc-operator/src/crd.rs).
//! Here that step runs against the real API server, from the CRD chart 0.1.0 installed
//! (tests/e2e/fixtures/crd/smscclusters-chart-0.1.0.yaml, the released file) to this schema.
//!
//! Other tests share the control plane and its `smscclusters.smsc.io`, so this one moves both CRDs
//! to a group of its own: same schemas, another name.

use std::time::Duration;

use anyhow::{ensure, Context};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::ResourceExt;
use serde_json::{json, Value};
use smsc_e2e::{control_plane, fixture, wait_for, ControlPlane};
use smsc_operator::crd::{ensure as ensure_crd, Outcome, VERSION_ANNOTATION};

/// The CRD moved to `group`.
fn regroup(mut crd: CustomResourceDefinition, group: &str) -> CustomResourceDefinition {
    crd.metadata.name = Some(format!("{}.{group}", crd.spec.names.plural));
    crd.spec.group = group.to_string();
    crd
}

/// The released chart 0.1.0 CRD, parsed by kubectl (the harness has no YAML parser).
fn released_crd(cp: &ControlPlane) -> anyhow::Result<CustomResourceDefinition> {
    let json = cp.run(
        cp.kubectl()?
            .args(["create", "--dry-run=client", "-o", "json", "-f"])
            .arg(fixture("crd/smscclusters-chart-0.1.0.yaml")),
    )?;
    Ok(serde_json::from_str(&json)?)
}

fn has_pod_security_context(crd: &CustomResourceDefinition) -> bool {
    let v = serde_json::to_value(crd).unwrap_or(Value::Null);
    !v["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["pod"]
        ["properties"]["securityContext"]
        .is_null()
}

async fn established(api: &Api<CustomResourceDefinition>, name: &str) -> anyhow::Result<()> {
    wait_for(&format!("CRD {name} Established"), Duration::from_secs(60), || async {
        let crd = api.get(name).await?;
        let ok = crd
            .status
            .and_then(|s| s.conditions)
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"));
        Ok::<_, kube::Error>(ok.then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn the_operator_upgrades_the_released_crd_and_never_downgrades() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    let client = cp.client().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let group = format!("crdup{}.smsc.io", std::process::id());
    let old = regroup(released_crd(cp)?, &group);
    let new = regroup(<smsc_api::crd::SmscCluster as kube::CustomResourceExt>::crd(), &group);
    let name = old.name_any();
    ensure!(
        !has_pod_security_context(&old) && has_pod_security_context(&new),
        "the fixture predates spec.pod.securityContext"
    );

    // A CRD that is not there is not created.
    assert_eq!(ensure_crd(&crds, new.clone(), "0.1.0").await?, Outcome::Missing);
    ensure!(crds.get_opt(&name).await?.is_none(), "ensure created a CRD");

    crds.create(&PostParams::default(), &old).await.context("installing the released CRD")?;
    let ns = cp.namespace("crd-upgrade").await?;
    let result = async {
        established(&crds, &name).await?;
        assert_eq!(ensure_crd(&crds, new.clone(), "0.1.0").await?, Outcome::Applied);
        let applied = crds.get(&name).await?;
        ensure!(has_pod_security_context(&applied), "the new schema is served");
        ensure!(applied.annotations().get(VERSION_ANNOTATION).map(String::as_str) == Some("0.1.0"));
        ensure!(
            applied.managed_fields().iter().any(|m| m.manager.as_deref() == Some("smsc-operator")),
            "applied under the operator's field manager"
        );
        established(&crds, &name).await?;

        // A field only the new schema knows is stored, not pruned.
        let gvk = GroupVersionKind::gvk(&group, "v1alpha1", "SmscCluster");
        let objs: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), ns.name(), &ApiResource::from_gvk(&gvk));
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": format!("{group}/v1alpha1"),
            "kind": "SmscCluster",
            "metadata": { "name": "sms" },
            "spec": {
                "routing": { "defaultChain": ["sim"] },
                "pod": { "securityContext": { "runAsUser": 4242 } }
            }
        }))?;
        // The API server's discovery of the new schema can lag the CRD update by a moment.
        let kept = wait_for("the new field kept by the served schema", Duration::from_secs(30), || {
            let (objs, obj) = (objs.clone(), obj.clone());
            async move {
                let _ = objs.delete("sms", &DeleteParams::default()).await;
                let made = objs.create(&PostParams::default(), &obj).await?;
                Ok::<_, kube::Error>(
                    (made.data["spec"]["pod"]["securityContext"]["runAsUser"] == 4242).then_some(made),
                )
            }
        })
        .await?;
        ensure!(kept.data["spec"]["pod"]["securityContext"]["runAsUser"] == 4242);

        // A newer operator's CRD is left alone: the old schema "applied" by 0.1.0 over a 9.0.0 one
        // changes nothing.
        let bump = json!({ "metadata": { "annotations": { VERSION_ANNOTATION: "9.0.0" } } });
        crds.patch(&name, &PatchParams::default(), &Patch::Merge(&bump)).await?;
        assert_eq!(ensure_crd(&crds, old.clone(), "0.1.0").await?, Outcome::Newer("9.0.0".into()));
        ensure!(has_pod_security_context(&crds.get(&name).await?), "a newer CRD was downgraded");
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let deleted = crds.delete(&name, &DeleteParams::default()).await;
    result?;
    deleted?;
    Ok(())
}
