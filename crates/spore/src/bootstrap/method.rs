//! Connection methods: how the first stage (or the image) is started on the
//! target. Everything after the spawn — the handshake, the stream, the
//! routes — is the same for every method.

use std::os::unix::process::CommandExt;
use std::process::Command;

use serde::{Deserialize, Serialize};
use spore_proto::handshake;

use super::{FIRST_STAGE, Image};
use crate::ConnectError;

/// How a context is started.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) enum Method {
    /// A child process of the starting context.
    #[default]
    Local,
    /// A child process run by `sudo` as another user.
    Sudo(Sudo),
}

/// Options of a context started through `sudo` as another user, on the
/// machine of the context that starts it.
///
/// sudo runs non-interactively (`sudo -n`): a rule that asks for a password
/// fails at once with [`ConnectError::PasswordRequired`] (passwords come
/// later).
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

    fn target_user(&self) -> &str {
        self.user.as_deref().unwrap_or("root")
    }
}

impl Method {
    /// Whether the target shares this machine (and its libraries): then a
    /// dynamically linked image can run there.
    pub(crate) fn same_machine(&self) -> bool {
        match self {
            Method::Local | Method::Sudo(_) => true,
        }
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
        }
    }

    /// The command that starts the context, and the program named in errors.
    /// `first_stage` false (local only) execs the image directly.
    pub(crate) fn command(
        &self,
        image: &Image,
        first_stage: bool,
        proc_name: &str,
    ) -> (Command, String) {
        match self {
            Method::Local if !first_stage => {
                let mut c = Command::new(&image.path);
                c.arg0(proc_name).arg(handshake::CHILD_ARG);
                (c, image.path.display().to_string())
            }
            Method::Local => {
                let mut c = Command::new("/bin/sh");
                c.arg("-c").arg(FIRST_STAGE).arg(proc_name);
                (c, "/bin/sh".to_owned())
            }
            Method::Sudo(s) => {
                let mut c = Command::new("sudo");
                c.arg("-n");
                if let Some(user) = &s.user {
                    c.arg("-u").arg(user);
                }
                if s.preserve_env {
                    c.arg("-E");
                }
                c.args(&s.extra_args)
                    .arg("--")
                    .arg("/bin/sh")
                    .arg("-c")
                    .arg(FIRST_STAGE)
                    .arg(proc_name);
                (c, "sudo".to_owned())
            }
        }
    }

    /// Turns what the target printed before the stream ended into the
    /// method's own error, when it is one it recognises (sudo wanting a
    /// password, refusing the user).
    pub(crate) fn diagnose(&self, context: &str, last_lines: &[String]) -> Option<ConnectError> {
        let Method::Sudo(s) = self else {
            return None;
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
