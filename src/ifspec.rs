//! The syntax of ContainerPilot's interface specs (`interfaces` of a job or of telemetry):
//! which address a service is registered with. Here, below both `config` (which validates a
//! config's specs when it is loaded) and `consul::interfaces` (which matches them against the
//! host's addresses), so that the config does not depend on the Consul client.

use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq)]
pub enum Spec {
    /// `inet` / `inet6`: the first non-loopback address of that family on any interface.
    Family { v6: bool },
    /// `eth0`, `eth0:inet`, `eth0:inet6`.
    Named { name: String, v6: bool },
    /// `eth0[N]`: the N-th of all the interface's addresses, sorted.
    Indexed { name: String, index: usize },
    /// `10.0.0.0/8`: the first address inside the network.
    Cidr { net: IpAddr, bits: u8 },
    /// `static:1.2.3.4`: that address.
    Static(IpAddr),
}

pub fn parse(spec: &str) -> Result<Spec, String> {
    let bad = || {
        format!(
            "'{spec}' is not an interface spec: expected inet, inet6, NAME, NAME:inet, NAME:inet6, NAME[N], a CIDR like 10.0.0.0/8, or static:IP"
        )
    };
    if let Some(ip) = spec.strip_prefix("static:") {
        return ip.parse().map(Spec::Static).map_err(|_| format!("'{spec}': '{ip}' is not an IP address"));
    }
    if let Some((net, bits)) = spec.split_once('/') {
        let net: IpAddr = net.parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits: u8 = bits.parse().ok().filter(|b| *b <= max).ok_or_else(bad)?;
        return Ok(Spec::Cidr { net, bits });
    }
    match spec {
        "inet" => return Ok(Spec::Family { v6: false }),
        "inet6" => return Ok(Spec::Family { v6: true }),
        _ => {}
    }
    let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if let Some((name, rest)) = spec.split_once('[') {
        let index = rest.strip_suffix(']').and_then(|n| n.parse().ok()).filter(|_| word(name)).ok_or_else(bad)?;
        return Ok(Spec::Indexed { name: name.into(), index });
    }
    let (name, v6) = match spec.split_once(':') {
        Some((n, "inet")) => (n, false),
        Some((n, "inet6")) => (n, true),
        Some(_) => return Err(bad()),
        None => (spec, false),
    };
    if !word(name) {
        return Err(bad());
    }
    Ok(Spec::Named { name: name.into(), v6 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(parse("eth0").unwrap(), Spec::Named { name: "eth0".into(), v6: false });
        assert_eq!(parse("eth0[1]").unwrap(), Spec::Indexed { name: "eth0".into(), index: 1 });
        assert!(matches!(parse("10.0.0.0/8").unwrap(), Spec::Cidr { bits: 8, .. }));
        assert!(parse("eth0\0").is_err());
        assert!(parse("10.0.0.0/33").is_err());
    }
}
