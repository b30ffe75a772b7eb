//! Parsing targets: hops joined by `/`, each `METHOD[:ARG]`.

use anyhow::{anyhow, bail};

/// Methods this build implements.
const METHODS: &str = "local, local:N, and chains of them (local/local)";

/// One target: how many contexts each hop starts, outermost first. Hop `k`
/// starts its count under every context of hop `k - 1`; the last hop's
/// contexts are the ones acted on.
pub type Chain = Vec<usize>;

/// Parses targets (no targets: one `local`).
pub fn parse(targets: &[String]) -> anyhow::Result<Vec<Chain>> {
    if targets.is_empty() {
        return Ok(vec![vec![1]]);
    }
    targets.iter().map(|t| parse_one(t)).collect()
}

fn parse_one(t: &str) -> anyhow::Result<Chain> {
    t.split('/').map(|hop| parse_hop(t, hop)).collect()
}

fn parse_hop(t: &str, hop: &str) -> anyhow::Result<usize> {
    let (method, arg) = match hop.split_once(':') {
        Some((m, a)) => (m, Some(a)),
        None => (hop, None),
    };
    match (method, arg) {
        ("", _) => bail!("target {t:?}: empty hop (hops are joined by a single '/')"),
        ("local", None) => Ok(1),
        ("local", Some(a)) => {
            let k: usize = a.parse().map_err(|_| {
                anyhow!("target {t:?}: local:N needs a number of contexts, got {a:?}")
            })?;
            if k == 0 {
                bail!("target {t:?}: local:N needs at least one context");
            }
            Ok(k)
        }
        (m, _) => bail!(
            "target {t:?}: unknown method {m:?} (implemented: {METHODS}; ssh, sudo, su, doas, podman, docker, nsenter and chroot are planned)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[&str]) -> anyhow::Result<Vec<Chain>> {
        parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn targets_parse_into_chains_and_errors_name_the_problem() {
        assert_eq!(t(&[]).unwrap(), [vec![1]]);
        assert_eq!(t(&["local", "local:3"]).unwrap(), [vec![1], vec![3]]);
        assert_eq!(t(&["local/local:2/local"]).unwrap(), [vec![1, 2, 1]]);
        let err = |v: &[&str]| t(v).unwrap_err().to_string();
        assert!(err(&["ssh:web1"]).contains("unknown method \"ssh\""));
        assert!(err(&["local//local"]).contains("empty hop"));
        assert!(err(&["local/"]).contains("empty hop"));
        assert!(err(&["local:x"]).contains("needs a number"));
        assert!(err(&["local/local:0"]).contains("at least one"));
    }
}
