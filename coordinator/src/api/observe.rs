//! Counting the operator API's requests with labels no client can multiply, and answering
//! the errors axum produces by itself (`405`, `413`, ...) in the API's JSON form.
//!
//! Contract: `panoptes_coordinator_api_requests_total{route, method, code}` counts every
//! request that reaches a `/v1` route, authenticated or not. `route` is the matched route
//! template (`/v1/cameras/{id}`; unknown `/v1` paths match the catch-all `/v1/{*rest}`) or
//! `unmatched`; `method` is one of [`METHODS`] or `other`; `code` is the status this server
//! chose. So the number of series is bounded by routes × (methods + 1) × statuses, whatever
//! clients send.

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::common::{ApiError, Shared};

/// Methods that get their own label value; any other is counted as `other`.
pub const METHODS: &[Method] = &[
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
];

/// The `method` label of a request.
pub fn method_label(m: &Method) -> &'static str {
    METHODS
        .iter()
        .find(|k| *k == m)
        .map_or("other", Method::as_str)
}

/// The `route` label of a request: its matched template, or `unmatched`.
pub(crate) fn route_label(req: &Request) -> String {
    req.extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned())
}

/// The counting middleware (outermost route layer, so it sees unauthenticated requests and
/// `405`s too). Error answers without a JSON body get one.
pub(crate) async fn count(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let route = route_label(&req);
    let method = method_label(req.method());
    let resp = json_errors(next.run(req).await);
    st.requests
        .with_label_values(&[route.as_str(), method, resp.status().as_str()])
        .inc();
    resp
}

/// A client error axum answered by itself (empty or plain-text body) as `{"error": ...}`,
/// keeping its status and `Allow` header.
fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !status.is_client_error() || is_json {
        return resp;
    }
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route".to_owned(),
        StatusCode::PAYLOAD_TOO_LARGE => "request body too large".to_owned(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported content type".to_owned(),
        other => other
            .canonical_reason()
            .unwrap_or("request refused")
            .to_lowercase(),
    };
    let allow: Option<HeaderValue> = resp.headers().get(header::ALLOW).cloned();
    let mut out = ApiError(status, message).into_response();
    if let Some(a) = allow {
        out.headers_mut().insert(header::ALLOW, a);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_a_fixed_set() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        for m in ["FOO", "BREW", "PROPFIND", "TRACE", "CONNECT", "get"] {
            let m = Method::from_bytes(m.as_bytes()).unwrap();
            assert_eq!(method_label(&m), "other", "{m}");
        }
    }
}
