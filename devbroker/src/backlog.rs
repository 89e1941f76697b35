//! The mock brokers' accept backlog. librdkafka's mock cluster listens with a backlog of 5
//! (`rdkafka_mock.c`), and every connection a client makes to a front opens one to its mock
//! broker. A worker taking over 64 exactly-once partitions opens ~130 connections at once
//! (a producer each, bootstrap then broker); once 5 wait in the queue the kernel drops the
//! next SYNs, and those clients connect only after TCP's 1 s retransmission: seen as 1 s
//! added to the slowest partition's `init_transactions` or metadata in most trials of the
//! 64-partition failover benchmark (docs/benchmarks.md). Kafka itself listens with a backlog
//! of 50 (`socket.listen.backlog.size`) on a dedicated acceptor thread.
//!
//! [`widen`] finds the mock's listening sockets among this process's descriptors by their
//! port and calls `listen` on them again with [`BACKLOG`], which Linux applies to a socket
//! that is already listening.

#![allow(unsafe_code)]

use std::net::SocketAddr;

/// The backlog the mock brokers get (the kernel caps it at `net.core.somaxconn`).
pub const BACKLOG: i32 = 1024;

/// Raises the accept backlog of the listening TCP sockets of this process bound to one of
/// `brokers`' ports. Returns how many it raised.
pub fn widen(brokers: &[SocketAddr]) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut widened = 0;
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if listening_port(fd).is_some_and(|port| brokers.iter().any(|b| b.port() == port))
            // SAFETY: `listen` on a descriptor this process holds, which it only reads
            // and reconfigures (no ownership taken); a descriptor closed meanwhile fails
            // with EBADF.
            && unsafe { libc::listen(fd, BACKLOG) } == 0
        {
            widened += 1;
        }
    }
    widened
}

/// The local port of `fd` when it is a listening TCP socket.
fn listening_port(fd: i32) -> Option<u16> {
    let mut accepting: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `accepting` and `len` are valid for writes of the sizes given; a descriptor
    // that is not a socket fails with ENOTSOCK.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&raw mut accepting).cast(),
            &mut len,
        )
    };
    if r != 0 || accepting == 0 {
        return None;
    }
    // SAFETY: an all-zero `sockaddr_storage` is a valid value.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `addr` is large enough for any address and `len` says so.
    let r = unsafe { libc::getsockname(fd, (&raw mut addr).cast(), &mut len) };
    if r != 0 {
        return None;
    }
    match i32::from(addr.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a `sockaddr_in`.
            let a: &libc::sockaddr_in = unsafe { &*(&raw const addr).cast() };
            Some(u16::from_be(a.sin_port))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a `sockaddr_in6`.
            let a: &libc::sockaddr_in6 = unsafe { &*(&raw const addr).cast() };
            Some(u16::from_be(a.sin6_port))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener's backlog as the kernel reports it: `ss -ltn` shows it in Send-Q.
    fn backlog_of(port: u16) -> Option<u32> {
        let out = std::process::Command::new("ss")
            .args(["-ltnH", &format!("sport = :{port}")])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace().nth(2)?.parse().ok()
    }

    #[test]
    fn a_listening_socket_of_the_given_port_gets_the_wider_backlog() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let before = backlog_of(addr.port()).expect("ss -ltn shows the listener");
        assert_eq!(widen(&[addr]), 1);
        let after = backlog_of(addr.port()).expect("ss -ltn shows the listener");
        println!("backlog before {before}, after {after}");
        assert!(before < BACKLOG as u32, "{before}");
        assert_eq!(after, BACKLOG as u32);
        let untouched = backlog_of(other.local_addr().unwrap().port()).expect("ss -ltn");
        assert_eq!(untouched, before);
    }
}
