//! Who is calling: bearer tokens with roles, checked before any handler runs.
//!
//! Contract:
//! - Every `/v1` request carries `Authorization: Bearer <token>`; a missing or unknown token
//!   gets `401` (with `WWW-Authenticate: Bearer`), before the body is read.
//! - A token is `viewer` (reads: `GET`, `HEAD`) or `operator` (everything); a viewer's write
//!   gets `403` and is recorded in the audit trail as denied.
//! - Tokens are compared in constant time: the SHA-256 digests of the given token and of every
//!   configured one are compared with `subtle`, all of them, so neither the length nor which
//!   token matched shows in the timing.
//! - [`Access::InsecureNoAuth`] (only reachable through `api.insecure_no_auth` on a loopback
//!   listener, see `config::ApiConfig::validate`) lets every request through as the operator
//!   `anonymous`.
//! - The handler sees the caller as a [`Caller`] request extension (for the audit trail).

use std::path::Path;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use panoptes_runtime::redact::Secret;
use panoptes_runtime::secret;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::audit::{self, AuditEntry};
use super::common::{ApiError, Shared};
use crate::config::{ApiConfig, ConfigInvalid, LEGACY_TOKEN_NAME, Role};

/// One configured token.
pub struct ApiToken {
    /// Who uses it (audit trail, logs).
    pub name: String,
    /// What it may do.
    pub role: Role,
    digest: [u8; 32],
}

impl ApiToken {
    /// A token named `name` with `role` and the value `secret`.
    pub fn new(name: impl Into<String>, role: Role, secret: &Secret) -> Self {
        Self {
            name: name.into(),
            role,
            digest: Sha256::digest(secret.expose().as_bytes()).into(),
        }
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiToken({}, {})", self.name, self.role)
    }
}

/// How requests are authenticated.
#[derive(Debug)]
pub enum Access {
    /// Bearer tokens (at least one).
    Tokens(Vec<ApiToken>),
    /// Nobody is asked for anything (loopback development only).
    InsecureNoAuth,
}

impl Access {
    /// Reads every token's value from its file or variable (`api` must have passed
    /// `ApiConfig::validate`). A missing file, an empty value or two tokens with the same
    /// value are errors: the coordinator does not start.
    pub fn from_config(api: &ApiConfig) -> Result<Self, ConfigInvalid> {
        if api.insecure_no_auth {
            return Ok(Self::InsecureNoAuth);
        }
        let mut tokens = Vec::new();
        if let Some(t) = api
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            tokens.push(ApiToken::new(
                LEGACY_TOKEN_NAME,
                Role::Operator,
                &Secret::new(t),
            ));
        }
        if let Some(path) = &api.token_file {
            let s = secret::from_file(path, "api.token_file").map_err(invalid)?;
            tokens.push(ApiToken::new(LEGACY_TOKEN_NAME, Role::Operator, &s));
        }
        for t in &api.tokens {
            let what = format!("api.tokens[{}]", t.name);
            let env = t.token_env.as_deref().unwrap_or("");
            let s = secret::require(t.token_file.as_deref().map(Path::new), env, &what)
                .map_err(invalid)?;
            tokens.push(ApiToken::new(&t.name, t.role, &s));
        }
        for (i, a) in tokens.iter().enumerate() {
            if let Some(b) = tokens[..i].iter().find(|b| b.digest == a.digest) {
                return Err(ConfigInvalid(format!(
                    "api tokens {} and {} have the same value: give each its own",
                    b.name, a.name
                )));
            }
        }
        if tokens.is_empty() {
            return Err(ConfigInvalid("the operator API has no token".into()));
        }
        Ok(Self::Tokens(tokens))
    }

    /// The token whose value is `given`, checked against every token in constant time.
    fn find(&self, given: &str) -> Option<Caller> {
        let Self::Tokens(tokens) = self else {
            return Some(Caller::anonymous());
        };
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        let mut found = None;
        for t in tokens {
            let eq: Choice = t.digest.ct_eq(&digest);
            if bool::from(eq) {
                found = Some(Caller {
                    name: t.name.clone(),
                    role: t.role,
                });
            }
        }
        found
    }
}

fn invalid(e: impl std::fmt::Display) -> ConfigInvalid {
    ConfigInvalid(e.to_string())
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Token name (`anonymous` without authentication).
    pub name: String,
    /// Its role.
    pub role: Role,
}

impl Caller {
    fn anonymous() -> Self {
        Self {
            name: "anonymous".into(),
            role: Role::Operator,
        }
    }
}

/// Whether `method` only reads.
fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD)
}

fn bearer(req: &Request) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// The authentication and authorization middleware (a route layer: it runs only for `/v1`
/// routes, and before the body is read).
pub(crate) async fn authenticate(
    State(st): State<Shared>,
    mut req: Request,
    next: Next,
) -> Response {
    let caller = match &st.access {
        Access::InsecureNoAuth => Caller::anonymous(),
        access => {
            let Some(given) = bearer(&req) else {
                st.auth_failures.with_label_values(&["missing"]).inc();
                return ApiError(
                    StatusCode::UNAUTHORIZED,
                    "missing bearer token: send the header 'Authorization: Bearer <token>' (panoptes: PANOPTES_API_TOKEN or --token-file)".into(),
                )
                .into_response();
            };
            match access.find(given) {
                Some(c) => c,
                None => {
                    st.auth_failures.with_label_values(&["invalid"]).inc();
                    return ApiError(StatusCode::UNAUTHORIZED, "invalid bearer token".into())
                        .into_response();
                }
            }
        }
    };
    if caller.role < Role::Operator && !is_read(req.method()) {
        st.auth_failures.with_label_values(&["forbidden"]).inc();
        let op = format!("{} {}", req.method(), super::route_of(&req));
        let entry = AuditEntry::denied(&caller, op, req.uri().path());
        audit::record_async(&st, entry).await;
        return ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "token {:?} has role viewer: it may only read (writes need an operator token)",
                caller.name
            ),
        )
        .into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TokenConfig;

    #[test]
    fn tokens_resolve_and_match_by_value_only() {
        let dir = tempfile::tempdir().unwrap();
        let ci = dir.path().join("ci");
        std::fs::write(&ci, "ci-token-value\n").unwrap();
        let api = ApiConfig {
            token: Some("op-token".into()),
            tokens: vec![TokenConfig {
                name: "ci".into(),
                role: Role::Viewer,
                token_file: Some(ci.clone()),
                token_env: None,
            }],
            ..ApiConfig::default()
        };
        let access = Access::from_config(&api).unwrap();
        let who = |t: &str| access.find(t).map(|c| (c.name, c.role));
        assert_eq!(who("op-token"), Some(("default".into(), Role::Operator)));
        assert_eq!(who("ci-token-value"), Some(("ci".into(), Role::Viewer)));
        assert_eq!(who("ci-token-valu"), None);
        assert_eq!(who(""), None);
        assert!(!format!("{access:?}").contains("op-token"));

        // The same value twice is refused; so is an empty file.
        std::fs::write(&ci, "op-token\n").unwrap();
        let err = Access::from_config(&api).unwrap_err().0;
        assert!(err.contains("same value"), "{err}");
        std::fs::write(&ci, "\n").unwrap();
        let err = Access::from_config(&api).unwrap_err().0;
        assert!(
            err.contains("api.tokens[ci]") && err.contains("empty"),
            "{err}"
        );
    }
}
