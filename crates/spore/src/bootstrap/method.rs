//! Connection methods: how the first stage (or the image) is started on the
//! target. Everything after the spawn — the handshake, the stream, the
//! routes — is the same for every method.

use std::os::unix::process::CommandExt;
use std::process::Command;

use serde::{Deserialize, Serialize};
use spore_proto::handshake;

use super::{Image, ShellLaunch};
use crate::ConnectError;

/// How a context is started.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) enum Method {
    /// A child process of the starting context.
    #[default]
    Local,
    /// A child process run by `sudo` as another user.
    Sudo(Sudo),
    /// A process on another machine, through the system's OpenSSH client.
    Ssh(Ssh),
    /// A child process run by `su` as another user.
    Su(Su),
    /// A process in a container, a namespace or a chroot of this machine.
    Enter(Enter),
    /// A child process run by `doas` as another user.
    Doas(Doas),
}

/// Where [`Enter`] goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Place {
    Podman {
        container: String,
        user: Option<String>,
    },
    Docker {
        container: String,
        user: Option<String>,
    },
    Nsenter {
        pid: u32,
        root: bool,
        cwd: Option<String>,
    },
    Chroot {
        path: String,
    },
}

/// Options of a context started inside a container, another process's
/// namespaces or a chroot, on the machine of the context that starts it:
/// `podman exec`, `docker exec`, `nsenter` or `chroot`.
///
/// The files there are not this machine's: the image must be statically
/// linked unless [`Enter::same_libraries`] says the place has this
/// machine's libraries.
///
/// ```no_run
/// # async fn demo(router: &spore::Router) -> Result<(), spore::ConnectError> {
/// let web = router.enter(spore::Enter::podman("web").user("www-data")).await?;
/// let jail = router.enter(spore::Enter::chroot("/srv/jail")).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enter {
    place: Place,
    same_libraries: bool,
}

impl Enter {
    fn new(place: Place) -> Self {
        Self {
            place,
            same_libraries: false,
        }
    }

    /// A running podman container (`podman exec -i`).
    pub fn podman(container: impl Into<String>) -> Self {
        Self::new(Place::Podman {
            container: container.into(),
            user: None,
        })
    }

    /// A running docker container (`docker exec -i`).
    pub fn docker(container: impl Into<String>) -> Self {
        Self::new(Place::Docker {
            container: container.into(),
            user: None,
        })
    }

    /// All the namespaces of process `pid` (`nsenter -t PID -a`).
    pub fn nsenter(pid: u32) -> Self {
        Self::new(Place::Nsenter {
            pid,
            root: false,
            cwd: None,
        })
    }

    /// A directory as the root (`chroot PATH`).
    pub fn chroot(path: impl Into<String>) -> Self {
        Self::new(Place::Chroot { path: path.into() })
    }

    /// For a container: the user to run as (`exec --user`).
    pub fn user(mut self, name: impl Into<String>) -> Self {
        if let Place::Podman { user, .. } | Place::Docker { user, .. } = &mut self.place {
            *user = Some(name.into());
        }
        self
    }

    /// For nsenter: also take the process's root directory (`-r`).
    pub fn with_root(mut self, on: bool) -> Self {
        if let Place::Nsenter { root, .. } = &mut self.place {
            *root = on;
        }
        self
    }

    /// For nsenter: the working directory there (`-w`, with `-wDIR`).
    pub fn cwd(mut self, dir: impl Into<String>) -> Self {
        if let Place::Nsenter { cwd, .. } = &mut self.place {
            *cwd = Some(dir.into());
        }
        self
    }

    /// The place has this machine's libraries: ship a dynamically linked
    /// image there anyway.
    pub fn same_libraries(mut self, on: bool) -> Self {
        self.same_libraries = on;
        self
    }

    fn name_part(&self) -> String {
        match &self.place {
            Place::Podman { container, .. } => format!("podman.{container}"),
            Place::Docker { container, .. } => format!("docker.{container}"),
            Place::Nsenter { pid, .. } => format!("nsenter.{pid}"),
            Place::Chroot { path } => {
                let last = path
                    .trim_end_matches('/')
                    .rsplit('/')
                    .next()
                    .unwrap_or_default();
                format!("chroot.{last}")
            }
        }
    }

    /// The command, and the program named in errors.
    fn command(&self) -> (Command, &'static str) {
        let (c, program) = match &self.place {
            Place::Podman { container, user } | Place::Docker { container, user } => {
                let program = if matches!(self.place, Place::Podman { .. }) {
                    "podman"
                } else {
                    "docker"
                };
                let mut c = Command::new(program);
                c.arg("exec").arg("-i");
                if let Some(user) = user {
                    c.arg("--user").arg(user);
                }
                c.arg(container);
                (c, program)
            }
            Place::Nsenter { pid, root, cwd } => {
                let mut c = Command::new("nsenter");
                c.arg("-t").arg(pid.to_string()).arg("-a");
                if *root {
                    c.arg("-r");
                }
                if let Some(dir) = cwd {
                    c.arg(format!("--wd={dir}"));
                }
                c.arg("--");
                (c, "nsenter")
            }
            Place::Chroot { path } => {
                let mut c = Command::new("chroot");
                c.arg(path);
                (c, "chroot")
            }
        };
        (c, program)
    }
}

/// Options of a context started through `su` as another user, on the
/// machine of the context that starts it (`su -s /bin/sh USER -c …`).
///
/// su prints its own prompt, translated; spore recognises it (the last
/// unfinished line of su's stderr ending in `:` and naming a password, in
/// the common languages) and answers with [`Su::password`]. Without a
/// password, a prompt fails at once with [`ConnectError::PasswordRequired`];
/// a wrong password with [`ConnectError::PasswordIncorrect`] once su gives
/// up, however slowly.
///
/// ```no_run
/// # async fn demo(router: &spore::Router) -> Result<(), spore::ConnectError> {
/// let as_root = router.su(spore::Su::root().password("secret")).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Su {
    user: Option<String>,
    password: Option<Secret>,
}

/// A password: serialized as it is (it must reach the context that uses
/// it), but never shown by `Debug`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

impl Su {
    /// Become `user`.
    pub fn user(user: impl Into<String>) -> Self {
        Self {
            user: Some(user.into()),
            ..Self::default()
        }
    }

    /// Become root.
    pub fn root() -> Self {
        Self::default()
    }

    /// The target user's password, for su's prompt. It travels to the
    /// context that runs su and is never logged.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Secret(password.into()));
        self
    }

    fn target_user(&self) -> &str {
        self.user.as_deref().unwrap_or("root")
    }
}

/// How a method's password prompt is recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prompt {
    /// Our own prompt, given to the method ([`PASSWORD_PROMPT`]), on stderr.
    Ours,
    /// The method's own, translated: the unfinished last line of stderr.
    Translated,
    /// The method's own, on a terminal of its own that spore gives it (a
    /// pty, only when a secret is given): the unfinished last line there.
    Terminal,
}

/// Which secret a prompt asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretKind {
    /// A login or account password.
    Password,
    /// The passphrase of a private key.
    Passphrase,
}

/// What a prompt (the unfinished last line a method printed) asks for, if
/// it is a prompt for a secret at all.
pub(crate) fn prompt_kind(line: &str) -> Option<SecretKind> {
    let lower = line.trim_end().to_lowercase();
    if !(lower.ends_with(':') || lower.ends_with('：')) {
        None
    } else if lower.contains("passphrase") {
        Some(SecretKind::Passphrase)
    } else if looks_like_password_prompt(line) {
        Some(SecretKind::Password)
    } else {
        None
    }
}

/// Words for "password" in the prompts of common locales, lowercased.
const PASSWORD_WORDS: &[&str] = &[
    "password",
    "passwort",
    "mot de passe",
    "contraseña",
    "senha",
    "parola",
    "wachtwoord",
    "hasło",
    "heslo",
    "jelszó",
    "lösenord",
    "adgangskode",
    "salasana",
    "пароль",
    "密码",
    "密碼",
    "パスワード",
    "암호",
    "비밀번호",
    "κωδικός",
];

/// Whether `line` (an unfinished line, without newline) is a password prompt.
pub(crate) fn looks_like_password_prompt(line: &str) -> bool {
    let line = line.trim_end().to_lowercase();
    (line.ends_with(':') || line.ends_with('：')) && PASSWORD_WORDS.iter().any(|w| line.contains(w))
}

/// What to do about the target's host key (OpenSSH's `StrictHostKeyChecking`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostKeyPolicy {
    /// Only hosts whose key is known (`yes`): an unknown or changed key
    /// fails with [`SshFailure::HostKeyUnknown`] or [`SshFailure::HostKeyChanged`].
    #[default]
    Enforce,
    /// Record the key of a new host, refuse a changed one (`accept-new`).
    Accept,
    /// Check nothing and record nothing (`no`, known hosts `/dev/null`).
    Ignore,
}

/// Why ssh could not reach the target, recognised from ssh's own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SshFailure {
    /// "Permission denied" and no password method left to try.
    AuthFailed,
    /// The host's key is not known (under [`HostKeyPolicy::Enforce`]).
    HostKeyUnknown,
    /// The host's key differs from the one known: a possible attack.
    HostKeyChanged,
    /// Nothing listens on that port.
    ConnectionRefused,
    /// The network or the host is unreachable.
    NoRoute,
    /// The host did not answer within the connect timeout.
    Timeout,
    /// The host name does not resolve.
    UnknownHost,
    /// The remote account has no usable `/bin/sh`.
    ShellMissing,
}

impl std::fmt::Display for SshFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SshFailure::AuthFailed => "authentication failed",
            SshFailure::HostKeyUnknown => "the host key is unknown",
            SshFailure::HostKeyChanged => "the host key has changed",
            SshFailure::ConnectionRefused => "connection refused",
            SshFailure::NoRoute => "no route to the host",
            SshFailure::Timeout => "connection timed out",
            SshFailure::UnknownHost => "the host name does not resolve",
            SshFailure::ShellMissing => "no /bin/sh on the target",
        })
    }
}

/// Options of a context started over ssh, with the system's OpenSSH client:
/// `~/.ssh/config`, the agent, `ProxyJump` and `ControlMaster` work as for
/// plain `ssh`. ssh runs in batch mode (it never prompts) unless a
/// [`Ssh::password`] or [`Ssh::passphrase`] is given, with the connect
/// timeout of the connection. The target keeps the image in a private
/// cache for the next contact ([`crate::Connect::cache`]).
///
/// The target runs the image from memory, with nothing installed; it must
/// be statically linked unless [`Ssh::same_libraries`] says otherwise.
///
/// ```no_run
/// # async fn demo(router: &spore::Router) -> Result<(), spore::ConnectError> {
/// let web = router
///     .ssh(spore::Ssh::host("web1").user("deploy").port(2222))
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ssh {
    host: String,
    port: Option<u16>,
    user: Option<String>,
    identity_file: Option<String>,
    config_file: Option<String>,
    known_hosts: Option<String>,
    host_key: HostKeyPolicy,
    compression: bool,
    keepalive: Option<(u32, u32)>,
    same_libraries: bool,
    extra_args: Vec<String>,
    password: Option<Secret>,
    passphrase: Option<Secret>,
    program: Option<String>,
}

impl Ssh {
    /// Connect to `host` (a name, an address, or a `Host` of the ssh config).
    pub fn host(host: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            ..Self::default()
        }
    }

    /// The port (default: ssh's, normally 22).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The remote user (default: ssh's).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// A private key file (`ssh -i`).
    pub fn identity_file(mut self, path: impl Into<String>) -> Self {
        self.identity_file = Some(path.into());
        self
    }

    /// An ssh config file instead of `~/.ssh/config` (`ssh -F`).
    pub fn config_file(mut self, path: impl Into<String>) -> Self {
        self.config_file = Some(path.into());
        self
    }

    /// A known-hosts file instead of `~/.ssh/known_hosts`.
    pub fn known_hosts(mut self, path: impl Into<String>) -> Self {
        self.known_hosts = Some(path.into());
        self
    }

    /// What to do about the host key (default [`HostKeyPolicy::Enforce`]).
    pub fn host_key(mut self, policy: HostKeyPolicy) -> Self {
        self.host_key = policy;
        self
    }

    /// Compress the stream (`ssh -C`): worth it on slow links only.
    pub fn compression(mut self, on: bool) -> Self {
        self.compression = on;
        self
    }

    /// Probe a silent connection every `interval_s` seconds and give up
    /// after `count` unanswered probes (`ServerAliveInterval`/`CountMax`).
    pub fn keepalive(mut self, interval_s: u32, count: u32) -> Self {
        self.keepalive = Some((interval_s, count));
        self
    }

    /// The target has this machine's libraries (the same OS build): ship a
    /// dynamically linked image there anyway.
    pub fn same_libraries(mut self, on: bool) -> Self {
        self.same_libraries = on;
        self
    }

    /// More arguments for ssh, placed before the host (e.g. `-o`, `Ciphers=...`).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// The login password, for a server that asks for one (password or
    /// keyboard-interactive authentication). ssh then runs with a terminal
    /// of its own (a pty spore holds) instead of in batch mode, and gets
    /// one try: a wrong password fails with
    /// [`ConnectError::PasswordIncorrect`]. It travels to the context that
    /// runs ssh and is never logged.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Secret(password.into()));
        self
    }

    /// The passphrase of the private key ([`Ssh::identity_file`]), given
    /// to ssh's prompt on a terminal of its own, as for [`Ssh::password`].
    pub fn passphrase(mut self, passphrase: impl Into<String>) -> Self {
        self.passphrase = Some(Secret(passphrase.into()));
        self
    }

    /// The ssh client to run (default: `ssh` from `PATH`), e.g. a
    /// wrapper script or an OpenSSH build of its own.
    pub fn program(mut self, path: impl Into<String>) -> Self {
        self.program = Some(path.into());
        self
    }

    fn has_secrets(&self) -> bool {
        self.password.is_some() || self.passphrase.is_some()
    }
}

/// Options of a context started through `doas` as another user, on the
/// machine of the context that starts it.
///
/// Without a password doas runs non-interactively (`doas -n`): a rule
/// without `nopass` fails at once with [`ConnectError::PasswordRequired`].
/// doas reads a password only from a terminal: with [`Doas::password`] it
/// gets one of its own (a pty spore holds), and a wrong password fails with
/// [`ConnectError::PasswordIncorrect`].
///
/// ```no_run
/// # async fn demo(router: &spore::Router) -> Result<(), spore::ConnectError> {
/// let as_www = router.doas(spore::Doas::user("www")).await?;
/// let as_root = router.doas(spore::Doas::root().password("secret")).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Doas {
    user: Option<String>,
    password: Option<Secret>,
}

impl Doas {
    /// Run as `user`.
    pub fn user(user: impl Into<String>) -> Self {
        Self {
            user: Some(user.into()),
            ..Self::default()
        }
    }

    /// Run as root (doas's default user).
    pub fn root() -> Self {
        Self::default()
    }

    /// The password to give doas if it asks (the invoking user's). It
    /// travels to the context that runs doas and is never logged.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Secret(password.into()));
        self
    }

    fn target_user(&self) -> &str {
        self.user.as_deref().unwrap_or("root")
    }
}

/// Options of a context started through `sudo` as another user, on the
/// machine of the context that starts it.
///
/// Without a password sudo runs non-interactively (`sudo -n`): a rule that
/// asks for one fails at once with [`ConnectError::PasswordRequired`]. With
/// [`Sudo::password`], sudo reads it from the stream after a prompt of
/// spore's own (`sudo -S -p`), which no translation changes and no echoed
/// newline or `*` can fake; a wrong one fails with
/// [`ConnectError::PasswordIncorrect`] as soon as sudo asks again.
///
/// ```no_run
/// # async fn demo(router: &spore::Router) -> Result<(), spore::ConnectError> {
/// let as_postgres = router.sudo(spore::Sudo::user("postgres")).await?;
/// let as_root = router.sudo(spore::Sudo::root().preserve_env(true)).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sudo {
    user: Option<String>,
    preserve_env: bool,
    extra_args: Vec<String>,
    password: Option<Secret>,
}

impl Sudo {
    /// Run as `user`.
    pub fn user(user: impl Into<String>) -> Self {
        Self {
            user: Some(user.into()),
            ..Self::default()
        }
    }

    /// Run as root (sudo's default user).
    pub fn root() -> Self {
        Self::default()
    }

    /// Keep the caller's environment (`sudo -E`), as far as the sudoers
    /// policy allows.
    pub fn preserve_env(mut self, on: bool) -> Self {
        self.preserve_env = on;
        self
    }

    /// More arguments for sudo, placed before the command (e.g. `-g`, `wheel`).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// The password to give sudo if it asks (the invoking user's, as sudo
    /// wants it). It travels to the context that runs sudo and is never
    /// logged.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Secret(password.into()));
        self
    }

    fn target_user(&self) -> &str {
        self.user.as_deref().unwrap_or("root")
    }
}

/// The prompt sudo is told to print when it wants the password. Nothing
/// else prints it: it has no newline and no `*`, and it is spore's own.
pub(crate) const PASSWORD_PROMPT: &str = "[spore: password for sudo]";

impl Method {
    /// The secret to answer a prompt for `kind` with, if the method has one.
    pub(crate) fn secret(&self, kind: SecretKind) -> Option<&str> {
        let secret = match (self, kind) {
            (Method::Sudo(s), SecretKind::Password) => &s.password,
            (Method::Su(s), SecretKind::Password) => &s.password,
            (Method::Doas(d), SecretKind::Password) => &d.password,
            (Method::Ssh(s), SecretKind::Password) => &s.password,
            (Method::Ssh(s), SecretKind::Passphrase) => &s.passphrase,
            _ => &None,
        };
        secret.as_ref().map(|p| p.0.as_str())
    }

    /// How the method's password prompt looks, if it may ask for one.
    pub(crate) fn prompt(&self) -> Option<Prompt> {
        match self {
            Method::Sudo(s) if s.password.is_some() => Some(Prompt::Ours),
            Method::Su(_) => Some(Prompt::Translated),
            Method::Doas(d) if d.password.is_some() => Some(Prompt::Terminal),
            Method::Ssh(s) if s.has_secrets() => Some(Prompt::Terminal),
            _ => None,
        }
    }

    /// The method's name, for errors.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Method::Local => "local",
            Method::Sudo(_) => "sudo",
            Method::Ssh(_) => "ssh",
            Method::Su(_) => "su",
            Method::Doas(_) => "doas",
            Method::Enter(e) => e.command().1,
        }
    }

    /// Whether the target shares this machine (and its libraries): then a
    /// dynamically linked image can run there.
    pub(crate) fn same_machine(&self) -> bool {
        match self {
            Method::Local | Method::Sudo(_) | Method::Su(_) | Method::Doas(_) => true,
            Method::Enter(e) => e.same_libraries,
            Method::Ssh(s) => s.same_libraries,
        }
    }

    /// Whether the target keeps the image in its cache unless told
    /// otherwise: only across machines, where it saves the wire.
    pub(crate) fn caches_by_default(&self) -> bool {
        matches!(self, Method::Ssh(_))
    }

    /// Whether the method must go through the first stage (it cannot exec
    /// the image from here).
    pub(crate) fn needs_first_stage(&self) -> bool {
        !matches!(self, Method::Local)
    }

    /// The last part of a context's default name: `local.ID`, `sudo.USER`.
    pub(crate) fn name_part(&self, id: u32) -> String {
        match self {
            Method::Local => format!("local.{id}"),
            Method::Sudo(s) => format!("sudo.{}", s.target_user()),
            Method::Ssh(s) => format!("ssh.{}:{}", s.host, s.port.unwrap_or(22)),
            Method::Su(s) => format!("su.{}", s.target_user()),
            Method::Doas(d) => format!("doas.{}", d.target_user()),
            Method::Enter(e) => e.name_part(),
        }
    }

    /// The command that starts the context, and the program named in errors.
    /// Without a `shell` (local only) it execs the image directly.
    pub(crate) fn command(
        &self,
        image: &Image,
        shell: Option<&ShellLaunch>,
        proc_name: &str,
        connect_timeout: std::time::Duration,
    ) -> (Command, String) {
        let Some(shell) = shell else {
            let mut c = Command::new(&image.path);
            c.arg0(proc_name).arg(handshake::CHILD_ARG);
            return (c, image.path.display().to_string());
        };
        match self {
            Method::Local => {
                let mut c = Command::new("/bin/sh");
                c.args(shell.argv());
                (c, "/bin/sh".to_owned())
            }
            Method::Sudo(s) => {
                let mut c = Command::new("sudo");
                match &s.password {
                    // Asked on stderr with our own prompt, read from the stream.
                    Some(_) => c.arg("-S").arg("-p").arg(PASSWORD_PROMPT),
                    None => c.arg("-n"),
                };
                if let Some(user) = &s.user {
                    c.arg("-u").arg(user);
                }
                if s.preserve_env {
                    c.arg("-E");
                }
                c.args(&s.extra_args)
                    .arg("--")
                    .arg("/bin/sh")
                    .args(shell.argv());
                (c, "sudo".to_owned())
            }
            Method::Ssh(s) => {
                let c = s.command(shell, connect_timeout);
                let program = c.get_program().to_string_lossy().into_owned();
                (c, program)
            }
            Method::Enter(e) => {
                let (mut c, program) = e.command();
                c.arg("/bin/sh").args(shell.argv());
                (c, program.to_owned())
            }
            Method::Su(s) => {
                // su hands the arguments after the user to the shell:
                // `/bin/sh -c SCRIPT NAME ARGS…`.
                let mut c = Command::new("su");
                c.arg("-s")
                    .arg("/bin/sh")
                    .arg("-c")
                    .arg(shell.script)
                    .arg(s.target_user())
                    .args(&shell.args);
                (c, "su".to_owned())
            }
            Method::Doas(d) => {
                let mut c = Command::new("doas");
                if d.password.is_none() {
                    c.arg("-n");
                }
                c.arg("-u")
                    .arg(d.target_user())
                    .arg("--")
                    .arg("/bin/sh")
                    .args(shell.argv());
                (c, "doas".to_owned())
            }
        }
    }

    /// Turns what the target printed before the stream ended into the
    /// method's own error, when it is one it recognises (sudo wanting a
    /// password, refusing the user).
    pub(crate) fn diagnose(&self, context: &str, last_lines: &[String]) -> Option<ConnectError> {
        let s = match self {
            Method::Local | Method::Enter(_) => return None,
            Method::Ssh(s) => return ssh_diagnose(s, context, last_lines),
            Method::Doas(_) => return doas_diagnose(context, last_lines),
            Method::Su(s) => return su_diagnose(s, context, last_lines),
            Method::Sudo(s) => s,
        };
        let said = |needle: &str| last_lines.iter().any(|l| l.contains(needle));
        if said("a password is required") {
            return Some(ConnectError::PasswordRequired {
                context: context.to_owned(),
                method: "sudo".into(),
                last_lines: last_lines.to_vec(),
            });
        }
        let refused = [
            "unknown user",
            "is not in the sudoers file",
            "is not allowed to",
        ];
        if refused.iter().any(|n| said(n)) {
            return Some(ConnectError::Refused {
                context: context.to_owned(),
                method: "sudo".into(),
                reason: format!("sudo refused to run as {}", s.target_user()),
                last_lines: last_lines.to_vec(),
            });
        }
        None
    }
}

impl Ssh {
    /// `ssh [options] -- HOST "/bin/sh -c 'SCRIPT' 'NAME' ARGS…"`: the
    /// remote command is one string run by the remote user's shell.
    fn command(&self, shell: &ShellLaunch, connect_timeout: std::time::Duration) -> Command {
        let mut c = Command::new(self.program.as_deref().unwrap_or("ssh"));
        let mut opt = |o: String| {
            c.arg("-o").arg(o);
        };
        if self.has_secrets() {
            // Prompts go to the terminal spore gives ssh; one try, so that
            // a wrong secret ends in "Permission denied" at once.
            opt("BatchMode=no".to_owned());
            opt("NumberOfPasswordPrompts=1".to_owned());
        } else {
            opt("BatchMode=yes".to_owned());
        }
        // Shorter than the connect's own timeout, so that ssh's diagnostic
        // ("Connection timed out") comes first and the error says why.
        opt(format!(
            "ConnectTimeout={}",
            (connect_timeout.as_secs() * 2 / 3).max(1)
        ));
        match self.host_key {
            HostKeyPolicy::Enforce => opt("StrictHostKeyChecking=yes".to_owned()),
            HostKeyPolicy::Accept => opt("StrictHostKeyChecking=accept-new".to_owned()),
            HostKeyPolicy::Ignore => {
                opt("StrictHostKeyChecking=no".to_owned());
                opt("UserKnownHostsFile=/dev/null".to_owned());
            }
        }
        if let (Some(file), false) = (&self.known_hosts, self.host_key == HostKeyPolicy::Ignore) {
            opt(format!("UserKnownHostsFile={file}"));
        }
        if let Some((interval, count)) = self.keepalive {
            opt(format!("ServerAliveInterval={interval}"));
            opt(format!("ServerAliveCountMax={count}"));
        }
        if let Some(port) = self.port {
            c.arg("-p").arg(port.to_string());
        }
        if let Some(user) = &self.user {
            c.arg("-l").arg(user);
        }
        if let Some(file) = &self.identity_file {
            c.arg("-i").arg(file);
        }
        if let Some(file) = &self.config_file {
            c.arg("-F").arg(file);
        }
        if self.compression {
            c.arg("-C");
        }
        // No tty: the stream must stay 8-bit clean.
        c.arg("-T").args(&self.extra_args).arg("--").arg(&self.host);
        c.arg(shell.remote_command());
        c
    }
}

/// doas's own words, turned into a typed error.
fn doas_diagnose(context: &str, last_lines: &[String]) -> Option<ConnectError> {
    let said = |needle: &str| last_lines.iter().any(|l| l.contains(needle));
    let lines = last_lines.to_vec();
    let (context, method) = (context.to_owned(), "doas".into());
    if said("Authentication required") || said("Authorization required") {
        Some(ConnectError::PasswordRequired {
            context,
            method,
            last_lines: lines,
        })
    } else if said("Authentication failed") {
        Some(ConnectError::PasswordIncorrect {
            context,
            method,
            last_lines: lines,
        })
    } else if said("Operation not permitted") || said("unknown user") {
        Some(ConnectError::Refused {
            context,
            method,
            reason: "no doas rule allows it".to_owned(),
            last_lines: lines,
        })
    } else {
        None
    }
}

/// su's own words, turned into a typed error.
fn su_diagnose(su: &Su, context: &str, last_lines: &[String]) -> Option<ConnectError> {
    let said = |needle: &str| last_lines.iter().any(|l| l.contains(needle));
    let lines = last_lines.to_vec();
    if said("Authentication failure") || said("incorrect password") {
        Some(ConnectError::PasswordIncorrect {
            context: context.to_owned(),
            method: "su".into(),
            last_lines: lines,
        })
    } else if said("does not exist") || said("Unknown id") || said("user ") && said("not exist") {
        Some(ConnectError::Refused {
            context: context.to_owned(),
            method: "su".into(),
            reason: format!("su refused to run as {}", su.target_user()),
            last_lines: lines,
        })
    } else {
        None
    }
}

/// `s` in single quotes for a POSIX shell.
pub(super) fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// ssh's own words, turned into a typed error.
fn ssh_diagnose(ssh: &Ssh, context: &str, last_lines: &[String]) -> Option<ConnectError> {
    let said = |needle: &str| last_lines.iter().any(|l| l.contains(needle));
    let failure = if said("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        SshFailure::HostKeyChanged
    } else if said("Host key verification failed")
        || said("No ED25519 host key is known")
        || said("host key is known")
    {
        SshFailure::HostKeyUnknown
    } else if said("Permission denied") {
        // ssh had one try with the secret given: it was wrong.
        if ssh.has_secrets() {
            return Some(ConnectError::PasswordIncorrect {
                context: context.to_owned(),
                method: "ssh".into(),
                last_lines: last_lines.to_vec(),
            });
        }
        // Batch mode never answers a prompt: if the server would take a
        // password, the missing password is the problem.
        if said("password") || said("keyboard-interactive") {
            return Some(ConnectError::PasswordRequired {
                context: context.to_owned(),
                method: "ssh".into(),
                last_lines: last_lines.to_vec(),
            });
        }
        SshFailure::AuthFailed
    } else if said("Connection refused") {
        SshFailure::ConnectionRefused
    } else if said("No route to host") || said("Network is unreachable") {
        SshFailure::NoRoute
    } else if said("timed out") {
        SshFailure::Timeout
    } else if said("Could not resolve hostname") || said("Name or service not known") {
        SshFailure::UnknownHost
    } else if said("/bin/sh: No such file or directory") || said("/bin/sh: not found") {
        SshFailure::ShellMissing
    } else {
        return None;
    };
    Some(ConnectError::Ssh {
        context: context.to_owned(),
        failure,
        last_lines: last_lines.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_stage_travels_in_single_quotes_and_names_are_quoted() {
        use crate::bootstrap::{FIRST_STAGE, STAGE0};
        for script in [FIRST_STAGE, STAGE0] {
            assert!(!script.contains('\''), "the ssh command quotes it in '...'");
        }
        // Stage 0 checks the first stage by hashing what `$(cat FILE)` gives
        // back plus one newline: it must end in exactly one.
        assert!(FIRST_STAGE.ends_with('\n') && !FIRST_STAGE.ends_with("\n\n"));
        assert!(!FIRST_STAGE.lines().any(|l| l == "SPORE-END"));
        assert_eq!(shell_quote("spore:ssh.a:22"), "'spore:ssh.a:22'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn ssh_diagnostics_become_typed_errors() {
        let kind = |line: &str| match ssh_diagnose(&Ssh::host("h"), "ssh.h:22", &[line.to_owned()])
        {
            Some(ConnectError::Ssh { failure, .. }) => Some(failure),
            Some(ConnectError::PasswordRequired { .. }) => None,
            other => panic!("{line:?} gave {other:?}"),
        };
        let cases = [
            (
                "ssh: connect to host h port 22: Connection refused",
                SshFailure::ConnectionRefused,
            ),
            (
                "ssh: connect to host h port 22: No route to host",
                SshFailure::NoRoute,
            ),
            (
                "ssh: connect to host h port 22: Network is unreachable",
                SshFailure::NoRoute,
            ),
            (
                "ssh: connect to host h port 22: Connection timed out",
                SshFailure::Timeout,
            ),
            (
                "ssh: Could not resolve hostname h: Name or service not known",
                SshFailure::UnknownHost,
            ),
            ("Host key verification failed.", SshFailure::HostKeyUnknown),
            (
                "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @",
                SshFailure::HostKeyChanged,
            ),
            (
                "u@h: Permission denied (publickey).",
                SshFailure::AuthFailed,
            ),
            ("sh: 1: /bin/sh: not found", SshFailure::ShellMissing),
        ];
        for (line, want) in cases {
            assert_eq!(kind(line), Some(want), "{line}");
        }
        // Both formats of "Permission denied" with a password method on offer.
        assert_eq!(kind("u@h: Permission denied (publickey,password)."), None);
        assert_eq!(
            kind("Permission denied (publickey,keyboard-interactive)."),
            None
        );
        assert!(
            ssh_diagnose(&Ssh::host("h"), "ssh.h:22", &["something else".to_owned()]).is_none()
        );
    }
}

#[cfg(test)]
mod prompt_tests {
    use super::looks_like_password_prompt as prompt;

    #[test]
    fn password_prompts_are_recognised_in_several_languages_and_nothing_else() {
        for p in [
            "Password: ",
            "Passwort: ",
            "Mot de passe : ",
            "Contraseña:",
            "Пароль: ",
            "密码：",
            "[sudo] password for alice: ",
        ] {
            assert!(prompt(p), "{p:?}");
        }
        for p in [
            "",
            "Password changed",
            "Enter passphrase",
            "password: done now",
            "***",
        ] {
            assert!(!prompt(p), "{p:?}");
        }
    }
}

#[cfg(test)]
mod secret_prompt_tests {
    use super::*;

    #[test]
    fn prompts_say_which_secret_they_want_and_answered_lines_are_no_prompts() {
        for (line, kind) in [
            (
                "Enter passphrase for key '/k/id_ed25519': ",
                SecretKind::Passphrase,
            ),
            ("spore-a@127.0.0.1's password: ", SecretKind::Password),
            ("(spore-a@127.0.0.1) Password: ", SecretKind::Password),
            ("doas (spore-a@box) password: ", SecretKind::Password),
        ] {
            assert_eq!(prompt_kind(line), Some(kind), "{line:?}");
        }
        for line in [
            "password: ****",
            "Password: secret",
            "Passphrase accepted",
            "",
        ] {
            assert_eq!(prompt_kind(line), None, "{line:?}");
        }
    }

    #[test]
    fn a_refused_secret_and_doas_words_become_typed_errors() {
        let with_password = Ssh::host("h").password("pw");
        for said in [
            "Permission denied, please try again.",
            "spore-a@h: Permission denied (publickey,password).",
        ] {
            assert!(matches!(
                ssh_diagnose(&with_password, "c", &[said.to_owned()]),
                Some(ConnectError::PasswordIncorrect { .. })
            ));
        }
        let doas = |said: &str| doas_diagnose("c", &[said.to_owned()]);
        assert!(matches!(
            doas("doas: Authentication required"),
            Some(ConnectError::PasswordRequired { .. })
        ));
        assert!(matches!(
            doas("doas: Authentication failed"),
            Some(ConnectError::PasswordIncorrect { .. })
        ));
        assert!(matches!(
            doas("doas: Operation not permitted"),
            Some(ConnectError::Refused { .. })
        ));
        assert!(doas("hello").is_none());
    }
}
