//! Parsing targets: hops joined by `/`, each `METHOD[:ARG]`.

use anyhow::{anyhow, bail};

/// Methods this build implements.
const METHODS: &str = "local, local:N";

/// How many local contexts the targets ask for (no targets: one).
pub fn count_local(targets: &[String]) -> anyhow::Result<usize> {
    if targets.is_empty() {
        return Ok(1);
    }
    let mut n = 0;
    for t in targets {
        let hops: Vec<&str> = t.split('/').collect();
        if hops.len() > 1 {
            bail!("target {t:?}: chains of hops are not supported yet (implemented: {METHODS})");
        }
        let (method, arg) = match hops[0].split_once(':') {
            Some((m, a)) => (m, Some(a)),
            None => (hops[0], None),
        };
        match (method, arg) {
            ("local", None) => n += 1,
            ("local", Some(a)) => {
                let k: usize = a.parse().map_err(|_| {
                    anyhow!("target {t:?}: local:N needs a number of contexts, got {a:?}")
                })?;
                if k == 0 {
                    bail!("target {t:?}: local:N needs at least one context");
                }
                n += k;
            }
            (m, _) => bail!(
                "target {t:?}: unknown method {m:?} (implemented: {METHODS}; ssh, sudo, su, doas, podman, docker, nsenter and chroot are planned)"
            ),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[&str]) -> anyhow::Result<usize> {
        count_local(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn targets_count_and_errors_name_the_problem() {
        assert_eq!(t(&[]).unwrap(), 1);
        assert_eq!(t(&["local", "local:3"]).unwrap(), 4);
        assert!(
            t(&["ssh:web1"])
                .unwrap_err()
                .to_string()
                .contains("unknown method \"ssh\"")
        );
        assert!(
            t(&["local/local"])
                .unwrap_err()
                .to_string()
                .contains("chains")
        );
        assert!(
            t(&["local:x"])
                .unwrap_err()
                .to_string()
                .contains("needs a number")
        );
        assert!(t(&["local:0"]).is_err());
    }
}
