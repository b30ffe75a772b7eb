//! Parsing targets: hops joined by `/`, each `METHOD[:ARG]`.

use anyhow::{anyhow, bail};

/// Methods this build implements.
const METHODS: &str = "local, local:N, sudo, sudo:USER, su, su:USER, doas, doas:USER, ssh:[USER@]HOST[:PORT], podman:CONTAINER, docker:CONTAINER, nsenter:PID, chroot:PATH, and chains of them (ssh:web1/sudo:postgres)";

/// How one hop starts its contexts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// `local` / `local:N`: N local contexts.
    Local,
    /// `sudo` / `sudo:USER`: one context as USER (default root).
    Sudo(Option<String>),
    /// `su` / `su:USER`: one context as USER (default root), without a
    /// password (as root, or where su asks for none).
    Su(Option<String>),
    /// `doas` / `doas:USER`: one context as USER (default root).
    Doas(Option<String>),
    /// `podman:C`, `docker:C`, `nsenter:PID`, `chroot:PATH`: one context
    /// inside a container, a process's namespaces or a chroot.
    Enter(Enter),
    /// `ssh:[USER@]HOST[:PORT]`: one context over ssh.
    Ssh {
        /// The remote user, if given.
        user: Option<String>,
        /// The host (or a `Host` of the ssh config).
        host: String,
        /// The port, if given.
        port: Option<u16>,
    },
}

/// Where an `Enter` hop goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enter {
    /// `podman:CONTAINER`
    Podman(String),
    /// `docker:CONTAINER`
    Docker(String),
    /// `nsenter:PID`
    Nsenter(u32),
    /// `chroot:PATH`
    Chroot(String),
}

/// One hop: a method and how many contexts it starts under each context of
/// the hop before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    /// The method.
    pub method: Method,
    /// Contexts per parent.
    pub count: usize,
    /// Settings from the inventory (none for a hop of the command line).
    pub opts: HopOptions,
}

/// What the inventory sets on a hop beyond its method (see
/// `inventory.rs`). A hop of the command line has the defaults: nothing
/// set, the command line's flags decide.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HopOptions {
    /// The context's name instead of the default one (the inventory host
    /// whose chain ends at this hop).
    pub name: Option<String>,
    /// This hop's connect timeout instead of `--connect-timeout`.
    pub connect_timeout: Option<std::time::Duration>,
    /// Ship a dynamically linked image (ssh and container hops; the
    /// `--same-libraries` flag turns it on for every hop).
    pub same_libraries: Option<bool>,
    /// Whether the target may cache the image (ssh hops).
    pub cache: Option<bool>,
    /// `ssh -i` (ssh hops).
    pub identity_file: Option<String>,
    /// `ssh -F` (ssh hops).
    pub ssh_config: Option<String>,
    /// The known-hosts file (ssh hops).
    pub known_hosts: Option<String>,
    /// What to do about the host key (ssh hops).
    pub host_key: Option<spore::HostKeyPolicy>,
    /// `ssh -C` (ssh hops).
    pub compression: Option<bool>,
    /// Keepalive interval (seconds) and count (ssh hops).
    pub keepalive: Option<(u32, u32)>,
    /// More arguments for ssh, before the host (ssh hops).
    pub ssh_args: Vec<String>,
}

/// One target: its hops, outermost first. Hop `k` starts its contexts
/// under every context of hop `k - 1`; the last hop's contexts are the
/// ones acted on.
pub type Chain = Vec<Hop>;

/// Parses targets (no targets: one `local`).
pub fn parse(targets: &[String]) -> anyhow::Result<Vec<Chain>> {
    if targets.is_empty() {
        return Ok(vec![vec![Hop {
            method: Method::Local,
            count: 1,
            opts: HopOptions::default(),
        }]]);
    }
    targets.iter().map(|t| parse_hops(t, t)).collect()
}

/// The method names, as hops start.
const METHOD_NAMES: &[&str] = &[
    "local", "sudo", "su", "doas", "ssh", "podman", "docker", "nsenter", "chroot",
];

/// Parses `parts` (all of target `t`, or the hops after its `@NAME`);
/// errors quote `t`.
pub fn parse_hops(t: &str, parts: &str) -> anyhow::Result<Chain> {
    // A chroot path has slashes of its own: it takes every following piece
    // up to the next one that starts a hop.
    let starts_hop = |seg: &str| {
        METHOD_NAMES
            .iter()
            .any(|m| seg == *m || seg.strip_prefix(m).is_some_and(|r| r.starts_with(':')))
    };
    let mut hops: Vec<String> = Vec::new();
    for seg in parts.split('/') {
        match hops.last_mut() {
            Some(h) if h.starts_with("chroot:") && !starts_hop(seg) => {
                h.push('/');
                h.push_str(seg);
            }
            _ => hops.push(seg.to_owned()),
        }
    }
    hops.iter().map(|hop| parse_hop(t, hop)).collect()
}

fn parse_hop(t: &str, hop: &str) -> anyhow::Result<Hop> {
    let (method, arg) = match hop.split_once(':') {
        Some((m, a)) => (m, Some(a)),
        None => (hop, None),
    };
    let one = |method| {
        Ok(Hop {
            method,
            count: 1,
            opts: HopOptions::default(),
        })
    };
    match (method, arg) {
        ("", _) => bail!("target {t:?}: empty hop (hops are joined by a single '/')"),
        (m, _) if m.starts_with('@') => {
            bail!("target {t:?}: an inventory name (@NAME) may only start a target")
        }
        ("local", None) => one(Method::Local),
        ("local", Some(a)) => {
            let k: usize = a.parse().map_err(|_| {
                anyhow!("target {t:?}: local:N needs a number of contexts, got {a:?}")
            })?;
            if k == 0 {
                bail!("target {t:?}: local:N needs at least one context");
            }
            Ok(Hop {
                method: Method::Local,
                count: k,
                opts: HopOptions::default(),
            })
        }
        ("sudo", None) => one(Method::Sudo(None)),
        ("sudo", Some("")) => bail!("target {t:?}: sudo:USER needs a user name"),
        ("sudo", Some(user)) => one(Method::Sudo(Some(user.to_owned()))),
        ("podman" | "docker" | "nsenter" | "chroot", None | Some("")) => {
            bail!("target {t:?}: {method} needs an argument ({METHODS})")
        }
        ("podman", Some(c)) => one(Method::Enter(Enter::Podman(c.to_owned()))),
        ("docker", Some(c)) => one(Method::Enter(Enter::Docker(c.to_owned()))),
        ("chroot", Some(p)) => one(Method::Enter(Enter::Chroot(p.to_owned()))),
        ("nsenter", Some(p)) => {
            let pid = p
                .parse()
                .map_err(|_| anyhow!("target {t:?}: nsenter:PID needs a process ID, got {p:?}"))?;
            one(Method::Enter(Enter::Nsenter(pid)))
        }
        ("doas", None) => one(Method::Doas(None)),
        ("doas", Some("")) => bail!("target {t:?}: doas:USER needs a user name"),
        ("doas", Some(user)) => one(Method::Doas(Some(user.to_owned()))),
        ("su", None) => one(Method::Su(None)),
        ("su", Some("")) => bail!("target {t:?}: su:USER needs a user name"),
        ("su", Some(user)) => one(Method::Su(Some(user.to_owned()))),
        ("ssh", None | Some("")) => bail!("target {t:?}: ssh needs a host: ssh:[USER@]HOST[:PORT]"),
        ("ssh", Some(dest)) => {
            let (user, rest) = match dest.split_once('@') {
                Some((u, r)) => (Some(u.to_owned()), r),
                None => (None, dest),
            };
            let (host, port) = match rest.rsplit_once(':') {
                Some((h, p)) => {
                    let port = p.parse().map_err(|_| {
                        anyhow!("target {t:?}: ssh port {p:?} is not a port number")
                    })?;
                    (h, Some(port))
                }
                None => (rest, None),
            };
            if host.is_empty() {
                bail!("target {t:?}: ssh needs a host: ssh:[USER@]HOST[:PORT]");
            }
            one(Method::Ssh {
                user,
                host: host.to_owned(),
                port,
            })
        }
        (m, _) => {
            bail!("target {t:?}: unknown method {m:?} (implemented: {METHODS})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(v: &[&str]) -> anyhow::Result<Vec<Vec<usize>>> {
        let chains = parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        Ok(chains
            .into_iter()
            .map(|c| c.into_iter().map(|h| h.count).collect())
            .collect())
    }

    #[test]
    fn targets_parse_into_chains_and_errors_name_the_problem() {
        assert_eq!(counts(&[]).unwrap(), [vec![1]]);
        assert_eq!(counts(&["local", "local:3"]).unwrap(), [vec![1], vec![3]]);
        assert_eq!(counts(&["local/local:2/local"]).unwrap(), [vec![1, 2, 1]]);
        let chain = &parse(&["local/sudo:postgres/sudo".to_owned()]).unwrap()[0];
        assert_eq!(
            chain.iter().map(|h| h.method.clone()).collect::<Vec<_>>(),
            [
                Method::Local,
                Method::Sudo(Some("postgres".into())),
                Method::Sudo(None)
            ]
        );
        let err = |v: &[&str]| counts(v).unwrap_err().to_string();
        assert!(err(&["bogus:web1"]).contains("unknown method \"bogus\""));
        assert_eq!(
            parse(&["ssh:deploy@web1:2222/ssh:db".to_owned()]).unwrap()[0]
                .iter()
                .map(|h| h.method.clone())
                .collect::<Vec<_>>(),
            [
                Method::Ssh {
                    user: Some("deploy".into()),
                    host: "web1".into(),
                    port: Some(2222)
                },
                Method::Ssh {
                    user: None,
                    host: "db".into(),
                    port: None
                }
            ]
        );
        assert!(err(&["ssh:"]).contains("ssh needs a host"));
        assert!(err(&["ssh:web1:x"]).contains("not a port number"));
        assert!(err(&["local//local"]).contains("empty hop"));
        assert!(err(&["local/"]).contains("empty hop"));
        assert!(err(&["local/@db"]).contains("may only start a target"));
        assert!(err(&["local:x"]).contains("needs a number"));
        assert!(err(&["local/local:0"]).contains("at least one"));
        assert!(err(&["sudo:"]).contains("needs a user name"));
        assert!(err(&["su:"]).contains("needs a user name"));
        assert!(err(&["doas:"]).contains("needs a user name"));
        assert_eq!(
            parse(&["doas/doas:bob".to_owned()]).unwrap()[0]
                .iter()
                .map(|h| h.method.clone())
                .collect::<Vec<_>>(),
            [Method::Doas(None), Method::Doas(Some("bob".to_owned()))]
        );
        assert!(err(&["podman:"]).contains("podman needs an argument"));
        assert!(err(&["nsenter:x"]).contains("needs a process ID"));
        assert_eq!(
            parse(&["podman:web/chroot:/srv/jail/nsenter:42".to_owned()]).unwrap()[0]
                .iter()
                .map(|h| h.method.clone())
                .collect::<Vec<_>>(),
            [
                Method::Enter(Enter::Podman("web".into())),
                Method::Enter(Enter::Chroot("/srv/jail".into())),
                Method::Enter(Enter::Nsenter(42)),
            ]
        );
        assert_eq!(
            parse(&["su/su:bob".to_owned()]).unwrap()[0]
                .iter()
                .map(|h| h.method.clone())
                .collect::<Vec<_>>(),
            [Method::Su(None), Method::Su(Some("bob".into()))]
        );
    }
}
