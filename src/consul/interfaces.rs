//! Which IP address a service is registered with: ContainerPilot's interface specs
//! (docs/containerpilot.md, "Interface specs"), walked in order, first match wins.
//! pilot's default differs: on an Apptainer host `eth0` rarely exists and CP's fallback picks
//! the alphabetically first interface (often a docker bridge), so pilot takes the first
//! non-loopback IPv4 of an interface that is up, then any IPv4, then loopback.

// The spec syntax lives in crate::ifspec, below both config and consul.
pub use crate::ifspec::{Spec, parse};
use std::net::IpAddr;

#[derive(Debug, Clone)]
pub struct Addr {
    pub interface: String,
    pub ip: IpAddr,
    pub up: bool,
}

fn in_cidr(ip: &IpAddr, net: &IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(*a) & mask == u32::from(*n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(*a) & mask == u128::from(*n) & mask
        }
        _ => false,
    }
}

/// Sorted as ContainerPilot sorts: by interface name, then by address bytes (v4 as v6-mapped).
fn sorted(addrs: &[Addr]) -> Vec<Addr> {
    let mut v = addrs.to_vec();
    let key = |ip: &IpAddr| match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    };
    v.sort_by(|a, b| a.interface.cmp(&b.interface).then(key(&a.ip).cmp(&key(&b.ip))));
    v
}

fn find(spec: &Spec, addrs: &[Addr]) -> Option<IpAddr> {
    let addrs = sorted(addrs);
    match spec {
        Spec::Static(ip) => Some(*ip),
        Spec::Family { v6 } => addrs.iter().find(|a| a.ip.is_ipv6() == *v6 && !a.ip.is_loopback()).map(|a| a.ip),
        Spec::Named { name, v6 } => addrs.iter().find(|a| a.interface == *name && a.ip.is_ipv6() == *v6).map(|a| a.ip),
        Spec::Indexed { name, index } => addrs.iter().filter(|a| a.interface == *name).nth(*index).map(|a| a.ip),
        Spec::Cidr { net, bits } => addrs.iter().find(|a| in_cidr(&a.ip, net, *bits)).map(|a| a.ip),
    }
}

/// The address for a list of specs, or an error listing what was there.
pub fn choose(specs: &[String], addrs: &[Addr]) -> Result<IpAddr, String> {
    if specs.is_empty() {
        return default_choice(addrs);
    }
    for s in specs {
        if let Some(ip) = find(&parse(s)?, addrs) {
            return Ok(ip);
        }
    }
    let have: Vec<String> = sorted(addrs).iter().map(|a| format!("{}:{}", a.interface, a.ip)).collect();
    Err(format!("none of the interface specs {specs:?} matches an address here (addresses: {})", have.join(", ")))
}

fn default_choice(addrs: &[Addr]) -> Result<IpAddr, String> {
    let v4 = |a: &&Addr| a.ip.is_ipv4() && !a.ip.is_loopback();
    addrs
        .iter()
        .filter(v4)
        .find(|a| a.up)
        .or_else(|| addrs.iter().find(v4))
        .or_else(|| addrs.iter().find(|a| a.ip.is_loopback() && a.ip.is_ipv4()))
        .map(|a| a.ip)
        .ok_or_else(|| "this host has no IPv4 address to register a service with; set 'interfaces'".to_string())
}

/// The host's addresses, in the order the kernel lists them.
pub fn local_addresses() -> Vec<Addr> {
    let Ok(list) = nix::ifaddrs::getifaddrs() else { return Vec::new() };
    list.filter_map(|ifa| {
        let sa = ifa.address?;
        let ip = if let Some(v4) = sa.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else {
            IpAddr::V6(sa.as_sockaddr_in6()?.ip())
        };
        let up = ifa.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
        Some(Addr { interface: ifa.interface_name, ip, up })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> Vec<Addr> {
        let a = |i: &str, ip: &str, up: bool| Addr { interface: i.into(), ip: ip.parse().unwrap(), up };
        vec![
            a("lo", "127.0.0.1", true),
            a("lo", "::1", true),
            a("docker0", "172.17.0.1", false),
            a("eno1", "10.1.2.3", true),
            a("eno1", "fe80::1", true),
            a("eno1", "2001:db8::5", true),
        ]
    }

    fn pick(specs: &[&str]) -> Result<String, String> {
        let specs: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
        choose(&specs, &addrs()).map(|ip| ip.to_string())
    }

    #[test]
    fn container_pilot_specs() {
        assert_eq!(pick(&["eno1"]).unwrap(), "10.1.2.3");
        assert_eq!(pick(&["eno1:inet6"]).unwrap(), "2001:db8::5");
        assert_eq!(pick(&["lo:inet"]).unwrap(), "127.0.0.1");
        assert_eq!(pick(&["inet"]).unwrap(), "172.17.0.1", "CP order: by interface name");
        assert_eq!(pick(&["eth0:inet", "10.0.0.0/8"]).unwrap(), "10.1.2.3");
        assert_eq!(pick(&["static:192.168.1.100"]).unwrap(), "192.168.1.100");
        assert_eq!(pick(&["eno1[0]"]).unwrap(), "10.1.2.3");
        assert_eq!(pick(&["eno1[1]"]).unwrap(), "2001:db8::5");
        let e = pick(&["eth0"]).unwrap_err();
        assert!(e.contains("eno1:10.1.2.3"), "{e}");
    }

    #[test]
    fn default_prefers_an_interface_that_is_up() {
        assert_eq!(pick(&[]).unwrap(), "10.1.2.3");
        let only_lo = vec![Addr { interface: "lo".into(), ip: "127.0.0.1".parse().unwrap(), up: true }];
        assert_eq!(choose(&[], &only_lo).unwrap().to_string(), "127.0.0.1");
    }

    #[test]
    fn bad_specs_are_explained() {
        for s in ["eth0:inet5", "eth0[-1]", "127.0.0.1", "", "!", "static:12", "br-x", "10.0.0.0/33"] {
            assert!(parse(s).is_err(), "{s} should be rejected");
        }
    }
}
