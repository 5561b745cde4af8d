//! The quorum's voter list in Kafka's `controller.quorum.voters` format: `id@host:port`, one
//! entry per voter, where `host:port` is the voter's raft (gRPC) address. Pure parsing.

use std::collections::BTreeMap;

/// Parses `["1@host:9093", "2@host:9093"]` into node id -> raft address. Empty = no list (the
/// broker alone is the voter).
pub fn parse_voters(entries: &[String]) -> Result<BTreeMap<u64, String>, String> {
    let mut voters = BTreeMap::new();
    for entry in entries {
        let entry = entry.trim();
        let (id, addr) = entry
            .split_once('@')
            .ok_or_else(|| format!("'{entry}' is not id@host:port"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("'{entry}': node id '{id}' is not a non-negative integer"))?;
        let addr = addr.trim();
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("'{entry}': '{addr}' is not host:port"))?;
        if host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .is_empty()
        {
            return Err(format!("'{entry}': the host is empty"));
        }
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("'{entry}': '{port}' is not a port number"));
        }
        if voters.values().any(|a| a == addr) {
            return Err(format!("'{entry}': address {addr} is listed twice"));
        }
        if voters.insert(id, addr.to_string()).is_some() {
            return Err(format!("'{entry}': node id {id} is listed twice"));
        }
    }
    Ok(voters)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_kafka_format() {
        let v = parse_voters(&list(&["1@a:9093", " 2@10.0.0.2:19093 ", "3@[::1]:9093"])).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[&1], "a:9093");
        assert_eq!(v[&2], "10.0.0.2:19093");
        assert_eq!(v[&3], "[::1]:9093");
        assert!(parse_voters(&[]).unwrap().is_empty());
    }

    #[test]
    fn rejects_malformed_entries() {
        for (bad, why) in [
            ("a:9093", "id@host:port"),
            ("x@a:9093", "not a non-negative integer"),
            ("-1@a:9093", "not a non-negative integer"),
            ("1@a", "not host:port"),
            ("1@:9093", "host is empty"),
            ("1@a:port", "not a port number"),
            ("1@a:0", "not a port number"),
            ("1@a:70000", "not a port number"),
        ] {
            let e = parse_voters(&list(&[bad])).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn rejects_duplicates() {
        let e = parse_voters(&list(&["1@a:1", "1@b:1"])).unwrap_err();
        assert!(e.contains("node id 1 is listed twice"), "{e}");
        let e = parse_voters(&list(&["1@a:1", "2@a:1"])).unwrap_err();
        assert!(e.contains("listed twice"), "{e}");
    }
}
