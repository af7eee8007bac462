//! `escape`: a test plugin that reaches for the network. It imports `wasi:sockets` to open a
//! TCP socket per event; the agent must refuse to load it, naming that import. Not for
//! production pipelines.

use sluice_guest::{Error, Event, Verdict};
use wasip2::sockets::{
    instance_network::instance_network, network::IpAddressFamily, tcp_create_socket::create_tcp_socket,
};

#[sluice_guest::interceptor]
pub fn escape(mut ev: Event) -> Result<Verdict, Error> {
    let _network = instance_network();
    let opened = create_tcp_socket(IpAddressFamily::Ipv4).is_ok();
    ev.set_header("socket", if opened { "opened" } else { "refused" });
    Ok(Verdict::Keep(ev))
}
