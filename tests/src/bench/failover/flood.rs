//! A paced spoofed SYN flood from the client host: SYNs to an IPv4 VIP from the harness's
//! spoof pool (10.77.64.0/18, which the client's namespace owns: see
//! [`crate::Topology::own_spoof_pool`], so the backends' SYN-ACKs come back to it and its
//! kernel answers each with an RST), at a given rate for a given time. Bounded by both.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use crate::{
    HostId, Topology,
    packet::{Frame, TCP_SYN},
    topology::SPOOF_POOL4,
};

/// Addresses of the spoof pool used (the /18 less its network and broadcast addresses).
const POOL: u32 = (1 << (32 - SPOOF_POOL4.1)) - 2;

/// Sends SYNs to `dst` from host `client` (whose namespace must own the spoof pool) at `rate`
/// per second for `secs`, each from the next address of the pool (cycling, the source port
/// changing each cycle). Returns how many were sent.
pub fn syn_flood(
    topo: &Topology,
    client: HostId,
    dst: SocketAddrV4,
    rate: u32,
    secs: Duration,
) -> Result<u64> {
    let total = (u64::from(rate) as f64 * secs.as_secs_f64()) as u64;
    let base = u32::from(SPOOF_POOL4.0);
    topo.run_in(client, move || -> Result<u64> {
        let sock = RawSocket::open()?;
        let t0 = Instant::now();
        let mut sent = 0;
        for i in 0..total {
            // Paced per millisecond: the SYN-ACKs and RSTs the flood brings back share the
            // veth queues, and a burst of thousands overflows them.
            let due = Duration::from_secs_f64(i as f64 / f64::from(rate));
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
            if t0.elapsed() > secs + Duration::from_secs(1) {
                break;
            }
            let cycle = (i / u64::from(POOL)) as u16;
            let src = Ipv4Addr::from(base + 1 + (i % u64::from(POOL)) as u32);
            let pkt = Frame::tcp(src, 1024 + cycle % 60000, *dst.ip(), dst.port(), TCP_SYN)
                .payload(&[])
                .packet();
            if sock.send_to(&pkt, *dst.ip()) {
                sent += 1;
            }
        }
        Ok(sent)
    })?
}

/// An `IPPROTO_RAW` socket (the packets carry their own IPv4 header), closed on drop.
struct RawSocket(libc::c_int);

impl RawSocket {
    fn open() -> Result<RawSocket> {
        // SAFETY: plain syscall; the descriptor is owned by the value returned.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            bail!("raw socket: {}", std::io::Error::last_os_error());
        }
        Ok(RawSocket(fd))
    }

    /// Sends one IPv4 packet; whether all of it went.
    fn send_to(&self, pkt: &[u8], dst: Ipv4Addr) -> bool {
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(dst).to_be(),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: valid descriptor, buffer and address for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.0,
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        n == pkt.len() as isize
    }
}

impl Drop for RawSocket {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor this value owns.
        unsafe { libc::close(self.0) };
    }
}
