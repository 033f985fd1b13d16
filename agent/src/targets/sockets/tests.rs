use std::{net::TcpListener, os::fd::AsRawFd};

use super::*;

#[test]
fn a_listening_fd_of_this_process_resolves_to_its_port() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let me = std::process::id();
    let fd = u32::try_from(l.as_raw_fd()).unwrap();
    let inode = socket_inode(me, fd).expect("a socket");
    assert_eq!(listening_port(me, inode), Some(port));
    // A connected socket is no listener; an fd that is not a socket has no inode.
    let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let c_inode = socket_inode(me, u32::try_from(c.as_raw_fd()).unwrap()).unwrap();
    assert_eq!(listening_port(me, c_inode), None);
    let f = std::fs::File::open("/proc/self/stat").unwrap();
    assert_eq!(
        socket_inode(me, u32::try_from(f.as_raw_fd()).unwrap()),
        None
    );
    assert_eq!(socket_inode(me, u32::MAX), None);
}
