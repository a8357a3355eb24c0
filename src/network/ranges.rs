//! The node's pod CIDRs (CRI `UpdateRuntimeConfig`), handed to CNI as the
//! `ipRanges` capability: plugins that declare it (host-local through bridge,
//! for one) then allocate from the node's range instead of a range written in
//! the config. One range set per CIDR, as the CNI conventions define it, so a
//! dual-stack node gets an IPv4 and an IPv6 address.

use std::fmt;
use std::net::IpAddr;

use serde_json::{Value, json};

/// A dual-stack node has one CIDR per IP family, and the kubelet sends no more.
const MAX_POD_CIDRS: usize = 2;
/// Two IPv6 CIDRs with a separator fit well within this; longer input is refused
/// before it is parsed or quoted in an error.
const MAX_POD_CIDR_LEN: usize = 128;

/// One network in CIDR notation, its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not a CIDR (no /prefix)"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not a CIDR (bad address)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{text:?} is not a CIDR (prefix not 0 to {max})"))?;
        Ok(Cidr {
            addr: network(addr, prefix),
            prefix,
        })
    }
}

/// `addr` with the bits past `prefix` cleared: the kubelet's "10.244.1.7/24"
/// means 10.244.1.0/24, and host-local refuses a subnet with host bits set.
fn network(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The node's pod CIDRs, at most one per IP family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCidrs(Vec<Cidr>);

impl PodCidrs {
    /// Comma-separated CIDRs as the kubelet sends them ("10.244.1.0/24,fd00:1::/64").
    /// The error says what is wrong, without naming the field (the caller does).
    pub fn parse(text: &str) -> Result<PodCidrs, String> {
        if text.len() > MAX_POD_CIDR_LEN {
            return Err(format!(
                "{} bytes, more than the {MAX_POD_CIDR_LEN} two CIDRs need",
                text.len()
            ));
        }
        let cidrs = text
            .split(',')
            .map(|part| Cidr::parse(part.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        if cidrs.len() > MAX_POD_CIDRS {
            return Err(format!(
                "{} CIDRs; at most {MAX_POD_CIDRS}, one per IP family",
                cidrs.len()
            ));
        }
        if let [a, b] = cidrs.as_slice()
            && a.addr.is_ipv4() == b.addr.is_ipv4()
        {
            return Err(format!(
                "{a} and {b} are of one IP family; dual stack needs one of each"
            ));
        }
        Ok(PodCidrs(cidrs))
    }

    /// The `ipRanges` runtime config: one range set per CIDR.
    pub fn capability_arg(&self) -> Value {
        Value::Array(
            self.0
                .iter()
                .map(|c| json!([{ "subnet": c.to_string() }]))
                .collect(),
        )
    }
}

impl fmt::Display for PodCidrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(Cidr::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_range_set_per_cidr() {
        let cidrs = PodCidrs::parse("10.244.1.0/24, fd00:10:244:1::/64").unwrap();
        assert_eq!(
            cidrs.capability_arg(),
            json!([[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:10:244:1::/64"}]])
        );
        assert_eq!(cidrs.to_string(), "10.244.1.0/24,fd00:10:244:1::/64");
    }

    #[test]
    fn host_bits_are_cleared() {
        let cidrs = PodCidrs::parse("10.244.1.77/24,fd00::1/64").unwrap();
        assert_eq!(cidrs.to_string(), "10.244.1.0/24,fd00::/64");
        assert_eq!(
            PodCidrs::parse("0.0.0.0/0").unwrap().to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(
            PodCidrs::parse("10.1.2.3/32").unwrap().to_string(),
            "10.1.2.3/32"
        );
    }

    #[test]
    fn bad_cidrs_are_refused() {
        for bad in [
            "",
            "10.244.0.0",
            "10.244.0.0/33",
            "fd00::/129",
            "banana/8",
            "10.244.0.0/-1",
            "10.244.0.0/24,",
            "10.244.0.0/24,10.245.0.0/24",
            "10.0.0.0/24,fd00::/64,10.1.0.0/24",
        ] {
            assert!(PodCidrs::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(PodCidrs::parse(&"1".repeat(MAX_POD_CIDR_LEN + 1)).is_err());
    }
}
