//! Where a captured connection was going: the destination the sandbox dialled before the
//! namespace's redirect rule sent it to the capture port.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

/// `SO_ORIGINAL_DST` (IPv4) and `IP6T_SO_ORIGINAL_DST` (IPv6) share this number.
const SO_ORIGINAL_DST: libc::c_int = 80;

/// The destination a redirected TCP connection was dialled to. A connection made
/// straight to the capture port (not redirected) reports the port itself, which callers
/// must refuse.
pub fn original_destination(socket: &impl AsRawFd) -> io::Result<SocketAddr> {
    let fd = socket.as_raw_fd();
    // SAFETY: sockaddr_storage is plain old data; all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `storage`, which we own.
    let v4 = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_IP,
            SO_ORIGINAL_DST,
            (&raw mut storage).cast(),
            &mut len,
        )
    };
    if v4 != 0 {
        len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: as above.
        let v6 = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_IPV6,
                SO_ORIGINAL_DST,
                (&raw mut storage).cast(),
                &mut len,
            )
        };
        if v6 != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: libc::sockaddr_in = unsafe { std::ptr::read((&raw const storage).cast()) };
            Ok(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read((&raw const storage).cast()) };
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                0,
                0,
            )))
        }
        family => Err(io::Error::other(format!(
            "original destination has address family {family}"
        ))),
    }
}
