//! Counts every request the operator's kube [`Client`](kube::Client) sends, by verb and resource,
//! as `smsc_operator_api_requests_total` (a tower layer on the client's service stack).
//!
//! The verb follows the API server's audit vocabulary (get, list, watch, create, update, patch,
//! delete, deletecollection), derived from the method and the path, so the figures read like the
//! server's own request metrics.

use std::sync::Arc;

use ::http::{Method, Request, Uri};
use tower::util::MapRequestLayer;

use crate::metrics::{Metrics, RequestLabels};

/// Verb and resource of a request, e.g. ("patch", "smscclusters/status").
/// Non-resource paths (/version, /apis) keep their path as the resource.
pub fn classify(method: &Method, uri: &Uri) -> (&'static str, String) {
    let segs: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let rest = match segs.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => &[][..],
    };
    // namespaces/<ns>/<resource>... ; a bare namespaces/<name> is the Namespace itself.
    let rest = match rest {
        ["namespaces", _ns, inner @ ..] if !inner.is_empty() => inner,
        r => r,
    };
    let (resource, named) = match rest {
        [] => (uri.path().to_string(), false),
        [res] => (res.to_string(), false),
        [res, _name] => (res.to_string(), true),
        [res, _name, sub, ..] => (format!("{res}/{sub}"), true),
    };
    let watch = uri.query().is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = match *method {
        Method::GET if watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    };
    (verb, resource)
}

/// Does this verb change state on the server?
pub fn is_write(verb: &str) -> bool {
    matches!(verb, "create" | "update" | "patch" | "delete" | "deletecollection")
}

/// The layer for [`kube::client::ClientBuilder::with_layer`]: counts each request as it is sent
/// (retries and failures included: they cost the API server as much).
pub fn layer<B>(
    metrics: Arc<Metrics>,
) -> MapRequestLayer<impl FnMut(Request<B>) -> Request<B> + Clone + Send + Sync + 'static> {
    MapRequestLayer::new(move |req: Request<B>| {
        let (verb, resource) = classify(req.method(), req.uri());
        metrics.requests.get_or_create(&RequestLabels { verb: verb.to_string(), resource }).inc();
        req
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(method: Method, uri: &str) -> (&'static str, String) {
        let uri: Uri = uri.parse().unwrap_or_else(|e| panic!("{uri}: {e}"));
        classify(&method, &uri)
    }

    #[test]
    fn verbs_and_resources_from_method_and_path() {
        let g = |u| c(Method::GET, u);
        assert_eq!(g("/apis/apps/v1/namespaces/ns/deployments/sms"), ("get", "deployments".into()));
        assert_eq!(
            g("/apis/apps/v1/namespaces/ns/deployments?labelSelector=a"),
            ("list", "deployments".into())
        );
        assert_eq!(
            g("/apis/apps/v1/deployments?watch=true&resourceVersion=5"),
            ("watch", "deployments".into())
        );
        assert_eq!(g("/api/v1/namespaces/ns/pods?watch=1"), ("watch", "pods".into()));
        assert_eq!(g("/api/v1/namespaces/ns"), ("get", "namespaces".into()));
        assert_eq!(g("/api/v1/namespaces"), ("list", "namespaces".into()));
        assert_eq!(g("/version"), ("list", "/version".into()));
        assert_eq!(
            c(Method::PATCH, "/apis/smsc.io/v1alpha1/namespaces/ns/smscclusters/sms/status?fieldManager=x"),
            ("patch", "smscclusters/status".into())
        );
        assert_eq!(
            c(Method::POST, "/apis/events.k8s.io/v1/namespaces/ns/events"),
            ("create", "events".into())
        );
        assert_eq!(
            c(Method::PUT, "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l"),
            ("update", "leases".into())
        );
        assert_eq!(c(Method::DELETE, "/api/v1/namespaces/ns/configmaps/x"), ("delete", "configmaps".into()));
        assert_eq!(
            c(Method::DELETE, "/api/v1/namespaces/ns/configmaps"),
            ("deletecollection", "configmaps".into())
        );
    }

    #[test]
    fn writes_are_the_mutating_verbs() {
        for v in ["create", "update", "patch", "delete", "deletecollection"] {
            assert!(is_write(v), "{v}");
        }
        for v in ["get", "list", "watch", "other"] {
            assert!(!is_write(v), "{v}");
        }
    }

    #[test]
    fn the_layer_counts_each_request() {
        use tower::{Layer, Service, ServiceExt};
        let metrics = Arc::new(Metrics::default());
        let inner = tower::service_fn(|_req: Request<()>| async { Ok::<_, std::convert::Infallible>(()) });
        let mut svc = layer::<()>(metrics.clone()).layer(inner);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(async {
            for _ in 0..2 {
                let req = Request::get("/api/v1/namespaces/ns/secrets/s")
                    .body(())
                    .unwrap_or_else(|e| panic!("{e}"));
                let ready = svc.ready().await.unwrap_or_else(|e| match e {});
                ready.call(req).await.unwrap_or_else(|e| match e {});
            }
        });
        let text = metrics.encode();
        assert!(
            text.contains("smsc_operator_api_requests_total{verb=\"get\",resource=\"secrets\"} 2"),
            "{text}"
        );
    }
}
