//! Test harness: runs the real `panoptes-devbroker` binary as a child process.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running devbroker, killed on drop.
pub struct DevBroker {
    pub child: Child,
    pub bootstrap: String,
    /// `host:port` of the control API.
    pub control: String,
    pub stdin: Option<ChildStdin>,
}

impl DevBroker {
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_panoptes-devbroker"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn devbroker");
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for _ in 0..2 {
                match lines.next() {
                    Some(Ok(l)) => {
                        let _ = tx.send(l);
                    }
                    _ => return,
                }
            }
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let next = || {
            rx.recv_timeout(Duration::from_secs(20))
                .expect("devbroker did not print its two lines in time")
        };
        let b = next();
        let c = next();
        let bootstrap = b
            .strip_prefix("BOOTSTRAP=")
            .expect("BOOTSTRAP line")
            .to_owned();
        let control = c
            .strip_prefix("CONTROL=http://")
            .expect("CONTROL line")
            .trim_end_matches('/')
            .to_owned();
        assert!(!bootstrap.is_empty());
        DevBroker {
            child,
            bootstrap,
            control,
            stdin,
        }
    }

    /// Sends an HTTP/1.1 request to the control API; returns status and body.
    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        http(&self.control, method, path, body)
    }

    pub fn json(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let (s, b) = self.http(method, path, body);
        let v = serde_json::from_str(&b).unwrap_or_else(|e| panic!("non-JSON body {b:?}: {e}"));
        (s, v)
    }
}

impl Drop for DevBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect control");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("read response");
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let (head, rest) = resp.split_once("\r\n\r\n").expect("HTTP response");
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}
