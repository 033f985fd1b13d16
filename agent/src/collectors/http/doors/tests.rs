use std::{net::TcpListener, os::fd::AsRawFd};

use super::*;

#[test]
fn a_listening_fd_is_read_once_and_again_when_its_socket_changes() {
    let me = std::process::id();
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let port_a = a.local_addr().unwrap().port();
    let fd = u32::try_from(a.as_raw_fd()).unwrap();
    let mut ports = ListenPorts::default();
    let t0 = Instant::now();
    assert_eq!(ports.port(me, fd, t0), Some(port_a));
    assert_eq!(
        ports.port(me, fd, t0 + Duration::from_millis(10)),
        Some(port_a)
    );
    // Rechecked after a second: the same socket, not read again.
    assert_eq!(
        ports.port(me, fd, t0 + Duration::from_secs(2)),
        Some(port_a)
    );
    assert_eq!(ports.lookups, 1);
    assert_eq!(ports.port(me, u32::MAX, t0), None);

    // Another listener on the same fd number: found at the next check.
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    let port_b = b.local_addr().unwrap().port();
    // SAFETY: both fds are open and owned by the listeners. dup2 closes a's socket
    // and makes a's fd number a second fd of b's socket; `a` still owns that number
    // and closes it once when it drops, `b` its own.
    let r = unsafe { libc::dup2(b.as_raw_fd(), a.as_raw_fd()) };
    assert_eq!(r, a.as_raw_fd());
    assert_eq!(
        ports.port(me, fd, t0 + Duration::from_secs(4)),
        Some(port_b)
    );
    assert_eq!(ports.lookups, 2);
}
