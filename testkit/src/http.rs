//! Small blocking HTTP helpers for the components' HTTP endpoints (control APIs, `/metrics`,
//! `/readyz`, status pages), plus reading one Prometheus series out of a `/metrics` text.

use std::time::Duration;

use anyhow::{Context, Result, bail};

/// POSTs `body` and fails on a non-2xx answer.
pub fn post_json(url: &str, body: &serde_json::Value) -> Result<()> {
    let resp = reqwest::blocking::Client::new()
        .post(url)
        .json(body)
        .timeout(Duration::from_secs(10))
        .send()
        .with_context(|| format!("POST {url}"))?;
    if !resp.status().is_success() {
        bail!(
            "POST {url}: {} {}",
            resp.status(),
            resp.text().unwrap_or_default()
        );
    }
    Ok(())
}

/// GETs a URL as text (any status); `None` if the server cannot be reached.
pub fn get_text(url: &str) -> Option<(u16, String)> {
    let resp = reqwest::blocking::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().unwrap_or_default()))
}

/// GETs a URL as JSON; `Null` if unreachable or not JSON.
pub fn get_json(url: &str) -> serde_json::Value {
    get_text(url)
        .and_then(|(_, t)| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Sends `method path` with an optional raw body (`Content-Type: application/json`) and an
/// optional bearer token; returns the status and the body text. Any status is an answer.
///
/// Runs on a thread of its own, so that async tests (inside a tokio runtime, where a blocking
/// client may not run) can call it too.
pub fn request(
    base: &str,
    method: &str,
    path: &str,
    body: Option<String>,
    token: Option<&str>,
) -> Result<(u16, String)> {
    let url = format!("{base}{path}");
    let method = reqwest::Method::from_bytes(method.as_bytes())?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<(u16, String)> {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()?;
            let mut req = client.request(method.clone(), &url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.header("content-type", "application/json").body(b);
            }
            let resp = req.send().with_context(|| format!("{method} {url}"))?;
            let status = resp.status().as_u16();
            Ok((status, resp.text().unwrap_or_default()))
        })
        .join()
        .unwrap_or_else(|_| bail!("{method} {url}: the request panicked"))
    })
}

/// [`request`] with the body parsed as JSON (a body that is not JSON comes back as a string).
pub fn request_json(
    base: &str,
    method: &str,
    path: &str,
    body: Option<String>,
    token: Option<&str>,
) -> Result<(u16, serde_json::Value)> {
    let (status, text) = request(base, method, path, body, token)?;
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    Ok((status, json))
}

/// Value of one Prometheus series (exact `name{labels}` text as rendered), summed if repeated.
pub fn metric_value(metrics_text: &str, series: &str) -> Option<f64> {
    let mut found = None;
    for line in metrics_text.lines() {
        let value = line
            .strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '));
        if let Some(v) = value.and_then(|v| v.trim().parse::<f64>().ok()) {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}
