//! The e2e bench's IPIP path (issue 13): the same balancer and the same backend as its L2 DSR
//! path (`xlb`), reached through a second service (`be_ipip`, [`VIP_IPIP`]:80) whose one server
//! is that backend with `forward = "ipip"`, and `xlb decap` on the backend. Same hosts and hops
//! as L2 DSR, so the ratio of the two rates is what encapsulation (FIB lookup, outer header)
//! and decapsulation cost.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use anyhow::{Result, bail};

use crate::lbenv::LbEnv;

/// The IPIP path's VIP (in the harness's VIP plan, beside `VIP4` and the floor's).
pub const VIP_IPIP: Ipv4Addr = Ipv4Addr::new(10, 77, 200, 3);

/// Before the agent starts (`[global]` cannot change on a reload): the LB's address as the
/// outer source of encapsulated packets, in the config.
pub fn set_encap_source(e: &mut LbEnv) -> Result<()> {
    e.opts.encap_source = vec![e.topo.host(e.lb).ipv4.into()];
    e.write_config(&e.config_text(e.opts.backends))
}

/// Add the `be_ipip` service (server: backend `backend`, by IPIP) to the running agent's
/// config and reload it; returns the path's URL once it answers from that backend.
pub fn add_ipip_path(e: &mut LbEnv, backend: usize, hook: xlb::datapath::decap::Hook) -> Result<String> {
    let (lb, client, b) = (e.lb, e.client, e.backends[backend]);
    let vip = IpAddr::V4(VIP_IPIP);
    e.topo.enable_forwarding(lb)?;
    crate::routed_backends::resolve_next_hops(&e.topo, lb, &[b])?;
    e.topo.add_vip_on_lo(b, vip)?;
    e.add_decap(backend, &[vip], hook)?;
    e.topo.route_vip_via(client, vip, lb)?;
    let name = format!("app{}", backend + 1);
    let mut config = e.config_text(e.opts.backends);
    config.push_str(&format!(
        "\n[[service]]\nname = \"be_ipip\"\nvip = \"{VIP_IPIP}:80\"\nprotocol = \"tcp\"\n\
         stick = {{ on = \"src\", size = 1000, expire = \"30m\" }}\n\
         [[service.server]]\nname = \"{name}\"\naddress = \"{}\"\nforward = \"ipip\"\n",
        e.topo.host(b).ipv4
    ));
    e.write_config(&config)?;
    e.signal_agent(libc::SIGHUP);
    let src: IpAddr = e.topo.host(client).ipv4.into();
    let dst = SocketAddr::new(vip, 80);
    let mut last = String::new();
    let answered = e.wait_until(Duration::from_secs(15), || match e.get(src, dst) {
        Ok(served) => {
            last = served;
            last.contains(&name)
        }
        Err(err) => {
            last = format!("{err:#}");
            false
        }
    });
    if !answered {
        bail!(
            "the IPIP path to {name} did not answer within 15 s (last: {last}); agent log:\n{}",
            e.agent_log()
        );
    }
    Ok(format!("http://{dst}/"))
}
