//! The network sections' checks: addresses and ports of gossip and the HTTP listener.

use super::*;

/// Whether `ip` is a loopback address (127.0.0.0/8, `::1`, or 127.x mapped into IPv6):
/// only such a listener is reachable from this machine alone, so only there may the HTTP
/// listener run without a token. The unspecified address (`0.0.0.0`, `::`) is every
/// address, so it is not loopback.
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// `http.listen` and `http.token_file`: off without a listen address; a listener that
/// other machines can reach never runs without a token.
pub(super) fn http_settings(
    h: HttpArgs,
    warnings: &mut Vec<String>,
) -> Result<Option<HttpSettings>, ConfigError> {
    let token_file = h.token_file.map(|p| expand_home(&p));
    if let Some(t) = &token_file {
        if t.as_os_str().is_empty() {
            return Err(err("http.token_file: empty path"));
        }
    }
    let Some(text) = h.listen else {
        if token_file.is_some() {
            warnings.push(
                "http.token_file is set but http.listen is not: no HTTP listener runs".into(),
            );
        }
        return Ok(None);
    };
    let listen: SocketAddr = text.trim().parse().map_err(|_| {
        err(format!(
            "http.listen: {text:?} is not ADDR:PORT (an IP address and a port, [::1]:9180 for IPv6)"
        ))
    })?;
    if listen.ip().is_multicast() {
        return Err(err(format!("http.listen: {listen} is a multicast address")));
    }
    if token_file.is_none() && !is_loopback(listen.ip()) {
        return Err(err(format!(
            "http.token_file: required when http.listen ({listen}) is not a loopback address (write a token to a file of mode 0600)"
        )));
    }
    Ok(Some(HttpSettings { listen, token_file }))
}

/// An address with an optional port (`ADDR`, `ADDR:PORT`, `[V6]:PORT`).
pub(super) fn addr_with_port(
    key: &str,
    text: &str,
    default_port: u16,
) -> Result<SocketAddr, ConfigError> {
    let text = text.trim();
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Ok(sa);
    }
    text.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, default_port))
        .map_err(|_| err(format!("{key}: {text:?} is not ADDR[:PORT]")))
}

pub(super) fn gossip_settings(g: GossipArgs, have_keys: bool) -> Result<Gossip, ConfigError> {
    let port = g.port.unwrap_or(DEFAULT_GOSSIP_PORT);
    if port == 0 {
        return Err(err("gossip.port: must be 1-65535"));
    }
    let seed_texts = g.seeds.clone().unwrap_or_default();
    let seeds = seed_texts
        .iter()
        .map(|s| Seed::parse(s, port).map_err(|e| err(format!("gossip.seeds: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let advertise = match g.advertise {
        Some(t) => {
            let a = addr_with_port("gossip.advertise", &t, port)?;
            if a.ip().is_unspecified() || a.ip().is_multicast() {
                return Err(err(format!(
                    "gossip.advertise: {a} is not an address other hosts can reach"
                )));
            }
            Some(a)
        }
        None => None,
    };
    // Without an explicit listen address, listen on every address of the family we
    // advertise (IPv4 unless told otherwise).
    let any = match advertise {
        Some(a) if a.is_ipv6() => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let listen = match g.listen {
        Some(t) => addr_with_port("gossip.listen", &t, port)?,
        None => SocketAddr::new(any, port),
    };
    if let Some(a) = advertise {
        if a.is_ipv6() != listen.is_ipv6() {
            return Err(err(format!(
                "gossip.advertise: {a} and gossip.listen {listen} are of different address families"
            )));
        }
    }
    let interval = duration("gossip.interval", g.interval, Duration::from_millis(500))?;
    if interval < Duration::from_millis(50) || interval > Duration::from_secs(60) {
        return Err(err(format!(
            "gossip.interval: {} is not between 50ms and 60s",
            humantime::format_duration(interval)
        )));
    }
    let wanted = g.enabled.unwrap_or(true);
    if !have_keys {
        // Gossip crosses routers: never in the clear. Asking for it without keys is a
        // mistake worth stopping for; merely not having keys just leaves it off.
        if !seeds.is_empty() {
            return Err(err(
                "gossip.seeds: gossip needs security.key_files (--key-file); it never runs unsealed",
            ));
        }
        if g.enabled == Some(true) {
            return Err(err(
                "gossip.enabled: gossip needs security.key_files (--key-file); it never runs unsealed",
            ));
        }
    }
    Ok(Gossip {
        enabled: wanted && have_keys,
        seeds,
        listen,
        advertise,
        interval,
    })
}

// ---- hooks ----
