//! The broker tests' view of the real `panoptes-devbroker` process (from `panoptes_testkit`):
//! start it with given arguments and call its control API, panicking on transport errors.

#![allow(dead_code)]

pub use panoptes_testkit::DevBroker;

/// Starts the binary with `args` and waits for its `BOOTSTRAP=`/`CONTROL=` lines.
pub fn start(args: &[&str]) -> DevBroker {
    DevBroker::start_with_args(args).expect("devbroker did not start")
}

/// The control API with test-style results.
pub trait Control {
    /// `method path` with an optional body → (status, body text).
    fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String);
    /// [`Control::http`] with the body parsed as JSON.
    fn json(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value);
}

impl Control for DevBroker {
    fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.api(method, path, body).expect("control API")
    }

    fn json(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let (s, b) = self.http(method, path, body);
        let v = serde_json::from_str(&b).unwrap_or_else(|e| panic!("non-JSON body {b:?}: {e}"));
        (s, v)
    }
}
