//! The inventory: a TOML file of hosts (each a target as on the command
//! line, with ssh options) and groups of them, named on the command line as
//! `@NAME`.
//!
//! ```toml
//! [defaults]                      # optional: every host's, unless it sets its own
//! ssh_config = "/etc/spore/ssh_config"
//!
//! [hosts.bastion]
//! target = "ssh:ops@bastion.example.com"
//! identity_file = "~/.ssh/ops"
//!
//! [hosts.db1]
//! via = "bastion"                 # another host: its chain comes first
//! target = "ssh:db1:2222/sudo:postgres"
//! host_key = "accept"             # enforce | accept | ignore
//! ssh_args = ["-o", "ServerAliveInterval=5"]
//!
//! [groups]
//! db = ["db1", "db2"]
//! all = ["@db", "web1"]           # a member is a host or a group (`@` optional)
//! ```
//!
//! A host is one context: its `target` may not start several (`local:N`),
//! and the context that ends its chain is named after it (`db1`; hops added
//! on the command line, `@db1/sudo`, are named after that: `db1.sudo.root`).
//!
//! Options: `user`, `port`, `identity_file`, `ssh_config`, `known_hosts`,
//! `host_key`, `compression`, `keepalive_interval` (with `keepalive_count`,
//! default 3), `ssh_args` and `cache` apply to the ssh hops of the host's
//! own `target` (not to those of its `via`); a `USER@` or `:PORT` written in
//! the target wins over `user` and `port`. `same_libraries` applies to its
//! ssh, podman, docker, nsenter and chroot hops (`--same-libraries` turns it
//! on everywhere), `connect_timeout` (seconds) to all of its hops, instead
//! of `--connect-timeout`. Paths are read by the ssh that runs the hop (on
//! the machine of the hop before): ssh expands `~` in `identity_file` and
//! `known_hosts`, not in `ssh_config`.
//!
//! Nothing is silently ignored: an option a host sets that none of its hops
//! can take is an error (one from `[defaults]` just does not apply there),
//! and so are unknown keys, unknown or cyclic `via`s and group members, a
//! name that is both a host and a group, and an empty group. The whole file
//! is checked when it is read, whichever `@NAME` is used.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde::Deserialize;

use crate::target::{self, Chain, Method};

/// The environment variable naming the inventory file.
pub const ENV: &str = "SPORE_INVENTORY";

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// Options for every host that does not set its own.
    #[serde(default)]
    defaults: Entry,
    /// `[hosts.NAME]` tables.
    #[serde(default)]
    hosts: BTreeMap<String, Entry>,
    /// `NAME = ["host", "@group", ...]`.
    #[serde(default)]
    groups: BTreeMap<String, Vec<String>>,
}

/// A `[hosts.NAME]` table, or `[defaults]` (which may not have `target` or
/// `via`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    /// Hops as on the command line.
    target: Option<String>,
    /// Another host whose chain comes first.
    via: Option<String>,
    /// The ssh user where a hop names none.
    user: Option<String>,
    /// The ssh port where a hop names none.
    port: Option<u16>,
    /// `ssh -i`.
    identity_file: Option<String>,
    /// `ssh -F`.
    ssh_config: Option<String>,
    /// The known-hosts file.
    known_hosts: Option<String>,
    /// What to do about the host key.
    host_key: Option<HostKey>,
    /// `ssh -C`.
    compression: Option<bool>,
    /// `ServerAliveInterval`.
    keepalive_interval: Option<u32>,
    /// `ServerAliveCountMax` (default 3).
    keepalive_count: Option<u32>,
    /// More arguments for ssh.
    ssh_args: Option<Vec<String>>,
    /// Whether the target may cache the image.
    cache: Option<bool>,
    /// Ship a dynamically linked image.
    same_libraries: Option<bool>,
    /// Seconds to wait for each of the host's contexts.
    connect_timeout: Option<f64>,
}

impl Entry {
    /// The names of the options set here that only ssh hops take.
    fn ssh_options_set(&self) -> Vec<&'static str> {
        [
            ("user", self.user.is_some()),
            ("port", self.port.is_some()),
            ("identity_file", self.identity_file.is_some()),
            ("ssh_config", self.ssh_config.is_some()),
            ("known_hosts", self.known_hosts.is_some()),
            ("host_key", self.host_key.is_some()),
            ("compression", self.compression.is_some()),
            ("keepalive_interval", self.keepalive_interval.is_some()),
            ("keepalive_count", self.keepalive_count.is_some()),
            ("ssh_args", self.ssh_args.is_some()),
            ("cache", self.cache.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect()
    }

    /// `connect_timeout` as a duration, if set; `label` names the table in
    /// the error.
    fn timeout(&self, label: &str) -> anyhow::Result<Option<Duration>> {
        self.connect_timeout
            .map(|s| {
                Duration::try_from_secs_f64(s)
                    .ok()
                    .filter(|d| !d.is_zero())
                    .ok_or_else(|| {
                        anyhow!(
                            "{label}: connect_timeout must be a positive number of seconds, got {s}"
                        )
                    })
            })
            .transpose()
    }
}

/// `host_key = "enforce" | "accept" | "ignore"`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum HostKey {
    /// Only known hosts.
    Enforce,
    /// Record a new host's key, refuse a changed one.
    Accept,
    /// Check nothing.
    Ignore,
}

impl From<HostKey> for spore::HostKeyPolicy {
    fn from(k: HostKey) -> Self {
        match k {
            HostKey::Enforce => spore::HostKeyPolicy::Enforce,
            HostKey::Accept => spore::HostKeyPolicy::Accept,
            HostKey::Ignore => spore::HostKeyPolicy::Ignore,
        }
    }
}

/// An inventory, read and checked: every host's whole chain, and every
/// group's hosts.
#[derive(Debug)]
pub struct Inventory {
    /// Where it was read from (named in errors).
    path: PathBuf,
    /// Each host's chain: its `via`'s chain, then its own hops, with its
    /// options applied and its last hop named after it.
    hosts: BTreeMap<String, Chain>,
    /// Each group's hosts, nested groups expanded, in file order, each once.
    groups: BTreeMap<String, Vec<String>>,
}

impl Inventory {
    /// Reads and checks the inventory at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Inventory> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("inventory {}", path.display()))?;
        Self::parse(path, &text)
    }

    /// Checks the inventory `text`; `path` names it in errors.
    pub fn parse(path: &Path, text: &str) -> anyhow::Result<Inventory> {
        Self::parse_unnamed(path, text).with_context(|| format!("inventory {}", path.display()))
    }

    /// [`Inventory::parse`], its errors not yet prefixed by the file.
    fn parse_unnamed(path: &Path, text: &str) -> anyhow::Result<Inventory> {
        // toml's message ends with a newline of its own.
        let file: File =
            toml::from_str(text).map_err(|e| anyhow!("{}", e.to_string().trim_end()))?;
        let defaults = &file.defaults;
        if defaults.target.is_some() || defaults.via.is_some() {
            bail!("[defaults] may not have `target` or `via`: those belong to a host");
        }
        let default_timeout = defaults.timeout("[defaults]")?;
        for name in file.hosts.keys() {
            check_name("host", name)?;
        }
        for name in file.groups.keys() {
            check_name("group", name)?;
            if file.hosts.contains_key(name) {
                bail!("{name:?} is both a host and a group: @{name} must name one thing");
            }
        }
        let known = Known(&file);
        // Each host's own hops, then with its `via`'s in front.
        let mut own = BTreeMap::new();
        for (name, entry) in &file.hosts {
            let chain = own_chain(name, entry, defaults, default_timeout)?;
            if let Some(via) = &entry.via {
                if !file.hosts.contains_key(via) {
                    let what = if file.groups.contains_key(via) {
                        "is a group; via names one host".to_owned()
                    } else {
                        format!("no such host ({})", known.hosts())
                    };
                    bail!("host {name}: via {via:?}: {what}");
                }
            }
            own.insert(name.as_str(), (entry.via.as_deref(), chain));
        }
        let mut hosts = BTreeMap::new();
        for name in file.hosts.keys() {
            full_chain(name, &own, &mut hosts, &mut Vec::new())?;
        }
        let mut groups = BTreeMap::new();
        for name in file.groups.keys() {
            let mut members = Vec::new();
            expand_group(&file, &known, name, &mut Vec::new(), &mut members)?;
            let mut seen = HashSet::new();
            members.retain(|m| seen.insert(m.clone()));
            groups.insert(name.clone(), members);
        }
        Ok(Inventory {
            path: path.to_owned(),
            hosts,
            groups,
        })
    }

    /// The hosts `NAME` stands for: itself if it is a host, a group's
    /// members (nested groups expanded, in file order, each once).
    pub fn members(&self, name: &str) -> anyhow::Result<Vec<&str>> {
        if let Some((host, _)) = self.hosts.get_key_value(name) {
            return Ok(vec![host.as_str()]);
        }
        if let Some(members) = self.groups.get(name) {
            return Ok(members.iter().map(String::as_str).collect());
        }
        bail!(
            "inventory {}: no host or group {name:?} ({}; {})",
            self.path.display(),
            list("hosts", self.hosts.keys()),
            list("groups", self.groups.keys()),
        )
    }

    /// The whole chain of `host` (a name [`Inventory::members`] returned).
    pub fn chain(&self, host: &str) -> Option<&Chain> {
        self.hosts.get(host)
    }
}

/// Names the known hosts and groups in errors.
struct Known<'a>(&'a File);

impl Known<'_> {
    /// `hosts: a, b`.
    fn hosts(&self) -> String {
        list("hosts", self.0.hosts.keys())
    }

    /// `hosts: a, b; groups: g`.
    fn both(&self) -> String {
        format!(
            "{}; {}",
            list("hosts", self.0.hosts.keys()),
            list("groups", self.0.groups.keys())
        )
    }
}

/// `hosts: a, b, c` (at most 20 named), or `no hosts`.
fn list<'a>(what: &str, names: impl ExactSizeIterator<Item = &'a String>) -> String {
    const MAX: usize = 20;
    let n = names.len();
    if n == 0 {
        return format!("no {what}");
    }
    let shown: Vec<&str> = names.take(MAX).map(String::as_str).collect();
    let more = if n > MAX {
        format!(" and {} more", n - MAX)
    } else {
        String::new()
    };
    format!("{what}: {}{more}", shown.join(", "))
}

/// Names are what `@NAME` can reach: letters, digits, `.`, `_`, `-`.
fn check_name(what: &str, name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        bail!("{what} name {name:?}: use letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

/// The hops of `entry`'s own target, with its options (or the defaults')
/// applied and the last hop named `name`.
fn own_chain(
    name: &str,
    entry: &Entry,
    defaults: &Entry,
    default_timeout: Option<Duration>,
) -> anyhow::Result<Chain> {
    let label = format!("host {name}");
    let Some(t) = &entry.target else {
        bail!("{label}: no target (e.g. target = \"ssh:{name}\")");
    };
    let mut chain = target::parse_hops(t, t).with_context(|| label.clone())?;
    if chain.iter().any(|h| h.count > 1) {
        bail!("{label}: target {t:?}: a host is one context (make a group for several)");
    }
    let is_ssh = |m: &Method| matches!(m, Method::Ssh { .. });
    if !chain.iter().any(|h| is_ssh(&h.method)) {
        if let Some(key) = entry.ssh_options_set().first() {
            bail!("{label}: {key} is set, but target {t:?} has no ssh hop to take it");
        }
    }
    if entry.same_libraries.is_some()
        && !chain
            .iter()
            .any(|h| matches!(h.method, Method::Ssh { .. } | Method::Enter(_)))
    {
        bail!(
            "{label}: same_libraries is set, but target {t:?} has no ssh, podman, docker, \
             nsenter or chroot hop to take it"
        );
    }
    let timeout = entry.timeout(&label)?.or(default_timeout);
    fn pick<T: Clone>(own: &Option<T>, default: &Option<T>) -> Option<T> {
        own.as_ref().or(default.as_ref()).cloned()
    }
    let keepalive = match (
        pick(&entry.keepalive_interval, &defaults.keepalive_interval),
        entry.keepalive_count,
    ) {
        (Some(interval), count) => {
            Some((interval, count.or(defaults.keepalive_count).unwrap_or(3)))
        }
        (None, Some(_)) => bail!("{label}: keepalive_count needs keepalive_interval"),
        (None, None) => None,
    };
    let user = pick(&entry.user, &defaults.user);
    let port = pick(&entry.port, &defaults.port);
    let same_libraries = pick(&entry.same_libraries, &defaults.same_libraries);
    for hop in &mut chain {
        let o = &mut hop.opts;
        o.connect_timeout = timeout;
        match &mut hop.method {
            Method::Ssh {
                user: hop_user,
                port: hop_port,
                ..
            } => {
                if hop_user.is_none() {
                    hop_user.clone_from(&user);
                }
                if hop_port.is_none() {
                    *hop_port = port;
                }
                o.same_libraries = same_libraries;
                o.cache = pick(&entry.cache, &defaults.cache);
                o.identity_file = pick(&entry.identity_file, &defaults.identity_file);
                o.ssh_config = pick(&entry.ssh_config, &defaults.ssh_config);
                o.known_hosts = pick(&entry.known_hosts, &defaults.known_hosts);
                o.host_key = pick(&entry.host_key, &defaults.host_key).map(Into::into);
                o.compression = pick(&entry.compression, &defaults.compression);
                o.keepalive = keepalive;
                o.ssh_args = pick(&entry.ssh_args, &defaults.ssh_args).unwrap_or_default();
            }
            Method::Enter(_) => o.same_libraries = same_libraries,
            _ => {}
        }
    }
    if let Some(last) = chain.last_mut() {
        last.opts.name = Some(name.to_owned());
    }
    Ok(chain)
}

/// Puts `name`'s whole chain (its `via`'s, recursively, then its own) into
/// `done`; `stack` is the `via` path that led here, to name a cycle.
fn full_chain(
    name: &str,
    own: &BTreeMap<&str, (Option<&str>, Chain)>,
    done: &mut BTreeMap<String, Chain>,
    stack: &mut Vec<String>,
) -> anyhow::Result<()> {
    if done.contains_key(name) {
        return Ok(());
    }
    if let Some(at) = stack.iter().position(|s| s == name) {
        let mut cycle = stack[at..].to_vec();
        cycle.push(name.to_owned());
        bail!("hosts reach each other through via: {}", cycle.join(" -> "));
    }
    let Some((via, chain)) = own.get(name) else {
        // Checked before: every via names a host.
        bail!("no host {name:?}");
    };
    let mut whole = Vec::new();
    if let Some(via) = via {
        stack.push(name.to_owned());
        full_chain(via, own, done, stack)?;
        stack.pop();
        whole.extend(done.get(*via).into_iter().flatten().cloned());
    }
    whole.extend(chain.iter().cloned());
    done.insert(name.to_owned(), whole);
    Ok(())
}

/// Appends group `name`'s hosts to `out` (nested groups expanded);
/// `stack` is the path of groups that led here, to name a cycle.
fn expand_group(
    file: &File,
    known: &Known<'_>,
    name: &str,
    stack: &mut Vec<String>,
    out: &mut Vec<String>,
) -> anyhow::Result<()> {
    if let Some(at) = stack.iter().position(|s| s == name) {
        let mut cycle = stack[at..].to_vec();
        cycle.push(name.to_owned());
        bail!("groups contain each other: {}", cycle.join(" -> "));
    }
    let Some(members) = file.groups.get(name) else {
        bail!("no group {name:?}");
    };
    if members.is_empty() {
        bail!("group {name} is empty");
    }
    stack.push(name.to_owned());
    for member in members {
        let m = member.strip_prefix('@').unwrap_or(member);
        if file.hosts.contains_key(m) {
            out.push(m.to_owned());
        } else if file.groups.contains_key(m) {
            expand_group(file, known, m, stack, out)?;
        } else {
            bail!(
                "group {name}: member {member:?} is no host or group ({})",
                known.both()
            );
        }
    }
    stack.pop();
    Ok(())
}

/// Where to look for the inventory, as the environment says.
#[derive(Debug, Default)]
pub struct Places {
    /// `--inventory PATH`.
    pub flag: Option<PathBuf>,
    /// `SPORE_INVENTORY`.
    pub env: Option<OsString>,
    /// `XDG_CONFIG_HOME`.
    pub config_home: Option<OsString>,
    /// `HOME`.
    pub home: Option<OsString>,
}

impl Places {
    /// The flag, and this process's environment.
    pub fn from_env(flag: Option<&Path>) -> Places {
        Places {
            flag: flag.map(Path::to_owned),
            env: std::env::var_os(ENV),
            config_home: std::env::var_os("XDG_CONFIG_HOME"),
            home: std::env::var_os("HOME"),
        }
    }

    /// `${XDG_CONFIG_HOME:-$HOME/.config}/spore/inventory.toml` (a relative
    /// XDG_CONFIG_HOME is ignored, as the XDG spec says).
    fn default_path(&self) -> Option<PathBuf> {
        let base = match self.config_home.as_ref().map(PathBuf::from) {
            Some(p) if p.is_absolute() => p,
            _ => PathBuf::from(self.home.as_ref().filter(|h| !h.is_empty())?).join(".config"),
        };
        Some(base.join("spore").join("inventory.toml"))
    }

    /// The inventory file: `--inventory`, else `SPORE_INVENTORY`, else the
    /// default path if a file is there. `why` (the target that needs it)
    /// leads the error, which names every place looked.
    pub fn locate(&self, why: &str) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.flag {
            return Ok(p.clone());
        }
        if let Some(p) = self.env.as_ref().filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        let default = self.default_path();
        if let Some(p) = &default {
            if p.is_file() {
                return Ok(p.clone());
            }
        }
        let last = match default {
            Some(p) => format!("there is no {}", p.display()),
            None => "neither XDG_CONFIG_HOME nor HOME is set".to_owned(),
        };
        bail!(
            "{why} names an inventory host or group, but there is no inventory: no --inventory, {ENV} is not set, and {last}"
        )
    }
}

/// The chains the command line's targets stand for: `@NAME[/HOPS]` becomes
/// one chain per host of NAME (with HOPS after each), a host named twice
/// (with the same HOPS) once; other targets parse as usual. The inventory
/// is read only if some target starts with `@`.
pub fn resolve(targets: &[String], places: &Places) -> anyhow::Result<Vec<Chain>> {
    let Some(first) = targets.iter().find(|t| t.starts_with('@')) else {
        return target::parse(targets);
    };
    let inventory = Inventory::load(&places.locate(first)?)?;
    expand(targets, &inventory)
}

/// [`resolve`] with the inventory at hand.
pub fn expand(targets: &[String], inventory: &Inventory) -> anyhow::Result<Vec<Chain>> {
    let mut chains = Vec::new();
    let mut seen = HashSet::new();
    for t in targets {
        let Some(rest) = t.strip_prefix('@') else {
            chains.push(target::parse_hops(t, t)?);
            continue;
        };
        let (name, after) = match rest.split_once('/') {
            Some((name, after)) => (name, Some(after)),
            None => (rest, None),
        };
        if name.is_empty() {
            bail!("target {t:?}: @ needs the name of an inventory host or group");
        }
        let tail = match after {
            Some(after) => target::parse_hops(t, after)?,
            None => Vec::new(),
        };
        for host in inventory.members(name)? {
            if !seen.insert((host, after.unwrap_or(""))) {
                continue;
            }
            let mut chain = inventory.chain(host).cloned().unwrap_or_default();
            chain.extend(tail.iter().cloned());
            chains.push(chain);
        }
    }
    Ok(chains)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::{Enter, Hop, HopOptions};

    const PATH: &str = "/etc/inv.toml";

    fn parse(text: &str) -> anyhow::Result<Inventory> {
        Inventory::parse(Path::new(PATH), text)
    }

    /// The whole error, causes included, as the CLI prints it.
    fn err(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    fn ssh(user: Option<&str>, host: &str, port: Option<u16>) -> Method {
        Method::Ssh {
            user: user.map(str::to_owned),
            host: host.to_owned(),
            port,
        }
    }

    fn targets(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// The names each chain's hops end up with (`-` for a default name).
    fn names(chains: &[Chain]) -> Vec<String> {
        chains
            .iter()
            .map(|c| {
                c.iter()
                    .map(|h| h.opts.name.clone().unwrap_or_else(|| "-".into()))
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect()
    }

    const EXAMPLE: &str = r#"
[defaults]
ssh_config = "/etc/spore/ssh_config"
user = "ops"
connect_timeout = 10

[hosts.bastion]
target = "ssh:bastion.example.com"
identity_file = "~/.ssh/ops"

[hosts.db1]
via = "bastion"
target = "ssh:deploy@db1:2222/sudo:postgres"
host_key = "accept"
ssh_args = ["-o", "ServerAliveInterval=5"]
keepalive_interval = 5
connect_timeout = 2.5

[hosts.db2]
via = "db1"
target = "ssh:db2"
user = "root"
port = 2200
compression = true
cache = false
same_libraries = true
ssh_config = "/other"

[hosts.here]
target = "local"

[hosts.box]
target = "podman:web"
same_libraries = true

[groups]
db = ["db1", "db2"]
all = ["@db", "here", "db1", "box"]
"#;

    #[test]
    fn options_apply_to_the_hosts_own_ssh_hops_and_defaults_fill_in() {
        let inv = parse(EXAMPLE).unwrap();
        let bastion = inv.chain("bastion").unwrap();
        assert_eq!(bastion.len(), 1);
        assert_eq!(
            bastion[0].method,
            ssh(Some("ops"), "bastion.example.com", None)
        );
        assert_eq!(
            bastion[0].opts,
            HopOptions {
                name: Some("bastion".into()),
                connect_timeout: Some(Duration::from_secs(10)),
                identity_file: Some("~/.ssh/ops".into()),
                ssh_config: Some("/etc/spore/ssh_config".into()),
                ..HopOptions::default()
            }
        );
        // via: bastion's hop first, unchanged; the user in the target wins.
        let db1 = inv.chain("db1").unwrap();
        assert_eq!(db1.len(), 3);
        assert_eq!(db1[0], bastion[0]);
        assert_eq!(db1[1].method, ssh(Some("deploy"), "db1", Some(2222)));
        assert_eq!(
            db1[1].opts,
            HopOptions {
                connect_timeout: Some(Duration::from_millis(2500)),
                ssh_config: Some("/etc/spore/ssh_config".into()),
                host_key: Some(spore::HostKeyPolicy::Accept),
                keepalive: Some((5, 3)),
                ssh_args: vec!["-o".into(), "ServerAliveInterval=5".into()],
                ..HopOptions::default()
            }
        );
        // The sudo hop takes the timeout and the name, nothing of ssh's.
        assert_eq!(db1[2].method, Method::Sudo(Some("postgres".into())));
        assert_eq!(
            db1[2].opts,
            HopOptions {
                name: Some("db1".into()),
                connect_timeout: Some(Duration::from_millis(2500)),
                ..HopOptions::default()
            }
        );
        // A via chain of two: bastion, db1, then db2's own hop.
        let db2 = inv.chain("db2").unwrap();
        assert_eq!(&db2[..3], &db1[..]);
        assert_eq!(db2[3].method, ssh(Some("root"), "db2", Some(2200)));
        assert_eq!(
            db2[3].opts,
            HopOptions {
                name: Some("db2".into()),
                connect_timeout: Some(Duration::from_secs(10)),
                same_libraries: Some(true),
                cache: Some(false),
                ssh_config: Some("/other".into()),
                compression: Some(true),
                ..HopOptions::default()
            }
        );
        // Defaults of ssh only do not apply to a host without ssh hops.
        let here = inv.chain("here").unwrap();
        assert_eq!(
            here,
            &[Hop {
                method: Method::Local,
                count: 1,
                opts: HopOptions {
                    name: Some("here".into()),
                    connect_timeout: Some(Duration::from_secs(10)),
                    ..HopOptions::default()
                }
            }]
        );
        let boxed = inv.chain("box").unwrap();
        assert_eq!(boxed[0].method, Method::Enter(Enter::Podman("web".into())));
        assert_eq!(boxed[0].opts.same_libraries, Some(true));
    }

    #[test]
    fn groups_nest_in_file_order_and_name_each_host_once() {
        let inv = parse(EXAMPLE).unwrap();
        assert_eq!(inv.members("db").unwrap(), ["db1", "db2"]);
        assert_eq!(inv.members("all").unwrap(), ["db1", "db2", "here", "box"]);
        assert_eq!(inv.members("here").unwrap(), ["here"]);
        // On the command line: hops after @NAME go after every member; a
        // host named again with the same hops runs once; other targets
        // stay as they are.
        let chains = expand(
            &targets(&["@db/sudo", "@all/sudo", "@db1", "local:2"]),
            &inv,
        )
        .unwrap();
        assert_eq!(
            names(&chains),
            [
                "bastion/-/db1/-",
                "bastion/-/db1/db2/-",
                "here/-",
                "box/-",
                "bastion/-/db1",
                "-",
            ]
        );
        assert_eq!(chains[0][3].method, Method::Sudo(None));
        assert_eq!(chains[0][3].opts, HopOptions::default());
        assert_eq!(chains[5][0].count, 2);
        // Without any @, no inventory is needed.
        assert_eq!(
            resolve(&targets(&["local"]), &Places::default()).unwrap()[0][0].method,
            Method::Local
        );
    }

    #[test]
    fn command_line_errors_name_the_file_and_the_name() {
        let inv = parse(EXAMPLE).unwrap();
        let e = |v: &[&str]| format!("{:#}", expand(&targets(v), &inv).unwrap_err());
        assert_eq!(
            e(&["@dbb"]),
            "inventory /etc/inv.toml: no host or group \"dbb\" \
             (hosts: bastion, box, db1, db2, here; groups: all, db)"
        );
        assert!(e(&["@"]).contains("@ needs the name"), "{}", e(&["@"]));
        assert!(e(&["@db/"]).contains("target \"@db/\": empty hop"));
        assert!(e(&["@db/bogus"]).contains("target \"@db/bogus\": unknown method"));
        assert!(e(&["local/@db"]).contains("may only start a target"));
    }

    #[test]
    fn the_inventory_is_looked_for_in_order_and_a_missing_one_names_each_place() {
        let dir = std::env::temp_dir().join(format!("spore-inv-unit-{}", std::process::id()));
        let config = dir.join("config");
        std::fs::create_dir_all(config.join("spore")).unwrap();
        let places = |flag: Option<&str>, env: Option<&str>, xdg: Option<&Path>| Places {
            flag: flag.map(PathBuf::from),
            env: env.map(OsString::from),
            config_home: xdg.map(|p| p.as_os_str().to_owned()),
            home: Some(dir.as_os_str().to_owned()),
        };
        // Nothing there: each place is named.
        let e = places(None, None, Some(&config))
            .locate("@db")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!(
                "@db names an inventory host or group, but there is no inventory: \
                 no --inventory, SPORE_INVENTORY is not set, and there is no {}",
                config.join("spore/inventory.toml").display()
            )
        );
        // $HOME/.config when XDG_CONFIG_HOME is unset or relative.
        let e = places(None, Some(""), Some(Path::new("rel")))
            .locate("@db")
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(&format!(
                "there is no {}",
                dir.join(".config/spore/inventory.toml").display()
            )),
            "{e}"
        );
        let none = Places::default().locate("@x").unwrap_err().to_string();
        assert!(
            none.ends_with("neither XDG_CONFIG_HOME nor HOME is set"),
            "{none}"
        );
        // The default file, once it exists; the variable, then the flag,
        // before it (whether or not they exist: reading says if not).
        let file = config.join("spore/inventory.toml");
        std::fs::write(&file, "").unwrap();
        assert_eq!(
            places(None, None, Some(&config)).locate("@db").unwrap(),
            file
        );
        assert_eq!(
            places(None, Some("/env.toml"), Some(&config))
                .locate("@db")
                .unwrap(),
            Path::new("/env.toml")
        );
        assert_eq!(
            places(Some("/flag.toml"), Some("/env.toml"), Some(&config))
                .locate("@db")
                .unwrap(),
            Path::new("/flag.toml")
        );
        let missing = format!(
            "{:#}",
            resolve(
                &targets(&["@db"]),
                &places(Some("/nonexistent/inv.toml"), None, None)
            )
            .unwrap_err()
        );
        assert!(
            missing.starts_with("inventory /nonexistent/inv.toml: No such file"),
            "{missing}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_files_are_refused_naming_the_file_the_entry_and_the_problem() {
        let has = |text: &str, want: &[&str]| {
            let e = err(text);
            assert!(e.starts_with("inventory /etc/inv.toml: "), "{e}");
            for w in want {
                assert!(e.contains(w), "{e:?} lacks {w:?}");
            }
        };
        // TOML and schema errors say where.
        has(
            "[hosts.a]\ntarget = \"local\"\ntarjet = \"x\"\n",
            &["line 3", "unknown field `tarjet`"],
        );
        has("[hostz.a]\n", &["line 1", "unknown field `hostz`"]);
        has(
            "[hosts.a]\ntarget = \"ssh:a\"\nhost_key = \"yes\"\n",
            &["line 3", "unknown variant `yes`", "enforce"],
        );
        has("[hosts.a]\ntarget = \"ssh:a\"\nport = 70000\n", &["line 3"]);
        has("[hosts.a\n", &["line 1"]);
        // A bad target, with target.rs's words.
        has(
            "[hosts.a]\ntarget = \"ssh:a:x\"\n",
            &["host a: target \"ssh:a:x\": ssh port \"x\" is not a port number"],
        );
        has("[hosts.a]\nuser = \"x\"\n", &["host a: no target"]);
        has(
            "[hosts.a]\ntarget = \"local:3\"\n",
            &["host a: target \"local:3\": a host is one context"],
        );
        // Options nothing takes.
        has(
            "[hosts.a]\ntarget = \"sudo:pg\"\nidentity_file = \"k\"\n",
            &["host a: identity_file is set, but target \"sudo:pg\" has no ssh hop"],
        );
        has(
            "[hosts.a]\ntarget = \"podman:c\"\ncache = true\n",
            &["host a: cache is set"],
        );
        has(
            "[hosts.a]\ntarget = \"sudo\"\nsame_libraries = true\n",
            &["host a: same_libraries is set, but target \"sudo\" has no ssh, podman"],
        );
        has(
            "[hosts.a]\ntarget = \"ssh:a\"\nkeepalive_count = 2\n",
            &["host a: keepalive_count needs keepalive_interval"],
        );
        has(
            "[hosts.a]\ntarget = \"ssh:a\"\nconnect_timeout = 0\n",
            &["host a: connect_timeout must be a positive number of seconds, got 0"],
        );
        has(
            "[defaults]\nconnect_timeout = -1\n",
            &["[defaults]: connect_timeout must be a positive"],
        );
        has(
            "[defaults]\ntarget = \"local\"\n",
            &["[defaults] may not have `target` or `via`"],
        );
        // Names.
        has(
            "[hosts.\"a/b\"]\ntarget = \"local\"\n",
            &["host name \"a/b\": use letters"],
        );
        has(
            "[hosts.a]\ntarget = \"local\"\n[groups]\na = [\"a\"]\n",
            &["\"a\" is both a host and a group"],
        );
        // via.
        has(
            "[hosts.a]\ntarget = \"ssh:a\"\nvia = \"b\"\n",
            &["host a: via \"b\": no such host (hosts: a)"],
        );
        has(
            "[hosts.a]\ntarget = \"ssh:a\"\nvia = \"g\"\n[groups]\ng = [\"a\"]\n",
            &["host a: via \"g\": is a group"],
        );
        has(
            "[hosts.a]\ntarget = \"ssh:a\"\nvia = \"a\"\n",
            &["hosts reach each other through via: a -> a"],
        );
        has(
            "[hosts.a]\ntarget = \"ssh:a\"\nvia = \"c\"\n\
             [hosts.b]\ntarget = \"ssh:b\"\nvia = \"a\"\n\
             [hosts.c]\ntarget = \"ssh:c\"\nvia = \"b\"\n",
            &["hosts reach each other through via: a -> c -> b -> a"],
        );
        // Groups.
        has(
            "[hosts.a]\ntarget = \"local\"\n[groups]\ng = []\n",
            &["group g is empty"],
        );
        has(
            "[hosts.a]\ntarget = \"local\"\n[groups]\ng = [\"a\", \"nope\"]\n",
            &["group g: member \"nope\" is no host or group (hosts: a; groups: g)"],
        );
        has(
            "[hosts.a]\ntarget = \"local\"\n[groups]\n\
             g = [\"a\", \"@h\"]\nh = [\"@i\"]\ni = [\"g\"]\n",
            &["groups contain each other: g -> h -> i -> g"],
        );
    }

    #[test]
    fn an_empty_file_is_an_inventory_with_nothing_in_it_and_long_lists_are_cut() {
        let inv = parse("").unwrap();
        assert_eq!(
            format!("{:#}", inv.members("x").unwrap_err()),
            "inventory /etc/inv.toml: no host or group \"x\" (no hosts; no groups)"
        );
        let many: String = (10..35)
            .map(|i| format!("[hosts.h{i}]\ntarget = \"local\"\n"))
            .collect();
        let e = format!("{:#}", parse(&many).unwrap().members("x").unwrap_err());
        assert!(
            e.ends_with(
                "(hosts: h10, h11, h12, h13, h14, h15, h16, h17, h18, h19, h20, h21, \
                 h22, h23, h24, h25, h26, h27, h28, h29 and 5 more; no groups)"
            ),
            "{e}"
        );
    }
}
