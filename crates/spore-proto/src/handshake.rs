//! Text markers exchanged before frames start flowing. See PROTOCOL.md.

/// First stage → parent: `SPORE-READY 1 <os> <arch> <decoders>\n`.
pub const READY_PREFIX: &str = "SPORE-READY ";
/// First stage → parent: `SPORE-FAIL <reason>; <reason>...\n`, then exit 1.
pub const FAIL_PREFIX: &str = "SPORE-FAIL ";
/// Child image → parent: `SPORE-UP <protocol> <build-id>\n`; frames follow.
pub const UP_PREFIX: &str = "SPORE-UP ";
/// argv\[1\] that puts a spore image into child mode.
pub const CHILD_ARG: &str = "--spore-child";
/// argv\[1\] that makes a spore image print [`PROBE_REPLY`] and exit 0.
pub const PROBE_ARG: &str = "--spore-probe";
/// What an image prints for [`PROBE_ARG`].
pub const PROBE_REPLY: &str = "spore-probe-ok";
/// Longest handshake line either side accepts, so garbage cannot make a
/// reader buffer without bound.
pub const MAX_LINE: usize = 4096;

/// What the first stage reported in its ready line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// `uname -s`, e.g. `Linux`.
    pub os: String,
    /// `uname -m`, e.g. `x86_64`.
    pub arch: String,
    /// Payload encodings the target can decode, best first.
    pub decoders: Vec<String>,
}

/// Parses `SPORE-READY 1 <os> <arch> <decoders>` (without the newline).
pub fn parse_ready(line: &str) -> Option<Ready> {
    let rest = line.strip_prefix(READY_PREFIX)?;
    let mut it = rest.split_ascii_whitespace();
    if it.next()? != "1" {
        return None;
    }
    let os = it.next()?.to_owned();
    let arch = it.next()?.to_owned();
    let decoders = it.next()?.split(',').map(str::to_owned).collect();
    Some(Ready { os, arch, decoders })
}

/// The payload header line the parent writes after reading the ready line.
pub fn payload_header(encoding: &str, size: usize) -> String {
    format!("{encoding} {size}\n")
}

/// The child's confirmation line.
pub fn up_line(build_id: &str) -> String {
    format!("{UP_PREFIX}{} {build_id}\n", crate::PROTOCOL_VERSION)
}

/// Parses an up line into `(protocol, build_id)`.
pub fn parse_up(line: &str) -> Option<(u32, &str)> {
    let rest = line.strip_prefix(UP_PREFIX)?;
    let (proto, build) = rest.split_once(' ')?;
    Some((proto.parse().ok()?, build.trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_parses() {
        let r = parse_ready("SPORE-READY 1 Linux x86_64 zstd,raw").unwrap();
        assert_eq!(r.os, "Linux");
        assert_eq!(r.arch, "x86_64");
        assert_eq!(r.decoders, ["zstd", "raw"]);
        assert!(parse_ready("SPORE-READY 2 Linux x86_64 raw").is_none());
        assert!(parse_ready("hello").is_none());
    }

    #[test]
    fn up_line_round_trips() {
        let l = up_line("0.1.0-abc");
        assert_eq!(
            parse_up(l.trim_end()),
            Some((crate::PROTOCOL_VERSION, "0.1.0-abc"))
        );
    }
}
